"""Label tables for ``convert --labels`` and ``evaluate --labels``: from the maps, or from a catalogue.

- :func:`bpt_labels`: each galaxy's central-aperture BPT class (Kewley et al. 2006, via
  :func:`ifskeras.survey.bpt.classify_bpt`) and, where the MAPS file holds equivalent
  widths, its WHAN class (Cid Fernandes et al. 2011), from MAPS files or a records
  directory. Aperture S/N is corrected for MaNGA's spatial covariance
  (:func:`ifskeras.survey.bpt.covariance_corrected_sums`, Law et al. 2016).
- :func:`match_catalog`: label columns of any catalogue (FITS, CSV, ECSV) joined to the
  survey's galaxies by plate-IFU or MaNGA-ID.

Both give rows for :func:`write_label_table`, which writes the labels CSV atomically and a
failures CSV (path, reason) beside it.

Examples
--------
>>> combined_class("LINER", "retired"), combined_class("Seyfert", "sAGN"), combined_class("weak", "")
('retired', 'Seyfert', 'unclassified')
"""

from __future__ import annotations

import csv
import functools
import os
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ifskeras.common.files import atomic_write_csv
from ifskeras.common.progress import progress_bar
from ifskeras.records.schema import RecordsError
from ifskeras.survey.bpt import (
    MIN_SNR,
    OI_LINE,
    RATIO_NAMES,
    REQUIRED_LINES,
    SII_LINES,
    aperture_mean,
    classify_bpt,
    classify_whan,
    covariance_corrected_sums,
    line_ratios,
)
from ifskeras.survey.maps import MapsReadError, MissingExtensionError, MissingLineError, read_maps

__all__ = [
    "SPAXEL_ARCSEC",
    "DEFAULT_RADIUS_ARCSEC",
    "COSMOLOGY_H0",
    "COSMOLOGY_OM0",
    "BPT_LINES",
    "EW_LINES",
    "SNR_COLUMNS",
    "BPT_LABEL_COLUMNS",
    "UNCLASSIFIED",
    "RETIRED",
    "LabelError",
    "LabelTable",
    "MatchResult",
    "combined_class",
    "kpc_to_arcsec",
    "read_redshifts",
    "central_labels",
    "bpt_labels",
    "read_catalog",
    "survey_galaxies",
    "match_catalog",
    "failures_path",
    "write_label_table",
]

#: Side of a MaNGA spaxel in arcsec (DAP maps and DRP cubes).
SPAXEL_ARCSEC = 0.5
#: Default aperture radius: 1.5 arcsec, the radius of an SDSS 3 arcsec fibre.
DEFAULT_RADIUS_ARCSEC = 1.5
#: Flat Lambda-CDM used to turn a physical radius into an angle (H0 in km/s/Mpc).
COSMOLOGY_H0 = 70.0
COSMOLOGY_OM0 = 0.3
#: Lines read for the BPT class: the [NII] diagram's four, then [SII] and [OI] when present.
BPT_LINES: tuple[str, ...] = (*REQUIRED_LINES, *SII_LINES, OI_LINE)
#: Equivalent widths read for the WHAN class (EMLINE_GEW of the MAPS file).
EW_LINES: tuple[str, str] = ("Ha-6564", "NII-6585")
#: Column of each line's corrected aperture S/N, e.g. ``snr_ha_6564``.
SNR_COLUMNS: dict[str, str] = {line: "snr_" + line.lower().replace("-", "_") for line in BPT_LINES}
#: Columns of the table :func:`bpt_labels` makes, in order.
BPT_LABEL_COLUMNS: tuple[str, ...] = (
    "plateifu", "mangaid", "class", "bpt_class", "whan_class", *RATIO_NAMES, *SNR_COLUMNS.values(),
    "n_spaxels", "radius_arcsec", "ew_ha", "ew_nii",
)
#: ``class`` of a galaxy whose [NII]-diagram lines are too weak and whose WHAN class says nothing.
UNCLASSIFIED = "unclassified"
#: ``class`` of a galaxy the WHAN diagram calls retired or passive.
RETIRED = "retired"
_RECORDS_MANIFEST = "manifest.json"
_MAPS_GLOB = "*MAPS*.fits*"
_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
_TABLE_FORMATS = {".csv": "ascii.csv", ".ecsv": "ascii.ecsv", **{suffix: "fits" for suffix in _FITS_SUFFIXES}}
_KEYS = ("plateifu", "mangaid")
_LISTED = 10


