"""Which MaNGA cubes to analyse, from the DRPall and DAPall catalogues, and where their MAPS files are.

The SDSS Science Archive Server (SAS) lists every observed plate-IFU in two summary
catalogues: the DRPall file (one row per reduced cube: targeting bits, quality, NSA
redshift and shape) and the DAPall file (one row per cube and DAP analysis type: DAP
quality, signal-to-noise). :func:`select_sample` reads them and returns one row per cube
to analyse, with the path of its MAPS file relative to the SAS root
(:func:`maps_path`); :func:`write_sample_csv` writes that sample for ``ifskeras survey
fetch``.

Facts used here, checked against the MaNGA data model (sdss/mangadap, idlutils
``sdssMaskbits.par``):

- MANGA_TARGET1 bits of the main sample: PRIMARY_v1_2_0 = 10, SECONDARY_v1_2_0 = 11,
  COLOR_ENHANCED_v1_2_0 = 12 (:data:`TARGET_BITS`);
- MANGA_DRP3QUAL and MANGA_DAPQUAL both flag a critical failure with bit 30 (CRITICAL);
- the DR17 DRPall keeps galaxy cubes in the extension named ``MANGA`` (MaStar stars in
  ``MASTAR``); DR15's has them in extension 1. Column names are lower case in the DRPall and
  upper case in the DAPall: columns are matched case-insensitively;
- the DR17 DAPall has one extension per DAPTYPE, named after it; the DR15 DAPall one table
  with a ``DAPTYPE`` column. Both layouts are read;
- missing values are -9999 (e.g. the NSA columns of non-NSA targets).

Nothing here downloads anything or imports TensorFlow.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from ifskeras.common.errors import FileProblemError
from ifskeras.common.files import atomic_write_bytes

__all__ = [
    "Release",
    "RELEASES",
    "TARGET_BITS",
    "DEFAULT_TARGETS",
    "DRP3QUAL_CRITICAL_BIT",
    "DAPQUAL_CRITICAL_BIT",
    "MISSING_VALUE",
    "SAMPLE_COLUMNS",
    "CatalogueError",
    "SelectionOptions",
    "Cut",
    "Selection",
    "DrpCatalogue",
    "DapCatalogue",
    "maps_path",
    "read_drpall",
    "read_dapall",
    "read_effective_radii",
    "select_cubes",
    "select_sample",
    "write_sample_csv",
]


@dataclass(frozen=True)
class Release:
    """A data release: its DRP and DAP versions, the DAP analysis types it holds and the default one."""

    name: str
    drp_version: str
    dap_version: str
    daptypes: tuple[str, ...]
    default_daptype: str


#: Releases with DAP MAPS files on the SAS. HYB10 fits emission lines on single spaxels
#: (only the stellar continuum is binned), which is what the maps need.
RELEASES: Mapping[str, Release] = MappingProxyType({
    "dr17": Release("dr17", "v3_1_1", "3.1.0",
                    ("SPX-MILESHC-MASTARSSP", "VOR10-MILESHC-MASTARSSP", "HYB10-MILESHC-MASTARSSP",
                     "HYB10-MILESHC-MASTARHC2"),
                    "HYB10-MILESHC-MASTARSSP"),
    "dr15": Release("dr15", "v2_4_3", "2.2.1",
                    ("SPX-GAU-MILESHC", "VOR10-GAU-MILESHC", "HYB10-GAU-MILESHC"),
                    "HYB10-GAU-MILESHC"),
})
#: MANGA_TARGET1 bits of the main galaxy sample (targeting version v1_2_0).
TARGET_BITS: Mapping[str, int] = MappingProxyType({"primary": 10, "secondary": 11, "colour-enhanced": 12})
#: The main sample: Primary, Secondary and Colour-Enhanced targets.
DEFAULT_TARGETS: tuple[str, ...] = tuple(TARGET_BITS)
#: CRITICAL bit of MANGA_DRP3QUAL: critical failure in one or more frames.
DRP3QUAL_CRITICAL_BIT = 30
#: CRITICAL bit of MANGA_DAPQUAL: critical failure in the DRP or the DAP.
DAPQUAL_CRITICAL_BIT = 30
#: What the catalogues write where a value is unknown.
MISSING_VALUE = -9999.0
#: Columns of the sample CSV, in order.
SAMPLE_COLUMNS: tuple[str, ...] = (
    "plateifu", "mangaid", "plate", "ifudesign", "z", "re_arcsec", "ba", "ifu_fibres", "release", "daptype", "path",
)

#: Accepted spellings of the target samples (the bit is spelled COLOR_ENHANCED).
_TARGET_ALIASES = {"color-enhanced": "colour-enhanced", "colour_enhanced": "colour-enhanced",
                   "color_enhanced": "colour-enhanced", "primary+": "colour-enhanced"}
#: ``--targets any`` keeps every cube, ancillary targets included.
_ANY_TARGET = "any"
#: The DAPall SNR_MED column holds the median S/N in g, r, i, z: r is the one used.
_SNR_R_INDEX = 1


class CatalogueError(FileProblemError):
    """A DRPall or DAPall file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class SelectionOptions:
    """How to choose cubes; the defaults give the main sample of DR17, one cube per galaxy.

    ``targets`` names samples from :data:`TARGET_BITS` (or ``("any",)`` for no target cut);
    ``daptype`` defaults to the release's HYB10 analysis; ``drop_critical`` removes cubes
    with the CRITICAL bit of DRP3QUAL (and of DAPQUAL when a DAPall is given); ``z_min``,
    ``z_max`` and ``ba_min`` are inclusive limits (None: no cut; a cut drops unknown values);
    ``one_per_galaxy`` keeps one cube per MANGAID (see :func:`select_cubes`).
    """

    release: str = "dr17"
    daptype: str | None = None
    targets: tuple[str, ...] = DEFAULT_TARGETS
    drop_critical: bool = True
    z_min: float | None = None
    z_max: float | None = None
    ba_min: float | None = None
    one_per_galaxy: bool = True

    def __post_init__(self):
        release = str(self.release).lower()
        if release not in RELEASES:
            raise ValueError(f"release must be one of {', '.join(RELEASES)}. Received: {self.release!r}")
        object.__setattr__(self, "release", release)
        info = RELEASES[release]
        daptype = (self.daptype or info.default_daptype).upper()
        if daptype not in info.daptypes:
            raise ValueError(f"daptype of {release} must be one of {', '.join(info.daptypes)}. "
                             f"Received: {self.daptype!r}")
        object.__setattr__(self, "daptype", daptype)
        object.__setattr__(self, "targets", _normalised_targets(self.targets))
        for name in ("z_min", "z_max", "ba_min"):
            value = getattr(self, name)
            if value is not None and not np.isfinite(value):
                raise ValueError(f"{name} must be a finite number or None. Received: {value!r}")
        if self.z_min is not None and self.z_max is not None and self.z_min > self.z_max:
            raise ValueError(f"z_min must not exceed z_max. Received: z_min={self.z_min}, z_max={self.z_max}")


