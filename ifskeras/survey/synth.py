"""Synthetic MaNGA-like surveys written as DAP MAPS files.

Each synthetic galaxy is a set of emission-line maps built from physically consistent
components: an exponential disc with spiral arms and star-forming clumps, an AGN narrow-line
region blurred by the point-spread function, extended low-ionisation emission following the
stars, or a compact starburst. Line ratios sit in the right regions of the BPT diagrams
(Kauffmann et al. 2003; Kewley et al. 2001, 2006), Balmer lines follow case B recombination
and are reddened by the Cardelli, Clayton & Mathis (1989) extinction law, and the doublets the
DAP ties in its fits keep their fixed ratios. Surface brightness and noise are calibrated
against two real DR15 MAPS files (a bright star-forming galaxy and a faint one): the written
inverse variance is the variance the noise was drawn from, and fluxes are clipped at zero as
the DAP's Gaussian fits are.

Files carry the three ``EMLINE_GFLUX`` extensions of the DAP format with the survey's names
and header keys, so :func:`ifskeras.survey.maps.read_maps` reads them exactly like real ones.

Examples
--------
>>> import numpy as np
>>> galaxy = make_galaxy(np.random.default_rng(1), "Seyfert", ifu_fibres=19)
>>> galaxy.flux.shape
(22, 32, 32)
>>> summary = make_survey("synthetic-survey", 20, seed=1)  # doctest: +SKIP
>>> summary.counts["SF"]  # doctest: +SKIP
12
"""

from __future__ import annotations

import csv
import io
import os
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from ifskeras.survey.bpt import kauffmann03, kewley01_nii
from ifskeras.survey.lines import DEFAULT_LINES, DR15_LINES, DR17_LINES
from ifskeras.survey.maps import DAP_MASK_BITS, DEFAULT_REJECT_BITS, GalaxyMaps

__all__ = [
    "CLASSES",
    "DEFAULT_CLASS_FRACTIONS",
    "IFU_MAP_SIZES",
    "PLATE_IFU_FIBRES",
    "CASE_B_BALMER",
    "DOUBLET_RATIOS",
    "DAP_TIED_LINES",
    "PSF_FWHM_SPAXELS",
    "SYNTH_VERSION",
    "CATALOG_COLUMNS",
    "SurveyExistsError",
    "SyntheticGalaxy",
    "SurveySummary",
    "make_galaxy",
    "write_maps_file",
    "make_survey",
    "maps_file_name",
    "parse_class_fractions",
    "class_counts",
    "existing_survey_files",
]

#: Galaxy classes of a synthetic survey.
CLASSES: tuple[str, ...] = ("SF", "composite", "Seyfert", "LINER", "retired", "blueberry")
#: Survey-like mix: AGN about 5%, blueberry starbursts about 1%.
DEFAULT_CLASS_FRACTIONS: Mapping[str, float] = MappingProxyType(
    {"SF": 0.60, "composite": 0.13, "Seyfert": 0.05, "LINER": 0.09, "retired": 0.12, "blueberry": 0.01}
)
#: IFU bundle size (fibres) -> side of the MAPS image in 0.5 arcsec spaxels.
IFU_MAP_SIZES: Mapping[int, int] = MappingProxyType({19: 32, 37: 42, 61: 52, 91: 62, 127: 74})
#: The 17 science IFUs of a MaNGA plate, in IFU-design order (1901, 1902, 3701, ...).
PLATE_IFU_FIBRES: tuple[int, ...] = (19, 19, 37, 37, 37, 37, 61, 61, 61, 61, 91, 91, 127, 127, 127, 127, 127)
#: Case B recombination (T = 1e4 K, n_e = 100 cm^-3) relative to Hbeta.
CASE_B_BALMER: Mapping[str, float] = MappingProxyType({
    "Ha-6564": 2.86, "Hb-4862": 1.0, "Hgam-4341": 0.468, "Hdel-4102": 0.259,
    "Heps-3971": 0.159, "Hzet-3890": 0.105, "Heta-3836": 0.0731, "Hthe-3798": 0.0530,
    "H11-3771": 0.0397, "H12-3751": 0.0305,
    "Peta-9017": 0.0184, "Pzet-9231": 0.0255, "Peps-9548": 0.0367,
})
#: Fixed ratios weak/strong of doublets (atomic physics).
DOUBLET_RATIOS: Mapping[str, tuple[str, float]] = MappingProxyType({
    "OIII-4960": ("OIII-5008", 0.335),
    "NII-6549": ("NII-6585", 0.34),
    "OI-6365": ("OI-6302", 0.32),
    "NeIII-3968": ("NeIII-3869", 0.31),
    "ArIII-7753": ("ArIII-7137", 0.24),
    "SIII-9533": ("SIII-9071", 2.47),
})
#: Doublets whose fluxes the DAP ties in its fit: the weak line is the strong one times the
#: ratio, with ivar divided by the ratio squared (as in the real files).
DAP_TIED_LINES: Mapping[str, tuple[str, float]] = MappingProxyType(
    {name: DOUBLET_RATIOS[name] for name in ("OIII-4960", "NII-6549", "OI-6365")}
)
#: MaNGA reconstructed PSF, FWHM 2.5 arcsec.
PSF_FWHM_SPAXELS = 5.0
#: VERSDAP written into synthetic files.
SYNTH_VERSION = "ifskeras-synth"
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