class LabelError(ValueError):
    """Labels cannot be made: the message names the file and the problem."""


@dataclass(frozen=True)
class LabelTable:
    """Rows of a labels CSV (``columns`` order) and the inputs that could not be used."""

    columns: tuple[str, ...]
    rows: list[dict]
    failures: list[dict] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    def counts(self, column: str = "class") -> dict[str, int]:
        """How many rows hold each value of ``column``, most frequent first."""
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row[column]] = counts.get(row[column], 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


@dataclass(frozen=True)
class MatchResult:
    """A catalogue joined to a survey: the label rows and what did not match."""

    table: LabelTable
    key: str
    unmatched_catalog: list[str]
    unmatched_galaxies: list[str]
    catalog_rows_without_key: int = 0


# ----------------------------------------------------------------------------- BPT and WHAN


def combined_class(bpt_class: str, whan_class: str) -> str:
    """One label per galaxy from its BPT and WHAN classes.

    ``retired`` when the WHAN diagram says retired or passive (W(Halpha) < 3 A: the lines,
    LINER-like or not, need no star formation and no AGN); otherwise the BPT class;
    ``unclassified`` when that is ``weak`` (a line of the [NII] diagram below the S/N cut).
    """
    if whan_class in ("retired", "passive"):
        return RETIRED
    if bpt_class == "weak":
        return UNCLASSIFIED
    return bpt_class


def kpc_to_arcsec(radius_kpc: float, redshift: float) -> float:
    """Angle in arcsec of a proper length at a redshift (flat Lambda-CDM, H0 = 70, Om0 = 0.3).

    Examples
    --------
    >>> round(kpc_to_arcsec(1.0, 0.03), 3)  # D_A = 123.9 Mpc: 0.6007 kpc per arcsec
    1.665
    """
    if not redshift > 0:
        raise LabelError(f"redshift must be > 0 to turn kpc into arcsec. Received: {redshift!r}")
    return float(radius_kpc * _cosmology().arcsec_per_kpc_proper(redshift).value)


@functools.lru_cache(maxsize=1)
def _cosmology():
    from astropy.cosmology import FlatLambdaCDM  # deferred: only --radius-kpc pays for it

    return FlatLambdaCDM(H0=COSMOLOGY_H0, Om0=COSMOLOGY_OM0)


def read_redshifts(path: str | os.PathLike) -> dict[str, float]:
    """``plateifu -> z`` from a CSV with columns ``plateifu`` and ``z`` (or ``redshift``)."""
    path = Path(path)
    try:
        with open(path, newline="") as stream:
            reader = csv.DictReader(stream)
            fields = {name.strip().lower(): name for name in reader.fieldnames or []}
            column = fields.get("z") or fields.get("redshift")
            if "plateifu" not in fields or column is None:
                raise LabelError(f"{path}: a redshift CSV needs columns plateifu and z; found {reader.fieldnames}")
            redshifts: dict[str, float] = {}
            for line, row in enumerate(reader, start=2):
                key = (row[fields["plateifu"]] or "").strip()
                text = (row[column] or "").strip()
                if not text:
                    continue  # unknown z (as survey select writes it): that galaxy fails alone, "no redshift"
                try:
                    value = float(text)
                except ValueError:
                    raise LabelError(f"{path}, line {line}: z {row[column]!r} of {key} is not a number") from None
                if np.isfinite(value):
                    redshifts[key] = value
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise LabelError(f"{path}: cannot read the redshift CSV ({error})") from error
    return redshifts


def central_labels(
    flux: np.ndarray,
    ivar: np.ndarray,
    valid: np.ndarray,
    lines: Sequence[str],
    *,
    radius_pixels: float,
    spaxels_per_pixel: float = 1.0,
    ew: np.ndarray | None = None,
    ew_valid: np.ndarray | None = None,
    ew_lines: Sequence[str] = EW_LINES,
    min_snr: float = MIN_SNR,
) -> dict:
    """BPT and WHAN classes, ratios, S/N and equivalent widths of one galaxy's central aperture.

    Parameters
    ----------
    flux, ivar, valid : numpy.ndarray
        [L, H, W] line fluxes of ``lines`` with inverse variances and validity.
    radius_pixels : float
        Aperture radius in pixels of these maps, around the map centre.
    spaxels_per_pixel : float
        Native spaxels per pixel along one axis (1 for DAP maps).
    ew, ew_valid : numpy.ndarray, optional
        [len(ew_lines), H', W'] equivalent widths (Angstrom) and their validity; without
        them ``whan_class`` is empty.
    min_snr : float
        Lines whose covariance-corrected aperture S/N is below this are not detected.

    Returns
    -------
    dict
        The columns of :data:`BPT_LABEL_COLUMNS` except ``plateifu``, ``mangaid`` and
        ``radius_arcsec``. ``n_spaxels`` counts the native spaxels summed for Halpha.
    """
    lines = list(lines)
    missing = [line for line in REQUIRED_LINES if line not in lines]
    if missing:
        raise LabelError(f"the BPT class needs {', '.join(missing)}; the maps hold {', '.join(lines)}")
    total, corrected_ivar, n_spaxels = covariance_corrected_sums(
        flux, ivar, valid, radius_pixels, spaxels_per_pixel=spaxels_per_pixel
    )
    flux_of = {line: float(total[i]) for i, line in enumerate(lines) if line in BPT_LINES}
    ivar_of = {line: float(corrected_ivar[i]) for i, line in enumerate(lines) if line in BPT_LINES}
    snr = {line: flux_of[line] * np.sqrt(ivar_of[line]) for line in flux_of}
    bpt_class = str(classify_bpt(flux_of, ivar_of, min_snr=min_snr))
    detected = {line: value if snr[line] >= min_snr else np.nan for line, value in flux_of.items()}
    ratios = {name: float(value) for name, value in line_ratios(detected).items()}

    ew_ha = ew_nii = float("nan")
    whan_class = ""
    if ew is not None:
        ew_lines = list(ew_lines)
        widths = aperture_mean(ew, ew_valid, radius_pixels)
        ew_ha = float(widths[ew_lines.index("Ha-6564")])
        ew_nii = float(widths[ew_lines.index("NII-6585")]) if "NII-6585" in ew_lines else float("nan")
        whan_class = str(classify_whan(ew_ha, ratios["log_nii_ha"], ew_nii))
    return {
        "class": combined_class(bpt_class, whan_class),
        "bpt_class": bpt_class,
        "whan_class": whan_class,
        **ratios,
        **{SNR_COLUMNS[line]: float(snr.get(line, np.nan)) for line in BPT_LINES},
        "n_spaxels": float(n_spaxels[lines.index("Ha-6564")]),
        "ew_ha": ew_ha,
        "ew_nii": ew_nii,
    }


def bpt_labels(
    inputs: Iterable[str | os.PathLike],
    *,
    radius_arcsec: float = DEFAULT_RADIUS_ARCSEC,
    radius_kpc: float | None = None,
    redshifts: Mapping[str, float] | None = None,
    min_snr: float = MIN_SNR,
    progress: bool = False,
) -> LabelTable:
    """Central-aperture BPT and WHAN labels of every galaxy in MAPS files or records directories.

    Parameters
    ----------
    inputs : iterable of path-like
        MAPS files, directories searched recursively for ``*MAPS*.fits*``, and records
        directories (holding ``manifest.json``). Records hold no equivalent widths, so
        their galaxies get no WHAN class.
    radius_arcsec : float
        Aperture radius (1.5" by default: 3 spaxels, an SDSS fibre).
    radius_kpc : float, optional
        A fixed physical radius instead; needs ``redshifts``.
    redshifts : mapping, optional
        plate-IFU -> z (:func:`read_redshifts`).
    min_snr : float
        Per-line S/N cut, on the covariance-corrected aperture S/N.
    progress : bool
        Show a progress bar over galaxies.

    Returns
    -------
    LabelTable
        Rows with :data:`BPT_LABEL_COLUMNS`, sorted by plate-IFU; inputs that could not be
        read (or lack a redshift) in ``failures``; a plate-IFU met twice is labelled once.

    Examples
    --------
    >>> table = bpt_labels(["manga-7815-3702-MAPS-HYB10-GAU-MILESHC.fits.gz"])  # doctest: +SKIP
    >>> table.rows[0]["class"]  # doctest: +SKIP
    'SF'
    """
    if radius_kpc is None and not radius_arcsec > 0:
        raise LabelError(f"radius_arcsec must be > 0. Received: {radius_arcsec!r}")
    if radius_kpc is not None and not (radius_kpc > 0 and redshifts is not None):
        raise LabelError(f"a radius in kpc must be > 0 and needs redshifts. Received: radius_kpc={radius_kpc!r}")

    def radius_of(plateifu: str) -> float:
        if radius_kpc is None:
            return radius_arcsec
        if plateifu not in redshifts:
            raise LabelError(f"no redshift for {plateifu}")
        return kpc_to_arcsec(radius_kpc, redshifts[plateifu])

    records_dirs, maps_paths, failures = _split_inputs(inputs)
    records_index = {}
    for directory in records_dirs:
        try:
            records_index[directory] = _records_rows(directory)
        except (LabelError, RecordsError, OSError) as error:
            failures.append({"path": str(directory), "reason": str(error)})
    total = len(maps_paths) + sum(len(rows) for rows in records_index.values())

    rows: dict[str, dict] = {}
    duplicates: list[str] = []

    def keep(row: dict) -> None:
        if row["plateifu"] in rows:
            duplicates.append(row["plateifu"])
        else:
            rows[row["plateifu"]] = row

    with progress_bar(progress, "labelling", total) as bar:
        for path in maps_paths:
            try:
                keep(_maps_row(path, radius_of, min_snr))
            except (MapsReadError, LabelError) as error:
                failures.append({"path": str(path), "reason": getattr(error, "problem", str(error))})
            bar.advance()
        for directory, index_rows in records_index.items():
            for row in _records_labels(directory, index_rows, radius_of, min_snr, failures, bar.advance):
                keep(row)
    ordered = [rows[key] for key in sorted(rows)]
    return LabelTable(BPT_LABEL_COLUMNS, ordered, failures, duplicates)


def _split_inputs(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Path], list[dict]]:
    """Records directories, MAPS file paths (sorted, unique) and inputs that are neither."""
    records_dirs, maps_paths, failures = [], set(), []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and (path / _RECORDS_MANIFEST).is_file():
            records_dirs.append(path)
        elif path.is_dir():
            # Hidden files are partial downloads (survey fetch's .NAME.part), never inputs.
            found = [p for p in path.rglob(_MAPS_GLOB) if p.is_file() and not p.name.startswith(".")]
            if not found:
                failures.append({"path": str(path), "reason": f"no {_MAPS_GLOB} file and no {_RECORDS_MANIFEST}"})
            maps_paths.update(Path(os.path.abspath(p)) for p in found)
        elif path.exists() and ".fits" in path.name.lower():
            maps_paths.add(Path(os.path.abspath(path)))
        elif not path.exists():
            failures.append({"path": str(path), "reason": "input does not exist"})
        else:
            failures.append({"path": str(path), "reason": "neither a FITS file (*.fits*) nor a directory"})
    return records_dirs, sorted(maps_paths, key=str), failures


