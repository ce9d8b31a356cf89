"""What MaNGA and its DAP do to a galaxy's light: bundle footprint, PSF, noise and mask.

- the IFU bundles (:data:`IFU_MAP_SIZES`, :data:`PLATE_IFU_FIBRES`) and their hexagonal
  footprint on the map (:func:`_hexagon_edge_distance`);
- the reconstructed PSF (:data:`PSF_FWHM_SPAXELS`) and its convolution (:func:`_blur`);
- noise: the inverse variance of each spaxel and the noisy, zero-clipped fluxes drawn from
  it (:func:`_observe`), calibrated against two real DR15 MAPS files; independent between
  spaxels, or correlated between neighbours as in MaNGA cubes (:func:`_correlated_normal`);
- the DAP bitmask (:func:`_dap_mask`): no coverage outside the hexagon, a low-coverage rim,
  dead-fibre and foreground-star defects, NEARBOUND fits; :func:`_blank_unusable` zeroes
  what the DAP writes no data for.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from ifskeras.survey.maps import DAP_MASK_BITS

__all__ = ["IFU_MAP_SIZES", "PLATE_IFU_FIBRES", "PSF_FWHM_SPAXELS"]

#: IFU bundle size (fibres) -> side of the MAPS image in 0.5 arcsec spaxels.
IFU_MAP_SIZES: Mapping[int, int] = MappingProxyType({19: 32, 37: 42, 61: 52, 91: 62, 127: 74})
#: The 17 science IFUs of a MaNGA plate, in IFU-design order (1901, 1902, 3701, ...).
PLATE_IFU_FIBRES: tuple[int, ...] = (19, 19, 37, 37, 37, 37, 61, 61, 61, 61, 91, 91, 127, 127, 127, 127, 127)
#: MaNGA reconstructed PSF, FWHM 2.5 arcsec.
PSF_FWHM_SPAXELS = 5.0

_FLUX_UNIT = "1E-17 erg/s/cm^2/spaxel"
_SIGMA_PER_FWHM = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
_PSF_SIGMA = PSF_FWHM_SPAXELS * _SIGMA_PER_FWHM
_DEFECT_PROBABILITY = {"DEADFIBER": 0.04, "FORESTAR": 0.04}
_NEARBOUND_RATE = 0.003  # per line and covered spaxel; data kept, DONOTUSE set
_LOWCOV_RIM = 1.0  # spaxels inside the hexagon edge flagged LOWCOV
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


def _correlated_normal(rng, shape, fwhm: float) -> np.ndarray:
    """Unit-variance Gaussian noise [L, H, W] correlated between neighbouring spaxels.

    A MaNGA cube's spaxels are drawn from overlapping fibre footprints, so neighbours share
    photons: white noise smoothed by a Gaussian of ``fwhm`` spaxels gives that covariance.
    The kernel is normalised so every spaxel keeps unit variance (the written ivar stays the
    per-spaxel one, as in the DAP), and the noise is drawn on a padded grid so the map edges
    are as noisy as its centre. Neighbours then correlate by exp(-d^2 / (4 sigma^2)).
    """
    sigma = fwhm * _SIGMA_PER_FWHM
    reach = int(np.ceil(4.0 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-reach, reach + 1) / sigma) ** 2)
    kernel /= np.sqrt(np.sum(kernel**2))  # unit variance after smoothing both axes
    n_lines, height, width = shape
    white = rng.standard_normal((n_lines, height + 2 * reach, width + 2 * reach))
    rows = sum(weight * white[:, :, shift:shift + width] for shift, weight in enumerate(kernel))
    return sum(weight * rows[:, shift:shift + height, :] for shift, weight in enumerate(kernel))


def _observe(rng, model, stars, edge_distance, lines, snr_level, *, tied_lines, noise_correlation_fwhm=0.0):
    """Inverse variance of each spaxel and noisy, zero-clipped fluxes drawn from it.

    ``tied_lines`` (weak -> (strong, ratio)) are copied from their strong partner as the DAP
    does; ``noise_correlation_fwhm`` > 0 correlates the noise of neighbouring spaxels
    (:func:`_correlated_normal`), 0 draws it independently per spaxel.
    """
    shape = model.shape
    continuum_noise = rng.uniform(1.0, 8.0)  # noise from the stellar continuum at the centre
    coverage = 0.6 + 0.4 * np.clip(edge_distance / 3.0, 0.0, 1.0)  # fewer dithers at the edge
    jitter = np.exp(rng.normal(0.0, 0.15, shape[1:]))  # spaxel-to-spaxel depth variations
    base = np.array([_RELATIVE_IVAR[name] for name in lines]) * _REFERENCE_IVAR * snr_level
    base *= np.exp(rng.normal(0.0, 0.1, len(lines)))  # line-to-line calibration scatter
    background_var = ((1.0 + continuum_noise * stars) / (coverage * jitter))[None] / base[:, None, None]
    variance = background_var + _SELF_NOISE * np.clip(model, 0.0, None)
    if noise_correlation_fwhm > 0:
        unit_noise = _correlated_normal(rng, shape, noise_correlation_fwhm)
    else:
        unit_noise = rng.standard_normal(shape)
    flux = np.maximum(model + np.sqrt(variance) * unit_noise, 0.0)
    ivar = 1.0 / variance
    for weak, (strong, ratio) in tied_lines.items():
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


def _blank_unusable(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray) -> None:
    """Zero ``flux`` and ``ivar`` (in place) where the DAP writes no data for a flag."""
    # Spaxel-level flags (coverage, dead fibre, star) come with no data; NEARBOUND keeps it.
    keeps_data = (1 << DAP_MASK_BITS["NEARBOUND"]) | (1 << DAP_MASK_BITS["DONOTUSE"])
    unusable = (mask & ~keeps_data) != 0
    flux[unusable] = 0.0
    ivar[unusable] = 0.0
