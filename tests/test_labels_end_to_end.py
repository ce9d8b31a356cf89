"""Labels from a CSV through `evaluate` and `report`: real surveys name their own classes (e.g. AGN).

The tiny survey's Seyferts are relabelled ``AGN`` in a CSV, as a user's catalogue would
label them; the default positive classes (Seyfert, blueberry) are then absent.
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from ifskeras.cli.app import app
from ifskeras.discovery.pipeline import choose_positive
from ifskeras.discovery.score import ScoringError, load_scores

runner = CliRunner()


@pytest.fixture()
def agn_scores(tiny_scores, tmp_path):
    """A private copy of the tiny scores (evaluate writes into it) and an AGN labels CSV."""
    scores = tmp_path / "scores"
    shutil.copytree(tiny_scores, scores)
    table, _, _ = load_scores(scores)
    labels = tmp_path / "agn.csv"
    with open(labels, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["plateifu", "AGN_TYPE"])
        for galaxy, label in zip(table["id"], table["label"]):
            writer.writerow([galaxy, "AGN" if label == "Seyfert" else ("nonAGN" if label == "SF" else "")])
    n_agn = int(np.sum(np.asarray(table["label"]) == "Seyfert"))
    assert n_agn > 0
    return scores, labels, n_agn


def test_choose_positive_lists_the_classes_present():
    labels = np.array(["AGN", "nonAGN", "nonAGN", ""])
    assert choose_positive(labels, ("AGN",)) == ("AGN",)
    assert choose_positive(np.array(["Seyfert", "SF"])) == ("Seyfert", "blueberry")
    assert choose_positive(labels, "AGN") == ("AGN",)  # a single class given as a string
    with pytest.raises(ScoringError, match=r"default positive.*nonAGN \(2\), AGN \(1\); 1 unlabelled.*--positive AGN"):
        choose_positive(labels)
    with pytest.raises(ScoringError, match="requested positive classes"):
        choose_positive(labels, ("Seyfert",))


def test_evaluate_with_an_agn_column(agn_scores):
    scores, labels, n_agn = agn_scores
    base = ["evaluate", str(scores), "--labels", str(labels), "--label-column", "AGN_TYPE", "--bootstrap", "20"]
    missing = runner.invoke(app, base)
    assert missing.exit_code == 1
    assert "AGN (" in missing.output and "--positive" in missing.output

    result = runner.invoke(app, [*base, "--positive", "AGN", "--negative", "nonAGN"])
    assert result.exit_code == 0, result.output
    payload = json.loads((scores / "evaluation.json").read_text())
    assert payload["positive"] == ["AGN"]
    assert payload["evaluation"]["n_positive"] == n_agn

    wrong_column = runner.invoke(app, ["evaluate", str(scores), "--labels", str(labels), "--positive", "AGN"])
    assert wrong_column.exit_code == 1 and "AGN_TYPE" in wrong_column.output and "--label-column" in wrong_column.output


def test_report_without_positive_renders_everything_else(agn_scores, tmp_path):
    scores, labels, _ = agn_scores
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(scores), "--out", str(out), "--labels", str(labels),
                                 "--label-column", "AGN_TYPE", "--top", "3"])
    assert result.exit_code == 0, result.output
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "Not evaluated" in page and "--positive AGN" in page
    assert "class AGN" in page  # the CSV's labels, not the records', are counted
    assert (out / "figures" / "umap_label.png").exists()
    assert not (out / "evaluation.json").exists()


def test_report_with_positive_evaluates_and_absent_class_fails(agn_scores, tmp_path):
    scores, labels, n_agn = agn_scores
    common = ["--labels", str(labels), "--label-column", "AGN_TYPE", "--top", "3"]
    result = runner.invoke(app, ["report", str(scores), "--out", str(tmp_path / "r1"), *common, "--positive", "AGN"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((tmp_path / "r1" / "evaluation.json").read_text())["evaluation"]
    assert evaluation["positive"] == ["AGN"] and evaluation["n_positive"] == n_agn

    absent = runner.invoke(app, ["report", str(scores), "--out", str(tmp_path / "r2"), *common, "--positive", "QSO"])
    assert absent.exit_code == 1
    assert "QSO" in absent.output and "AGN (" in absent.output
