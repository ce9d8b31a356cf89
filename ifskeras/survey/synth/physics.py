"""Line physics of the synthetic galaxies: ionisation states, line fluxes and dust.

- ionisation states, one per kind of source: HII regions along the star-forming sequence
  (:func:`_sf_state`), composites, Seyfert narrow-line regions, LINER-like emission and
  blueberry starbursts, each placed in its region of the BPT diagrams (Kauffmann et al.
  2003; Kewley et al. 2001, 2006), and :func:`_blend_states` to mix two of them;
- :func:`_line_cube`: every DAP line's intrinsic flux relative to Hbeta from a state, with
  Balmer lines in case B (:data:`CASE_B_BALMER`) and doublets at fixed ratios: those of the
  real DAP (:data:`DOUBLET_RATIOS`, :data:`DAP_TIED_LINES`) or, in the classic survey, the
  earlier values (:data:`CLASSIC_DOUBLET_RATIOS`); :func:`_tied_lines` picks the three the
  DAP ties out of either set;
- :func:`_extinction_curve`: the Cardelli, Clayton & Mathis (1989) law, R_V = 3.1.

A state is a dict of log line ratios (``x`` = log [NII]/Ha, ``y`` = log [OIII]/Hb, ``s`` =
log [SII]/Ha, ``o`` = log [OI]/Ha) and the other ratios in :data:`_STATE_KEYS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np

from ifskeras.survey.bpt import kauffmann03, kewley01_nii
from ifskeras.survey.lines import DR15_LINES, DR17_LINES

__all__ = ["CASE_B_BALMER", "DOUBLET_RATIOS", "CLASSIC_DOUBLET_RATIOS", "DAP_TIED_LINES"]

#: Case B recombination (T = 1e4 K, n_e = 100 cm^-3) relative to Hbeta.
CASE_B_BALMER: Mapping[str, float] = MappingProxyType({
    "Ha-6564": 2.86, "Hb-4862": 1.0, "Hgam-4341": 0.468, "Hdel-4102": 0.259,
    "Heps-3971": 0.159, "Hzet-3890": 0.105, "Heta-3836": 0.0731, "Hthe-3798": 0.0530,
    "H11-3771": 0.0397, "H12-3751": 0.0305,
    "Peta-9017": 0.0184, "Pzet-9231": 0.0255, "Peps-9548": 0.0367,
})
#: Fixed ratios weak/strong of doublets (atomic physics); the three the DAP ties in its fit
#: ([OIII], [NII], [OI]) at the DAP's own values, measured pixel by pixel on the two real DR15
#: files (0.340, 0.327, 0.328 to 7 digits in both).
DOUBLET_RATIOS: Mapping[str, tuple[str, float]] = MappingProxyType({
    "OIII-4960": ("OIII-5008", 0.340),
    "NII-6549": ("NII-6585", 0.327),
    "OI-6365": ("OI-6302", 0.328),
    "NeIII-3968": ("NeIII-3869", 0.31),
    "ArIII-7753": ("ArIII-7137", 0.24),
    "SIII-9533": ("SIII-9071", 2.47),
})
#: The doublet ratios of the classic survey, written before the DAP's values were measured
#: (0.335, 0.34, 0.32 for the tied three): kept so classic surveys reproduce byte for byte.
CLASSIC_DOUBLET_RATIOS: Mapping[str, tuple[str, float]] = MappingProxyType({
    **DOUBLET_RATIOS,
    "OIII-4960": ("OIII-5008", 0.335),
    "NII-6549": ("NII-6585", 0.34),
    "OI-6365": ("OI-6302", 0.32),
})
_DAP_TIED_NAMES = ("OIII-4960", "NII-6549", "OI-6365")


def _tied_lines(doublet_ratios: Mapping[str, tuple[str, float]]) -> dict[str, tuple[str, float]]:
    """The doublets the DAP ties in its fit (weak -> (strong, ratio)), out of a set of ratios."""
    return {name: doublet_ratios[name] for name in _DAP_TIED_NAMES}


#: Doublets whose fluxes the DAP ties in its fit: the weak line is the strong one times the
#: ratio, with ivar divided by the ratio squared (as in the real files).
DAP_TIED_LINES: Mapping[str, tuple[str, float]] = MappingProxyType(_tied_lines(DOUBLET_RATIOS))

_HA_HB = CASE_B_BALMER["Ha-6564"]
_R_V = 3.1
_STATE_KEYS = (
    "x", "y", "s", "o", "log_oii_hb", "oii_ratio", "sii_ratio", "neiii_oiii", "heii_hb",
    "hei_hb", "ni_hb", "ariii_hb", "siii_hb",
)


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


def _state_at_centre(state: dict, radius: np.ndarray) -> dict:
    """The BPT ratios (``x``, ``y``, ``s``, ``o``) of a state map at its smallest radius."""
    centre = np.unravel_index(np.argmin(radius), radius.shape)
    return {key: float(np.broadcast_to(state[key], radius.shape)[centre]) for key in "xyso"}


def _line_cube(state: dict, lines: Sequence[str], shape, doublet_ratios: Mapping[str, tuple[str, float]]) -> np.ndarray:
    """Intrinsic (unreddened) line fluxes relative to Hbeta, [L, *shape], doublets at ``doublet_ratios``."""
    ratio = {weak: value for weak, (_, value) in doublet_ratios.items()}
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
        "NeIII-3968": ratio["NeIII-3968"] * neiii,
        "HeI-3889": 0.95 * state["hei_hb"],
        "HeII-4687": state["heii_hb"],
        "OIII-5008": oiii,
        "OIII-4960": ratio["OIII-4960"] * oiii,
        "NI-5199": 0.4 * state["ni_hb"],
        "NI-5201": 0.6 * state["ni_hb"],
        "HeI-5877": state["hei_hb"],
        "OI-6302": ha * 10 ** np.asarray(state["o"], dtype=float),
        "OI-6365": ratio["OI-6365"] * ha * 10 ** np.asarray(state["o"], dtype=float),
        "NII-6585": ha * 10 ** np.asarray(state["x"], dtype=float),
        "NII-6549": ratio["NII-6549"] * ha * 10 ** np.asarray(state["x"], dtype=float),
        "SII-6718": sii * state["sii_ratio"] / (1 + state["sii_ratio"]),
        "SII-6732": sii / (1 + state["sii_ratio"]),
        "HeI-7067": 0.25 * state["hei_hb"],
        "ArIII-7137": ariii,
        "ArIII-7753": ratio["ArIII-7753"] * ariii,
        "SIII-9071": siii,
        "SIII-9533": ratio["SIII-9533"] * siii,
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
