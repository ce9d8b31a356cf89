"""Where each class's line emission sits: disc geometry, surface brightness and layouts.

- :class:`_Geometry` and :func:`_disc_geometry`: coordinates of a galaxy's spaxels in the
  plane of a thick disc seen at an inclination, and on the sky;
- surface brightness: an exponential disc with spiral arms and star-forming clumps
  (:func:`_disc_surface`) and Sersic profiles (:func:`_sersic`);
- one layout per class (:data:`_COMPONENT_BUILDERS`): star-forming discs, composites (a
  round bulge of mixed ionisation), Seyferts (the star-forming host plus a narrow-line
  region), LINERs and retired galaxies (extended LINER-like emission following the stars),
  blueberries (a compact starburst);
- what the realistic survey adds (:class:`_LayoutOptions`; all off in the classic one):
  bars (:func:`_disc_surface`), diffuse ionised gas in discs (:func:`_dig_component`),
  off-centre and weak AGN (:func:`_seyfert_layout`), and a close companion in the bundle
  (:func:`_companion_layout`).

A layout is a dict: ``stars`` (continuum surface, for the noise), ``components`` (a list of
(surface [H, W], line cube [L, H, W] or [L, 1, 1]) summed into the intrinsic cube),
``nucleus`` (the BPT ratios at the centre, for the catalogue) and optional catalogue values
(``n_clumps``, ``agn_contrast``, ``scale_length``, ``barred``, ``dig_level``,
``agn_offset``, ``agn_fraction``) and ``dust_scale``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ifskeras.survey.synth.instrument import _PSF_SIGMA
from ifskeras.survey.synth.physics import (
    CLASSIC_DOUBLET_RATIOS,
    _blend_states,
    _blueberry_state,
    _composite_state,
    _line_cube,
    _liner_state,
    _seyfert_state,
    _sf_state,
    _state_at_centre,
)

_HALF_LIGHT_PER_SCALE_LENGTH = 1.678  # Re / h of an exponential disc
_DISC_THICKNESS = 0.15  # intrinsic axis ratio of an edge-on disc
_CLUMP_MIN_RADIUS = 4.0  # spaxels


@dataclass(frozen=True)
class _LayoutOptions:
    """What a survey variant adds to the layouts; the defaults are the classic survey's.

    A zero fraction or an empty range draws no random number at all, so the classic survey
    keeps its random stream and its files stay byte-identical. Lengths in spaxels.
    """

    doublet_ratios: Mapping[str, tuple[str, float]] = field(default_factory=lambda: CLASSIC_DOUBLET_RATIOS)
    bar_fraction: float = 0.0  # discs with a bar (ridge plus bright bar ends)
    dig_level: tuple[float, float] = ()  # log-uniform range: DIG / disc central surface brightness
    dig_scale: tuple[float, float] = ()  # uniform range: DIG scale length / disc scale length
    weak_agn_fraction: float = 0.0  # Seyferts whose AGN is diluted by the host's star formation
    weak_agn_contrast: tuple[float, float] = ()  # log-uniform range of their AGN/host Ha peak ratio
    agn_offset_fraction: float = 0.0  # Seyferts whose nucleus is off the galaxy centre
    agn_offset: tuple[float, float] = ()  # uniform range of that offset, spaxels


@dataclass(frozen=True)
class _Geometry:
    """Coordinates of a galaxy's spaxels, spaxel units: deprojected disc and sky plane."""

    radius: np.ndarray  # deprojected radius in the disc plane
    major: np.ndarray  # along the major axis
    minor: np.ndarray  # along the minor axis, deprojected
    sky_radius: np.ndarray  # distance from the centre on the sky (round components)
    sky_x: np.ndarray  # sky offset from the centre along the map's columns
    sky_y: np.ndarray  # sky offset from the centre along the map's rows
    scale_length: float
    half_light: float


def _disc_geometry(
    dx, dy, *, inclination: float, position_angle: float, half_light: float, thickness: float = _DISC_THICKNESS
) -> _Geometry:
    """Geometry of spaxels at sky offsets ``dx``, ``dy`` from the galaxy centre (spaxels).

    Angles in degrees, the position angle of the major axis counted from the +y axis; the
    disc has intrinsic axis ratio ``thickness`` (:data:`_DISC_THICKNESS` unless a thinner
    edge-on disc is drawn), so edge-on discs are not lines.
    """
    cos_i = np.cos(np.radians(inclination))
    axis_ratio = np.sqrt(cos_i**2 * (1 - thickness**2) + thickness**2)
    theta = np.radians(position_angle)
    major = -dx * np.sin(theta) + dy * np.cos(theta)
    minor = (dx * np.cos(theta) + dy * np.sin(theta)) / axis_ratio
    return _Geometry(
        radius=np.hypot(major, minor), major=major, minor=minor, sky_radius=np.hypot(dx, dy),
        sky_x=dx, sky_y=dy, scale_length=half_light / _HALF_LIGHT_PER_SCALE_LENGTH, half_light=half_light,
    )