@dataclass(frozen=True)
class Cut:
    """One step of the selection: how many cubes it removed and how many were left."""

    name: str
    removed: int
    remaining: int


@dataclass(frozen=True)
class Selection:
    """The chosen cubes (rows keyed by :data:`SAMPLE_COLUMNS`, sorted by plate and IFU) and the cuts made."""

    rows: tuple[dict, ...]
    cuts: tuple[Cut, ...]
    catalogue_rows: int
    options: SelectionOptions


@dataclass(frozen=True)
class DrpCatalogue:
    """The DRPall columns the selection needs, one entry per cube, in native types.

    Strings are stripped ``str``; unknown floats are NaN. ``mngtarg1``, ``drp3qual`` and
    ``sn2`` (BLUESN2 + REDSN2) are None when the file lacks them.
    """

    path: str
    plateifu: np.ndarray
    mangaid: np.ndarray
    plate: np.ndarray
    ifudesign: np.ndarray
    ifu_fibres: np.ndarray
    z: np.ndarray
    re_arcsec: np.ndarray
    ba: np.ndarray
    mngtarg1: np.ndarray | None = None
    drp3qual: np.ndarray | None = None
    sn2: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.plateifu)


@dataclass(frozen=True)
class DapCatalogue:
    """The DAPall rows of one DAPTYPE, by plate-IFU: quality, whether the DAP finished, r-band S/N."""

    path: str
    daptype: str
    plateifu: np.ndarray
    dapqual: np.ndarray | None = None
    dapdone: np.ndarray | None = None
    snr_r: np.ndarray | None = None
    index: dict = field(default_factory=dict, repr=False)


