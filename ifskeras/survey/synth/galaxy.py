"""One synthetic galaxy in memory: :func:`make_galaxy` and :class:`SyntheticGalaxy`.

:func:`make_galaxy` draws a galaxy's parameters (class ranges below), lays out its line
emission (:mod:`~ifskeras.survey.synth.morphology`, :mod:`~ifskeras.survey.synth.physics`),
reddens it, blurs it by the PSF and observes it through a MaNGA bundle
(:mod:`~ifskeras.survey.synth.instrument`). Nothing here touches files.

Two variants (:data:`VARIANTS`, :data:`_VARIANTS`): ``classic``, the original survey, whose
galaxies never change for a seed, and ``realistic``, harder and closer to MaNGA: one Halpha
brightness distribution shared by the line-emitting classes, the DAP's doublet ratios,
noise correlated between neighbouring spaxels, diffuse ionised gas, weak and off-centre AGN,
bars, thin edge-on discs and close companions.

Examples
--------
>>> galaxy = make_galaxy(np.random.default_rng(1), "Seyfert", ifu_fibres=19)
>>> galaxy.flux.shape
(22, 32, 32)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from ifskeras.survey.bpt import DEFAULT_APERTURE_RADIUS
from ifskeras.survey.lines import DEFAULT_LINES, DR15_LINES, DR17_LINES
from ifskeras.survey.maps import DAP_MASK_BITS, DEFAULT_REJECT_BITS, GalaxyMaps
from ifskeras.survey.synth.instrument import (
    _FLUX_UNIT,
    _PSF_SIGMA,
    IFU_MAP_SIZES,
    PLATE_IFU_FIBRES,
    _blank_unusable,
    _blur,
    _dap_mask,
    _hexagon_edge_distance,
    _observe,
)
from ifskeras.survey.synth.morphology import (
    _COMPONENT_BUILDERS,
    _DISC_THICKNESS,
    _companion_layout,
    _disc_geometry,
    _LayoutOptions,
)
from ifskeras.survey.synth.physics import DOUBLET_RATIOS, _extinction_curve, _tied_lines

__all__ = ["CLASSES", "VARIANTS", "DEFAULT_VARIANT", "SyntheticGalaxy", "make_galaxy", "effective_radius_spaxels"]

#: Galaxy classes of a synthetic survey.
CLASSES: tuple[str, ...] = ("SF", "composite", "Seyfert", "LINER", "retired", "blueberry")
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

#: Survey variants: ``classic`` (the original survey: the same seed always gives the same
#: files) and ``realistic`` (harder and closer to MaNGA; see :data:`_VARIANTS`).
VARIANTS: tuple[str, ...] = ("classic", "realistic")
#: The variant made when none is named: one constant, so the default can be flipped in one place.
DEFAULT_VARIANT = "classic"
_DISC_CLASSES = ("SF", "composite", "Seyfert")


@dataclass(frozen=True)
class _Variant:
    """What a survey variant changes in each galaxy; the defaults are the classic survey's.

    A zero fraction draws no random number, so classic galaxies keep their random stream.
    ``brightness`` names what ``log_ha_brightness`` (log10 ranges per class, 1e-17
    erg/s/cm^2/spaxel) sets: ``'peak'``, the noiseless Ha peak; ``'mean_and_centre'``, the
    geometric mean of the Ha surface brightness averaged over the bundle and within the
    central aperture (:func:`_ha_brightness`).
    """

    name: str
    layout: _LayoutOptions = field(default_factory=_LayoutOptions)
    log_ha_brightness: Mapping[str, tuple[float, float]] = field(default_factory=lambda: _LOG_HA_PEAK)
    brightness: str = "peak"
    noise_correlation_fwhm: float = 0.0  # spaxels; 0: noise independent between spaxels
    edge_on_fraction: float = 0.0  # of discs, seen nearly edge-on and thin
    edge_on_inclination: tuple[float, float] = ()
    edge_on_thickness: tuple[float, float] = ()
    companion_fraction: float = 0.0  # of galaxies, with a smaller companion in the bundle


#: log10 range of the Ha brightness (:func:`_ha_brightness`) in the realistic survey. The
#: line-emitting classes share one range, 2.2 dex wide around the classic SF galaxies' span
#: of the same measure (-0.2 to 1.7; the real star-forming file 7815-3702 has 1.4). LINERs
#: and retired galaxies are defined by their weak lines (EW(Ha) < 3 A for retired ones), so
#: they keep the span their classic galaxies have (the faint real file 8143-3701 has -1.0).
_REALISTIC_LOG_HA_BRIGHTNESS = MappingProxyType({
    "SF": (-0.5, 1.7), "composite": (-0.5, 1.7), "Seyfert": (-0.5, 1.7), "blueberry": (-0.5, 1.7),
    "LINER": (-0.85, 0.3), "retired": (-2.2, -1.1),
})
_VARIANTS: Mapping[str, _Variant] = MappingProxyType({
    "classic": _Variant("classic"),
    "realistic": _Variant(
        "realistic",
        layout=_LayoutOptions(
            doublet_ratios=DOUBLET_RATIOS,
            bar_fraction=0.3,
            dig_level=(0.02, 0.10),
            dig_scale=(2.0, 3.0),
            weak_agn_fraction=0.4,
            weak_agn_contrast=(0.03, 0.5),
            agn_offset_fraction=0.3,
            agn_offset=(1.0, 4.0),  # 0.5 to 2 arcsec
        ),
        log_ha_brightness=_REALISTIC_LOG_HA_BRIGHTNESS,
        brightness="mean_and_centre",
        # Adjacent spaxels then correlate at 0.71; after a high-pass and the DAP's zero
        # clipping 0.57, as measured on the faint real file 8143-3701 (0.58).
        noise_correlation_fwhm=2.0,
        edge_on_fraction=0.15,
        edge_on_inclination=(84.0, 90.0),
        edge_on_thickness=(0.07, 0.12),  # thin discs; classic discs are 0.15 thick
        companion_fraction=0.12,
    ),
})


@dataclass(frozen=True)
class SyntheticGalaxy:
    """One synthetic galaxy in memory, arrays [L, H, W] in the channel order of ``lines``.

    ``flux``, ``ivar`` and ``mask`` are what a MAPS file holds (masked spaxels hold 0);
    ``model`` is the noiseless flux; ``params`` the generating parameters; ``variant`` the
    survey variant (:data:`VARIANTS`) it was drawn in.
    """

    galaxy_class: str
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    model: np.ndarray
    lines: tuple[str, ...]
    params: dict = field(default_factory=dict)
    variant: str = DEFAULT_VARIANT

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


def _dap_lines(dap: str) -> tuple[str, ...]:
    """Channel names of a DAP release's files: ``'dr15'`` (22 lines) or ``'dr17'`` (35)."""
    catalogues = {"dr15": DR15_LINES, "dr17": DR17_LINES}
    key = str(dap).lower()
    if key not in catalogues:
        raise ValueError(f"dap must be 'dr15' or 'dr17'. Received: {dap!r}")
    return tuple(catalogues[key])


