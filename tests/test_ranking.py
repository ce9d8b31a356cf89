"""rank_score: the rule on hand-made tables, and on a tiny survey's scores and report."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from matplotlib.colors import to_rgb

from ifskeras.discovery.figures.maps import HIGHLIGHT_COLOUR

from ifskeras.discovery import ranking
from ifskeras.discovery.ranking import TOP_LINES, integrated_log_snr, line_z_scores, rank_scores
from ifskeras.discovery.score import load_scores
from pictures import assert_picture

#: Colour of the gallery bars rank_score averages, as PNG pixels.
HIGHLIGHT_RGB = np.round(255 * np.array(to_rgb(HIGHLIGHT_COLOUR)))
LINES = ("HB-4862", "OIII-4960", "OIII-5008", "HA-6564", "NII-6585")
TIED_COPY = "OIII-4960"


def _table(n: int = 40, seed: int = 0, prefix: str = "chi2_") -> dict:
    rng = np.random.default_rng(seed)
    # Each line has its own typical error level: bright lines are hard for every galaxy.
    levels = {"HB-4862": 1.0, "OIII-4960": 0.5, "OIII-5008": 0.8, "HA-6564": 20.0, "NII-6585": 10.0}
    return {f"{prefix}{line}": level * np.exp(rng.normal(0, 0.3, n)) for line, level in levels.items()}


def test_an_unusual_weak_line_outranks_a_galaxy_bright_in_errors_everywhere():
    table = _table()
    train = np.ones(40, bool)
    train[-2:] = False
    # Galaxy 38: [OIII] and Hb reconstructed far worse than usual for those lines (an AGN).
    table["chi2_OIII-5008"][38] *= 30
    table["chi2_HB-4862"][38] *= 10
    # Galaxy 39: every error 2.5x the typical one: the largest galaxy-level error, but no line stands out.
    for line in LINES:
        table[f"chi2_{line}"][39] = 2.5 * np.median(table[f"chi2_{line}"][:38])
    ranked = rank_scores(table, LINES, train, excluded_lines=[TIED_COPY])
    assert np.argmax(ranked["rank_score"]) == 38
    assert ranked["rank_percentile"][38] == 100.0
    # The galaxy-level mean error would have put 39 far above 38.
    galaxy_error = np.mean([table[f"chi2_{line}"] for line in LINES], axis=0)
    assert galaxy_error[39] > galaxy_error[38]


def test_the_rule_by_hand_and_tied_copies_left_out():
    table = _table(seed=1)
    train = np.arange(40) < 30
    used = [line for line in LINES if line != TIED_COPY]
    logs = np.log(np.stack([table[f"chi2_{line}"] for line in used], axis=1))
    median = np.median(logs[train], axis=0)
    sigma = 1.4826 * np.median(np.abs(logs[train] - median), axis=0)
    expected = np.sort((logs - median) / sigma, axis=1)[:, -TOP_LINES:].mean(axis=1)
    ranked = rank_scores(table, LINES, train, excluded_lines=[TIED_COPY])
    np.testing.assert_allclose(ranked["rank_score"], expected, rtol=1e-12)
    # A tied copy's error alone never moves the ranking.
    table[f"chi2_{TIED_COPY}"][5] *= 1000
    np.testing.assert_array_equal(rank_scores(table, LINES, train, excluded_lines=[TIED_COPY])["rank_score"],
                                  ranked["rank_score"])


def test_integrated_log_snr_against_a_pixel_loop():
    rng = np.random.default_rng(3)
    flux = rng.normal(2.0, 3.0, (4, 3, 6, 6))
    ivar = rng.uniform(0.0, 2.0, flux.shape) * (rng.random(flux.shape) > 0.2)
    valid = rng.random(flux.shape) > 0.3
    valid[1, 2] = False  # a line with no valid pixel
    flux[2, 0] = -np.abs(flux[2, 0])  # no net flux: clipped at S/N 1
    expected = np.full((4, 3), np.nan)
    for galaxy in range(4):
        for line in range(3):
            used = valid[galaxy, line] & (ivar[galaxy, line] > 0)
            if used.any():
                snr = flux[galaxy, line][used].sum() / np.sqrt((1.0 / ivar[galaxy, line][used]).sum())
                expected[galaxy, line] = np.log10(max(snr, 1.0))
    np.testing.assert_allclose(integrated_log_snr(flux, ivar, valid), expected, rtol=1e-12)
    assert np.isnan(integrated_log_snr(flux, ivar, valid)[1, 2]) and integrated_log_snr(flux, ivar, valid)[2, 0] == 0


def _bright_normals_and_a_faint_anomaly(n: int = 60, seed: int = 4):
    """chi2 grows as S/N^2 for the same fractional misfit; galaxy 0 is faint with a 6x misfit."""
    rng = np.random.default_rng(seed)
    log_snr = rng.uniform(1.0, 3.0, (n, len(LINES)))
    log_snr[0] = 1.2
    chi2 = (10.0 ** log_snr) ** 2 * 1e-3 * np.exp(rng.normal(0.0, 0.3, log_snr.shape))
    chi2[0, LINES.index("OIII-5008")] *= 40.0
    chi2[0, LINES.index("HB-4862")] *= 40.0
    table = {f"peak_{line}": chi2[:, i] for i, line in enumerate(LINES)}
    return table, {f"log_snr_{line}": log_snr[:, i] for i, line in enumerate(LINES)}, log_snr, chi2


def test_the_brightness_trend_is_taken_out_by_theil_sen_over_the_training_galaxies():
    from scipy.stats import theilslopes

    table, brightness, log_snr, chi2 = _bright_normals_and_a_faint_anomaly()
    train = np.arange(60) >= 5
    used = [i for i, line in enumerate(LINES) if line != TIED_COPY]
    logs = np.log(chi2[:, used])
    expected_z = np.empty_like(logs)
    for column, line in enumerate(used):
        slope = theilslopes(logs[train, column], log_snr[train, line])[0]
        adjusted = logs[:, column] - slope * log_snr[:, line]
        median = np.median(adjusted[train])
        expected_z[:, column] = (adjusted - median) / (1.4826 * np.median(np.abs(adjusted[train] - median)))
    expected = np.sort(expected_z, axis=1)[:, -TOP_LINES:].mean(axis=1)
    ranked = rank_scores(table | brightness, LINES, train, excluded_lines=[TIED_COPY])
    np.testing.assert_allclose(ranked["rank_score"], expected, rtol=1e-9)
    # Judged at its brightness the faint galaxy is the most unusual; without the trend the
    # brightest normal galaxies, whose chi2 is 100x larger for the same misfit, outrank it.
    assert np.argmax(ranked["rank_score"]) == 0
    plain = rank_scores(table, LINES, train, excluded_lines=[TIED_COPY])["rank_score"]
    assert (plain > plain[0]).sum() >= 5


def test_a_line_without_brightness_is_taken_at_the_median_and_a_large_reference_is_thinned(monkeypatch):
    _, _, log_snr, chi2 = _bright_normals_and_a_faint_anomaly(n=60)
    train = np.ones(60, bool)
    z = line_z_scores(chi2, train, log_snr)
    missing = log_snr.copy()
    missing[7, 1] = np.nan
    # The fit skips the galaxy without a brightness; its error is judged at the median brightness.
    fit_without = np.ones(60, bool)
    fit_without[7] = False
    slope = ranking._theil_sen_slope(log_snr[fit_without, 1], np.log(chi2[fit_without, 1]))
    adjusted = np.log(chi2[:, 1]) - slope * np.where(np.arange(60) == 7, np.median(log_snr[fit_without, 1]),
                                                     log_snr[:, 1])
    median = np.median(adjusted)
    np.testing.assert_allclose(line_z_scores(chi2, train, missing)[:, 1],
                               (adjusted - median) / (1.4826 * np.median(np.abs(adjusted - median))), rtol=1e-9)
    # Above TREND_GALAXIES reference galaxies, the trend is fitted on that many, evenly spaced in brightness.
    monkeypatch.setattr(ranking, "TREND_GALAXIES", 20)
    kept = np.lexsort((np.log(chi2[:, 0]), log_snr[:, 0]))[np.linspace(0, 59, 20).round().astype(int)]
    slope = ranking._theil_sen_slope(log_snr[kept, 0], np.log(chi2[kept, 0]))
    adjusted = np.log(chi2[:, 0]) - slope * log_snr[:, 0]
    median = np.median(adjusted)
    np.testing.assert_allclose(line_z_scores(chi2, train, log_snr)[:, 0],
                               (adjusted - median) / (1.4826 * np.median(np.abs(adjusted - median))), rtol=1e-9)
    assert not np.allclose(line_z_scores(chi2, train, log_snr)[:, 0], z[:, 0])


def test_the_peak_errors_are_preferred_to_the_map_means():
    table = {**_table(seed=2), **_table(seed=3, prefix="peak_")}
    train = np.arange(40) < 30
    from_peaks = rank_scores(table, LINES, train, excluded_lines=[TIED_COPY])["rank_score"]
    only_peaks = {name: values for name, values in table.items() if name.startswith("peak_")}
    np.testing.assert_array_equal(from_peaks, rank_scores(only_peaks, LINES, train,
                                                          excluded_lines=[TIED_COPY])["rank_score"])
    only_means = {name: values for name, values in table.items() if name.startswith("chi2_")}
    assert not np.allclose(from_peaks, rank_scores(only_means, LINES, train, excluded_lines=[TIED_COPY])["rank_score"])
    # Peaks for only some of the lines: the whole-map chi2 of every line, not a mix.
    del table["peak_HB-4862"]
    np.testing.assert_array_equal(rank_scores(table, LINES, train, excluded_lines=[TIED_COPY])["rank_score"],
                                  rank_scores(only_means, LINES, train, excluded_lines=[TIED_COPY])["rank_score"])


def test_an_overflowed_error_counts_as_the_most_unusual():
    errors = np.array([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0], [np.inf, 20.0]])
    z = line_z_scores(errors, np.array([True, True, True, False]))
    assert np.isfinite(z).all() and z[3, 0] > 100


def test_the_report_paragraph_and_top_table_follow_the_rank_basis():
    from ifskeras.discovery.ranking import rank_basis_of, rank_score_explanation
    from ifskeras.discovery.tables import format_top_table

    peaks = {**_table(seed=4), **_table(seed=5, prefix="peak_"), **_table(seed=6, prefix="err_")}
    assert rank_basis_of(peaks) == "peak_"
    assert rank_basis_of({k: v for k, v in peaks.items() if not k.startswith("peak_")} | {"chi2_score": 1}) == "chi2_"
    assert rank_basis_of({"err_HB-4862": 1, "chi2_score": 1}) == "err_"
    assert "3 x 3" in rank_score_explanation("peak_") and "3 x 3 peak existed" in rank_score_explanation("chi2_")
    # The paragraph says whether the brightness trend was taken out: scores from before it was say so.
    assert "at the same brightness" in rank_score_explanation("peak_")
    old = rank_score_explanation("peak_", brightness_trend=False)
    assert "at the same brightness" not in old and "written before" in old
    # The top table names each galaxy's highest line z-scores of the rank basis, tied copy left out.
    peaks["peak_OIII-5008"][7] *= 50
    peaks["peak_OIII-4960"][7] *= 500
    peaks["split"] = np.array(["train"] * 40)
    ranked = rank_scores(peaks, LINES, np.ones(40, bool), excluded_lines=[TIED_COPY])["rank_score"]
    ids = [f"g{i}" for i in range(40)]
    rows = format_top_table(peaks, ids, None, ranked, "rank_score", 1)
    assert rows[0][-1] == "most unusual lines (z)" and rows[1][1] == "g7"
    assert rows[1][-1].startswith("[OIII] 5008") and "4960" not in rows[1][-1]


def test_fallback_to_err_and_missing_lines():
    table = _table(prefix="err_")
    train = np.ones(40, bool)
    assert rank_scores(table, LINES, train)["rank_score"].shape == (40,)
    z = line_z_scores(np.array([[1.0, np.nan], [2.0, 3.0], [4.0, 3.0]]), np.ones(3, bool))
    assert z[0, 1] == 0.0  # a line without valid pixels counts as typical
    assert np.all(z[:, 1][1:] == 0.0)  # every reference galaxy alike: the line singles none out
    with pytest.raises(ValueError, match="missing columns"):
        rank_scores({"err_HB-4862": np.ones(3)}, LINES, np.ones(3, bool))


def test_gallery_line_z_follow_the_map_order_without_tied_copies():
    from ifskeras.discovery.pipeline import _line_z_by_map_order
    from ifskeras.discovery.tables import unusual_line_z_scores

    table = _table(prefix="peak_")
    table["peak_OIII-5008"][5] *= 40
    table |= {"id": np.array([f"g{i}" for i in range(40)]), "split": np.array(["train"] * 30 + ["test"] * 10)}
    map_order = list(LINES)[::-1]
    by_line = _line_z_by_map_order(table, map_order)
    z, names = unusual_line_z_scores(table)
    assert by_line.shape == (40, len(LINES)) and TIED_COPY not in names
    assert np.isnan(by_line[:, map_order.index(TIED_COPY)]).all()
    for k, name in enumerate(names):
        np.testing.assert_array_equal(by_line[:, map_order.index(name)], z[:, k])
    assert np.nanargmax(by_line[5]) == map_order.index("OIII-5008")
    # The lines scoring.json says rank_score left out, when given, replace the tied copies.
    chosen = _line_z_by_map_order(table, map_order, excluded_lines=["HA-6564"])
    assert np.isnan(chosen[:, map_order.index("HA-6564")]).all()
    assert np.isfinite(chosen[:, map_order.index(TIED_COPY)]).all()


def test_gallery_line_z_are_what_rank_score_averages_with_the_brightness_trend():
    from ifskeras.discovery.tables import unusual_line_z_scores

    table, brightness, _, _ = _bright_normals_and_a_faint_anomaly()
    table = table | brightness | {"split": np.array(["train"] * 50 + ["test"] * 10)}
    z, names = unusual_line_z_scores(table, excluded_lines=[TIED_COPY])
    ranked = rank_scores(table, LINES, np.arange(60) < 50, excluded_lines=[TIED_COPY])["rank_score"]
    np.testing.assert_allclose(np.sort(z, axis=1)[:, -TOP_LINES:].mean(axis=1), ranked, rtol=1e-12)
    without = {name: values for name, values in table.items() if not name.startswith("log_snr_")}
    assert not np.allclose(unusual_line_z_scores(without, excluded_lines=[TIED_COPY])[0], z)


def test_a_large_reference_is_thinned_the_same_whatever_the_row_order(monkeypatch):
    _, _, log_snr, chi2 = _bright_normals_and_a_faint_anomaly(n=60)
    monkeypatch.setattr(ranking, "TREND_GALAXIES", 20)
    order = np.random.default_rng(1).permutation(60)
    z = line_z_scores(chi2, np.ones(60, bool), log_snr)
    np.testing.assert_allclose(line_z_scores(chi2[order], np.ones(60, bool), log_snr[order]), z[order], rtol=1e-12)


def test_tiny_survey_scores_and_report_rank_by_rank_score(tiny_scores, tiny_records, tmp_path):
    from ifskeras.discovery.pipeline import report_run

    table, _, provenance = load_scores(tiny_scores)
    lines = provenance["model_metadata"]["lines"]
    train = np.asarray(table["split"]) == "train"
    again = rank_scores(table, lines, train, excluded_lines=provenance["rank_excluded_lines"])
    np.testing.assert_allclose(table["rank_score"], again["rank_score"], rtol=1e-9)
    # It was ranked with each line's brightness trend taken out: without it the ranking differs.
    assert provenance["rank_brightness_trend"] is True
    no_brightness = {name: values for name, values in table.items() if not name.startswith("log_snr_")}
    assert not np.allclose(rank_scores(no_brightness, lines, train, excluded_lines=provenance["rank_excluded_lines"])
                           ["rank_score"], table["rank_score"])
    assert set(provenance["rank_excluded_lines"]) == {"OIII-4960", "NII-6549", "OI-6365"}
    fits = Table.read(tiny_scores / "scores.fits")
    assert fits.colnames[:6] == ["id", "mangaid", "split", "label", "rank_score", "rank_percentile"]
    np.testing.assert_allclose(np.asarray(fits["rank_score"]), table["rank_score"], rtol=1e-12)
    assert fits["log_snr_Ha-6564"].description.startswith("log10 integrated S/N of Ha-6564")
    # The brightness is the records' own: recomputed from the training split's maps.
    from ifskeras.records import make_dataset

    expected = {}
    for batch in make_dataset(tiny_records, "train", batch_size=64, training=False, with_ivar=True):
        snr = integrated_log_snr(*(batch[name].numpy()[..., 0] for name in ("flux", "ivar", "valid")))
        expected.update(zip((v.decode() for v in batch["id"].numpy()), snr[:, lines.index("Ha-6564")]))
    written = dict(zip(np.asarray(fits["id"]).astype(str), np.asarray(fits["log_snr_Ha-6564"])))
    np.testing.assert_allclose([written[galaxy] for galaxy in expected], list(expected.values()), rtol=1e-6)

    page = report_run(tiny_scores, tmp_path / "report", top_n=3, neighbour_queries=1).read_text(encoding="utf-8")
    assert "Galaxies are ranked by rank_score" in page
    # The galleries' bar charts show the line z-scores, the three rank_score averages in orange.
    gallery = next((tmp_path / "report" / "figures").glob("gallery_01_*.png"))
    assert np.all(assert_picture(gallery) == HIGHLIGHT_RGB, axis=-1).sum() > 50
    best = str(table["id"][int(np.argmax(table["rank_score"]))])
    top_table = page.split("Top 3 galaxies by rank_score", 1)[1]
    assert top_table.index(best) < top_table.index("</table>")
