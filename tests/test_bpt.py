"""BPT classification: demarcations, S/N cuts, apertures, real files and the synthetic physics."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ifskeras.survey.bpt import (
    BPT_CLASSES,
    central_aperture_fluxes,
    classify_bpt,
    classify_galaxy,
    classify_spaxels,
    kauffmann03,
    kewley01_nii,
    kewley01_oi,
    kewley01_sii,
    kewley06_oi,
    kewley06_sii,
    line_ratios,
)
from ifskeras.survey.maps import GalaxyMaps, read_maps
from ifskeras.survey.synth import make_survey

REAL_DATA = Path(__file__).parents[1].parent / "shared" / "data"
REAL_FILES = sorted(REAL_DATA.glob("manga-*-MAPS-*.fits.gz")) if REAL_DATA.is_dir() else []
BPT_LINES = ("Hb-4862", "OIII-5008", "OI-6302", "Ha-6564", "NII-6585", "SII-6718", "SII-6732")
RECOVERED_CLASSES = ("SF", "Seyfert", "LINER")


def fluxes(x_nii, y, x_sii=None, x_oi=None, *, hb=1.0):
    """Line fluxes with the given log ratios (SII split evenly); None leaves a line out."""
    ha = 2.86 * hb
    flux = {"Hb-4862": hb, "OIII-5008": hb * 10.0**y, "Ha-6564": ha, "NII-6585": ha * 10.0**x_nii}
    if x_sii is not None:
        flux["SII-6718"] = flux["SII-6732"] = 0.5 * ha * 10.0**x_sii
    if x_oi is not None:
        flux["OI-6302"] = ha * 10.0**x_oi
    return flux


def label(*args, **kwargs) -> str:
    return str(classify_bpt(fluxes(*args, **kwargs)))


def test_demarcation_formulas():
    assert kauffmann03(-0.5) == pytest.approx(0.61 / -0.55 + 1.30)
    assert kewley01_nii(0.0) == pytest.approx(0.61 / -0.47 + 1.19)
    assert kewley01_sii(0.0) == pytest.approx(0.72 / -0.32 + 1.30)
    assert kewley01_oi(-1.0) == pytest.approx(0.73 / -0.41 + 1.33)
    assert kewley06_sii(0.0) == pytest.approx(0.76) and kewley06_oi(-1.0) == pytest.approx(0.12)


@pytest.mark.parametrize(
    ("x", "y", "below"),
    [(-0.5, float(kauffmann03(-0.5)) - 0.05, "SF"), (-0.5, float(kauffmann03(-0.5)) + 0.05, "composite"),
     (-0.1, float(kewley01_nii(-0.1)) - 0.05, "composite"), (0.1, -1.5, "composite")],
)
def test_nii_diagram_either_side_of_kauffmann_and_kewley(x, y, below):
    assert label(x, y) == below


def test_agn_above_kewley01_split_by_kewley06():
    x_nii, y = 0.0, float(kewley01_nii(0.0)) + 0.6  # y = 0.49, above the maximum starburst
    # [SII] diagram alone: either side of the Seyfert-LINER line.
    assert label(x_nii, y, x_sii=(y - 0.76) / 1.89 - 0.05) == "Seyfert"
    assert label(x_nii, y, x_sii=(y - 0.76) / 1.89 + 0.05) == "LINER"
    # [OI] diagram alone.
    assert label(x_nii, y, x_oi=(y - 1.30) / 1.18 - 0.05) == "Seyfert"
    assert label(x_nii, y, x_oi=(y - 1.30) / 1.18 + 0.05) == "LINER"
    # Both agree / disagree.
    assert label(0.1, 0.9, x_sii=-0.2, x_oi=-0.8) == "Seyfert"
    assert label(0.2, 0.1, x_sii=0.05, x_oi=-0.4) == "LINER"
    assert label(0.1, 0.9, x_sii=-0.2, x_oi=-0.1) == "ambiguous"
    # AGN by [NII] but no [SII] or [OI]: cannot tell Seyfert from LINER.
    assert label(0.1, 0.9) == "ambiguous"
    # AGN by [NII] but star-forming by [SII]: ambiguous.
    assert label(0.2, 0.3, x_sii=-0.8, x_oi=-0.4) == "ambiguous"


def test_star_forming_needs_all_three_diagrams():
    y = float(kauffmann03(-0.6)) - 0.2
    assert label(-0.6, y, x_sii=-0.5, x_oi=-1.6) == "SF"
    sii_edge = 0.32 + 0.72 / (y - 1.30)
    oi_edge = -0.59 + 0.73 / (y - 1.33)
    assert label(-0.6, y, x_sii=sii_edge + 0.05, x_oi=-1.6) == "ambiguous"
    assert label(-0.6, y, x_sii=-0.5, x_oi=oi_edge + 0.05) == "ambiguous"
    assert label(-0.6, y, x_sii=-0.5, x_oi=-0.5) == "ambiguous", "right of the [OI] asymptote is AGN"


def test_arrays_keep_their_shape():
    x = np.array([[-0.6, -0.2], [0.1, 0.2]])
    y = np.array([[0.0, -0.3], [0.9, 0.1]])
    x_sii = np.array([[-0.5, -0.4], [-0.2, 0.05]])
    x_oi = np.array([[-1.6, -1.2], [-0.8, -0.4]])
    labels = classify_bpt(fluxes(x, y, x_sii, x_oi))
    assert labels.shape == (2, 2)
    assert labels.tolist() == [["SF", "composite"], ["Seyfert", "LINER"]]


def test_signal_to_noise_cut():
    flux = fluxes(0.1, 0.9, x_sii=-0.2, x_oi=-0.1)  # ambiguous with both diagrams
    ivar = {name: 100.0 for name in flux}  # S/N >= 9 unless set below
    ivar["Hb-4862"] = (3.1 / flux["Hb-4862"]) ** 2
    ivar["OI-6302"] = (2.9 / flux["OI-6302"]) ** 2  # [OI] too noisy: diagram skipped
    assert str(classify_bpt(flux, ivar)) == "Seyfert"
    ivar["Hb-4862"] = (2.9 / flux["Hb-4862"]) ** 2
    assert str(classify_bpt(flux, ivar)) == "weak"
    assert str(classify_bpt(flux, ivar, min_snr=2.0)) == "ambiguous"
    assert str(classify_bpt(flux)) == "ambiguous", "no ivar: no S/N cut"
    flux["NII-6585"] = 0.0
    assert str(classify_bpt(flux)) == "weak", "non-positive flux cannot be classified"
    flux["NII-6585"] = np.nan
    assert str(classify_bpt(flux)) == "weak"


def test_missing_lines_and_ratios():
    with pytest.raises(KeyError, match="NII-6585"):
        classify_bpt({"Hb-4862": 1.0, "OIII-5008": 1.0, "Ha-6564": 1.0})
    with pytest.raises(KeyError, match="ivar lacks"):
        classify_bpt(fluxes(-0.5, 0.0), {"Hb-4862": 1.0})
    ratios = line_ratios(fluxes(-0.5, 0.25, x_sii=-0.4))
    assert ratios["log_nii_ha"] == pytest.approx(-0.5) and ratios["log_oiii_hb"] == pytest.approx(0.25)
    assert ratios["log_sii_ha"] == pytest.approx(-0.4) and np.isnan(ratios["log_oi_ha"])
    assert np.isnan(line_ratios({"Ha-6564": 0.0, "NII-6585": 1.0})["log_nii_ha"])


def test_central_aperture_sums_valid_flux_and_combines_variances():
    lines = ("Hb-4862", "Ha-6564")
    flux = np.ones((2, 9, 9), np.float32)
    ivar = np.full((2, 9, 9), 4.0, np.float32)
    valid = np.ones((2, 9, 9), bool)
    valid[1, 4, 4] = False  # centre of Ha unusable
    flux[1, 4, 4] = 0.0
    ivar[1, 4, 4] = 0.0
    maps = GalaxyMaps(flux=flux, ivar=ivar, valid=valid, lines=lines, plateifu="test")
    total, inverse_variance = central_aperture_fluxes(maps, radius_spaxels=1.0)
    assert total == {"Hb-4862": 5.0, "Ha-6564": 4.0}  # the centre and its 4 neighbours
    assert inverse_variance["Hb-4862"] == pytest.approx(4.0 / 5) and inverse_variance["Ha-6564"] == pytest.approx(1.0)
    total, _ = central_aperture_fluxes(maps, radius_spaxels=1.5)
    assert total["Hb-4862"] == 9.0
    empty = GalaxyMaps(flux=flux, ivar=ivar, valid=np.zeros_like(valid), lines=lines, plateifu="test")
    assert central_aperture_fluxes(empty) == ({"Hb-4862": 0.0, "Ha-6564": 0.0}, {"Hb-4862": 0.0, "Ha-6564": 0.0})
    with pytest.raises(ValueError, match="radius_spaxels"):
        central_aperture_fluxes(maps, radius_spaxels=0)


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_FILES, reason="real MaNGA files in ../shared/data are absent")
@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name[6:15])
def test_real_files_classify_without_error(path):
    maps = read_maps(path, BPT_LINES)
    assert classify_galaxy(maps) in BPT_CLASSES
    spaxels = classify_spaxels(maps)
    assert spaxels.shape == maps.flux.shape[1:]
    assert set(np.unique(spaxels)) <= set(BPT_CLASSES)
    required = [maps.lines.index(name) for name in ("Hb-4862", "OIII-5008", "Ha-6564", "NII-6585")]
    assert (spaxels[~maps.valid[required].all(axis=0)] == "weak").all()


def _recovery(survey) -> dict[str, Counter]:
    found: dict[str, Counter] = {}
    for path, row in zip(survey.paths, survey.rows):
        maps = read_maps(path, BPT_LINES)
        found.setdefault(row["class"], Counter())[classify_galaxy(maps)] += 1
    return found


def _assert_recovered(found: dict[str, Counter]) -> None:
    for name in RECOVERED_CLASSES:
        fraction = found[name][name] / sum(found[name].values())
        assert fraction >= 0.9, f"{name}: {dict(found[name])}"


def test_central_aperture_recovers_the_synthetic_class(tmp_path):
    fractions = {"SF": 1, "Seyfert": 1, "LINER": 1}
    found = _recovery(make_survey(tmp_path, 60, seed=7, class_fractions=fractions))
    assert {name: sum(counts.values()) for name, counts in found.items()} == {"SF": 20, "Seyfert": 20, "LINER": 20}
    _assert_recovered(found)


@pytest.mark.long
def test_central_aperture_recovers_the_classes_of_a_300_galaxy_survey(tmp_path):
    found = _recovery(make_survey(tmp_path, 300, seed=2026))
    _assert_recovered(found)
    # Blueberries are starbursts; retired galaxies have weak LINER-like lines.
    assert found["blueberry"]["SF"] == sum(found["blueberry"].values())
    retired = found["retired"]
    assert retired["weak"] + retired["LINER"] + retired["ambiguous"] >= 0.9 * sum(retired.values())


def test_central_line_ratios_with_snr_cut_and_per_galaxy_radius():
    from ifskeras.survey.bpt import RATIO_NAMES, central_line_ratios

    lines = ["Hb-4862", "OIII-5008", "Ha-6564", "NII-6585", "SII-6718", "SII-6732", "OI-6302"]
    flux = np.zeros((2, len(lines), 9, 9))
    for line, value in {"Hb-4862": 1.0, "OIII-5008": 3.0, "Ha-6564": 2.86, "NII-6585": 1.43,
                        "SII-6718": 0.5, "SII-6732": 0.5, "OI-6302": 0.2}.items():
        flux[:, lines.index(line)] = value
    ivar = np.full_like(flux, 100.0)
    ivar[:, lines.index("OI-6302")] = 1e-4  # OI far below S/N 3 in any aperture
    # A ring of extra [NII] at radius 2 (4 pixels): inside a radius-2.5 aperture, outside radius 1.
    yy, xx = np.indices((9, 9))
    ring = np.isclose(np.hypot(yy - 4, xx - 4), 2.0)
    flux[:, lines.index("NII-6585"), ring] += 10.0
    valid = np.ones_like(flux)
    ratios = central_line_ratios(flux, ivar, valid, lines, radius=np.array([1.0, 2.5]))
    assert set(ratios) == set(RATIO_NAMES)
    # Radius 1: 5 pixels, no ring. Radius 2.5: 21 pixels, 4 of them on the ring.
    assert ratios["log_nii_ha"][0] == pytest.approx(np.log10(0.5))
    assert ratios["log_nii_ha"][1] == pytest.approx(np.log10((21 * 1.43 + 40.0) / (21 * 2.86)))
    np.testing.assert_allclose(ratios["log_oiii_hb"], np.log10(3.0))
    np.testing.assert_allclose(ratios["log_sii_ha"], np.log10(1.0 / 2.86))
    assert np.isnan(ratios["log_oi_ha"]).all()  # below the S/N cut, not a ratio of noise

    # Invalid pixels do not count; a line absent from the cube gives NaN.
    valid[0, lines.index("NII-6585")] = 0.0
    cut = central_line_ratios(flux[:, :3], ivar[:, :3], valid[:, :3], lines[:3], radius=2.0)
    assert np.isnan(cut["log_nii_ha"]).all() and np.isfinite(cut["log_oiii_hb"]).all()
    masked = central_line_ratios(flux, ivar, valid, lines, radius=1.0)
    assert np.isnan(masked["log_nii_ha"][0]) and np.isfinite(masked["log_nii_ha"][1])


# ----------------------------------------------------------------------------- covariance and WHAN


def test_covariance_factor_follows_law_2016():
    from ifskeras.survey.bpt import covariance_factor

    # 1 + 1.62 log10 N, by hand: N = 1 -> 1, 10 -> 2.62, 32 -> 3.4383, capped at N = 100 -> 4.24.
    factors = covariance_factor([0, 1, 10, 32, 100, 101, 5000])
    np.testing.assert_allclose(factors, [1.0, 1.0, 2.62, 1 + 1.62 * np.log10(32), 4.24, 4.24, 4.24])
    assert float(covariance_factor(32)) == pytest.approx(3.43834, abs=1e-5)


def test_covariance_corrected_sums_by_hand():
    from ifskeras.survey.bpt import aperture_counts, covariance_corrected_sums

    flux = np.ones((2, 9, 9))
    ivar = np.full((2, 9, 9), 4.0)  # sigma 0.5 per spaxel
    valid = np.ones((2, 9, 9), bool)
    valid[1, 4, 4] = False  # one spaxel fewer in the second line
    total, corrected, n_spaxels = covariance_corrected_sums(flux, ivar, valid, radius=1.0)
    assert n_spaxels.tolist() == [5, 4] and aperture_counts(ivar, valid, 1.0).tolist() == [5, 4]
    # Line 0: sum 5, naive sigma sqrt(5 * 0.25) = 1.1180, factor 1 + 1.62 log10 5 = 2.1323: S/N 5 / 2.3840 = 2.0973.
    naive_sigma = np.sqrt(5 * 0.25)
    assert total[0] == 5.0
    assert 1 / np.sqrt(corrected[0]) == pytest.approx(naive_sigma * (1 + 1.62 * np.log10(5)))
    assert total[0] * np.sqrt(corrected[0]) == pytest.approx(2.0973, abs=1e-4)
    assert 1 / np.sqrt(corrected[1]) == pytest.approx(np.sqrt(4 * 0.25) * (1 + 1.62 * np.log10(4)))

    # Gridded maps: 2 native spaxels per pixel a side -> 5 pixels are 20 spaxels.
    _, coarse, n_coarse = covariance_corrected_sums(flux, ivar, valid, radius=1.0, spaxels_per_pixel=2.0)
    assert n_coarse.tolist() == [20, 16]
    assert 1 / np.sqrt(coarse[0]) == pytest.approx(naive_sigma * (1 + 1.62 * np.log10(20)))
    # Upsampled maps (half a spaxel per pixel): 4 pixels repeat each spaxel, noise scaled by 2 more.
    _, fine, n_fine = covariance_corrected_sums(flux, ivar, valid, radius=1.0, spaxels_per_pixel=0.5)
    assert n_fine.tolist() == [1.25, 1.0]
    assert 1 / np.sqrt(fine[0]) == pytest.approx(naive_sigma * 2 * (1 + 1.62 * np.log10(1.25)))
    # A batch with one scale per galaxy broadcasts over lines.
    batch = covariance_corrected_sums(flux[None].repeat(2, 0), ivar[None].repeat(2, 0), valid[None].repeat(2, 0),
                                      radius=np.array([1.0, 1.0]), spaxels_per_pixel=np.array([1.0, 2.0]))
    assert batch[2].tolist() == [[5, 4], [20, 16]]
    with pytest.raises(ValueError, match="spaxels_per_pixel"):
        covariance_corrected_sums(flux, ivar, valid, radius=1.0, spaxels_per_pixel=0.0)


def test_aperture_mean_uses_only_valid_finite_pixels():
    from ifskeras.survey.bpt import aperture_mean

    values = np.full((2, 7, 7), 2.0)
    values[0, 3, 3] = 100.0
    valid = np.ones_like(values, bool)
    valid[0, 3, 3] = False  # the outlier is masked
    values[1, 3, 4] = np.nan
    means = aperture_mean(values, valid, radius=1.0)
    assert means.tolist() == [2.0, 2.0]
    assert np.isnan(aperture_mean(values, np.zeros_like(valid), radius=1.0)).all()


@pytest.mark.parametrize(
    ("ew_ha", "ratio", "ew_nii", "expected"),
    [
        (0.49, 0.0, None, "passive"),
        (0.5, 0.0, None, "retired"),  # 0.5 <= W < 3
        (2.99, -0.8, None, "retired"),  # weak lines are retired whatever the ratio
        (0.3, 0.0, 0.49, "passive"),
        (0.3, 0.0, 0.5, "retired"),  # [NII] too strong for a line-less galaxy
        (0.3, 0.0, np.nan, "passive"),  # unknown W([NII]) does not veto
        (3.0, -0.41, None, "SF"),
        (3.0, -0.4, None, "wAGN"),  # the ratio boundary belongs to the AGN
        (6.0, -0.2, None, "wAGN"),
        (6.01, -0.2, None, "sAGN"),
        (50.0, -0.6, None, "SF"),
        (10.0, np.nan, None, ""),  # strong lines but no ratio: cannot tell
        (np.nan, -0.6, None, ""),
    ],
)
def test_whan_boundaries(ew_ha, ratio, ew_nii, expected):
    from ifskeras.survey.bpt import WHAN_CLASSES, classify_whan

    label = str(classify_whan(ew_ha, ratio, ew_nii))
    assert label == expected
    assert label in (*WHAN_CLASSES, "")


def test_whan_keeps_array_shape():
    from ifskeras.survey.bpt import classify_whan

    labels = classify_whan(np.array([[0.1, 1.0], [20.0, 4.0]]), np.array([[0.0, 0.0], [-0.7, 0.1]]))
    assert labels.tolist() == [["passive", "retired"], ["SF", "wAGN"]]
