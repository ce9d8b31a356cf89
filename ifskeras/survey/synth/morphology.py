"""Where each class's line emission sits: disc geometry, surface brightness and layouts.

- :class:`_Geometry` and :func:`_disc_geometry`: coordinates of a galaxy's spaxels in the
  plane of a thick disc seen at an inclination, and on the sky;
- surface brightness: an exponential disc with spiral arms and star-forming clumps
  (:func:`_disc_surface`) and Sersic profiles (:func:`_sersic`);
- one layout per class (:data:`_COMPONENT_BUILDERS`): star-forming discs, composites (a
  round bulge of mixed ionisation), Seyferts (the star-forming host plus a narrow-line
  region), LINERs and retired galaxies (extended LINER-like emission following the stars),
  blueberries (a compact starburst).

A layout is a dict: ``stars`` (continuum surface, for the noise), ``components`` (a list of
(surface [H, W], line cube [L, H, W] or [L, 1, 1]) summed into the intrinsic cube),
``nucleus`` (the BPT ratios at the centre, for the catalogue) and optional catalogue values
(``n_clumps``, ``agn_contrast``, ``scale_length``) and ``dust_scale``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ifskeras.survey.synth.instrument import _PSF_SIGMA
from ifskeras.survey.synth.physics import (
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
class _Geometry:
    """Coordinates of a galaxy's spaxels, spaxel units: deprojected disc and sky plane."""

    radius: np.ndarray  # deprojected radius in the disc plane
    major: np.ndarray  # along the major axis
    minor: np.ndarray  # along the minor axis, deprojected
    sky_radius: np.ndarray  # distance from the centre on the sky (round components)
    scale_length: float
    half_light: float


def _disc_geometry(dx, dy, *, inclination: float, position_angle: float, half_light: float) -> _Geometry:
    """Geometry of spaxels at sky offsets ``dx``, ``dy`` from the galaxy centre (spaxels).

    Angles in degrees, the position angle of the major axis counted from the +y axis; the
    disc has intrinsic thickness :data:`_DISC_THICKNESS`, so edge-on discs are not lines.
    """
    cos_i = np.cos(np.radians(inclination))
    axis_ratio = np.sqrt(cos_i**2 * (1 - _DISC_THICKNESS**2) + _DISC_THICKNESS**2)
    theta = np.radians(position_angle)
    major = -dx * np.sin(theta) + dy * np.cos(theta)
    minor = (dx * np.cos(theta) + dy * np.sin(theta)) / axis_ratio
    return _Geometry(
        radius=np.hypot(major, minor), major=major, minor=minor, sky_radius=np.hypot(dx, dy),
        scale_length=half_light / _HALF_LIGHT_PER_SCALE_LENGTH, half_light=half_light,
    )


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


_COMPONENT_BUILDERS = {
    "SF": _star_forming_layout,
    "composite": _composite_layout,
    "Seyfert": _seyfert_layout,
    "LINER": _early_type_layout,
    "retired": _early_type_layout,
    "blueberry": _blueberry_layout,
}
