"""One synthetic galaxy in memory: :func:`make_galaxy` and :class:`SyntheticGalaxy`.

:func:`make_galaxy` draws a galaxy's parameters (class ranges below), lays out its line
emission (:mod:`~ifskeras.survey.synth.morphology`, :mod:`~ifskeras.survey.synth.physics`),
reddens it, blurs it by the PSF and observes it through a MaNGA bundle
(:mod:`~ifskeras.survey.synth.instrument`). Nothing here touches files.

Examples
--------
>>> galaxy = make_galaxy(np.random.default_rng(1), "Seyfert", ifu_fibres=19)
>>> galaxy.flux.shape
(22, 32, 32)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

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
from ifskeras.survey.synth.morphology import _COMPONENT_BUILDERS, _DISC_THICKNESS, _disc_geometry
from ifskeras.survey.synth.physics import _extinction_curve

__all__ = ["CLASSES", "SyntheticGalaxy", "make_galaxy"]

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


def _dap_lines(dap: str) -> tuple[str, ...]:
    """Channel names of a DAP release's files: ``'dr15'`` (22 lines) or ``'dr17'`` (35)."""
    catalogues = {"dr15": DR15_LINES, "dr17": DR17_LINES}
    key = str(dap).lower()
    if key not in catalogues:
        raise ValueError(f"dap must be 'dr15' or 'dr17'. Received: {dap!r}")
    return tuple(catalogues[key])


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
    # The draws below keep their order: the same seed must give the same galaxy.
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
    half_light = hex_radius * np.sqrt(3.0) / 2.0 / size_factor
    geometry = _disc_geometry(dx, dy, inclination=inclination, position_angle=position_angle, half_light=half_light)
    radius, scale_length = geometry.radius, geometry.scale_length  # deprojected, spaxels
    if ha_peak is None:
        ha_peak = float(10 ** rng.uniform(*_LOG_HA_PEAK[galaxy_class]))
    if dust_av is None:
        dust_av = float(rng.uniform(*_DUST_AV[galaxy_class]))
    if snr_level is None:
        snr_level = float(10 ** rng.uniform(*_LOG_SNR_LEVEL))

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