def _disc_surface(rng, geometry: _Geometry, *, bar_fraction: float = 0.0):
    """Exponential disc with two spiral arms, star-forming clumps and, for ``bar_fraction`` of
    discs, a bar (peak ~1). Returns the surface, the number of clumps and whether it is barred.
    """
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
    barred = bool(bar_fraction) and rng.uniform() < bar_fraction
    if barred:
        surface = surface + _bar_surface(rng, geometry)
    return surface, n_clumps, barred


def _bar_surface(rng, geometry: _Geometry):
    """A bar in the disc plane: a faint elongated ridge with star formation at both ends.

    Gas flows along a bar and forms stars where the bar ends, so Ha maps of barred discs show
    a pair of symmetric knots joined by a weaker ridge: structure a normal disc can have.
    """
    half_length = rng.uniform(1.0, 2.0) * geometry.scale_length
    half_width = rng.uniform(0.2, 0.35) * half_length
    angle = rng.uniform(0.0, np.pi)
    along = geometry.major * np.cos(angle) + geometry.minor * np.sin(angle)
    across = -geometry.major * np.sin(angle) + geometry.minor * np.cos(angle)
    ridge = rng.uniform(0.3, 0.6) * np.exp(-0.5 * ((along / half_length) ** 2 + (across / half_width) ** 2))
    end_brightness = rng.uniform(0.5, 1.2)
    ends = sum(
        end_brightness * np.exp(-0.5 * ((along - side * half_length) ** 2 + across**2) / half_width**2)
        for side in (-1.0, 1.0)
    )
    return ridge + ends


def _dig_component(rng, geometry: _Geometry, lines, options: _LayoutOptions):
    """Diffuse ionised gas: a faint disc layer, more extended than the HII regions, with
    LINER-like ratios (high [NII]/Ha, [SII]/Ha), so the ratios rise in a disc's outskirts.

    Returns the component (surface, line cube) and its central level relative to the disc.
    """
    level = float(10 ** rng.uniform(*np.log10(options.dig_level)))
    scale = rng.uniform(*options.dig_scale) * geometry.scale_length
    surface = level * np.exp(-geometry.radius / scale)
    cube = _line_cube(_liner_state(rng), lines, (), options.doublet_ratios)[:, None, None]
    return (surface, cube), level


def _sersic(radius, half_light, index):
    b_n = 2.0 * index - 1.0 / 3.0 + 0.009876 / index
    return np.exp(-b_n * ((radius / half_light) ** (1.0 / index) - 1.0))


def _with_dig(rng, layout: dict, geometry: _Geometry, lines, options: _LayoutOptions) -> dict:
    """A disc layout plus its diffuse ionised gas, when the options draw any."""
    if not options.dig_level:
        return layout
    component, level = _dig_component(rng, geometry, lines, options)
    return {**layout, "components": layout["components"] + [component], "dig_level": level}


def _star_forming_layout(rng, geometry: _Geometry, lines, options: _LayoutOptions):
    radius, scale_length = geometry.radius, geometry.scale_length
    x_centre = rng.uniform(-1.0, -0.35)
    gradient = rng.uniform(0.02, 0.06)  # dex per scale length, metallicity falls outwards
    state = _sf_state(rng, x_centre - gradient * radius / scale_length)
    surface, n_clumps, barred = _disc_surface(rng, geometry, bar_fraction=options.bar_fraction)
    layout = {
        "stars": np.exp(-radius / (1.2 * scale_length)),
        "components": [(surface, _line_cube(state, lines, radius.shape, options.doublet_ratios))],
        "nucleus": _state_at_centre(state, radius),
        "n_clumps": n_clumps,
        "barred": barred,
    }
    return _with_dig(rng, layout, geometry, lines, options)


def _composite_layout(rng, geometry: _Geometry, lines, options: _LayoutOptions):
    radius, scale_length = geometry.radius, geometry.scale_length
    disc, n_clumps, barred = _disc_surface(rng, geometry, bar_fraction=options.bar_fraction)
    x_disc = rng.uniform(-0.7, -0.4) - rng.uniform(0.02, 0.06) * radius / scale_length
    inner = _composite_state(rng)
    core = rng.uniform(3.5, 6.0)  # spaxels, larger than a 3 arcsec fibre; a round bulge
    weight = np.exp(-0.5 * (geometry.sky_radius / core) ** 2)
    state = _blend_states(inner, _sf_state(rng, x_disc), weight)
    bulge = rng.uniform(1.0, 3.0) * weight
    layout = {
        "stars": np.exp(-radius / (1.2 * scale_length)) + bulge,
        "components": [(disc + bulge, _line_cube(state, lines, radius.shape, options.doublet_ratios))],
        "nucleus": {key: inner[key] for key in "xyso"},
        "n_clumps": n_clumps,
        "barred": barred,
    }
    return _with_dig(rng, layout, geometry, lines, options)