def _maps_row(path: Path, radius_of: Callable[[str], float], min_snr: float) -> dict:
    try:
        maps = read_maps(path, BPT_LINES)
    except MissingLineError:
        maps = read_maps(path, REQUIRED_LINES)  # [SII] and [OI] are optional diagrams
    radius = radius_of(maps.plateifu)
    try:
        widths = read_maps(path, EW_LINES, quantity="GEW")
        ew, ew_valid = widths.flux, widths.valid
    except (MissingExtensionError, MissingLineError):
        ew = ew_valid = None  # no equivalent widths: no WHAN class, but the BPT class stands
    labels = central_labels(maps.flux, maps.ivar, maps.valid, maps.lines, radius_pixels=radius / SPAXEL_ARCSEC,
                            ew=ew, ew_valid=ew_valid, min_snr=min_snr)
    return {"plateifu": maps.plateifu, "mangaid": maps.mangaid, "radius_arcsec": radius, **labels}


def _records_rows(directory: Path) -> list[dict]:
    from ifskeras.records import read_index

    rows = read_index(directory)
    if rows and "spaxels_per_pixel" not in rows[0]:
        raise LabelError(f"{directory}: index.csv has no spaxels_per_pixel column; columns: {', '.join(rows[0])}")
    return rows


def _records_labels(directory: Path, index_rows: list[dict], radius_of, min_snr: float, failures: list[dict],
                    advance: Callable[[], None]) -> Iterator[dict]:
    """Rows of a records directory's galaxies, read one shard at a time (memory stays one shard)."""
    from ifskeras.records import dataset_spec, read_examples

    try:
        lines = dataset_spec(directory).lines
    except RecordsError as error:
        failures.append({"path": str(directory), "reason": str(error)})
        for _ in index_rows:
            advance()
        return
    missing = [line for line in REQUIRED_LINES if line not in lines]
    if missing:
        failures.append({"path": str(directory), "reason": f"records lack lines {', '.join(missing)} of the BPT "
                                                           f"diagram; lines: {', '.join(lines)}"})
        for _ in index_rows:
            advance()
        return
    by_shard: dict[str, list[dict]] = {}
    for row in index_rows:
        by_shard.setdefault(row["shard"], []).append(row)
    for shard, shard_rows in by_shard.items():
        try:
            galaxies = read_examples(directory, [row["id"] for row in shard_rows])
        except (KeyError, RecordsError, ValueError, OSError) as error:
            failures.append({"path": str(Path(directory) / shard), "reason": f"cannot read the shard ({error})"})
            for _ in shard_rows:
                advance()
            continue
        for i, row in enumerate(shard_rows):
            location = f"{directory} [{row['id']}]"
            try:
                scale = float(row["spaxels_per_pixel"] or 1.0)
                radius = radius_of(row["id"]) / SPAXEL_ARCSEC / scale
                labels = central_labels(galaxies["flux"][i, ..., 0], galaxies["ivar"][i, ..., 0],
                                        galaxies["valid"][i, ..., 0] > 0, lines, radius_pixels=radius,
                                        spaxels_per_pixel=scale, min_snr=min_snr)
            except (LabelError, ValueError) as error:
                failures.append({"path": location, "reason": str(error)})
            else:
                yield {"plateifu": row["id"], "mangaid": (row.get("mangaid") or "").strip(),
                       "radius_arcsec": radius_of(row["id"]), **labels}
            advance()


