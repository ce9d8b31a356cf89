"""A whole synthetic survey on disc: :func:`make_survey` and its catalogue.

- the class mix (:data:`DEFAULT_CLASS_FRACTIONS`, :data:`REALISTIC_CLASS_FRACTIONS`,
  :func:`parse_class_fractions`, :func:`class_counts`);
- plates: plate-IFU names in MaNGA's IFU-design order and sky positions of the bundles;
- the directory: refusing or replacing an existing survey (:func:`existing_survey_files`,
  :class:`SurveyExistsError`), one MAPS file per galaxy
  (:func:`~ifskeras.survey.synth.dapfile.write_maps_file`), then ``catalog.csv`` and
  ``catalog.fits`` (:func:`catalog_columns`), all written atomically.

The survey variant (``classic`` or ``realistic``, :data:`~ifskeras.survey.synth.galaxy.VARIANTS`)
is named in each realistic file's ``SYNTHVAR`` card, in a ``variant`` column of its catalogue
and in the ``SYNTHVAR`` keyword of ``catalog.fits``; classic surveys are written exactly as
before variants existed (no card, no column), so a missing one means ``classic``.

Examples
--------
>>> summary = make_survey("synthetic-survey", 20, seed=1)  # doctest: +SKIP
>>> summary.counts["SF"]  # doctest: +SKIP
12
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from ifskeras.common.files import atomic_write_bytes, atomic_write_csv
from ifskeras.common.progress import progress_bar
from ifskeras.survey.synth.dapfile import VARIANT_CARD, maps_file_name, write_maps_file
from ifskeras.survey.synth.galaxy import CLASSES, DEFAULT_VARIANT, _dap_lines, _variant, make_galaxy
from ifskeras.survey.synth.instrument import PLATE_IFU_FIBRES

__all__ = [
    "DEFAULT_CLASS_FRACTIONS",
    "REALISTIC_CLASS_FRACTIONS",
    "CATALOG_COLUMNS",
    "REALISTIC_CATALOG_COLUMNS",
    "catalog_columns",
    "default_class_fractions",
    "SurveyExistsError",
    "SurveySummary",
    "make_survey",
    "parse_class_fractions",
    "class_counts",
    "existing_survey_files",
]

#: Survey-like mix of the classic variant: AGN about 5%, blueberry starbursts about 1%.
DEFAULT_CLASS_FRACTIONS: Mapping[str, float] = MappingProxyType(
    {"SF": 0.60, "composite": 0.13, "Seyfert": 0.05, "LINER": 0.09, "retired": 0.12, "blueberry": 0.01}
)
#: Mix of the realistic variant: retired galaxies 28%, about MaNGA's share of retired and
#: passive galaxies (25-30%); LINERs 8%; AGN and blueberries as in the classic mix.
REALISTIC_CLASS_FRACTIONS: Mapping[str, float] = MappingProxyType(
    {"SF": 0.46, "composite": 0.12, "Seyfert": 0.05, "LINER": 0.08, "retired": 0.28, "blueberry": 0.01}
)
_VARIANT_CLASS_FRACTIONS = {"classic": DEFAULT_CLASS_FRACTIONS, "realistic": REALISTIC_CLASS_FRACTIONS}
#: Columns of ``catalog.csv`` / ``catalog.fits``, in order. Angles in degrees (position angle
#: of the major axis from the +y axis), lengths in 0.5 arcsec spaxels: ``scale_length`` is the
#: exponential scale length of the disc (the Gaussian sigma of a blueberry before the PSF),
#: ``size_factor`` the bundle radius in effective radii; ``dust_av`` the central V-band
#: attenuation (mag); ``snr_level`` scales the inverse variance (1: Ha ivar ~1000 far from the
#: centre); ``ha_peak`` the noiseless Ha peak (1e-17 erg/s/cm^2/spaxel); ``agn_contrast`` the
#: AGN/host Ha peak ratio (Seyferts); ``log_*`` the generating line ratios at the nucleus
#: (the AGN component for Seyferts); ``defect`` DEADFIBER, FORESTAR or empty.
CATALOG_COLUMNS: tuple[str, ...] = (
    "plateifu", "mangaid", "class", "file", "ifu_fibres", "map_size", "inclination",
    "position_angle", "scale_length", "size_factor", "dust_av", "snr_level", "ha_peak",
    "n_clumps", "agn_contrast", "log_nii_ha", "log_oiii_hb", "log_sii_ha", "log_oi_ha",
    "defect", "ra", "dec",
)
#: Columns the realistic variant adds after :data:`CATALOG_COLUMNS`: ``variant``;
#: ``ha_total`` the noiseless Ha flux in the bundle; ``dig_level`` the central surface
#: brightness of the diffuse ionised gas relative to the disc (0: none); ``barred`` and
#: ``edge_on`` 1 or 0; ``agn_offset`` the distance of the AGN from the galaxy centre
#: (spaxels) and ``agn_fraction`` its share of the intrinsic Ha (Seyferts); ``companion_dx``,
#: ``companion_dy`` the sky offset of a companion's centre from the map centre (spaxels, along
#: columns and rows; both 0: no companion).
REALISTIC_CATALOG_COLUMNS: tuple[str, ...] = (
    "variant", "ha_total", "dig_level", "barred", "edge_on", "agn_offset", "agn_fraction",
    "companion_dx", "companion_dy",
)

_FIRST_PLATE = 10001


class SurveyExistsError(FileExistsError):
    """The output directory already holds a survey (MAPS files or a catalogue), listed in ``files``."""

    def __init__(self, out_dir: Path, files: Sequence[Path]):
        self.out_dir = Path(out_dir)
        self.files = tuple(files)
        super().__init__(
            f"{self.out_dir} already holds a survey ({len(self.files)} MAPS or catalogue files, e.g. "
            f"{self.files[0].name}); choose another directory or pass overwrite=True"
        )


@dataclass(frozen=True)
class SurveySummary:
    """What :func:`make_survey` wrote: one catalogue row per MAPS file, in the same order."""

    out_dir: Path
    paths: tuple[Path, ...]
    rows: tuple[dict, ...]
    catalog_csv: Path
    catalog_fits: Path
    seed: int
    dap: str
    seconds: float = 0.0
    variant: str = DEFAULT_VARIANT

    @property
    def counts(self) -> dict[str, int]:
        """Number of galaxies per class, in the order of :data:`CLASSES`."""
        found = [row["class"] for row in self.rows]
        return {name: found.count(name) for name in CLASSES if name in found}


# ----------------------------------------------------------------------------- class mix


def parse_class_fractions(text: str) -> dict[str, float]:
    """Read class fractions written as ``'SF=0.5,Seyfert=0.3,LINER=0.2'``.

    Class names are matched case-insensitively; the result is normalised by
    :func:`class_counts`, not here.

    Examples
    --------
    >>> parse_class_fractions("sf=0.7, seyfert=0.3")
    {'SF': 0.7, 'Seyfert': 0.3}
    """
    lookup = {name.lower(): name for name in CLASSES}
    fractions: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        key = lookup.get(name.strip().lower())
        if not sep or key is None:
            raise ValueError(
                f"Class fractions must look like 'SF=0.6,Seyfert=0.4' with classes from "
                f"{', '.join(CLASSES)}. Received: {text!r}"
            )
        try:
            fractions[key] = float(value)
        except ValueError:
            raise ValueError(f"Fraction of {key} is not a number. Received: {text!r}") from None
    return _validated_fractions(fractions)


def default_class_fractions(variant: str = DEFAULT_VARIANT) -> Mapping[str, float]:
    """Class mix of a survey variant: :data:`DEFAULT_CLASS_FRACTIONS` (classic) or
    :data:`REALISTIC_CLASS_FRACTIONS`.

    Examples
    --------
    >>> default_class_fractions("realistic")["retired"]
    0.28
    """
    return _VARIANT_CLASS_FRACTIONS[_variant(variant).name]


def catalog_columns(variant: str = DEFAULT_VARIANT) -> tuple[str, ...]:
    """Catalogue columns of a survey variant: :data:`CATALOG_COLUMNS`, plus
    :data:`REALISTIC_CATALOG_COLUMNS` for every variant but ``classic`` (whose catalogue
    stays as it was written before variants existed)."""
    name = _variant(variant).name
    return CATALOG_COLUMNS if name == "classic" else CATALOG_COLUMNS + REALISTIC_CATALOG_COLUMNS


def class_counts(n: int, class_fractions: Mapping[str, float] | None = None) -> dict[str, int]:
    """Galaxies per class for a survey of ``n``: fractions normalised, largest-remainder rounding.

    ``class_fractions`` defaults to the classic mix, :data:`DEFAULT_CLASS_FRACTIONS`.

    Examples
    --------
    >>> class_counts(100)
    {'SF': 60, 'composite': 13, 'Seyfert': 5, 'LINER': 9, 'retired': 12, 'blueberry': 1}
    """
    fractions = _validated_fractions(DEFAULT_CLASS_FRACTIONS if class_fractions is None else class_fractions)
    total = sum(fractions.values())
    exact = {name: n * fractions.get(name, 0.0) / total for name in CLASSES}
    counts = {name: int(np.floor(value)) for name, value in exact.items()}
    by_remainder = sorted(CLASSES, key=lambda name: (-(exact[name] - counts[name]), CLASSES.index(name)))
    for name in by_remainder[: n - sum(counts.values())]:
        counts[name] += 1
    return {name: count for name, count in counts.items() if name in fractions}


def _validated_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    unknown = [name for name in fractions if name not in CLASSES]
    if unknown:
        raise ValueError(f"Unknown classes {unknown}; known: {', '.join(CLASSES)}. Received: {dict(fractions)}")
    values = {name: float(value) for name, value in fractions.items()}
    if any(not np.isfinite(v) or v < 0 for v in values.values()) or sum(values.values()) <= 0:
        raise ValueError(f"Class fractions must be >= 0 and sum to more than 0. Received: {values}")
    return values


# ----------------------------------------------------------------------------- plates


def _plateifu(index: int) -> tuple[str, int]:
    """Plate-IFU name and bundle size of the ``index``-th galaxy (17 IFUs per plate)."""
    plate = _FIRST_PLATE + index // len(PLATE_IFU_FIBRES)
    slot = index % len(PLATE_IFU_FIBRES)
    fibres = PLATE_IFU_FIBRES[slot]
    design = fibres * 100 + PLATE_IFU_FIBRES[: slot + 1].count(fibres)
    return f"{plate}-{design}", fibres


def _plate_centres(rng, n_plates):
    """Plate centres spread over the northern sky (Dec -10 to +70 degrees)."""
    ra = rng.uniform(0.0, 360.0, n_plates)
    sin_dec = rng.uniform(np.sin(np.radians(-10.0)), np.sin(np.radians(70.0)), n_plates)
    return np.stack([ra, np.degrees(np.arcsin(sin_dec))], axis=1)


def _ifu_offsets(rng, n):
    """Offsets of IFUs from the plate centre within the 1.49 degree field, (radius, angle)."""
    return np.stack([1.49 * np.sqrt(rng.uniform(0, 1, n)), rng.uniform(0, 2 * np.pi, n)], axis=1)


def _offset_position(centre, offset):
    ra0, dec0 = centre
    radius, angle = offset
    dec = float(np.clip(dec0 + radius * np.sin(angle), -89.9, 89.9))
    ra = float((ra0 + radius * np.cos(angle) / np.cos(np.radians(dec))) % 360.0)
    return ra, dec


# ----------------------------------------------------------------------------- survey files


def make_survey(
    out_dir: str | os.PathLike,
    n: int,
    *,
    seed: int = 0,
    dap: str = "dr15",
    variant: str = DEFAULT_VARIANT,
    class_fractions: Mapping[str, float] | None = None,
    depth: float = 1.0,
    progress: bool | Callable[[int, int], None] = False,
    overwrite: bool = False,
) -> SurveySummary:
    """Write a synthetic survey: ``n`` MAPS files plus ``catalog.csv`` and ``catalog.fits``.

    Parameters
    ----------
    out_dir : path-like
        Created if needed.
    n : int
        Number of galaxies.
    seed : int
        Seed of the survey; the same seed, ``n`` and options give byte-identical files.
    dap : {'dr15', 'dr17'}
        Channel set of the files (22 or 35 lines).
    variant : {'classic', 'realistic'}
        Survey variant (default :data:`~ifskeras.survey.synth.galaxy.DEFAULT_VARIANT`).
        ``classic`` writes the same files as before variants existed; ``realistic`` is
        harder and closer to MaNGA (shared Ha brightness distribution, the DAP's tied
        doublet ratios, correlated noise, diffuse ionised gas, weak and off-centre AGN,
        bars, thin edge-on discs, companions, 28% retired galaxies), see
        :func:`~ifskeras.survey.synth.make_galaxy`.
    depth : float
        Inverse-variance scale of the whole survey (1: MaNGA-like; 0.3: S/N x0.55), see
        :func:`~ifskeras.survey.synth.make_galaxy`.
    class_fractions : mapping, optional
        Class -> fraction (normalised; missing classes get none); default the variant's mix
        (:func:`default_class_fractions`). Counts use largest-remainder rounding, so each
        class gets its share exactly; the order of classes is shuffled.
    progress : bool or callable
        ``True`` shows a progress bar on stderr; a callable is called as
        ``progress(done, total)`` after each galaxy.
    overwrite : bool
        Replace an existing survey in ``out_dir``: its catalogue and the MAPS files the old
        catalogue lists are removed first (other files are left alone).

    Returns
    -------
    SurveySummary

    Raises
    ------
    SurveyExistsError
        ``out_dir`` already holds MAPS files or a catalogue and ``overwrite`` is False.

    Notes
    -----
    Galaxy ``i`` sits on plate ``10001 + i // 17`` in IFU slot ``i % 17`` of
    :data:`PLATE_IFU_FIBRES` (designs 1901, 1902, 3701-3704, 6101-6104, 9101, 9102,
    12701-12705), so plate-IFUs are unique and bundle sizes follow a MaNGA plate. Each galaxy
    draws from its own child of ``numpy.random.SeedSequence(seed)``.

    Examples
    --------
    >>> summary = make_survey("synthetic-survey", 17, seed=3)  # doctest: +SKIP
    >>> summary.paths[0].name  # doctest: +SKIP
    'manga-10001-1901-MAPS-HYB10-GAU-MILESHC.fits.gz'
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer. Received: {n!r}")
    n = int(n)
    _dap_lines(dap)  # validate before touching the directory
    variant = _variant(variant).name
    columns = catalog_columns(variant)
    counts = class_counts(n, default_class_fractions(variant) if class_fractions is None else class_fractions)
    out_dir = Path(out_dir)
    existing = existing_survey_files(out_dir)
    if existing and not overwrite:
        raise SurveyExistsError(out_dir, existing)
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    if existing:
        _remove_previous_survey(out_dir)

    seed_sequence = np.random.SeedSequence(seed)
    galaxy_seeds = seed_sequence.spawn(n)
    survey_rng = np.random.default_rng(seed_sequence)
    labels = np.repeat(list(counts), list(counts.values()))
    labels = labels[survey_rng.permutation(n)]
    n_plates = -(-n // len(PLATE_IFU_FIBRES))
    plate_centres = _plate_centres(survey_rng, n_plates)
    ifu_offsets = _ifu_offsets(survey_rng, n)

    callback = progress if callable(progress) else None
    paths: list[Path] = []
    rows: list[dict] = []
    with progress_bar(bool(progress) and callback is None, "synthesising galaxies", n) as bar:
        for index in range(n):
            plateifu, fibres = _plateifu(index)
            galaxy = make_galaxy(
                np.random.default_rng(galaxy_seeds[index]), str(labels[index]), variant=variant, dap=dap,
                ifu_fibres=fibres, depth=depth,
            )
            ra, dec = _offset_position(plate_centres[index // len(PLATE_IFU_FIBRES)], ifu_offsets[index])
            mangaid = f"1-{index + 1:06d}"
            path = out_dir / maps_file_name(plateifu)
            write_maps_file(path, galaxy, plateifu=plateifu, mangaid=mangaid, ra=ra, dec=dec)
            row = {"plateifu": plateifu, "mangaid": mangaid, "file": path.name, **galaxy.params,
                   "ra": round(ra, 7), "dec": round(dec, 7)}
            rows.append({column: row[column] for column in columns})
            paths.append(path)
            bar.advance()
            if callback is not None:
                callback(index + 1, n)
    catalog_csv, catalog_fits = _write_catalog(out_dir, rows, columns, variant)
    return SurveySummary(
        out_dir=out_dir,
        paths=tuple(paths),
        rows=tuple(rows),
        catalog_csv=catalog_csv,
        catalog_fits=catalog_fits,
        seed=seed,
        dap=dap,
        seconds=time.perf_counter() - start,
        variant=variant,
    )


def existing_survey_files(out_dir: str | os.PathLike) -> list[Path]:
    """MAPS files and catalogues already in a directory (empty list if it does not exist)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = sorted(out_dir.glob("manga-*-MAPS-*.fits*"))
    found += [out_dir / name for name in ("catalog.csv", "catalog.fits") if (out_dir / name).exists()]
    return found


def _remove_previous_survey(out_dir: Path) -> None:
    """Remove the old catalogue and the MAPS files it lists (nothing it does not list)."""
    catalog = out_dir / "catalog.csv"
    if catalog.exists():
        with open(catalog, newline="") as stream:
            names = [row.get("file", "") for row in csv.DictReader(stream)]
        for name in names:
            if name and Path(name).name == name and (out_dir / name).is_file():
                (out_dir / name).unlink()
    for name in ("catalog.csv", "catalog.fits"):
        (out_dir / name).unlink(missing_ok=True)


def _write_catalog(out_dir: Path, rows: list[dict], columns: Sequence[str], variant: str) -> tuple[Path, Path]:
    """``catalog.csv`` and ``catalog.fits`` of the survey (:func:`catalog_columns`); the FITS
    header names the variant in ``SYNTHVAR``, except for classic surveys (written as before)."""
    from astropy.table import Table

    catalog_csv = out_dir / "catalog.csv"
    atomic_write_csv(catalog_csv, columns, ([row[column] for column in columns] for row in rows))
    arrays = {}
    for column in columns:
        values = [row[column] for row in rows]
        if isinstance(values[0], str):
            arrays[column] = np.array(values, dtype=f"U{max(1, *map(len, values))}")
        else:
            arrays[column] = np.array(values)
    table = Table(arrays)
    if variant != "classic":
        table.meta[VARIANT_CARD] = variant
    catalog_fits = out_dir / "catalog.fits"
    fits_buffer = io.BytesIO()
    table.write(fits_buffer, format="fits")
    atomic_write_bytes(catalog_fits, fits_buffer.getvalue())
    return catalog_csv, catalog_fits
