"""Tests of ifskeras.discovery.figures, .tables and .report: PNGs written, numbers exact, page renders in Chromium.

The browser check lives in ``browser_check.py``; it is skipped when no Chromium
binary is found.
"""

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from browser_check import assert_page_renders, find_chromium, img_sources
from ifskeras.discovery import figures
from pictures import assert_picture
from ifskeras.discovery.comparison import compare_to_baselines
from ifskeras.discovery.metrics import evaluate_scores
from ifskeras.discovery.figures.maps import HIGHLIGHT_COLOUR
from ifskeras.discovery.report import write_report
from ifskeras.discovery.retrieval import neighbour_retrieval
from ifskeras.discovery.tables import format_number

SEED = 11
N, S = 60, 8
LINES = ("Hb-4862", "OIII-5008", "Ha-6564", "NII-6585")
TITLE = "Toy <survey> & report"


def _toy(tmp_dir: Path) -> dict:
    rng = np.random.default_rng(SEED)
    labels = np.array(["SF"] * 40 + ["Seyfert"] * 8 + ["blueberry"] * 4 + ["LINER"] * 4 + [""] * 4)
    positive = np.isin(labels, ["Seyfert", "blueberry"])
    latents = rng.normal(size=(N, 3)) + 4 * positive[:, None]
    scores = {
        "anomaly_score": rng.normal(size=N) + positive,
        "knn_score": rng.normal(size=N) + 2 * positive,
        "random": rng.random(N),
    }
    table = {
        "id": np.array([f"{8000 + i}-{1901 + i % 3}" for i in range(N)]),
        "split": np.where(np.arange(N) % 5 == 0, "test", "train"),
        "label": labels,
        **scores,
        "anomaly_percentile": 100 * np.argsort(np.argsort(scores["anomaly_score"])) / (N - 1),
        **{f"err_{line}": rng.random(N) for line in LINES},
        "umap_x": latents[:, 0],
        "umap_y": latents[:, 1],
    }
    flux = rng.gamma(2.0, 0.5, size=(N, len(LINES), S, S))
    valid = np.ones(flux.shape, dtype=bool)
    valid[:, :, 0, :2] = False
    ratios = np.column_stack([rng.normal(-0.4, 0.2, N), rng.normal(-0.2, 0.3, N), rng.normal(-0.4, 0.2, N)])
    ratios[3, :] = np.nan
    evaluation = evaluate_scores(scores, labels, ks=(5, "n_pos"), n_bootstrap=100, seed=SEED)
    comparisons = compare_to_baselines(evaluation, "anomaly_score")
    retrieval = neighbour_retrieval(latents, labels, k=4, line_ratios=ratios)
    history_csv = tmp_dir / "history.csv"
    history_csv.write_text("epoch,loss,val_loss\n0,1.0,1.1\n1,0.6,0.7\n2,0.4,0.55\n")
    top = np.argsort(-scores["anomaly_score"])[:2]
    galleries = [
        {"id": table["id"][i], "label": labels[i], "score": scores["anomaly_score"][i],
         "percentile": table["anomaly_percentile"][i], "flux": flux[i], "reconstruction": 0.8 * flux[i],
         "valid": valid[i], "line_error": rng.random(len(LINES))}
        for i in top
    ]
    members = [int(top[0]), 1, 2, 3]
    neighbours = [{"query_id": table["id"][members[0]], "neighbour_ids": table["id"][members[1:]],
                   "distances": [0.5, 0.75, 1.25], "flux": flux[members], "valid": valid[members],
                   "labels": labels[members]}]
    return {
        "scores_table": table, "evaluation": evaluation, "comparisons": comparisons, "retrieval": retrieval,
        "history": history_csv, "galleries": galleries, "neighbours": neighbours, "lines": LINES,
        "bpt": {"log_nii_ha": ratios[:, 0], "log_oiii_hb": ratios[:, 1]}, "title": TITLE,
        "provenance": {"model_dir": "runs/<ae>", "records_dir": "records/", "versions": {"numpy": np.__version__}},
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp_dir = tmp_path_factory.mktemp("report")
    inputs = _toy(tmp_dir)
    index = write_report(tmp_dir / "out", **inputs)
    return index, inputs


def test_report_writes_page_and_figures(report):
    index, _ = report
    assert index.name == "index.html" and index.is_file()
    page = index.read_text(encoding="utf-8")
    sources = img_sources(page)
    expected = {"loss_curves", "score_histogram", "umap_score", "umap_label", "bpt", "roc_pr", "gallery_01",
                "gallery_02", "neighbours_01"}
    assert {Path(s).stem.split("_8")[0] for s in sources} == expected
    for source in sources:
        assert source.startswith("figures/")
        assert_picture(index.parent / html.unescape(source), min_size=(300, 300))
    json.loads((index.parent / "evaluation.json").read_text())


def test_report_is_self_contained_and_escaped(report):
    index, _ = report
    page = index.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "<script" not in page.lower()
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert html.escape(TITLE) in page and TITLE not in page
    assert "runs/&lt;ae&gt;" in page


def _interval(estimate) -> str:
    """An estimate as the page must show it, written out here: three decimals, then its interval."""
    return f"{estimate.value:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


def test_report_numbers_are_the_values_passed_in(report):
    """Every number of the tables, rounded here to three decimals (not by the report's own formatter)."""
    index, inputs = report
    page = index.read_text(encoding="utf-8")
    evaluation, comparisons, retrieval = inputs["evaluation"], inputs["comparisons"], inputs["retrieval"]
    assert set(evaluation.metrics) == {"anomaly_score", "knn_score", "random"}
    for name, metrics in evaluation.metrics.items():
        estimates = [metrics.auroc, metrics.average_precision]
        for key in evaluation.k_values:
            estimates += [metrics.precision_at_k[key], metrics.recall_at_k[key], metrics.enrichment_at_k[key]]
        for estimate in estimates:
            assert f"<td>{_interval(estimate)}</td>" in page, (name, estimate)
        auroc_ap = f"<td>{_interval(metrics.auroc)}</td><td>{_interval(metrics.average_precision)}</td>"
        assert f"<tr><td>{name}</td>{auroc_ap}" in page, name
        for fraction in evaluation.top_fractions:
            recalls = "".join(f"<td>{metrics.class_recall[label][fraction]:.3f}</td>"
                              for label in evaluation.class_counts)
            assert f"<tr><td>{name}</td><td>{fraction * 100:g}%</td>{recalls}</tr>" in page, (name, fraction)
    knn = next(c for c in comparisons if c.baseline == "knn_score")
    assert f'<td>{_interval(knn.delta_auroc)}</td><td class="{knn.verdict}">{knn.verdict}</td>' in page
    for label, neighbours in retrieval.per_class.items():
        assert (f"<td>{neighbours.n_queries}</td><td>{neighbours.same_class_fraction:.3f}</td>"
                f"<td>{neighbours.chance:.3f}</td><td>{neighbours.lift:.3f}</td></tr>") in page, label
    assert (f"<tr><td>all labelled</td><td>{retrieval.n_queries}</td><td>{retrieval.same_class_fraction:.3f}</td>"
            f"<td>{retrieval.chance:.3f}</td><td>{retrieval.lift:.3f}</td></tr>") in page
    assert retrieval.ratios
    for name, ratio in retrieval.ratios.items():
        assert (f"<tr><td>{html.escape(name)}</td><td>{ratio.n_neighbour_pairs}</td>"
                f"<td>{ratio.neighbour_median:.3f}</td><td>{ratio.random_median:.3f}</td>"
                f"<td>{ratio.ratio:.3f}</td></tr>") in page, name


def test_format_number():
    assert format_number(0.123456) == "0.123"
    assert format_number(-0.0001) == "0.000"
    assert format_number(np.float32(2.5)) == "2.500"
    assert format_number(np.int64(48)) == "48"
    assert format_number(float("nan")) == "n/a" and format_number(None) == "n/a"
    assert format_number(1 / 3, decimals=5) == "0.33333"


def test_minimal_report_without_optional_inputs(tmp_path):
    table = {"id": np.array(["a", "b", "c", "d"]), "anomaly_score": np.array([0.1, 0.4, 0.2, 0.9])}
    index = write_report(tmp_path / "minimal", scores_table=table)
    page = index.read_text(encoding="utf-8")
    assert img_sources(page) == ["figures/score_histogram.png"]
    assert "No training history was given." in page and "not evaluated" in page
    from astropy.table import MaskedColumn, Table

    labelled = Table({**table, "label": MaskedColumn(["SF", "x", "Seyfert", "SF"], mask=[0, 1, 0, 0])})
    page = write_report(tmp_path / "astropy", scores_table=labelled).read_text(encoding="utf-8")
    assert "<td>class unlabelled</td><td>1</td>" in page and "N/A" not in page
    with pytest.raises(ValueError, match="scores_table needs columns"):
        write_report(tmp_path / "bad", scores_table={"id": table["id"]})


def test_figures_write_pngs_and_validate(tmp_path):
    rng = np.random.default_rng(SEED)
    history = {"epoch": [0, 1, 2], "loss": [3.0, 2.0, 1.5], "val_loss": [3.2, 2.1, 1.7],
               "reconstruction_loss": [2.5, 1.6, 1.2], "kl_loss": [0.5, 0.4, 0.3]}
    paths = [
        figures.plot_loss_curves(history, tmp_path / "loss.png"),
        figures.plot_score_histogram(rng.random(50), tmp_path / "hist.png"),
        figures.plot_roc_pr(np.r_[np.zeros(20), np.ones(5)], {"s": rng.random(25)}, tmp_path / "roc.png"),
    ]
    # Figure size in inches times 100 dpi: loss curves with a loss-terms panel 10 x 4, histogram 7 x 4, ROC/PR 11 x 4.8.
    for path, size in zip(paths, [(1000, 400), (700, 400), (1100, 480)], strict=True):
        assert_picture(path, size=size)
    flux = rng.random((2, len(LINES), S, S))
    valid = np.ones(flux.shape, dtype=bool)
    with pytest.raises(ValueError, match="missing"):
        figures.plot_neighbours(flux[:, :2], valid[:, :2], LINES[:2], tmp_path / "n.png", ids=["a", "b"])
    with pytest.raises(ValueError, match="line_values"):
        figures.plot_gallery(flux[0], flux[0], valid[0], LINES, np.ones(3), tmp_path / "g.png")
    # Highlighted bars (the lines a score averages) get their own colour; a NaN gets no bar.
    z = np.array([0.5, np.nan, 3.0, 2.0])
    highlight_rgb = np.round(255 * np.array(to_rgb(HIGHLIGHT_COLOUR)))
    orange = [np.all(assert_picture(figures.plot_gallery(flux[0], flux[0], valid[0], LINES, z, tmp_path / f"z{k}.png",
                                                         highlight=k)) == highlight_rgb, axis=-1).sum()
              for k in (0, 1, 2)]
    assert orange[0] == 0 < orange[1] < orange[2]
    with pytest.raises(ValueError, match="'loss'"):
        figures.plot_loss_curves({"val_loss": [1.0]}, tmp_path / "l.png")


# --------------------------------------------------------------------------- browser

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="Chromium not installed (apt-get install chromium)")


@needs_chromium
def test_report_renders_in_chromium(report, tmp_path):
    index, _ = report
    assert_page_renders(index, tmp_path)