# ----------------------------------------------------------------------------- catalogues


def read_catalog(path: str | os.PathLike):
    """A catalogue as an astropy Table, its format from the extension; strings decoded and stripped.

    FITS (``.fits``, ``.fit``, ``.fts``, gzipped or not), ``.csv`` and ``.ecsv`` are read
    with their formats; other extensions are left to astropy to guess.
    """
    from astropy.table import Table

    path = Path(path)
    name = path.name.lower()
    table_format = next((fmt for suffix, fmt in _TABLE_FORMATS.items() if name.endswith(suffix)), None)
    if not path.is_file():
        raise LabelError(f"{path}: catalogue does not exist")
    try:
        with warnings.catch_warnings():
            # Unit strings and header keywords astropy cannot parse do not matter for labels.
            warnings.simplefilter("ignore")
            table = Table.read(path, format=table_format) if table_format else Table.read(path)
    except Exception as error:  # astropy raises many types for unreadable tables; all mean the same here
        raise LabelError(f"{path}: cannot read the catalogue as {table_format or 'any astropy format'} "
                         f"({type(error).__name__}: {error})") from error
    table.convert_bytestring_to_unicode()
    for column in table.columns.values():
        if column.dtype.kind == "U":
            column[:] = np.char.strip(np.asarray(column))
    return table