def _seyfert_layout(rng, geometry: _Geometry, lines, options: _LayoutOptions):
    """The star-forming host plus a narrow-line region; with the realistic options some
    nuclei are weak (diluted by the host's star formation) or off the galaxy centre."""
    host = _star_forming_layout(rng, geometry, lines, options)
    agn = _seyfert_state(rng)
    contrast = 10 ** rng.uniform(np.log10(5.0), np.log10(20.0))
    nlr_sigma = rng.uniform(0.3, 1.5)  # spaxels, round on the sky
    # The realistic draws come after the classic ones, which keep their order, and a weak
    # nucleus redraws its contrast.
    if options.weak_agn_fraction and rng.uniform() < options.weak_agn_fraction:
        contrast = 10 ** rng.uniform(*np.log10(options.weak_agn_contrast))
    nucleus_x = nucleus_y = 0.0
    if options.agn_offset_fraction and rng.uniform() < options.agn_offset_fraction:
        distance, direction = rng.uniform(*options.agn_offset), rng.uniform(0.0, 2.0 * np.pi)
        nucleus_x, nucleus_y = distance * np.cos(direction), distance * np.sin(direction)
    nlr_radius = np.hypot(geometry.sky_x - nucleus_x, geometry.sky_y - nucleus_y)
    nlr = contrast * np.exp(-0.5 * (nlr_radius / nlr_sigma) ** 2)
    nlr *= 1.0 + _PSF_SIGMA**2 / nlr_sigma**2  # peak after the PSF ~ contrast x host peak
    nlr_cube = _line_cube(agn, lines, (), options.doublet_ratios)[:, None, None]
    ha = list(lines).index("Ha-6564")
    host_ha = sum(float(np.sum(surface * cube[ha])) for surface, cube in host["components"])
    agn_ha = float(np.sum(nlr)) * float(nlr_cube[ha, 0, 0])
    return {
        **host,
        "components": host["components"] + [(nlr, nlr_cube)],
        "nucleus": {key: agn[key] for key in "xyso"},
        "agn_contrast": contrast,
        "agn_offset": float(np.hypot(nucleus_x, nucleus_y)),
        "agn_fraction": agn_ha / (agn_ha + host_ha),  # of the intrinsic Ha, before dust and PSF
    }


def _early_type_layout(rng, geometry: _Geometry, lines, options: _LayoutOptions):
    radius = geometry.radius
    state = _liner_state(rng)
    index = rng.uniform(1.0, 2.5)
    surface = _sersic(radius, geometry.half_light, index)
    # Mild outward rise of [NII]/Ha and [SII]/Ha, as in extended LINER-like emission.
    rise = 0.03 * radius / geometry.scale_length
    field_state = dict(state, x=state["x"] + rise, s=state["s"] + rise)
    return {
        "stars": surface / surface.max(),
        "components": [(surface, _line_cube(field_state, lines, radius.shape, options.doublet_ratios))],
        "nucleus": {key: state[key] for key in "xyso"},
    }


def _blueberry_layout(rng, geometry: _Geometry, lines, options: _LayoutOptions):
    radius = geometry.sky_radius  # compact and round
    state = _blueberry_state(rng)
    sigma = rng.uniform(0.3, 1.2)  # spaxels: unresolved once blurred by the PSF
    surface = np.exp(-0.5 * (radius / sigma) ** 2) + 0.01 * np.exp(-radius / 3.0)
    return {
        "stars": surface / surface.max(),
        "components": [(surface, _line_cube(state, lines, (), options.doublet_ratios)[:, None, None])],
        "nucleus": {key: state[key] for key in "xyso"},
        "scale_length": sigma,
        "dust_scale": 3.0,
    }


_COMPONENT_BUILDERS = {
    "SF": _star_forming_layout,
    "composite": _composite_layout,
    "Seyfert": _seyfert_layout,
    "LINER": _early_type_layout,
    "retired": _early_type_layout,
    "blueberry": _blueberry_layout,
}


def _companion_layout(rng, sky_x, sky_y, *, reach: float, primary_half_light: float, lines, options: _LayoutOptions):
    """A smaller star-forming galaxy elsewhere in the bundle: a close pair seen in one IFU.

    ``sky_x``, ``sky_y`` are offsets from the primary's centre and ``reach`` the distance
    from it that stays inside the bundle (spaxels). The companion is a disc of its own
    (:func:`_star_forming_layout`), 0.2 to 0.4 of the primary's size. Returns a
    layout (``stars``, ``components``) plus the companion's offset ``centre`` and
    ``peak_ratio``, its Ha peak after the PSF relative to the primary's (0.3 to 0.8: fainter,
    yet a second peak on the map).
    """
    distance = rng.uniform(0.6, 0.9) * reach
    direction = rng.uniform(0.0, 2.0 * np.pi)
    centre = (distance * np.cos(direction), distance * np.sin(direction))
    geometry = _disc_geometry(
        sky_x - centre[0], sky_y - centre[1],
        inclination=float(np.degrees(np.arccos(rng.uniform(0.3, 1.0)))),
        position_angle=rng.uniform(0.0, 180.0),
        half_light=rng.uniform(0.2, 0.4) * primary_half_light,
    )
    companion = _star_forming_layout(rng, geometry, lines, options)
    return {
        "stars": companion["stars"],
        "components": companion["components"],
        "centre": centre,
        "peak_ratio": rng.uniform(0.3, 0.8),
    }