# ----------------------------------------------------------------------------- SAS paths


def maps_path(release: str, plate: int, ifudesign: int, daptype: str | None = None) -> str:
    """Path of a MAPS file relative to the SAS root, e.g. for ``https://data.sdss.org/sas/``.

    Examples
    --------
    >>> maps_path("dr17", 8143, 3701)
    'dr17/manga/spectro/analysis/v3_1_1/3.1.0/HYB10-MILESHC-MASTARSSP/8143/3701/manga-8143-3701-MAPS-HYB10-MILESHC-MASTARSSP.fits.gz'
    >>> maps_path("dr15", 7443, 12701)
    'dr15/manga/spectro/analysis/v2_4_3/2.2.1/HYB10-GAU-MILESHC/7443/12701/manga-7443-12701-MAPS-HYB10-GAU-MILESHC.fits.gz'
    """
    options = SelectionOptions(release=release, daptype=daptype)
    info = RELEASES[options.release]
    plate, ifudesign = int(plate), int(ifudesign)
    return (f"{info.name}/manga/spectro/analysis/{info.drp_version}/{info.dap_version}/{options.daptype}/"
            f"{plate}/{ifudesign}/manga-{plate}-{ifudesign}-MAPS-{options.daptype}.fits.gz")


# ----------------------------------------------------------------------------- reading the catalogues


def read_drpall(path: str | os.PathLike) -> DrpCatalogue:
    """Read the columns the selection needs from a DRPall file (DR15 or DR17 layout).

    The galaxy table is the extension named ``MANGA`` (DR17), else the first table with a
    ``plateifu`` column (DR15: extension 1). Required columns: ``plateifu``, ``mangaid``,
    ``z`` or ``nsa_z``, ``nsa_elpetro_th50_r``, ``nsa_elpetro_ba``. ``plate``, ``ifudsgn`` and
    ``ifudesignsize`` are taken from the plate-IFU when absent (an IFU design's leading
    digits are its bundle size: 12701 has 127 fibres).

    Raises
    ------
    CatalogueError
        The file is missing or unreadable, has no galaxy table, or lacks a required column.
    """
    path = Path(path)
    with _open_fits(path) as hdul:
        hdu = _drpall_table(hdul, path)
        columns = _ColumnReader(hdu, path)
        plateifu = columns.strings("plateifu")
        parsed = _parse_plateifus(plateifu, path)
        plate = columns.integers("plate") if columns.has("plate") else parsed[:, 0]
        ifudesign = (np.array([_integer_or(value, -1) for value in columns.strings("ifudsgn")])
                     if columns.has("ifudsgn") else parsed[:, 1])
        ifu_fibres = columns.integers("ifudesignsize") if columns.has("ifudesignsize") else ifudesign // 100
        redshift_column = "z" if columns.has("z") else "nsa_z"
        sn2 = (columns.floats("bluesn2") + columns.floats("redsn2")
               if columns.has("bluesn2") and columns.has("redsn2") else None)
        return DrpCatalogue(
            path=str(path),
            plateifu=plateifu,
            mangaid=columns.strings("mangaid"),
            plate=plate,
            ifudesign=ifudesign,
            ifu_fibres=ifu_fibres,
            z=columns.floats(redshift_column, also_named="'z' or 'nsa_z'"),
            re_arcsec=columns.floats("nsa_elpetro_th50_r"),
            ba=columns.floats("nsa_elpetro_ba"),
            mngtarg1=columns.integers("mngtarg1") if columns.has("mngtarg1") else None,
            drp3qual=columns.integers("drp3qual") if columns.has("drp3qual") else None,
            sn2=sn2,
        )