def survey_galaxies(inputs: Iterable[str | os.PathLike], *, progress: bool = False) -> tuple[list[dict], list[dict]]:
    """The survey's galaxies as ``{'plateifu', 'mangaid', 'source'}`` and the inputs that failed.

    Records directories give their ``index.csv`` (``mangaid`` empty when the column is
    absent); MAPS files their primary header's PLATEIFU and MANGAID (only that header is
    read). Sorted by plate-IFU; the first of two inputs with one plate-IFU is kept.
    """
    records_dirs, maps_paths, failures = _split_inputs(inputs)
    galaxies: dict[str, dict] = {}
    for directory in records_dirs:
        try:
            for row in _records_rows(directory):
                galaxies.setdefault(row["id"], {"plateifu": row["id"], "mangaid": (row.get("mangaid") or "").strip(),
                                                "source": str(directory), "has_mangaid": "mangaid" in row})
        except (LabelError, RecordsError, OSError) as error:
            failures.append({"path": str(directory), "reason": str(error)})
    with progress_bar(progress, "reading headers", len(maps_paths), unit="files") as bar:
        for path in maps_paths:
            try:
                plateifu, mangaid = _header_ids(path)
                galaxies.setdefault(plateifu, {"plateifu": plateifu, "mangaid": mangaid, "source": str(path),
                                               "has_mangaid": True})
            except LabelError as error:
                failures.append({"path": str(path), "reason": str(error)})
            bar.advance()
    return [galaxies[key] for key in sorted(galaxies)], failures