_DAPTYPE = "HYB10-GAU-MILESHC"
_FILE_SUFFIX = "MAPS-HYB10-GAU-MILESHC.fits.gz"
_FLUX_UNIT = "1E-17 erg/s/cm^2/spaxel"
_IVAR_UNIT = "(1E-17 erg/s/cm^2/spaxel)^{-2}"
_FIRST_PLATE = 10001
_SPAXEL_DEG = 0.5 / 3600.0
_SIGMA_PER_FWHM = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
_PSF_SIGMA = PSF_FWHM_SPAXELS * _SIGMA_PER_FWHM
_HA_HB = CASE_B_BALMER["Ha-6564"]
_R_V = 3.1
_HALF_LIGHT_PER_SCALE_LENGTH = 1.678  # Re / h of an exponential disc
_DISC_THICKNESS = 0.15  # intrinsic axis ratio of an edge-on disc
_DEFECT_PROBABILITY = {"DEADFIBER": 0.04, "FORESTAR": 0.04}
_NEARBOUND_RATE = 0.003  # per line and covered spaxel; data kept, DONOTUSE set
_LOWCOV_RIM = 1.0  # spaxels inside the hexagon edge flagged LOWCOV
_CLUMP_MIN_RADIUS = 4.0  # spaxels
#: ivar of each line at snr_level 1 far from the centre, relative to _REFERENCE_IVAR
#: (measured shape across wavelength on the two real DR15 files; blue lines noisier).
_REFERENCE_IVAR = 1000.0
_RELATIVE_IVAR = {
    "OII-3727": 0.35, "OII-3729": 0.35, "H12-3751": 0.40, "H11-3771": 0.42, "Hthe-3798": 0.45,
    "Heta-3836": 0.50, "NeIII-3869": 0.50, "HeI-3889": 0.50, "Hzet-3890": 0.50,
    "NeIII-3968": 0.60, "Heps-3971": 0.60, "Hdel-4102": 0.70, "Hgam-4341": 0.80,
    "HeII-4687": 0.95, "Hb-4862": 1.00, "OIII-4960": 1.00, "OIII-5008": 1.00,
    "NI-5199": 1.00, "NI-5201": 1.00, "HeI-5877": 0.70, "OI-6302": 1.20, "OI-6365": 1.20,
    "NII-6549": 1.20, "Ha-6564": 1.00, "NII-6585": 1.20, "SII-6718": 0.90, "SII-6732": 0.95,
    "HeI-7067": 0.80, "ArIII-7137": 0.80, "ArIII-7753": 0.70, "Peta-9017": 0.40,
    "SIII-9071": 0.40, "Pzet-9231": 0.35, "SIII-9533": 0.30, "Peps-9548": 0.30,
}
#: Photon noise of the line itself: variance += _SELF_NOISE * flux (bright file's centre).
_SELF_NOISE = 2e-4
#: log10 range of the noiseless Ha peak (1e-17 erg/s/cm^2/spaxel) per class.
_LOG_HA_PEAK = {
    "SF": (0.3, 2.0), "composite": (0.5, 1.8), "Seyfert": (1.0, 2.2),
    "LINER": (-0.2, 0.6), "retired": (-1.5, -0.8), "blueberry": (1.5, 2.5),
}
#: Central V-band attenuation range (mag) per class.
_DUST_AV = {
    "SF": (0.1, 1.5), "composite": (0.3, 1.5), "Seyfert": (0.3, 1.5),
    "LINER": (0.0, 0.5), "retired": (0.0, 0.4), "blueberry": (0.0, 0.3),
}
_LOG_SNR_LEVEL = (np.log10(0.3), np.log10(2.0))
_STATE_KEYS = (
    "x", "y", "s", "o", "log_oii_hb", "oii_ratio", "sii_ratio", "neiii_oiii", "heii_hb",
    "hei_hb", "ni_hb", "ariii_hb", "siii_hb",
)


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
class SyntheticGalaxy:
    """One synthetic galaxy in memory, arrays [L, H, W] in the channel order of ``lines``.

    ``flux``, ``ivar`` and ``mask`` are what a MAPS file holds (masked spaxels hold 0);
    ``model`` is the noiseless flux; ``params`` the generating parameters.
    """

    galaxy_class: str
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    model: np.ndarray
    lines: tuple[str, ...]
    params: dict = field(default_factory=dict)

    def as_galaxy_maps(
        self,
        lines: Sequence[str] = DEFAULT_LINES,
        *,
        plateifu: str = "",
        reject_bits: Sequence[str] = DEFAULT_REJECT_BITS,
    ) -> GalaxyMaps:
        """The maps :func:`ifskeras.survey.maps.read_maps` would return for this galaxy's file."""
        index = [self.lines.index(name) for name in lines]
        reject = sum(1 << DAP_MASK_BITS[bit] for bit in reject_bits)
        valid = ((self.mask[index] & reject) == 0) & (self.ivar[index] > 0)
        return GalaxyMaps(
            flux=np.where(valid, self.flux[index], np.float32(0)),
            ivar=np.where(valid, self.ivar[index], np.float32(0)),
            valid=valid,
            lines=tuple(lines),
            plateifu=plateifu,
            unit=_FLUX_UNIT,
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

    @property
    def counts(self) -> dict[str, int]:
        """Number of galaxies per class, in the order of :data:`CLASSES`."""
        found = [row["class"] for row in self.rows]
        return {name: found.count(name) for name in CLASSES if name in found}


def maps_file_name(plateifu: str) -> str:
    """Survey file name of a plate-IFU, e.g. ``manga-10001-1901-MAPS-HYB10-GAU-MILESHC.fits.gz``."""
    return f"manga-{plateifu}-{_FILE_SUFFIX}"


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


def class_counts(n: int, class_fractions: Mapping[str, float] | None = None) -> dict[str, int]:
    """Galaxies per class for a survey of ``n``: fractions normalised, largest-remainder rounding.

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


def make_galaxy(
    rng: np.random.Generator,
    galaxy_class: str,
    *,
    dap: str = "dr15",
    ifu_fibres: int | None = None,
    ha_peak: float | None = None,
    snr_level: float | None = None,
    dust_av: float | None = None,
    inclination: float | None = None,
    position_angle: float | None = None,
    size_factor: float | None = None,
    defects: bool = True,
) -> SyntheticGalaxy:
    """Draw one synthetic galaxy of a class, noiseless model and noisy DAP-like maps.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random draw; the same generator state gives the same galaxy.
    galaxy_class : str
        One of :data:`CLASSES`: ``SF``, ``composite``, ``Seyfert``, ``LINER``, ``retired``,
        ``blueberry``.
    dap : {'dr15', 'dr17'}
        Channel set: the 22 lines of DR15-era files or the 35 of DR17 files.
    ifu_fibres : int, optional
        IFU bundle size (19, 37, 61, 91 or 127); drawn with the plate's mix if omitted.
    ha_peak : float, optional
        Peak of the noiseless Halpha map in 1e-17 erg/s/cm^2/spaxel; drawn per class.
    snr_level : float, optional
        Inverse-variance scale: 1 gives ivar ~1000 on Halpha far from the centre.
    dust_av : float, optional
        Central V-band attenuation in magnitudes (falls off with radius).
    inclination, position_angle : float, optional
        Degrees; the position angle of the major axis is counted from the +y axis.
    size_factor : float, optional
        Bundle radius in effective radii (MaNGA's 1.5 or 2.5); drawn if omitted.
    defects : bool
        Allow dead-fibre and foreground-star patches (masked as the DAP does).

    Returns
    -------
    SyntheticGalaxy
        Arrays [L, H, W]: ``flux`` and ``ivar`` float32, ``mask`` int32 DAP bits.

    Examples
    --------
    >>> galaxy = make_galaxy(np.random.default_rng(0), "SF", ifu_fibres=37)
    >>> galaxy.flux.shape, galaxy.lines[0]
    ((22, 42, 42), 'OII-3727')
    """
    if galaxy_class not in CLASSES:
        raise ValueError(f"galaxy_class must be one of {CLASSES}. Received: {galaxy_class!r}")
    lines = _dap_lines(dap)
    if ifu_fibres is None:
        ifu_fibres = int(rng.choice(PLATE_IFU_FIBRES))
    if ifu_fibres not in IFU_MAP_SIZES:
        raise ValueError(f"ifu_fibres must be one of {tuple(IFU_MAP_SIZES)}. Received: {ifu_fibres!r}")
    for name, value, low in (("ha_peak", ha_peak, 0.0), ("snr_level", snr_level, 0.0), ("size_factor", size_factor, 0.0)):
        if value is not None and not value > low:
            raise ValueError(f"{name} must be > 0. Received: {value!r}")
    if dust_av is not None and not dust_av >= 0:
        raise ValueError(f"dust_av must be >= 0 (no negative attenuation). Received: {dust_av!r}")
    if inclination is not None and not 0 <= inclination <= 90:
        raise ValueError(f"inclination must be within [0, 90] degrees. Received: {inclination!r}")
    size = IFU_MAP_SIZES[ifu_fibres]
    early_type = galaxy_class in ("LINER", "retired")

    # Geometry: hexagonal footprint centred on the map, galaxy within half a spaxel of it.
    centre = (size - 1) / 2.0
    hex_radius = size / 2.0 - 1.0  # vertex to vertex: size - 2 spaxels, as in real files
    yy, xx = np.indices((size, size), dtype=np.float64)
    edge_distance = _hexagon_edge_distance(xx - centre, yy - centre, hex_radius)
    offset = rng.uniform(-0.5, 0.5, 2)
    dx, dy = xx - centre - offset[0], yy - centre - offset[1]
    if inclination is None:
        min_cos = 0.3 if early_type else _DISC_THICKNESS
        inclination = float(np.degrees(np.arccos(rng.uniform(min_cos, 1.0))))
    if position_angle is None:
        position_angle = float(rng.uniform(0.0, 180.0))
    if size_factor is None:
        size_factor = 1.5 if rng.uniform() < 2.0 / 3.0 else 2.5
    cos_i = np.cos(np.radians(inclination))
    axis_ratio = np.sqrt(cos_i**2 * (1 - _DISC_THICKNESS**2) + _DISC_THICKNESS**2)
    theta = np.radians(position_angle)
    major = -dx * np.sin(theta) + dy * np.cos(theta)
    minor = (dx * np.cos(theta) + dy * np.sin(theta)) / axis_ratio
    radius = np.hypot(major, minor)  # deprojected radius, spaxels
    half_light = hex_radius * np.sqrt(3.0) / 2.0 / size_factor
    scale_length = half_light / _HALF_LIGHT_PER_SCALE_LENGTH
    if ha_peak is None:
        ha_peak = float(10 ** rng.uniform(*_LOG_HA_PEAK[galaxy_class]))
    if dust_av is None:
        dust_av = float(rng.uniform(*_DUST_AV[galaxy_class]))
    if snr_level is None:
        snr_level = float(10 ** rng.uniform(*_LOG_SNR_LEVEL))

    geometry = _Geometry(
        radius=radius, major=major, minor=minor, sky_radius=np.hypot(dx, dy),
        scale_length=scale_length, half_light=half_light,
    )
    layout = _COMPONENT_BUILDERS[galaxy_class](rng, geometry, lines)
    stars, components, nucleus = layout["stars"], layout["components"], layout["nucleus"]
    av_map = dust_av * np.exp(-radius / (2.0 * layout.get("dust_scale", scale_length)))
    attenuation = 10.0 ** (-0.4 * av_map[None] * _extinction_curve(lines)[:, None, None])
    intrinsic = sum(surface[None] * cube for surface, cube in components)
    model = _blur(intrinsic * attenuation, _PSF_SIGMA)
    ha = lines.index("Ha-6564")
    model *= ha_peak / model[ha].max()

    flux, ivar = _observe(rng, model, stars, edge_distance, lines, snr_level)
    mask, defect = _dap_mask(rng, edge_distance, geometry.sky_radius, len(lines), defects=defects)
    # Spaxel-level flags (coverage, dead fibre, star) come with no data; NEARBOUND keeps it.
    keeps_data = (1 << DAP_MASK_BITS["NEARBOUND"]) | (1 << DAP_MASK_BITS["DONOTUSE"])
    unusable = (mask & ~keeps_data) != 0
    flux[unusable] = 0.0
    ivar[unusable] = 0.0

    params = {
        "class": galaxy_class,
        "ifu_fibres": ifu_fibres,
        "map_size": size,
        "inclination": round(float(inclination), 3),
        "position_angle": round(float(position_angle), 3),
        "scale_length": round(float(layout.get("scale_length", scale_length)), 4),
        "size_factor": float(size_factor),
        "dust_av": round(float(dust_av), 4),
        "snr_level": round(float(snr_level), 4),
        "ha_peak": round(float(ha_peak), 4),
        "n_clumps": int(layout.get("n_clumps", 0)),
        "agn_contrast": round(float(layout.get("agn_contrast", 0.0)), 4),
        "log_nii_ha": round(float(nucleus["x"]), 4),
        "log_oiii_hb": round(float(nucleus["y"]), 4),
        "log_sii_ha": round(float(nucleus["s"]), 4),
        "log_oi_ha": round(float(nucleus["o"]), 4),
        "defect": defect,
    }
    return SyntheticGalaxy(
        galaxy_class=galaxy_class,
        flux=flux.astype(np.float32),
        ivar=ivar.astype(np.float32),
        mask=mask,
        model=model.astype(np.float32),
        lines=lines,
        params=params,
    )


def write_maps_file(
    path: str | os.PathLike,
    galaxy: SyntheticGalaxy,
    *,
    plateifu: str,
    mangaid: str = "",
    ra: float = 0.0,
    dec: float = 0.0,
) -> Path:
    """Write a galaxy as a DAP MAPS file (primary header + the three EMLINE_GFLUX extensions).

    Parameters
    ----------
    path : path-like
        Output file; gzip-compressed when the name ends in ``.gz``. Written atomically.
    galaxy : SyntheticGalaxy
        From :func:`make_galaxy`.
    plateifu, mangaid : str
        Written into PLATEIFU and MANGAID.
    ra, dec : float
        Degrees, written into OBJRA / OBJDEC (and IFURA / IFUDEC).

    Returns
    -------
    pathlib.Path
        The written file. No timestamps are written: the same galaxy gives the same bytes.

    Notes
    -----
    The file is assembled by a minimal FITS writer (fixed-format cards, big-endian data,
    2880-byte blocks) rather than astropy, whose header handling took most of the time of a
    survey; gzip uses run-length deflate, about twice as fast as level 1 for 7% more bytes.
    """
    path = Path(path)
    plate, _, ifu = plateifu.partition("-")
    primary = [
        ("SIMPLE", True, "conforms to FITS standard"),
        ("BITPIX", 8, "array data type"),
        ("NAXIS", 0, "number of array dimensions"),
        ("EXTEND", True, ""),
        ("MASKNAME", "MANGA_DAPPIXMASK", "Bits in sdssMaskbits.par used by mask extension"),
        ("IFURA", float(ra), "IFU R.A. (J2000 deg.)"),
        ("IFUDEC", float(dec), "IFU Dec. (J2000 deg.)"),
        ("OBJRA", float(ra), "Object R.A. (J2000 deg.)"),
        ("OBJDEC", float(dec), "Object Dec. (J2000 deg.)"),
    ]
    if plate.isdigit():
        primary.append(("PLATEID", int(plate), "Current plate"))
    if ifu.isdigit():
        primary.append(("IFUDSGN", int(ifu), "ifuDesign"))
    primary += [
        ("PLATEIFU", plateifu, "PLATEID-ifuDesign"),
        ("MANGAID", mangaid, "MaNGA ID number"),
        ("RFWHM", PSF_FWHM_SPAXELS / 2.0, "Reconstructed FWHM in r-band (arcsec)"),
        ("DAPTYPE", _DAPTYPE, "DAP analysis method keyword"),
        ("VERSDAP", SYNTH_VERSION, "Synthetic survey, not the MaNGA DAP"),
        ("DAPQUAL", 0, "DAP quality bitmask"),
        ("SYNCLASS", galaxy.galaxy_class, "ifskeras synthetic class"),
    ]
    chunks = [_fits_header(primary)]
    n_lines, height, width = galaxy.flux.shape
    for extname, data, kind in (
        ("EMLINE_GFLUX", galaxy.flux.astype(">f4"), "DATA"),
        ("EMLINE_GFLUX_IVAR", galaxy.ivar.astype(">f4"), "ERROR"),
        ("EMLINE_GFLUX_MASK", galaxy.mask.astype(">i4"), "QUALITY"),
    ):
        cards = [
            ("XTENSION", "IMAGE", "Image extension"),
            ("BITPIX", -32 if data.dtype.kind == "f" else 32, "array data type"),
            ("NAXIS", 3, "number of array dimensions"),
            ("NAXIS1", width, ""),
            ("NAXIS2", height, ""),
            ("NAXIS3", n_lines, ""),
            ("PCOUNT", 0, "number of parameters"),
            ("GCOUNT", 1, "number of groups"),
            *_wcs_cards(width, ra, dec),
            ("MASKNAME", "MANGA_DAPPIXMASK", ""),
        ]
        cards += [(f"C{index:02d}", name, f"Data in channel {index}") for index, name in enumerate(galaxy.lines, 1)]
        if kind != "QUALITY":
            cards.append(("BUNIT", _FLUX_UNIT if kind == "DATA" else _IVAR_UNIT, "Unit of pixel value"))
        cards += [("HDUCLASS", "SDSS", "SDSS format class"), ("HDUCLAS1", "CUBE", "Data format"),
                  ("HDUCLAS2", kind, "")]
        if kind != "DATA":
            cards.append(("SCIDATA", "EMLINE_GFLUX", "Associated data extension"))
        if kind != "ERROR":
            cards.append(("ERRDATA", "EMLINE_GFLUX_IVAR", "Associated inv. variance extension"))
        if kind != "QUALITY":
            cards.append(("QUALDATA", "EMLINE_GFLUX_MASK", "Associated quality extension"))
        cards.append(("EXTNAME", extname, "extension name"))
        chunks += [_fits_header(cards), _fits_data(data)]
    payload = b"".join(chunks)
    if path.name.endswith(".gz"):
        payload = _gzip(payload)
    _write_atomically(path, payload)
    return path


def make_survey(
    out_dir: str | os.PathLike,
    n: int,
    *,
    seed: int = 0,
    dap: str = "dr15",
    class_fractions: Mapping[str, float] | None = None,
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
    class_fractions : mapping, optional
        Class -> fraction (normalised; missing classes get none); default
        :data:`DEFAULT_CLASS_FRACTIONS`. Counts use largest-remainder rounding, so each
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
    counts = class_counts(n, class_fractions)
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

    report = _progress_callback(progress, n)
    paths: list[Path] = []
    rows: list[dict] = []
    try:
        for index in range(n):
            plateifu, fibres = _plateifu(index)
            galaxy = make_galaxy(
                np.random.default_rng(galaxy_seeds[index]), str(labels[index]), dap=dap, ifu_fibres=fibres
            )
            ra, dec = _offset_position(plate_centres[index // len(PLATE_IFU_FIBRES)], ifu_offsets[index])
            mangaid = f"1-{index + 1:06d}"
            path = out_dir / maps_file_name(plateifu)
            write_maps_file(path, galaxy, plateifu=plateifu, mangaid=mangaid, ra=ra, dec=dec)
            row = {"plateifu": plateifu, "mangaid": mangaid, "file": path.name, **galaxy.params,
                   "ra": round(ra, 7), "dec": round(dec, 7)}
            rows.append({column: row[column] for column in CATALOG_COLUMNS})
            paths.append(path)
            report(index + 1)
    finally:
        report(None)
    catalog_csv, catalog_fits = _write_catalog(out_dir, rows)
    return SurveySummary(
        out_dir=out_dir,
        paths=tuple(paths),
        rows=tuple(rows),
        catalog_csv=catalog_csv,
        catalog_fits=catalog_fits,
        seed=seed,
        dap=dap,
        seconds=time.perf_counter() - start,
    )


def existing_survey_files(out_dir: str | os.PathLike) -> list[Path]:
    """MAPS files and catalogues already in a directory (empty list if it does not exist)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = sorted(out_dir.glob("manga-*-MAPS-*.fits*"))
    found += [out_dir / name for name in ("catalog.csv", "catalog.fits") if (out_dir / name).exists()]
    return found


# ----------------------------------------------------------------------------- physics


def _kewley01_sii_inverse(y):
    """log [SII]/Ha on the Kewley 2001 line at log [OIII]/Hb = y (y < 1.30)."""
    return 0.32 + 0.72 / (np.minimum(y, 1.2) - 1.30)


def _kewley01_oi_inverse(y):
    """log [OI]/Ha on the Kewley 2001 line at log [OIII]/Hb = y (y < 1.33)."""
    return -0.59 + 0.73 / (np.minimum(y, 1.23) - 1.33)


def _sf_state(rng, x):
    """HII-region ratios along the star-forming sequence for log [NII]/Ha = x (array)."""
    y = kauffmann03(x) - rng.uniform(0.15, 0.35)
    s = -0.42 + 0.35 * (x + 0.5) + rng.normal(0.0, 0.04)
    s = np.minimum(s, _kewley01_sii_inverse(y) - 0.12)
    o = -1.35 + 0.5 * (x + 0.5) + rng.normal(0.0, 0.05)
    o = np.minimum(o, _kewley01_oi_inverse(y) - 0.15)
    return {
        "x": x, "y": y, "s": s, "o": o,
        "log_oii_hb": 0.5 - 0.6 * (x + 0.6) ** 2 + rng.normal(0.0, 0.05),
        "oii_ratio": rng.uniform(1.3, 1.5),
        "sii_ratio": rng.uniform(1.3, 1.45),
        "neiii_oiii": rng.uniform(0.06, 0.10),
        "heii_hb": rng.uniform(0.003, 0.01),
        "hei_hb": rng.uniform(0.10, 0.12),
        "ni_hb": rng.uniform(0.01, 0.03),
        "ariii_hb": 0.08 * 10 ** (0.3 * y),
        "siii_hb": rng.uniform(0.15, 0.30),
    }


def _composite_state(rng):
    x = rng.uniform(-0.35, -0.1)
    # Between the two demarcations, away from both, and no lower than observed composites.
    low, high = kauffmann03(x), kewley01_nii(x)
    y = rng.uniform(max(low + 0.1, -0.55), high - 0.1)
    return {
        "x": x, "y": y, "s": rng.uniform(-0.4, -0.25), "o": rng.uniform(-1.3, -1.0),
        "log_oii_hb": rng.uniform(0.35, 0.55), "oii_ratio": rng.uniform(1.2, 1.4),
        "sii_ratio": rng.uniform(1.2, 1.4), "neiii_oiii": rng.uniform(0.07, 0.12),
        "heii_hb": rng.uniform(0.01, 0.04), "hei_hb": rng.uniform(0.10, 0.12),
        "ni_hb": rng.uniform(0.03, 0.08), "ariii_hb": rng.uniform(0.06, 0.12),
        "siii_hb": rng.uniform(0.2, 0.35),
    }


def _seyfert_state(rng):
    return {
        "x": rng.uniform(-0.15, 0.25), "y": rng.uniform(0.7, 1.1),
        "s": rng.uniform(-0.45, -0.15), "o": rng.uniform(-1.1, -0.6),
        "log_oii_hb": rng.uniform(0.4, 0.65), "oii_ratio": rng.uniform(1.0, 1.2),
        "sii_ratio": rng.uniform(1.0, 1.25), "neiii_oiii": rng.uniform(0.08, 0.13),
        "heii_hb": rng.uniform(0.15, 0.30), "hei_hb": rng.uniform(0.10, 0.14),
        "ni_hb": rng.uniform(0.10, 0.25), "ariii_hb": rng.uniform(0.2, 0.35),
        "siii_hb": rng.uniform(0.3, 0.5),
    }


def _liner_state(rng):
    return {
        "x": rng.uniform(0.05, 0.35), "y": rng.uniform(0.0, 0.3),
        "s": rng.uniform(-0.1, 0.15), "o": rng.uniform(-0.55, -0.25),
        "log_oii_hb": rng.uniform(0.55, 0.8), "oii_ratio": rng.uniform(1.0, 1.3),
        "sii_ratio": rng.uniform(1.1, 1.35), "neiii_oiii": rng.uniform(0.12, 0.2),
        "heii_hb": rng.uniform(0.03, 0.08), "hei_hb": rng.uniform(0.08, 0.12),
        "ni_hb": rng.uniform(0.2, 0.4), "ariii_hb": rng.uniform(0.05, 0.12),
        "siii_hb": rng.uniform(0.2, 0.35),
    }


def _blueberry_state(rng):
    x = rng.uniform(-1.9, -1.5)
    y_max = min(kauffmann03(x), kewley01_nii(x)) - 0.05
    y = rng.uniform(0.70, y_max)
    return {
        "x": x, "y": y,
        "s": min(rng.uniform(-1.4, -1.1), _kewley01_sii_inverse(y) - 0.12),
        "o": min(rng.uniform(-2.3, -1.9), _kewley01_oi_inverse(y) - 0.15),
        "log_oii_hb": rng.uniform(0.0, 0.2), "oii_ratio": rng.uniform(1.1, 1.4),
        "sii_ratio": rng.uniform(1.3, 1.45), "neiii_oiii": rng.uniform(0.09, 0.12),
        "heii_hb": rng.uniform(0.01, 0.02), "hei_hb": rng.uniform(0.10, 0.12),
        "ni_hb": rng.uniform(0.003, 0.01), "ariii_hb": rng.uniform(0.08, 0.12),
        "siii_hb": rng.uniform(0.10, 0.20),
    }


def _blend_states(inner: dict, outer: dict, weight):
    """Mix two ionisation states, ``weight`` (array) of the inner one; log ratios mix linearly."""
    return {key: weight * inner[key] + (1 - weight) * outer[key] for key in _STATE_KEYS}


def _line_cube(state: dict, lines: Sequence[str], shape) -> np.ndarray:
    """Intrinsic (unreddened) line fluxes relative to Hbeta, [L, *shape]."""
    ha = _HA_HB
    oiii = 10 ** np.asarray(state["y"], dtype=float)
    sii = ha * 10 ** np.asarray(state["s"], dtype=float)
    oii = 10 ** np.asarray(state["log_oii_hb"], dtype=float)
    neiii = state["neiii_oiii"] * oiii
    ariii = np.asarray(state["ariii_hb"], dtype=float)
    siii = np.asarray(state["siii_hb"], dtype=float)
    values = dict(CASE_B_BALMER)
    values.update({
        "OII-3727": oii / (1 + state["oii_ratio"]),
        "OII-3729": oii * state["oii_ratio"] / (1 + state["oii_ratio"]),
        "NeIII-3869": neiii,
        "NeIII-3968": DOUBLET_RATIOS["NeIII-3968"][1] * neiii,
        "HeI-3889": 0.95 * state["hei_hb"],
        "HeII-4687": state["heii_hb"],
        "OIII-5008": oiii,
        "OIII-4960": DOUBLET_RATIOS["OIII-4960"][1] * oiii,
        "NI-5199": 0.4 * state["ni_hb"],
        "NI-5201": 0.6 * state["ni_hb"],
        "HeI-5877": state["hei_hb"],
        "OI-6302": ha * 10 ** np.asarray(state["o"], dtype=float),
        "OI-6365": DOUBLET_RATIOS["OI-6365"][1] * ha * 10 ** np.asarray(state["o"], dtype=float),
        "NII-6585": ha * 10 ** np.asarray(state["x"], dtype=float),
        "NII-6549": DOUBLET_RATIOS["NII-6549"][1] * ha * 10 ** np.asarray(state["x"], dtype=float),
        "SII-6718": sii * state["sii_ratio"] / (1 + state["sii_ratio"]),
        "SII-6732": sii / (1 + state["sii_ratio"]),
        "HeI-7067": 0.25 * state["hei_hb"],
        "ArIII-7137": ariii,
        "ArIII-7753": DOUBLET_RATIOS["ArIII-7753"][1] * ariii,
        "SIII-9071": siii,
        "SIII-9533": DOUBLET_RATIOS["SIII-9533"][1] * siii,
    })
    return np.stack([np.broadcast_to(np.asarray(values[name], dtype=float), shape) for name in lines])


def _extinction_curve(lines: Sequence[str]) -> np.ndarray:
    """A_lambda / A_V of Cardelli, Clayton & Mathis (1989), R_V = 3.1, for each line."""
    waves = np.array([{**DR15_LINES, **DR17_LINES}[name] for name in lines])
    x = 1e4 / waves  # inverse micron
    curve = np.empty_like(x)
    optical = x >= 1.1
    y = x[optical] - 1.82
    a = np.polyval([0.32999, -0.77530, 0.01979, 0.72085, -0.02427, -0.50447, 0.17699, 1.0], y)
    b = np.polyval([-2.09002, 5.30260, -0.62251, -5.38434, 1.07233, 2.28305, 1.41338, 0.0], y)
    curve[optical] = a + b / _R_V
    infrared = x[~optical] ** 1.61
    curve[~optical] = 0.574 * infrared - 0.527 * infrared / _R_V
    return curve


# ----------------------------------------------------------------------------- morphology


@dataclass(frozen=True)
class _Geometry:
    """Coordinates of a galaxy's spaxels, spaxel units: deprojected disc and sky plane."""

    radius: np.ndarray  # deprojected radius in the disc plane
    major: np.ndarray  # along the major axis
    minor: np.ndarray  # along the minor axis, deprojected
    sky_radius: np.ndarray  # distance from the centre on the sky (round components)
    scale_length: float
    half_light: float


def _disc_surface(rng, geometry: _Geometry):
    """Exponential disc with two spiral arms and star-forming clumps (peak ~1)."""
    radius, major, minor = geometry.radius, geometry.major, geometry.minor
    scale_length = geometry.scale_length
    azimuth = np.arctan2(minor, major)
    pitch = np.radians(rng.uniform(12.0, 30.0))
    arm_phase = rng.uniform(0, 2 * np.pi)
    arms = rng.uniform(0.0, 0.6) * np.cos(
        2 * (azimuth - np.log(radius / scale_length + 0.1) / np.tan(pitch)) + arm_phase
    )
    surface = np.exp(-radius / scale_length) * (1.0 + arms * np.clip(radius / scale_length, 0, 1))
    n_clumps = int(rng.poisson(rng.uniform(2.0, 10.0)))
    # Clumps live in the disc, outside the nucleus (beyond a 3 arcsec fibre's radius + 1 spaxel).
    clump_radius = np.minimum(
        _CLUMP_MIN_RADIUS + rng.gamma(2.0, scale_length, n_clumps), max(3.5 * scale_length, 2 * _CLUMP_MIN_RADIUS)
    )
    clump_angle = rng.uniform(0, 2 * np.pi, n_clumps)
    clump_sigma = rng.uniform(0.5, 1.5, n_clumps)
    brightness = rng.uniform(0.5, 3.0, n_clumps) * np.exp(-clump_radius / scale_length)
    if n_clumps:
        # Clumps are round in the disc plane: distances measured in deprojected coordinates.
        du = major[None] - (clump_radius * np.cos(clump_angle))[:, None, None]
        dv = minor[None] - (clump_radius * np.sin(clump_angle))[:, None, None]
        blobs = brightness[:, None, None] * np.exp(
            -0.5 * (du**2 + dv**2) / clump_sigma[:, None, None] ** 2
        )
        surface = surface + blobs.sum(axis=0)
    return surface, n_clumps


def _sersic(radius, half_light, index):
    b_n = 2.0 * index - 1.0 / 3.0 + 0.009876 / index
    return np.exp(-b_n * ((radius / half_light) ** (1.0 / index) - 1.0))


def _star_forming_layout(rng, geometry: _Geometry, lines):
    radius, scale_length = geometry.radius, geometry.scale_length
    x_centre = rng.uniform(-1.0, -0.35)
    gradient = rng.uniform(0.02, 0.06)  # dex per scale length, metallicity falls outwards
    state = _sf_state(rng, x_centre - gradient * radius / scale_length)
    surface, n_clumps = _disc_surface(rng, geometry)
    return {
        "stars": np.exp(-radius / (1.2 * scale_length)),
        "components": [(surface, _line_cube(state, lines, radius.shape))],
        "nucleus": _state_at_centre(state, radius),
        "n_clumps": n_clumps,
    }


def _composite_layout(rng, geometry: _Geometry, lines):
    radius, scale_length = geometry.radius, geometry.scale_length
    disc, n_clumps = _disc_surface(rng, geometry)
    x_disc = rng.uniform(-0.7, -0.4) - rng.uniform(0.02, 0.06) * radius / scale_length
    inner = _composite_state(rng)
    core = rng.uniform(3.5, 6.0)  # spaxels, larger than a 3 arcsec fibre; a round bulge
    weight = np.exp(-0.5 * (geometry.sky_radius / core) ** 2)
    state = _blend_states(inner, _sf_state(rng, x_disc), weight)
    bulge = rng.uniform(1.0, 3.0) * weight
    return {
        "stars": np.exp(-radius / (1.2 * scale_length)) + bulge,
        "components": [(disc + bulge, _line_cube(state, lines, radius.shape))],
        "nucleus": {key: inner[key] for key in "xyso"},
        "n_clumps": n_clumps,
    }


def _seyfert_layout(rng, geometry: _Geometry, lines):
    host = _star_forming_layout(rng, geometry, lines)
    agn = _seyfert_state(rng)
    contrast = 10 ** rng.uniform(np.log10(5.0), np.log10(20.0))
    nlr_sigma = rng.uniform(0.3, 1.5)  # spaxels, round on the sky
    nlr = contrast * np.exp(-0.5 * (geometry.sky_radius / nlr_sigma) ** 2)
    nlr *= 1.0 + _PSF_SIGMA**2 / nlr_sigma**2  # peak after the PSF ~ contrast x host peak
    return {
        "stars": host["stars"],
        "components": host["components"] + [(nlr, _line_cube(agn, lines, ())[:, None, None])],
        "nucleus": {key: agn[key] for key in "xyso"},
        "n_clumps": host["n_clumps"],
        "agn_contrast": contrast,
    }


def _early_type_layout(rng, geometry: _Geometry, lines):
    radius = geometry.radius
    state = _liner_state(rng)
    index = rng.uniform(1.0, 2.5)
    surface = _sersic(radius, geometry.half_light, index)
    # Mild outward rise of [NII]/Ha and [SII]/Ha, as in extended LINER-like emission.
    rise = 0.03 * radius / geometry.scale_length
    field_state = dict(state, x=state["x"] + rise, s=state["s"] + rise)
    return {
        "stars": surface / surface.max(),
        "components": [(surface, _line_cube(field_state, lines, radius.shape))],
        "nucleus": {key: state[key] for key in "xyso"},
    }


def _blueberry_layout(rng, geometry: _Geometry, lines):
    radius = geometry.sky_radius  # compact and round
    state = _blueberry_state(rng)
    sigma = rng.uniform(0.3, 1.2)  # spaxels: unresolved once blurred by the PSF
    surface = np.exp(-0.5 * (radius / sigma) ** 2) + 0.01 * np.exp(-radius / 3.0)
    return {
        "stars": surface / surface.max(),
        "components": [(surface, _line_cube(state, lines, ())[:, None, None])],
        "nucleus": {key: state[key] for key in "xyso"},
        "scale_length": sigma,
        "dust_scale": 3.0,
    }


def _state_at_centre(state: dict, radius: np.ndarray) -> dict:
    centre = np.unravel_index(np.argmin(radius), radius.shape)
    return {key: float(np.broadcast_to(state[key], radius.shape)[centre]) for key in "xyso"}


_COMPONENT_BUILDERS = {
    "SF": _star_forming_layout,
    "composite": _composite_layout,
    "Seyfert": _seyfert_layout,
    "LINER": _early_type_layout,
    "retired": _early_type_layout,
    "blueberry": _blueberry_layout,
}


# ----------------------------------------------------------------------------- instrument


def _hexagon_edge_distance(dx, dy, circumradius):
    """Signed distance (spaxels) inside a hexagon with vertices on the x axis; < 0 outside."""
    inradius = circumradius * np.sqrt(3.0) / 2.0
    ady = np.abs(dy)
    return np.minimum(inradius - ady, inradius - (np.abs(dx) * np.sqrt(3.0) / 2.0 + ady / 2.0))


def _blur(cube: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian PSF convolution of [L, H, W] as two matrix products (flux leaves at the edges)."""
    size = cube.shape[-1]
    offsets = np.arange(size)[:, None] - np.arange(size)[None, :]
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    return kernel @ cube @ kernel.T


def _observe(rng, model, stars, edge_distance, lines, snr_level):
    """Inverse variance of each spaxel and noisy, zero-clipped fluxes drawn from it."""
    shape = model.shape
    continuum_noise = rng.uniform(1.0, 8.0)  # noise from the stellar continuum at the centre
    coverage = 0.6 + 0.4 * np.clip(edge_distance / 3.0, 0.0, 1.0)  # fewer dithers at the edge
    jitter = np.exp(rng.normal(0.0, 0.15, shape[1:]))  # spaxel-to-spaxel depth variations
    base = np.array([_RELATIVE_IVAR[name] for name in lines]) * _REFERENCE_IVAR * snr_level
    base *= np.exp(rng.normal(0.0, 0.1, len(lines)))  # line-to-line calibration scatter
    background_var = ((1.0 + continuum_noise * stars) / (coverage * jitter))[None] / base[:, None, None]
    variance = background_var + _SELF_NOISE * np.clip(model, 0.0, None)
    flux = np.maximum(model + np.sqrt(variance) * rng.standard_normal(shape), 0.0)
    ivar = 1.0 / variance
    for weak, (strong, ratio) in DAP_TIED_LINES.items():
        if weak in lines and strong in lines:
            w, s = lines.index(weak), lines.index(strong)
            flux[w] = ratio * flux[s]
            ivar[w] = ivar[s] / ratio**2
    return flux.astype(np.float32), ivar.astype(np.float32)


def _dap_mask(rng, edge_distance, radius, n_lines, *, defects):
    """DAP bitmask [L, H, W]: NOCOV outside the hexagon, LOWCOV rim, defect patches, NEARBOUND."""
    bit = {name: np.int32(1 << value) for name, value in DAP_MASK_BITS.items()}
    spaxel = np.zeros(edge_distance.shape, np.int32)
    spaxel[edge_distance < _LOWCOV_RIM] |= bit["LOWCOV"] | bit["DONOTUSE"]
    spaxel[edge_distance < 0] |= bit["NOCOV"]
    draws = rng.uniform(size=2)
    defect = ""
    for draw, name in zip(draws, ("DEADFIBER", "FORESTAR")):
        if defects and draw < _DEFECT_PROBABILITY[name] and not defect:
            candidates = np.flatnonzero((edge_distance > 2.0) & (radius > 4.0))
            if candidates.size:
                yc, xc = np.unravel_index(rng.choice(candidates), edge_distance.shape)
                patch_radius = rng.uniform(1.5, 2.5) if name == "DEADFIBER" else rng.uniform(2.0, 4.0)
                yy, xx = np.indices(edge_distance.shape)
                spaxel[np.hypot(yy - yc, xx - xc) <= patch_radius] |= bit[name] | bit["DONOTUSE"]
                defect = name
    mask = np.broadcast_to(spaxel, (n_lines, *spaxel.shape)).copy()
    flat = mask.reshape(-1)
    picked = rng.integers(0, flat.size, rng.binomial(flat.size, _NEARBOUND_RATE))
    picked = picked[flat[picked] == 0]
    flat[picked] |= bit["NEARBOUND"] | bit["DONOTUSE"]
    return mask, defect


# ----------------------------------------------------------------------------- survey files


def _dap_lines(dap: str) -> tuple[str, ...]:
    catalogues = {"dr15": DR15_LINES, "dr17": DR17_LINES}
    key = str(dap).lower()
    if key not in catalogues:
        raise ValueError(f"dap must be 'dr15' or 'dr17'. Received: {dap!r}")
    return tuple(catalogues[key])


def _validated_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    unknown = [name for name in fractions if name not in CLASSES]
    if unknown:
        raise ValueError(f"Unknown classes {unknown}; known: {', '.join(CLASSES)}. Received: {dict(fractions)}")
    values = {name: float(value) for name, value in fractions.items()}
    if any(not np.isfinite(v) or v < 0 for v in values.values()) or sum(values.values()) <= 0:
        raise ValueError(f"Class fractions must be >= 0 and sum to more than 0. Received: {values}")
    return values


def _plateifu(index: int) -> tuple[str, int]:
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


def _wcs_cards(size: int, ra: float, dec: float) -> list[tuple]:
    reference = (size + 1) / 2.0  # 1-based pixel of the map centre
    return [
        ("WCSAXES", 3, "Number of coordinate axes"),
        ("CRPIX1", reference, "Pixel coordinate of reference point"),
        ("CRPIX2", reference, "Pixel coordinate of reference point"),
        ("CRPIX3", 1.0, "Pixel coordinate of reference point"),
        ("PC1_1", -_SPAXEL_DEG, "Coordinate transformation matrix element"),
        ("PC2_2", _SPAXEL_DEG, "Coordinate transformation matrix element"),
        ("CDELT1", 1.0, "[deg] Coordinate increment at reference point"),
        ("CDELT2", 1.0, "[deg] Coordinate increment at reference point"),
        ("CDELT3", 1.0, "Coordinate increment at reference point"),
        ("CUNIT1", "deg", "Units of coordinate increment and value"),
        ("CUNIT2", "deg", "Units of coordinate increment and value"),
        ("CTYPE1", "RA---TAN", "Right ascension, gnomonic projection"),
        ("CTYPE2", "DEC--TAN", "Declination, gnomonic projection"),
        ("CRVAL1", float(ra), "[deg] Coordinate value at reference point"),
        ("CRVAL2", float(dec), "[deg] Coordinate value at reference point"),
        ("CRVAL3", 1.0, "Coordinate value at reference point"),
        ("RADESYS", "ICRS", "Equatorial coordinate system"),
    ]


def _fits_card(key: str, value, comment: str = "") -> str:
    """One 80-character FITS header card in fixed format."""
    if isinstance(value, (bool, np.bool_)):
        text = f"{'T' if value else 'F':>20}"
    elif isinstance(value, (int, np.integer)):
        text = f"{int(value):>20}"
    elif isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            raise ValueError(f"FITS header values must be finite. Received: {key}={value!r}")
        number = f"{float(value):.16G}"
        mantissa, _, exponent = number.partition("E")
        if "." not in mantissa:
            mantissa += ".0"
        text = f"{mantissa + ('E' + exponent if exponent else ''):>20}"
    else:
        quoted = str(value).replace("'", "''")
        text = f"'{quoted:<8}'"
        if len(text) < 20:
            text = f"{text:<20}"
    card = f"{key:<8}= {text}"
    if comment:
        card += f" / {comment}"
    if len(card) > 80 and len(f"{key:<8}= {text}") > 80:
        raise ValueError(f"FITS card too long for {key}. Received: {value!r}")
    return f"{card[:80]:<80}"


def _fits_header(cards: list[tuple]) -> bytes:
    """Header unit: cards, END, padded with blanks to a multiple of 2880 bytes."""
    text = "".join(_fits_card(*card) for card in cards) + f"{'END':<80}"
    text += " " * (-len(text) % 2880)
    return text.encode("ascii")


def _fits_data(data: np.ndarray) -> bytes:
    """Data unit: big-endian bytes padded with zeros to a multiple of 2880 bytes."""
    raw = data.tobytes()
    return raw + b"\0" * (-len(raw) % 2880)


def _gzip(payload: bytes) -> bytes:
    """gzip stream with run-length deflate and no timestamp (deterministic bytes)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 9, zlib.Z_RLE)
    return compressor.compress(payload) + compressor.flush()


def _write_atomically(path: Path, payload: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(payload)
    os.replace(temporary, path)


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


def _write_catalog(out_dir: Path, rows: list[dict]) -> tuple[Path, Path]:
    from astropy.table import Table

    catalog_csv = out_dir / "catalog.csv"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CATALOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write_atomically(catalog_csv, buffer.getvalue().encode())
    columns = {}
    for column in CATALOG_COLUMNS:
        values = [row[column] for row in rows]
        if isinstance(values[0], str):
            columns[column] = np.array(values, dtype=f"U{max(1, *map(len, values))}")
        else:
            columns[column] = np.array(values)
    table = Table(columns)
    catalog_fits = out_dir / "catalog.fits"
    fits_buffer = io.BytesIO()
    table.write(fits_buffer, format="fits")
    _write_atomically(catalog_fits, fits_buffer.getvalue())
    return catalog_csv, catalog_fits


def _progress_callback(progress, total: int) -> Callable[[int | None], None]:
    """Turn the ``progress`` option into ``report(done)``; ``report(None)`` closes a bar."""
    if callable(progress):
        return lambda done: None if done is None else progress(done, total)
    if not progress:
        return lambda done: None
    from rich.progress import Progress

    bar = Progress(transient=True)
    task = bar.add_task("synthesising galaxies", total=total)
    bar.start()

    def report(done):
        if done is None:
            bar.stop()
        else:
            bar.update(task, completed=done)

    return report