#: Where a catalogue keeps the effective radius, in the order looked for: the sample written
#: by ``survey select``, the DRPall (NSA elliptical Petrosian 50% light radius, r band).
_RADIUS_COLUMNS = ("re_arcsec", "nsa_elpetro_th50_r")
#: Spaxel side of the synthetic surveys' maps (as MaNGA's), arcsec.
_SYNTH_SPAXEL_ARCSEC = 0.5


def read_effective_radii(path: str | os.PathLike) -> dict[str, float]:
    """Effective radius in arcsec of each plate-IFU listed in a catalogue.

    Read from a DRPall FITS file (``nsa_elpetro_th50_r``), a sample CSV written by
    ``ifskeras survey select`` (``re_arcsec``), any FITS, CSV or ECSV table with
    ``plateifu`` and one of those columns, or a synthetic survey's ``catalog.csv``/
    ``catalog.fits`` (from ``map_size`` and ``size_factor``:
    :func:`ifskeras.survey.synth.effective_radius_spaxels`, 0.5 arcsec spaxels).
    Unknown radii (empty, NaN, <= 0, the catalogues' -9999) are left out.

    Raises
    ------
    CatalogueError
        The file is missing or unreadable, has no ``plateifu`` or radius column, or gives
        one plate-IFU two different radii.
    """
    path = Path(path)
    if _is_fits(path):
        with _open_fits(path) as hdul:
            reader = _ColumnReader(_drpall_table(hdul, path), path)
            columns = {name: (reader.strings if name == "plateifu" else reader.floats)(name)
                       for name in ("plateifu", *_RADIUS_COLUMNS, "map_size", "size_factor") if reader.has(name)}
    else:
        columns = _csv_columns(path)
    if "plateifu" not in columns:
        raise CatalogueError(path, "no 'plateifu' column" if columns else "no rows (or no header)")
    radius_column = next((name for name in _RADIUS_COLUMNS if name in columns), None)
    if radius_column is not None:
        radii = np.asarray(columns[radius_column], dtype=np.float64)
    elif "map_size" in columns and "size_factor" in columns:
        from ifskeras.survey.synth.galaxy import effective_radius_spaxels

        size = np.asarray(columns["map_size"], dtype=np.float64)
        factor = np.asarray(columns["size_factor"], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            radii = effective_radius_spaxels(size, factor) * _SYNTH_SPAXEL_ARCSEC
    else:
        raise CatalogueError(path, "no effective-radius column: expected one of "
                                   f"{', '.join(_RADIUS_COLUMNS)}, or map_size and size_factor (a synthetic survey)")
    found: dict[str, float] = {}
    for plateifu, radius in zip(np.asarray(columns["plateifu"], dtype=str).tolist(), radii.tolist()):
        plateifu = plateifu.strip()
        if not plateifu or not np.isfinite(radius) or radius <= 0:
            continue
        if found.setdefault(plateifu, radius) != radius:
            raise CatalogueError(path, f"plate-IFU {plateifu} has two effective radii ({found[plateifu]:g} and "
                                       f"{radius:g} arcsec)")
    return found


def _is_fits(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".fits", ".fits.gz", ".fit", ".fts"))


def _csv_columns(path: Path) -> dict[str, list]:
    """Columns of a CSV (through ``csv``) or ECSV (through astropy) file by lower-case name; numbers as floats."""
    if path.name.lower().endswith(".ecsv"):
        from astropy.table import Table

        try:
            table = Table.read(path, format="ascii.ecsv")
        except FileNotFoundError:
            raise CatalogueError(path, "file does not exist") from None
        except (OSError, ValueError) as error:
            raise CatalogueError(path, f"not a readable ECSV table ({type(error).__name__}: {error})") from error
        rows = [{name: ("" if value is np.ma.masked else value) for name, value in zip(table.colnames, row)}
                for row in table]
    else:
        try:
            # -sig: spreadsheets write a byte-order mark before the header.
            with open(path, newline="", encoding="utf-8-sig") as stream:
                rows = list(csv.DictReader(stream))
        except FileNotFoundError:
            raise CatalogueError(path, "file does not exist") from None
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise CatalogueError(path, f"cannot read ({type(error).__name__}: {error})") from error
    columns: dict[str, list] = {}
    for name in (rows[0].keys() if rows else []):
        key = str(name).strip().lower()
        values = [row[name] for row in rows]
        columns[key] = [str(v) for v in values] if key == "plateifu" else [_float_or_nan(v) for v in values]
    return columns