def _header_ids(path: Path) -> tuple[str, str]:
    """PLATEIFU (else from the file name, as read_maps does) and MANGAID of a MAPS file's primary header."""
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = fits.getheader(path, 0)
    except (OSError, EOFError, zlib.error, ValueError, TypeError, IndexError) as error:
        raise LabelError(f"unreadable primary header ({type(error).__name__}: {error})") from error
    parts = path.name.split("-")
    from_name = f"{parts[1]}-{parts[2]}" if len(parts) >= 3 and parts[0] == "manga" else path.name.split(".")[0]
    plateifu = str(header.get("PLATEIFU", "")).strip() or from_name
    return plateifu, str(header.get("MANGAID", "")).strip()


def match_catalog(
    catalog,
    galaxies: Sequence[Mapping],
    *,
    key: str,
    columns: Sequence[str],
    catalog_key: str | None = None,
    source: str = "catalogue",
) -> MatchResult:
    """Join label columns of a catalogue to survey galaxies by plate-IFU or MaNGA-ID.

    Parameters
    ----------
    catalog : astropy.table.Table
        From :func:`read_catalog`.
    galaxies : sequence of mapping
        From :func:`survey_galaxies`: ``plateifu`` and ``mangaid`` of each galaxy.
    key : {'plateifu', 'mangaid'}
        What identifies a galaxy. By MaNGA-ID, every plate-IFU of a galaxy observed more
        than once gets its catalogue row.
    columns : sequence of str
        Catalogue columns to keep (exact name, else the one name that matches ignoring case).
    catalog_key : str, optional
        The catalogue's key column when it is not named like ``key`` (case ignored).
    source : str
        The catalogue's name in error messages.

    Returns
    -------
    MatchResult
        Rows ``plateifu, mangaid, *columns`` of the matched galaxies (masked values empty),
        the catalogue keys absent from the survey and the survey galaxies without a row.

    Raises
    ------
    LabelError
        A column is missing (the message lists the available ones), or one key appears
        in several rows with different values (the message names the keys).

    Examples
    --------
    >>> from astropy.table import Table
    >>> catalog = Table({"MANGAID": ["1-1", "1-2"], "AGN": ["yes", "no"]})
    >>> galaxies = [{"plateifu": "7815-3702", "mangaid": "1-1"}, {"plateifu": "7815-6101", "mangaid": "1-1"}]
    >>> result = match_catalog(catalog, galaxies, key="mangaid", columns=["AGN"])
    >>> [row["plateifu"] + " " + row["AGN"] for row in result.table.rows], result.unmatched_catalog
    (['7815-3702 yes', '7815-6101 yes'], ['1-2'])
    """
    if key not in _KEYS:
        raise LabelError(f"key must be one of {_KEYS}. Received: {key!r}")
    if not columns:
        raise LabelError("name at least one catalogue column to keep")
    clashing = [name for name in columns if name.lower() in _KEYS]
    if clashing:
        raise LabelError(f"columns {clashing} are written from the survey (plateifu, mangaid): name label columns")
    if key == "mangaid":
        without = [galaxy["plateifu"] for galaxy in galaxies if not galaxy.get("has_mangaid", True)]
        if without:
            raise LabelError(f"{len(without)} galaxies (e.g. {without[0]}) come from records whose index.csv has no "
                             "mangaid column: match by plateifu, or give the MAPS files")
    key_column = _column(catalog, catalog_key or key, source)
    label_columns = [_column(catalog, name, source) for name in columns]
    for name in label_columns:
        if catalog[name].ndim > 1:
            raise LabelError(f"{source}: column {name!r} holds arrays of shape {catalog[name].shape[1:]} per row, "
                             "not one value")

    values: dict[str, tuple[str, ...]] = {}
    conflicts: dict[str, set[tuple[str, ...]]] = {}
    without_key = 0
    for index in range(len(catalog)):
        identifier = _cell(catalog[key_column], index)
        if not identifier:
            without_key += 1
            continue
        row = tuple(_cell(catalog[name], index) for name in label_columns)
        if identifier in values and values[identifier] != row:
            conflicts.setdefault(identifier, {values[identifier]}).add(row)
        values.setdefault(identifier, row)
    if conflicts:
        listed = "; ".join(f"{identifier}: {' | '.join(', '.join(v) for v in sorted(rows))}"
                           for identifier, rows in sorted(conflicts.items())[:_LISTED])
        more = f" and {len(conflicts) - _LISTED} more" if len(conflicts) > _LISTED else ""
        raise LabelError(f"{source}: {len(conflicts)} {key} value(s) appear in several rows with different "
                         f"{', '.join(label_columns)}: {listed}{more}")

    rows, unmatched_galaxies, used = [], [], set()
    for galaxy in galaxies:
        identifier = str(galaxy.get(key) or "").strip()
        if identifier in values:
            used.add(identifier)
            rows.append({"plateifu": galaxy["plateifu"], "mangaid": galaxy.get("mangaid", ""),
                         **dict(zip(columns, values[identifier]))})
        else:
            unmatched_galaxies.append(galaxy["plateifu"])
    unmatched_catalog = sorted(set(values) - used)
    table = LabelTable(("plateifu", "mangaid", *columns), rows)
    return MatchResult(table, key, unmatched_catalog, unmatched_galaxies, without_key)