def _variant(name: str) -> _Variant:
    """The settings of a survey variant by name (case-insensitive)."""
    key = str(name).lower()
    if key not in _VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}. Received: {name!r}")
    return _VARIANTS[key]


def _ha_brightness(ha_map: np.ndarray, covered: np.ndarray, centre: tuple[float, float]) -> float:
    """Geometric mean of the Ha surface brightness averaged over the bundle and within the
    central aperture (3 spaxels, an SDSS fibre).

    A compact source (an AGN, a starburst) has a brighter centre and a lower mean than a disc
    of the same value, by the same factor: fixing this one number keeps both measures of
    brightness overlapping between classes.
    """
    yy, xx = np.indices(ha_map.shape)
    aperture = np.hypot(yy - centre[0], xx - centre[1]) <= DEFAULT_APERTURE_RADIUS
    mean = ha_map[covered].mean()
    central = ha_map[aperture].mean()
    return float(np.sqrt(mean * central))


def _reddened_and_blurred(components, attenuation: np.ndarray) -> np.ndarray:
    """Sum of (surface, line cube) components, times ``attenuation`` and blurred by the PSF, [L, H, W]."""
    return _blur(sum(surface[None] * cube for surface, cube in components) * attenuation, _PSF_SIGMA)


def effective_radius_spaxels(map_size: int, size_factor: float) -> float:
    """Effective (half-light) radius, in spaxels, of a synthetic galaxy on a map of ``map_size``.

    As in MaNGA's design, the bundle reaches ``size_factor`` effective radii (1.5 for the
    Primary sample, 2.5 for the Secondary): the radius is the hexagonal bundle's inradius
    over ``size_factor``. A survey's ``catalog.csv`` holds ``map_size`` and ``size_factor``.

    Examples
    --------
    >>> round(float(effective_radius_spaxels(32, 1.5)), 3)
    8.66
    """
    hex_radius = map_size / 2.0 - 1.0  # vertex to vertex: size - 2 spaxels, as in real files
    return hex_radius * np.sqrt(3.0) / 2.0 / size_factor