def _float_or_nan(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def read_dapall(path: str | os.PathLike, daptype: str) -> DapCatalogue:
    """Read the DAPall rows of one DAPTYPE (DR17: its own extension; DR15: rows of the one table).

    Required column: ``PLATEIFU``; ``DAPQUAL``, ``DAPDONE`` and ``SNR_MED`` are read when present.

    Raises
    ------
    CatalogueError
        No extension or rows of that DAPTYPE, or a required column is missing.
    """
    path = Path(path)
    daptype = daptype.upper()
    with _open_fits(path) as hdul:
        tables = [hdu for hdu in hdul[1:] if hasattr(hdu, "columns")]
        named = [hdu for hdu in tables if hdu.name.upper() == daptype]
        if named:
            hdu, rows = named[0], None
        else:
            with_type = [hdu for hdu in tables if "DAPTYPE" in {name.upper() for name in hdu.columns.names}]
            if not with_type:
                present = ", ".join(hdu.name or "(unnamed)" for hdu in hdul)
                raise CatalogueError(path, f"no extension named {daptype} and no table with a DAPTYPE column "
                                           f"(extensions: {present}); is this a DAPall file?")
            hdu = with_type[0]
            types = _ColumnReader(hdu, path).strings("DAPTYPE")
            rows = np.flatnonzero(np.char.upper(types.astype(str)) == daptype)
            if rows.size == 0:
                found = ", ".join(sorted(set(types.tolist()))) or "none"
                raise CatalogueError(path, f"no rows with DAPTYPE {daptype} (DAPTYPEs in the file: {found}); "
                                           f"choose the release and --daptype of this DAPall")
        columns = _ColumnReader(hdu, path, rows=rows)
        plateifu = columns.strings("PLATEIFU")
        snr_r = None
        if columns.has("SNR_MED"):
            snr = columns.floats("SNR_MED")
            snr_r = snr[:, _SNR_R_INDEX] if snr.ndim == 2 and snr.shape[1] > _SNR_R_INDEX else snr.reshape(-1)
        index: dict[str, int] = {}
        for position, name in enumerate(plateifu.tolist()):
            index.setdefault(name, position)  # one row per plate-IFU and DAPTYPE; keep the first if repeated
        return DapCatalogue(
            path=str(path),
            daptype=daptype,
            plateifu=plateifu,
            dapqual=columns.integers("DAPQUAL") if columns.has("DAPQUAL") else None,
            dapdone=columns.booleans("DAPDONE") if columns.has("DAPDONE") else None,
            snr_r=snr_r,
            index=index,
        )


# ----------------------------------------------------------------------------- selection


def select_cubes(drp: DrpCatalogue, dap: DapCatalogue | None = None,
                 options: SelectionOptions | None = None) -> Selection:
    """Apply the cuts of ``options`` to a DRPall (and DAPall) catalogue; one row per chosen cube.

    Cuts, in order (each reports how many cubes it removed):

    1. targets: MNGTARG1 has none of the chosen sample bits;
    2. DRP3QUAL CRITICAL (bit 30), unless ``drop_critical`` is False;
    3. with a DAPall: not in the DAPall for this DAPTYPE, DAPDONE false, DAPQUAL CRITICAL (bit 30);
    4. z outside [z_min, z_max]; b/a below ba_min (unknown values fail a requested cut);
    5. repeat observations: of the cubes of one MANGAID left after the cuts above, keep the
       one with the largest IFU bundle; then the highest S/N (DAPall SNR_MED in r when a
       DAPall is given, else DRPall BLUESN2 + REDSN2); then the lowest plate, then IFU design.

    Raises
    ------
    CatalogueError
        A cut needs a column the catalogue lacks (e.g. MNGTARG1 for the target cut).
    """
    options = options or SelectionOptions()
    n = len(drp)
    keep = np.ones(n, dtype=bool)
    cuts: list[Cut] = []

    def cut(name: str, passes: np.ndarray) -> None:
        nonlocal keep
        removed = int(np.count_nonzero(keep & ~passes))
        keep = keep & passes
        cuts.append(Cut(name, removed, int(np.count_nonzero(keep))))

    if options.targets != (_ANY_TARGET,):
        if drp.mngtarg1 is None:
            raise CatalogueError(drp.path, "no column 'mngtarg1' (needed for the target cut; "
                                           "use targets 'any' to keep every cube)")
        bits = sum(1 << TARGET_BITS[name] for name in options.targets)
        cut(f"not a {'/'.join(options.targets)} target (MNGTARG1)", (drp.mngtarg1 & bits) != 0)
    if options.drop_critical:
        if drp.drp3qual is None:
            raise CatalogueError(drp.path, "no column 'drp3qual' (needed for the quality cut; "
                                           "use --keep-critical to skip it)")
        cut("DRP3QUAL CRITICAL", (drp.drp3qual >> DRP3QUAL_CRITICAL_BIT) & 1 == 0)

    dap_rows = np.full(n, -1)
    if dap is not None:
        dap_rows = np.array([dap.index.get(name, -1) for name in drp.plateifu.tolist()], dtype=np.int64)
        in_dap = dap_rows >= 0
        cut(f"not in the DAPall as {dap.daptype}", in_dap)
        if dap.dapdone is not None:
            cut("DAP did not finish (DAPDONE false)", in_dap & dap.dapdone[np.maximum(dap_rows, 0)])
        if options.drop_critical:
            if dap.dapqual is None:
                raise CatalogueError(dap.path, "no column 'DAPQUAL' (needed for the quality cut; "
                                               "use --keep-critical to skip it)")
            dapqual = dap.dapqual[np.maximum(dap_rows, 0)]
            cut("DAPQUAL CRITICAL", ~in_dap | ((dapqual >> DAPQUAL_CRITICAL_BIT) & 1 == 0))

    if options.z_min is not None or options.z_max is not None:
        low = -np.inf if options.z_min is None else options.z_min
        high = np.inf if options.z_max is None else options.z_max
        with np.errstate(invalid="ignore"):
            cut(f"z outside [{_limit(options.z_min, '-inf')}, {_limit(options.z_max, 'inf')}] or unknown",
                np.isfinite(drp.z) & (drp.z >= low) & (drp.z <= high))
    if options.ba_min is not None:
        with np.errstate(invalid="ignore"):
            cut(f"b/a below {options.ba_min:g} or unknown", np.isfinite(drp.ba) & (drp.ba >= options.ba_min))

    if options.one_per_galaxy:
        snr = _tie_break_snr(drp, dap, dap_rows)
        cut("repeat observation of a MANGAID", _best_cube_per_galaxy(drp, snr, keep))

    chosen = np.flatnonzero(keep)
    chosen = chosen[np.lexsort((drp.ifudesign[chosen], drp.plate[chosen]))]
    rows = tuple(_sample_row(drp, i, options) for i in chosen)
    return Selection(rows=rows, cuts=tuple(cuts), catalogue_rows=n, options=options)


def select_sample(drpall: str | os.PathLike, dapall: str | os.PathLike | None = None,
                  options: SelectionOptions | None = None) -> Selection:
    """Read the catalogues and apply :func:`select_cubes`.

    Examples
    --------
    >>> selection = select_sample("drpall-v3_1_1.fits", "dapall-v3_1_1-3.1.0.fits")  # doctest: +SKIP
    >>> selection.rows[0]["path"]  # doctest: +SKIP
    'dr17/manga/spectro/analysis/v3_1_1/3.1.0/HYB10-MILESHC-MASTARSSP/7443/12701/manga-7443-12701-MAPS-HYB10-MILESHC-MASTARSSP.fits.gz'
    """
    options = options or SelectionOptions()
    drp = read_drpall(drpall)
    dap = read_dapall(dapall, options.daptype) if dapall is not None else None
    return select_cubes(drp, dap, options)


def write_sample_csv(path: str | os.PathLike, rows: Iterable[Mapping]) -> Path:
    """Write sample rows (:data:`SAMPLE_COLUMNS`) as CSV, atomically; unknown numbers become empty cells."""
    path = Path(path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SAMPLE_COLUMNS)
    for row in rows:
        writer.writerow([_csv_value(row[column]) for column in SAMPLE_COLUMNS])
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue().encode())
    return path