def _column(table, name: str, source: str) -> str:
    """The table's column called ``name``: exact, else the only one equal ignoring case."""
    if name in table.colnames:
        return name
    folded = [column for column in table.colnames if column.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise LabelError(f"{source}: no column {name!r}; available columns: {', '.join(table.colnames)}")


def _cell(column, index: int) -> str:
    """One catalogue value as CSV text: masked -> '', floats exact, strings stripped."""
    value = column[index]
    if np.ma.is_masked(value):
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, (float, np.floating)):
        # NaN is a missing value, not a class called "nan".
        return repr(float(value)) if np.isfinite(value) else ""
    if isinstance(value, (np.integer, np.bool_)):
        return str(value.item())
    return str(value).strip()


# ----------------------------------------------------------------------------- writing


def failures_path(out: str | os.PathLike) -> Path:
    """Where the failures of a labels CSV go: ``labels.csv`` -> ``labels.failures.csv``."""
    out = Path(out)
    stem = out.name[: -len(".csv")] if out.name.lower().endswith(".csv") else out.name
    return out.with_name(f"{stem}.failures.csv")


def write_label_table(table: LabelTable, out: str | os.PathLike) -> Path:
    """Write the labels CSV and, beside it, the failures CSV (path, reason; header only if none).

    Numbers are written with 6 significant digits, unknown ones as ``nan``. Both files
    are replaced atomically. Returns the failures CSV's path.
    """
    out = Path(out)
    if out.parent and not out.parent.exists():
        raise LabelError(f"{out}: the directory {out.parent} does not exist")
    atomic_write_csv(out, table.columns, ([_text(row.get(name, "")) for name in table.columns] for row in table.rows))
    failed = failures_path(out)
    atomic_write_csv(failed, ("path", "reason"), ([item["path"], item["reason"]] for item in table.failures))
    return failed


def _text(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "nan" if not np.isfinite(value) else f"{float(value):.6g}"
    return str(value)
