"""BPT classification of emission-line fluxes (Baldwin, Phillips & Terlevich 1981).

The scheme is that of Kewley et al. (2006, MNRAS 372, 961), section 4, with the demarcations
of Kauffmann et al. (2003), Kewley et al. (2001) and Kewley et al. (2006):

- ``SF``: below Kauffmann 2003 in the [NII] diagram and below Kewley 2001 in the [SII] and
  [OI] diagrams;
- ``composite``: between Kauffmann 2003 and Kewley 2001 in the [NII] diagram;
- ``Seyfert`` / ``LINER``: above Kewley 2001 in all three diagrams, and above / below the
  Kewley 2006 Seyfert-LINER lines in both the [SII] and [OI] diagrams;
- ``ambiguous``: one class in some diagrams and another in the others, or AGN in the [NII]
  diagram with neither [SII] nor [OI] measured;
- ``weak``: any line of the [NII] diagram (Hbeta, [OIII] 5008, Halpha, [NII] 6585) has
  S/N < 3, is not positive or not finite. (Retired galaxies, whose lines are weak everywhere,
  land here; without the continuum there is no equivalent width to tell them apart.)

The [SII] diagram uses [SII] 6718 + 6732 and is used only when both lines reach S/N >= 3;
the [OI] diagram uses [OI] 6302 and is used only when it reaches S/N >= 3. A diagram that
cannot be used is skipped, not counted as disagreeing. Points right of a curve's asymptote
count as above it.

Two further tools serve galaxy-wide labels (:mod:`ifskeras.discovery.labels`):

- :func:`classify_whan`: the WHAN diagram of Cid Fernandes et al. (2011, MNRAS 413, 1687),
  Halpha equivalent width against log [NII]/Halpha, which tells retired galaxies (lines
  powered by hot evolved stars, W(Halpha) < 3 A) and line-less ones from weak AGN;
- :func:`covariance_corrected_sums`: central-aperture sums whose noise accounts for the
  covariance between neighbouring MaNGA spaxels (:func:`covariance_factor`, the
  calibration of Law et al. 2016, AJ 152, 83, section 9.3).

Examples
--------
>>> import numpy as np
>>> flux = {"Hb-4862": 1.0, "OIII-5008": 0.5, "Ha-6564": 2.86, "NII-6585": 0.8}
>>> str(classify_bpt(flux))
'SF'
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ifskeras.survey.maps import GalaxyMaps

__all__ = [
    "BPT_CLASSES",
    "MIN_SNR",
    "REQUIRED_LINES",
    "SII_LINES",
    "OI_LINE",
    "DEFAULT_APERTURE_RADIUS",
    "RATIO_NAMES",
    "RATIO_LABELS",
    "kauffmann03",
    "kewley01_nii",
    "kewley01_sii",
    "kewley01_oi",
    "kewley06_sii",
    "kewley06_oi",
    "line_ratios",
    "classify_bpt",
    "aperture_sums",
    "central_aperture_fluxes",
    "central_line_ratios",
    "classify_galaxy",
    "classify_spaxels",
    "COVARIANCE_SLOPE",
    "COVARIANCE_MAX_SPAXELS",
    "covariance_factor",
    "aperture_counts",
    "aperture_mean",
    "covariance_corrected_sums",
    "WHAN_CLASSES",
    "WHAN_PASSIVE_EW",
    "WHAN_RETIRED_EW",
    "WHAN_STRONG_AGN_EW",
    "WHAN_NII_HA",
    "classify_whan",
]

#: Labels returned by :func:`classify_bpt`.
BPT_CLASSES: tuple[str, ...] = ("SF", "composite", "Seyfert", "LINER", "ambiguous", "weak")
#: Minimum signal-to-noise ratio of a line to be used.
MIN_SNR = 3.0
#: Lines of the [NII] diagram; all must be detected.
REQUIRED_LINES: tuple[str, ...] = ("Hb-4862", "OIII-5008", "Ha-6564", "NII-6585")
#: Lines of the [SII] diagram's numerator.
SII_LINES: tuple[str, str] = ("SII-6718", "SII-6732")
#: Line of the [OI] diagram's numerator.
OI_LINE = "OI-6302"
#: Radius of the central aperture in spaxels: 3 spaxels = 1.5 arcsec, an SDSS 3" fibre.
DEFAULT_APERTURE_RADIUS = 3.0
#: The BPT log ratios of :func:`line_ratios`, in column order: the one list that
#: scores, evaluation and figures use.
RATIO_NAMES: tuple[str, ...] = ("log_nii_ha", "log_oiii_hb", "log_sii_ha", "log_oi_ha")
#: How tables and figures print each ratio.
RATIO_LABELS: dict[str, str] = {
    "log_nii_ha": "log [NII] 6585/H\u03b1",
    "log_oiii_hb": "log [OIII] 5008/H\u03b2",
    "log_sii_ha": "log [SII] 6718+6732/H\u03b1",
    "log_oi_ha": "log [OI] 6302/H\u03b1",
}
_LABEL_DTYPE = "<U9"

#: Slope of the noise calibration for summed MaNGA spaxels (Law et al. 2016, section 9.3):
#: sigma_true / sigma_naive = 1 + 1.62 log10(N).
COVARIANCE_SLOPE = 1.62
#: Beyond this many summed spaxels the ratio stays constant: further spaxels are uncorrelated
#: with the first ones (the SDSS DR13 caveats give 4.2; the formula at N = 100 gives 4.24).
COVARIANCE_MAX_SPAXELS = 100

#: Labels returned by :func:`classify_whan` ('' where a galaxy cannot be placed).
WHAN_CLASSES: tuple[str, ...] = ("SF", "sAGN", "wAGN", "retired", "passive")
#: W(Halpha) and W([NII]) below this (Angstrom): a passive, line-less galaxy.
WHAN_PASSIVE_EW = 0.5
#: W(Halpha) below this (Angstrom): a retired galaxy, ionised by hot evolved stars.
WHAN_RETIRED_EW = 3.0
#: W(Halpha) above this (Angstrom) with log [NII]/Halpha >= -0.4: a strong AGN.
WHAN_STRONG_AGN_EW = 6.0
#: log [NII] 6585/Halpha dividing star formation (below) from AGN (at or above).
WHAN_NII_HA = -0.4


def kauffmann03(x):
    """Kauffmann et al. (2003) star-forming limit, log [OIII]/Hb at log [NII]/Ha = x (x < 0.05)."""
    return 0.61 / (np.asarray(x, dtype=float) - 0.05) + 1.30


def kewley01_nii(x):
    """Kewley et al. (2001) maximum starburst, [NII] diagram (x < 0.47)."""
    return 0.61 / (np.asarray(x, dtype=float) - 0.47) + 1.19


def kewley01_sii(x):
    """Kewley et al. (2001) maximum starburst, [SII] diagram (x < 0.32)."""
    return 0.72 / (np.asarray(x, dtype=float) - 0.32) + 1.30


def kewley01_oi(x):
    """Kewley et al. (2001) maximum starburst, [OI] diagram (x < -0.59)."""
    return 0.73 / (np.asarray(x, dtype=float) + 0.59) + 1.33


def kewley06_sii(x):
    """Kewley et al. (2006) Seyfert-LINER line, [SII] diagram."""
    return 1.89 * np.asarray(x, dtype=float) + 0.76


def kewley06_oi(x):
    """Kewley et al. (2006) Seyfert-LINER line, [OI] diagram."""
    return 1.18 * np.asarray(x, dtype=float) + 1.30


def line_ratios(flux: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """BPT log ratios from line fluxes; NaN where a flux is missing, not positive or not finite.

    Parameters
    ----------
    flux : mapping
        DAP line name -> flux (scalars or arrays of one shape). Lines absent from the
        mapping give NaN ratios.

    Returns
    -------
    dict
        ``log_nii_ha`` (log [NII] 6585/Ha), ``log_oiii_hb`` (log [OIII] 5008/Hb),
        ``log_sii_ha`` (log ([SII] 6718 + 6732)/Ha) and ``log_oi_ha`` (log [OI] 6302/Ha).

    Examples
    --------
    >>> ratios = line_ratios({"Ha-6564": 10.0, "NII-6585": 1.0, "Hb-4862": 1.0, "OIII-5008": 1.0})
    >>> float(ratios["log_nii_ha"]), float(ratios["log_oiii_hb"]), bool(np.isnan(ratios["log_oi_ha"]))
    (-1.0, 0.0, True)
    """
    lines = {name: _as_float(flux[name]) for name in flux}
    shape = np.broadcast_shapes(*(value.shape for value in lines.values())) if lines else ()
    missing = np.full(shape, np.nan)
    ha, hb = lines.get("Ha-6564", missing), lines.get("Hb-4862", missing)
    sii = lines.get(SII_LINES[0], missing) + lines.get(SII_LINES[1], missing)
    return {
        "log_nii_ha": _log_ratio(lines.get("NII-6585", missing), ha),
        "log_oiii_hb": _log_ratio(lines.get("OIII-5008", missing), hb),
        "log_sii_ha": _log_ratio(sii, ha),
        "log_oi_ha": _log_ratio(lines.get(OI_LINE, missing), ha),
    }


def classify_bpt(
    flux: Mapping[str, np.ndarray],
    ivar: Mapping[str, np.ndarray] | None = None,
    *,
    min_snr: float = MIN_SNR,
) -> np.ndarray:
    """BPT class of each element: SF, composite, Seyfert, LINER, ambiguous or weak.

    Parameters
    ----------
    flux : mapping
        DAP line name -> flux, scalars or arrays broadcastable to one shape. Needs
        ``Hb-4862``, ``OIII-5008``, ``Ha-6564`` and ``NII-6585``; ``SII-6718``,
        ``SII-6732`` and ``OI-6302`` are used when present.
    ivar : mapping, optional
        Inverse variances of the same lines. Without it no S/N cut is made (only positive,
        finite fluxes are required).
    min_snr : float
        S/N threshold per line (3 by default).

    Returns
    -------
    numpy.ndarray of str
        The broadcast shape of the inputs (0-d for scalars); labels from :data:`BPT_CLASSES`.
        The rules are in the module docstring.

    Examples
    --------
    >>> flux = {"Hb-4862": 1.0, "OIII-5008": 8.0, "Ha-6564": 2.86, "NII-6585": 2.86,
    ...         "SII-6718": 0.5, "SII-6732": 0.4, "OI-6302": 0.3}
    >>> str(classify_bpt(flux))
    'Seyfert'
    >>> str(classify_bpt(flux, {name: 1e-6 for name in flux}))
    'weak'
    """
    missing = [name for name in REQUIRED_LINES if name not in flux]
    if missing:
        raise KeyError(
            f"classify_bpt needs {', '.join(REQUIRED_LINES)}; missing {', '.join(missing)}. "
            f"Received lines: {', '.join(flux)}"
        )
    if ivar is not None:
        absent = [name for name in flux if name not in ivar]
        if absent:
            raise KeyError(f"ivar lacks lines {', '.join(absent)}. Received ivar lines: {', '.join(ivar)}")
    values = {name: _as_float(value) for name, value in flux.items()}
    shape = np.broadcast_shapes(*(value.shape for value in values.values()))

    def detected(name: str) -> np.ndarray:
        value = values[name]
        ok = np.isfinite(value) & (value > 0)
        if ivar is not None:
            weight = _as_float(ivar[name])
            with np.errstate(invalid="ignore"):
                ok &= np.isfinite(weight) & (value * np.sqrt(np.clip(weight, 0, None)) >= min_snr)
        return np.broadcast_to(ok, shape)

    strong = np.logical_and.reduce([detected(name) for name in REQUIRED_LINES])
    has_sii = strong & all(name in values for name in SII_LINES)
    if has_sii.any():
        has_sii = has_sii & detected(SII_LINES[0]) & detected(SII_LINES[1])
    has_oi = strong & (OI_LINE in values)
    if has_oi.any():
        has_oi = has_oi & detected(OI_LINE)

    ratios = {key: np.broadcast_to(value, shape) for key, value in line_ratios(values).items()}
    x_nii, y = ratios["log_nii_ha"], ratios["log_oiii_hb"]
    x_sii, x_oi = ratios["log_sii_ha"], ratios["log_oi_ha"]
    with np.errstate(invalid="ignore", divide="ignore"):
        nii_sf = (x_nii < 0.05) & (y < kauffmann03(x_nii))
        nii_agn = ~((x_nii < 0.47) & (y < kewley01_nii(x_nii)))
        sii_agn = ~((x_sii < 0.32) & (y < kewley01_sii(x_sii)))
        oi_agn = ~((x_oi < -0.59) & (y < kewley01_oi(x_oi)))
        sii_seyfert = y > kewley06_sii(x_sii)
        oi_seyfert = y > kewley06_oi(x_oi)

    # A diagram that cannot be used agrees with anything.
    sii_sf_ok = ~has_sii | ~sii_agn
    oi_sf_ok = ~has_oi | ~oi_agn
    sii_agn_ok = ~has_sii | sii_agn
    oi_agn_ok = ~has_oi | oi_agn
    seyfert_ok = (~has_sii | sii_seyfert) & (~has_oi | oi_seyfert)
    liner_ok = (~has_sii | ~sii_seyfert) & (~has_oi | ~oi_seyfert)
    agn = nii_agn & sii_agn_ok & oi_agn_ok & (has_sii | has_oi)

    labels = np.full(shape, "ambiguous", dtype=_LABEL_DTYPE)
    labels[nii_sf & sii_sf_ok & oi_sf_ok] = "SF"
    labels[~nii_sf & ~nii_agn] = "composite"
    labels[agn & seyfert_ok] = "Seyfert"
    labels[agn & liner_ok] = "LINER"
    labels[~strong] = "weak"
    return labels


def aperture_sums(flux, ivar, valid, radius, centre=None) -> tuple[np.ndarray, np.ndarray]:
    """Sum each line's valid flux within a circle; the inverse variance of each sum.

    Parameters
    ----------
    flux, ivar, valid : numpy.ndarray
        [L, H, W] for one galaxy or [B, L, H, W] for a batch; ``valid`` is boolean or 0/1.
    radius : float or numpy.ndarray
        Aperture radius in pixels of these maps; one per galaxy ([B]) for a batch whose
        pixels cover different numbers of native spaxels.
    centre : (float, float), optional
        (row, column) of the aperture centre; the geometric map centre by default.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        [L] or [B, L]: the summed flux, and ``1 / sum(1 / ivar)`` over the line's valid
        pixels with ivar > 0 (pixel noise taken as independent: see
        :func:`covariance_corrected_sums` for MaNGA's correlated spaxels). A line with no
        such pixel in the aperture gets flux 0 and ivar 0.
    """
    flux, ivar = _as_float(flux), _as_float(ivar)
    single = flux.ndim == 3
    if single:
        flux, ivar, valid = flux[None], ivar[None], np.asarray(valid)[None]
    use = _aperture_pixels(valid, ivar, radius, centre)
    flux_sum = np.where(use, flux, 0.0).sum(axis=(-2, -1))
    variance = np.where(use, 1.0 / np.where(use, ivar, 1.0), 0.0).sum(axis=(-2, -1))
    ivar_sum = np.where(variance > 0, 1.0 / np.where(variance > 0, variance, 1.0), 0.0)
    flux_sum = np.where(variance > 0, flux_sum, 0.0)
    return (flux_sum[0], ivar_sum[0]) if single else (flux_sum, ivar_sum)


def aperture_counts(ivar, valid, radius, centre=None) -> np.ndarray:
    """Number of pixels :func:`aperture_sums` adds up for each line: [L] or [B, L] integers."""
    ivar = _as_float(ivar)
    single = ivar.ndim == 3
    if single:
        ivar, valid = ivar[None], np.asarray(valid)[None]
    counts = _aperture_pixels(valid, ivar, radius, centre).sum(axis=(-2, -1))
    return counts[0] if single else counts


def aperture_mean(values, valid, radius, centre=None) -> np.ndarray:
    """Mean of each map's valid pixels within a circle, [L] or [B, L]; NaN where none is valid.

    For quantities that are not summed, such as equivalent widths.

    Examples
    --------
    >>> values = np.arange(25.0).reshape(1, 5, 5)
    >>> float(aperture_mean(values, np.ones_like(values), radius=1.0)[0])  # centre 12 and 7, 11, 13, 17
    12.0
    """
    values = _as_float(values)
    single = values.ndim == 3
    if single:
        values, valid = values[None], np.asarray(valid)[None]
    use = _aperture_pixels(valid, np.ones_like(values), radius, centre) & np.isfinite(values)
    count = use.sum(axis=(-2, -1))
    total = np.where(use, values, 0.0).sum(axis=(-2, -1))
    mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return mean[0] if single else mean


def covariance_factor(n_spaxels) -> np.ndarray:
    """True over naive noise of a sum of ``n_spaxels`` adjacent MaNGA spaxels.

    MaNGA cubes are built from dithered fibre exposures, so neighbouring spaxels share
    signal and noise. Summing N of them with ``sqrt(sum of variances)`` underestimates the
    noise by the factor ``1 + 1.62 log10(N)`` for N <= 100, constant beyond (Law et al. 2016,
    AJ 152, 83, section 9.3; the same calibration is given in the SDSS DR13 MaNGA caveats
    and used by the IDL DAP's ``MDAP_CALIBRATE_NOISE``). N below 1 counts as 1 (no
    correction); N is capped at :data:`COVARIANCE_MAX_SPAXELS`.

    Examples
    --------
    >>> [round(float(f), 4) for f in covariance_factor([0, 1, 10, 100, 1000])]
    [1.0, 1.0, 2.62, 4.24, 4.24]
    """
    n_spaxels = np.clip(_as_float(n_spaxels), 1.0, COVARIANCE_MAX_SPAXELS)
    return 1.0 + COVARIANCE_SLOPE * np.log10(n_spaxels)


def covariance_corrected_sums(
    flux, ivar, valid, radius, centre=None, *, spaxels_per_pixel=1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`aperture_sums` with the inverse variance corrected for correlated noise.

    Parameters
    ----------
    flux, ivar, valid, radius, centre
        As :func:`aperture_sums`; ``radius`` in pixels of these maps.
    spaxels_per_pixel : float or numpy.ndarray
        Native 0.5" spaxels per pixel along one axis (1 for DAP maps; ``spaxels_per_pixel``
        of a records directory's ``index.csv`` for gridded maps), one per galaxy for a batch.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        [L] or [B, L]: the summed flux, its corrected inverse variance, and N, the number
        of native spaxels summed (pixels times ``spaxels_per_pixel ** 2``).

    Notes
    -----
    The naive variance is divided by ``covariance_factor(N) ** 2``. On maps resampled to
    finer pixels than the native spaxels (``spaxels_per_pixel < 1``) each spaxel's value
    and variance are repeated in ``1 / spaxels_per_pixel ** 2`` pixels, which the naive sum
    takes as independent: the noise is further scaled by ``1 / spaxels_per_pixel`` so the
    S/N is that of the native spaxels.

    Examples
    --------
    >>> flux, ivar = np.ones((1, 5, 5)), np.full((1, 5, 5), 4.0)
    >>> total, corrected, n = covariance_corrected_sums(flux, ivar, np.ones_like(flux), radius=1.0)
    >>> float(total[0]), int(n[0]), round(float(total[0] * np.sqrt(corrected[0])), 3)  # naive S/N 4.472
    (5.0, 5, 2.097)
    """
    flux_sum, ivar_sum = aperture_sums(flux, ivar, valid, radius, centre)
    pixels = aperture_counts(ivar, valid, radius, centre)
    scale = _as_float(spaxels_per_pixel)
    if not np.all(scale > 0):
        raise ValueError(f"spaxels_per_pixel must be > 0. Received: {spaxels_per_pixel!r}")
    scale = scale[..., None] if scale.ndim else scale  # one per galaxy -> broadcast over lines
    n_spaxels = pixels * scale**2
    factor = covariance_factor(n_spaxels) * np.maximum(1.0, 1.0 / scale)
    return flux_sum, ivar_sum / factor**2, n_spaxels


def central_line_ratios(
    flux: np.ndarray,
    ivar: np.ndarray,
    valid: np.ndarray,
    lines,
    *,
    radius=DEFAULT_APERTURE_RADIUS,
    min_snr: float = MIN_SNR,
) -> dict[str, np.ndarray]:
    """BPT log ratios (:data:`RATIO_NAMES`) of each galaxy's central aperture, [B] each.

    The fluxes of a central circle of ``radius`` pixels (:func:`aperture_sums`) are
    used only where the line's aperture S/N reaches ``min_snr``; a ratio with a line
    below it (or absent from ``lines``) is NaN. This is the measurement behind the
    report's BPT diagram and the ratio columns of ``scores.csv``.

    Examples
    --------
    >>> flux = np.ones((1, 4, 5, 5)) * np.array([1.0, 3.0, 2.86, 0.5])[None, :, None, None]
    >>> ratios = central_line_ratios(flux, np.full_like(flux, 100.0), np.ones_like(flux),
    ...                              ["Hb-4862", "OIII-5008", "Ha-6564", "NII-6585"], radius=1.0)
    >>> round(float(ratios["log_nii_ha"][0]), 3), bool(np.isnan(ratios["log_sii_ha"][0]))
    (-0.757, True)
    """
    sums, ivars = aperture_sums(flux, ivar, valid, radius)
    snr = sums * np.sqrt(ivars)
    with np.errstate(invalid="ignore"):
        measured = {name: np.where(snr[:, i] >= min_snr, sums[:, i], np.nan) for i, name in enumerate(lines)}
    ratios = line_ratios(measured)
    return {name: np.broadcast_to(ratios[name], (len(sums),)).copy() for name in RATIO_NAMES}


def central_aperture_fluxes(
    maps: GalaxyMaps,
    *,
    radius_spaxels: float = DEFAULT_APERTURE_RADIUS,
    centre: tuple[float, float] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Sum each line's valid flux within a circle around the map centre (:func:`aperture_sums`).

    Parameters
    ----------
    maps : GalaxyMaps
        From :func:`ifskeras.survey.maps.read_maps`.
    radius_spaxels : float
        Aperture radius; 3 spaxels (1.5 arcsec) mimics an SDSS 3 arcsec fibre.
    centre : (float, float), optional
        (row, column) of the aperture centre; the geometric map centre
        ``((H - 1) / 2, (W - 1) / 2)`` by default.

    Returns
    -------
    (dict, dict)
        Line -> summed flux, and line -> inverse variance of the sum. A line with no
        valid spaxel in the aperture gets flux 0 and ivar 0.

    Examples
    --------
    >>> flux, ivar = central_aperture_fluxes(maps)  # doctest: +SKIP
    >>> str(classify_bpt(flux, ivar))  # doctest: +SKIP
    'SF'
    """
    if radius_spaxels <= 0:
        raise ValueError(f"radius_spaxels must be > 0. Received: {radius_spaxels!r}")
    flux_sum, ivar_sum = aperture_sums(maps.flux, maps.ivar, maps.valid, radius_spaxels, centre)
    return (
        {name: float(value) for name, value in zip(maps.lines, flux_sum)},
        {name: float(value) for name, value in zip(maps.lines, ivar_sum)},
    )


def classify_galaxy(
    maps: GalaxyMaps,
    *,
    radius_spaxels: float = DEFAULT_APERTURE_RADIUS,
    min_snr: float = MIN_SNR,
) -> str:
    """BPT class of a galaxy's central aperture (see :func:`central_aperture_fluxes`)."""
    flux, ivar = central_aperture_fluxes(maps, radius_spaxels=radius_spaxels)
    return str(classify_bpt(flux, ivar, min_snr=min_snr))


def classify_spaxels(maps: GalaxyMaps, *, min_snr: float = MIN_SNR) -> np.ndarray:
    """BPT class of every spaxel, [H, W]; spaxels with invalid required lines are ``weak``."""
    flux = {name: np.where(maps.valid[i], maps.flux[i], np.nan) for i, name in enumerate(maps.lines)}
    ivar = {name: maps.ivar[i] for i, name in enumerate(maps.lines)}
    return classify_bpt(flux, ivar, min_snr=min_snr)


def classify_whan(ew_ha, log_nii_ha, ew_nii=None) -> np.ndarray:
    """WHAN class (Cid Fernandes et al. 2011, MNRAS 413, 1687) of each element.

    Parameters
    ----------
    ew_ha : float or numpy.ndarray
        Halpha emission equivalent width W(Halpha) in Angstrom (positive in emission).
    log_nii_ha : float or numpy.ndarray
        log [NII] 6585/Halpha; NaN where not measured.
    ew_nii : float or numpy.ndarray, optional
        W([NII] 6585) in Angstrom. The paper calls a galaxy passive when both W(Halpha) and
        W([NII]) are below 0.5 A; without ``ew_nii`` W(Halpha) alone decides.

    Returns
    -------
    numpy.ndarray of str
        ``passive``: W(Halpha) < 0.5 (and W([NII]) < 0.5); ``retired``: otherwise
        W(Halpha) < 3; with W(Halpha) >= 3: ``SF`` when log [NII]/Halpha < -0.4, else
        ``sAGN`` when W(Halpha) > 6 and ``wAGN`` when 3 <= W(Halpha) <= 6. Empty where
        W(Halpha) is not finite, or W(Halpha) >= 3 and the ratio is unknown.

    Examples
    --------
    >>> classify_whan([0.2, 1.0, 10.0, 4.0, 10.0], [0.1, 0.1, -0.6, 0.0, 0.0]).tolist()
    ['passive', 'retired', 'SF', 'wAGN', 'sAGN']
    >>> str(classify_whan(0.2, 0.1, ew_nii=0.7)), str(classify_whan(10.0, np.nan))
    ('retired', '')
    """
    ew_ha, ratio = _as_float(ew_ha), _as_float(log_nii_ha)
    shape = np.broadcast_shapes(ew_ha.shape, ratio.shape, () if ew_nii is None else np.shape(ew_nii))
    ew_ha, ratio = np.broadcast_to(ew_ha, shape), np.broadcast_to(ratio, shape)
    lineless = ew_ha < WHAN_PASSIVE_EW
    if ew_nii is not None:
        # A [NII] width that is unknown does not veto "passive": W(Halpha) alone then decides.
        nii = np.broadcast_to(_as_float(ew_nii), shape)
        lineless &= ~(np.isfinite(nii) & (nii >= WHAN_PASSIVE_EW))
    emitting = np.isfinite(ew_ha) & (ew_ha >= WHAN_RETIRED_EW) & np.isfinite(ratio)
    labels = np.full(shape, "", dtype="<U7")
    labels[np.isfinite(ew_ha) & (ew_ha < WHAN_RETIRED_EW)] = "retired"
    labels[np.isfinite(ew_ha) & lineless] = "passive"
    labels[emitting & (ratio < WHAN_NII_HA)] = "SF"
    labels[emitting & (ratio >= WHAN_NII_HA) & (ew_ha <= WHAN_STRONG_AGN_EW)] = "wAGN"
    labels[emitting & (ratio >= WHAN_NII_HA) & (ew_ha > WHAN_STRONG_AGN_EW)] = "sAGN"
    return labels


def _aperture_pixels(valid, ivar: np.ndarray, radius, centre) -> np.ndarray:
    """[B, L, H, W] pixels summed by the aperture: inside the circle, valid and ivar > 0."""
    height, width = ivar.shape[-2:]
    row, column = ((height - 1) / 2.0, (width - 1) / 2.0) if centre is None else centre
    radius = np.broadcast_to(_as_float(radius), (ivar.shape[0],))
    if not np.all(radius > 0):
        raise ValueError(f"radius must be > 0. Received: {radius!r}")
    yy, xx = np.indices((height, width))
    inside = np.hypot(yy - row, xx - column)[None] <= radius[:, None, None]  # [B, H, W]
    return np.asarray(valid, dtype=bool) & inside[:, None] & (ivar > 0)


def _as_float(value) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def _log_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = np.isfinite(numerator) & np.isfinite(denominator) & (numerator > 0) & (denominator > 0)
        return np.where(ok, np.log10(np.where(ok, numerator, 1.0) / np.where(ok, denominator, 1.0)), np.nan)