def make_galaxy(
    rng: np.random.Generator,
    galaxy_class: str,
    *,
    variant: str = DEFAULT_VARIANT,
    dap: str = "dr15",
    ifu_fibres: int | None = None,
    ha_peak: float | None = None,
    snr_level: float | None = None,
    dust_av: float | None = None,
    inclination: float | None = None,
    position_angle: float | None = None,
    size_factor: float | None = None,
    defects: bool = True,
    depth: float = 1.0,
) -> SyntheticGalaxy:
    """Draw one synthetic galaxy of a class, noiseless model and noisy DAP-like maps.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random draw; the same generator state gives the same galaxy.
    galaxy_class : str
        One of :data:`CLASSES`: ``SF``, ``composite``, ``Seyfert``, ``LINER``, ``retired``,
        ``blueberry``.
    variant : {'classic', 'realistic'}
        Survey variant (:data:`VARIANTS`, default :data:`DEFAULT_VARIANT`). ``classic``
        galaxies never change for a seed; ``realistic`` ones share one Ha brightness
        distribution across the line-emitting classes, use the DAP's tied doublet ratios,
        correlated noise, diffuse ionised gas, weak and off-centre AGN, bars, thin edge-on
        discs and close companions.
    dap : {'dr15', 'dr17'}
        Channel set: the 22 lines of DR15-era files or the 35 of DR17 files.
    ifu_fibres : int, optional
        IFU bundle size (19, 37, 61, 91 or 127); drawn with the plate's mix if omitted.
    ha_peak : float, optional
        Peak of the noiseless Halpha map in 1e-17 erg/s/cm^2/spaxel; drawn per class if
        omitted (realistic: through the brightness of :func:`_ha_brightness`).
    snr_level : float, optional
        Inverse-variance scale: 1 gives ivar ~1000 on Halpha far from the centre.
    depth : float
        Multiplies the (drawn or given) ``snr_level``: a shallower (< 1) or deeper survey
        with everything else unchanged. ``depth=0.3`` gives S/N x0.55.
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
    settings = _variant(variant)
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
    # The draws below keep their order: the same seed must give the same galaxy.
    centre = (size - 1) / 2.0
    hex_radius = size / 2.0 - 1.0  # vertex to vertex: size - 2 spaxels, as in real files
    yy, xx = np.indices((size, size), dtype=np.float64)
    edge_distance = _hexagon_edge_distance(xx - centre, yy - centre, hex_radius)
    offset = rng.uniform(-0.5, 0.5, 2)
    dx, dy = xx - centre - offset[0], yy - centre - offset[1]
    thickness = _DISC_THICKNESS
    edge_on = (
        inclination is None and galaxy_class in _DISC_CLASSES
        and bool(settings.edge_on_fraction) and rng.uniform() < settings.edge_on_fraction
    )
    if edge_on:
        inclination = float(rng.uniform(*settings.edge_on_inclination))
        thickness = float(rng.uniform(*settings.edge_on_thickness))
    if inclination is None:
        min_cos = 0.3 if early_type else _DISC_THICKNESS
        inclination = float(np.degrees(np.arccos(rng.uniform(min_cos, 1.0))))
    if position_angle is None:
        position_angle = float(rng.uniform(0.0, 180.0))
    if size_factor is None:
        size_factor = 1.5 if rng.uniform() < 2.0 / 3.0 else 2.5
    half_light = effective_radius_spaxels(size, size_factor)
    geometry = _disc_geometry(
        dx, dy, inclination=inclination, position_angle=position_angle, half_light=half_light, thickness=thickness
    )
    radius, scale_length = geometry.radius, geometry.scale_length  # deprojected, spaxels
    brightness = None
    if ha_peak is None:
        brightness = float(10 ** rng.uniform(*settings.log_ha_brightness[galaxy_class]))
    if dust_av is None:
        dust_av = float(rng.uniform(*_DUST_AV[galaxy_class]))
    if snr_level is None:
        snr_level = float(10 ** rng.uniform(*_LOG_SNR_LEVEL))
    if depth != 1.0:  # (left alone at 1, so default surveys stay byte-identical)
        snr_level *= float(depth)

    layout = _COMPONENT_BUILDERS[galaxy_class](rng, geometry, lines, settings.layout)
    stars, components, nucleus = layout["stars"], layout["components"], layout["nucleus"]
    companion = None
    if settings.companion_fraction and rng.uniform() < settings.companion_fraction:
        # Inside the hexagon's inscribed circle, with room for the companion's own body.
        companion = _companion_layout(
            rng, dx, dy, reach=hex_radius * np.sqrt(3.0) / 2.0 - 2.0, primary_half_light=half_light,
            lines=lines, options=settings.layout,
        )
    av_map = dust_av * np.exp(-radius / (2.0 * layout.get("dust_scale", scale_length)))
    attenuation = 10.0 ** (-0.4 * av_map[None] * _extinction_curve(lines)[:, None, None])
    model = _reddened_and_blurred(components, attenuation)
    ha = lines.index("Ha-6564")
    companion_centre = (0.0, 0.0)
    if companion is not None:
        # Scaled after the PSF: its Ha peak a set fraction of the primary's, whatever the
        # class. It sits behind the primary's dust, which is faint that far out.
        companion_model = _reddened_and_blurred(companion["components"], attenuation)
        scale = companion["peak_ratio"] * model[ha].max() / companion_model[ha].max()
        model = model + scale * companion_model
        stars = stars + companion["peak_ratio"] * companion["stars"]
        companion_centre = (companion["centre"][0] + offset[0], companion["centre"][1] + offset[1])
    if brightness is not None and settings.brightness == "mean_and_centre":
        galaxy_centre = (centre + offset[1], centre + offset[0])
        model *= brightness / _ha_brightness(model[ha], edge_distance >= 0, galaxy_centre)
        ha_peak = float(model[ha].max())
    else:
        if ha_peak is None:
            ha_peak = brightness  # the classic survey draws the noiseless Ha peak itself
        model *= ha_peak / model[ha].max()

    flux, ivar = _observe(
        rng, model, stars, edge_distance, lines, snr_level,
        tied_lines=_tied_lines(settings.layout.doublet_ratios),
        noise_correlation_fwhm=settings.noise_correlation_fwhm,
    )
    mask, defect = _dap_mask(rng, edge_distance, geometry.sky_radius, len(lines), defects=defects)
    _blank_unusable(flux, ivar, mask)

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
        "variant": settings.name,
        "ha_total": round(float(model[ha][edge_distance >= 0].sum()), 4),
        "dig_level": round(float(layout.get("dig_level", 0.0)), 4),
        "barred": int(layout.get("barred", False)),
        "edge_on": int(edge_on),
        "agn_offset": round(float(layout.get("agn_offset", 0.0)), 4),
        "agn_fraction": round(float(layout.get("agn_fraction", 0.0)), 4),
        "companion_dx": round(float(companion_centre[0]), 4),
        "companion_dy": round(float(companion_centre[1]), 4),
    }
    return SyntheticGalaxy(
        galaxy_class=galaxy_class,
        flux=flux.astype(np.float32),
        ivar=ivar.astype(np.float32),
        mask=mask,
        model=model.astype(np.float32),
        lines=lines,
        params=params,
        variant=settings.name,
    )