# ----------------------------------------------------------------------------- helpers


def _normalised_targets(targets: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(targets, str):
        targets = targets.split(",")
    names = []
    for target in targets:
        name = str(target).strip().lower()
        if not name:
            continue
        name = _TARGET_ALIASES.get(name, name)
        if name not in (*TARGET_BITS, _ANY_TARGET):
            raise ValueError(f"targets must be among {', '.join(TARGET_BITS)} or '{_ANY_TARGET}'. "
                             f"Received: {target!r}")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError(f"targets must name at least one sample. Received: {targets!r}")
    if _ANY_TARGET in names:
        if len(names) > 1:
            raise ValueError(f"'{_ANY_TARGET}' keeps every target and cannot be combined. Received: {targets!r}")
        return (_ANY_TARGET,)
    return tuple(name for name in TARGET_BITS if name in names)


def _open_fits(path: Path):
    from astropy.io import fits

    if not path.exists():
        raise CatalogueError(path, "file does not exist")
    try:
        return fits.open(path, memmap=True)
    except (OSError, ValueError, TypeError) as error:
        raise CatalogueError(path, f"not a readable FITS file ({type(error).__name__}: {error})") from error


def _drpall_table(hdul, path: Path):
    tables = [hdu for hdu in hdul[1:] if hasattr(hdu, "columns")]
    for hdu in tables:
        if hdu.name.upper() == "MANGA":
            return hdu
    for hdu in tables:
        if "plateifu" in {name.lower() for name in hdu.columns.names}:
            return hdu
    present = ", ".join(hdu.name or "(unnamed)" for hdu in hdul)
    raise CatalogueError(path, f"no galaxy table: no extension named MANGA and no table with a 'plateifu' "
                               f"column (extensions: {present}); is this a DRPall file?")


class _ColumnReader:
    """Columns of one FITS table by case-insensitive name, optionally a subset of rows, in native types."""

    def __init__(self, hdu, path: Path, rows: np.ndarray | None = None):
        self._hdu = hdu
        self._path = path
        self._rows = rows
        self._names = {name.lower(): name for name in hdu.columns.names}

    def has(self, name: str) -> bool:
        return name.lower() in self._names

    def _raw(self, name: str, also_named: str | None = None) -> np.ndarray:
        if not self.has(name):
            wanted = also_named or f"'{name}'"
            raise CatalogueError(self._path, f"no column {wanted} in extension {self._hdu.name or '1'}")
        try:
            data = np.asarray(self._hdu.data[self._names[name.lower()]])
        except (OSError, ValueError, TypeError, IndexError) as error:
            raise CatalogueError(self._path, f"cannot read column '{name}' ({type(error).__name__}: {error})") \
                from error
        return data if self._rows is None else data[self._rows]

    def strings(self, name: str) -> np.ndarray:
        data = self._raw(name)
        if data.dtype.kind == "S":
            data = np.char.decode(data, "ascii", errors="replace")
        return np.char.strip(data.astype(str))

    def integers(self, name: str) -> np.ndarray:
        data = self._raw(name)
        if data.dtype.kind not in "iub":
            raise CatalogueError(self._path, f"column '{name}' holds {data.dtype} values, expected integers")
        return data.astype(np.int64)

    def floats(self, name: str, also_named: str | None = None) -> np.ndarray:
        data = self._raw(name, also_named)
        if data.dtype.kind not in "iuf":
            raise CatalogueError(self._path, f"column '{name}' holds {data.dtype} values, expected numbers")
        # Kept in the file's precision (float32 mostly), so that limits given as Python floats
        # compare in that precision too: z_max=0.1 keeps a z stored as float32(0.1).
        values = data.astype(data.dtype.newbyteorder("=") if data.dtype.kind == "f" else np.float64)
        values[values <= MISSING_VALUE] = np.nan  # the catalogues' "unknown"
        return values

    def booleans(self, name: str) -> np.ndarray:
        data = self._raw(name)
        if data.dtype.kind == "S":  # a FITS logical read as characters
            return np.char.strip(data) == b"T"
        return data.astype(bool)


def _parse_plateifus(plateifu: np.ndarray, path: Path) -> np.ndarray:
    parsed = np.empty((len(plateifu), 2), dtype=np.int64)
    for row, name in enumerate(plateifu.tolist()):
        plate, sep, ifu = name.partition("-")
        if not (sep and plate.isdigit() and ifu.isdigit()):
            raise CatalogueError(path, f"row {row}: plateifu {name!r} is not PLATE-IFUDESIGN")
        parsed[row] = int(plate), int(ifu)
    return parsed


def _integer_or(text: str, default: int) -> int:
    return int(text) if text.strip().isdigit() else default


def _tie_break_snr(drp: DrpCatalogue, dap: DapCatalogue | None, dap_rows: np.ndarray) -> np.ndarray:
    """S/N that decides between repeat cubes of equal bundle size; higher wins, unknown loses."""
    if dap is not None and dap.snr_r is not None:
        snr = np.where(dap_rows >= 0, dap.snr_r[np.maximum(dap_rows, 0)], np.nan)
    elif drp.sn2 is not None:
        snr = drp.sn2
    else:
        return np.zeros(len(drp))
    return np.where(np.isfinite(snr), snr, -np.inf)


def _best_cube_per_galaxy(drp: DrpCatalogue, snr: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """True for the chosen cube of each MANGAID among ``keep`` (and for every cube not in ``keep``)."""
    candidates = np.flatnonzero(keep)
    # A cube without a MANGAID is a galaxy of its own, never a repeat of another blank one.
    mangaid = np.asarray(drp.mangaid, dtype=str)
    galaxy = np.where(np.char.strip(mangaid) != "", mangaid, np.char.add("plateifu:", np.asarray(drp.plateifu, dtype=str)))
    # lexsort sorts by the last key first: galaxy, larger bundle, higher S/N, plate, IFU design.
    order = np.lexsort((drp.ifudesign[candidates], drp.plate[candidates], -snr[candidates],
                        -drp.ifu_fibres[candidates], galaxy[candidates]))
    ordered = candidates[order]
    first_of_galaxy = np.ones(len(ordered), dtype=bool)
    first_of_galaxy[1:] = galaxy[ordered][1:] != galaxy[ordered][:-1]
    passes = ~keep
    passes[ordered[first_of_galaxy]] = True
    return passes


def _sample_row(drp: DrpCatalogue, i: int, options: SelectionOptions) -> dict:
    plate, ifudesign = int(drp.plate[i]), int(drp.ifudesign[i])
    return {
        "plateifu": str(drp.plateifu[i]),
        "mangaid": str(drp.mangaid[i]),
        "plate": plate,
        "ifudesign": ifudesign,
        "z": float(drp.z[i]),
        "re_arcsec": float(drp.re_arcsec[i]),
        "ba": float(drp.ba[i]),
        "ifu_fibres": int(drp.ifu_fibres[i]),
        "release": options.release,
        "daptype": options.daptype,
        "path": maps_path(options.release, plate, ifudesign, options.daptype),
    }


def _csv_value(value) -> str:
    if isinstance(value, float):
        # 7 significant digits: the catalogues store these as float32.
        return f"{value:.7g}" if np.isfinite(value) else ""
    return str(value)


def _limit(value: float | None, unbounded: str) -> str:
    return unbounded if value is None else f"{value:g}"
