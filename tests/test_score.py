"""Scoring through the SavedModel, neighbours, evaluation and the report on the tiny survey."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("tensorflow")
from astropy.table import Table  # noqa: E402

from browser_check import assert_page_renders, find_chromium  # noqa: E402
from ifskeras.cli.app import app  # noqa: E402
from ifskeras.survey.lines import DEFAULT_LINES  # noqa: E402
from ifskeras.discovery.neighbours import nearest_neighbors  # noqa: E402
from ifskeras.discovery.score import (  # noqa: E402
    ScoringError,
    load_scores,
    score_records,
)

runner = CliRunner()


def test_scores_have_fixed_columns_in_csv_and_fits(tiny_scores, tiny_records):
    table, latents, provenance = load_scores(tiny_scores)
    n = len(table["id"])
    assert n == 32 and latents.shape == (n, 8)
    expected = ["id", "split", "label", "anomaly_score", "anomaly_percentile", "knn_score", "combined_score",
                "umap_x", "umap_y"] + [f"err_{line}" for line in DEFAULT_LINES] + [f"latent_{i}" for i in range(8)]
    for column in expected:
        assert column in table, column
    fits = Table.read(tiny_scores / "scores.fits")
    assert list(fits["id"]) == list(table["id"])
    np.testing.assert_allclose(np.asarray(fits["anomaly_score"]), table["anomaly_score"], rtol=1e-12)
    np.testing.assert_allclose(latents[:, 0], table["latent_0"], rtol=1e-6)
    assert set(table["split"]) <= {"train", "val", "test"} and set(table["label"]) - {""}
    train = table["split"] == "train"
    assert table["anomaly_percentile"][train].max() == pytest.approx(100.0)
    assert np.all((table["anomaly_percentile"] >= 0) & (table["anomaly_percentile"] <= 100))
    assert np.isfinite(table["umap_x"]).all() and np.all(table["knn_score"] > 0)
    assert provenance["n_galaxies"] == n and provenance["model_metadata"]["lines"] == list(DEFAULT_LINES)
    assert len(provenance["records_manifest_sha256"]) == 64


def test_scores_have_chi2_columns_from_the_ivar_endpoint(tiny_scores, tiny_records):
    import tensorflow as tf

    from ifskeras.records import read_examples

    table, _, provenance = load_scores(tiny_scores)
    for column in (["chi2_score", "chi2_percentile"] + [f"chi2_{line}" for line in DEFAULT_LINES]
                   + [f"peak_{line}" for line in DEFAULT_LINES]):
        assert column in table, column
    assert "nelbo_score" not in table  # an AE has no likelihood
    assert not [name for name in table if name.startswith("nll_") or name == "nelbo_kl"]
    assert provenance["noise_aware_scores"] and provenance["model_format_version"] == 4
    assert provenance["rank_basis"] == "peak_"
    assert provenance["chi2_excluded_lines"] == ["NII-6549", "OI-6365", "OIII-4960"]
    assert np.all(table["chi2_score"] > 0) and np.isfinite(table["chi2_score"]).all()
    train = table["split"] == "train"
    assert table["chi2_percentile"][train].max() == pytest.approx(100.0)
    fits = Table.read(tiny_scores / "scores.fits")
    np.testing.assert_allclose(np.asarray(fits["chi2_score"]), table["chi2_score"], rtol=1e-12)

    ids = list(table["id"][:4])
    batch = read_examples(tiny_records, ids)
    model = tf.saved_model.load(provenance["model_dir"])
    out = model.score(batch["flux"], batch["valid"], batch["ivar"])
    np.testing.assert_allclose(table["chi2_score"][:4], out["chi2_score"].numpy(), rtol=1e-5)
    per_line = np.stack([table[f"chi2_{line}"][:4] for line in DEFAULT_LINES], axis=1)
    np.testing.assert_allclose(per_line, out["chi2_per_line"].numpy(), rtol=1e-5)
    peaks = np.stack([table[f"peak_{line}"][:4] for line in DEFAULT_LINES], axis=1)
    np.testing.assert_allclose(peaks, out["chi2_peak_per_line"].numpy(), rtol=1e-5)


def export_format_2(model_path, out_dir, *, lines, size):
    """A SavedModel as format 2 wrote it: ``score(flux, valid)`` only, format_version 2."""
    import keras
    import tensorflow as tf

    import ifskeras.learning.models  # noqa: F401  registers the custom classes

    model = keras.saving.load_model(str(model_path))
    metadata = json.dumps({"format": "ifskeras-savedmodel", "format_version": 2, "model_class": type(model).__name__,
                           "lines": list(lines), "size": size, "scaling": model.scaling, "softening": model.softening,
                           "latent_dim": model.latent_dim})
    spec = tf.TensorSpec([None, len(lines), size, size, 1], tf.float32)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("score", lambda flux, valid: dict(model.score(flux, valid)), input_signature=[spec, spec])
    archive.add_endpoint("metadata", tf.function(lambda: {"json": tf.constant(metadata)}, input_signature=[]))
    archive.write_out(str(out_dir), verbose=False)
    return out_dir


def test_format_2_models_still_score_without_chi2(tiny_scores, trained_ae, tiny_records, tmp_path):
    old_model = export_format_2(trained_ae.model_path, tmp_path / "format2", lines=DEFAULT_LINES, size=16)
    result = score_records(old_model, tiny_records, tmp_path / "scores", k=3, umap=False, progress=False)
    table, _, provenance = load_scores(result.out_dir)
    assert not any(name.startswith("chi2_") for name in table)
    assert not provenance["noise_aware_scores"] and provenance["model_format_version"] == 2
    current, _, _ = load_scores(tiny_scores)
    np.testing.assert_allclose(table["anomaly_score"], current["anomaly_score"], rtol=1e-6)


def test_scores_match_the_keras_model(tiny_scores, trained_ae, tiny_records):
    import keras

    import ifskeras.learning.models  # noqa: F401
    from ifskeras.records import read_examples

    table, _, _ = load_scores(tiny_scores)
    ids = list(table["id"][:4])
    batch = read_examples(tiny_records, ids)
    model = keras.saving.load_model(str(trained_ae.model_path))
    expected = np.asarray(model.score(batch["flux"], batch["valid"])["anomaly_score"])
    np.testing.assert_allclose(table["anomaly_score"][:4], expected, rtol=1e-5)


def test_refuses_records_of_other_lines_or_size(trained_ae, tiny_survey, tmp_path):
    from ifskeras.records import ConvertOptions, convert_maps

    other_lines = tmp_path / "lines"
    convert_maps([tiny_survey], other_lines, ConvertOptions(size=16, lines=DEFAULT_LINES[:5]))
    with pytest.raises(ScoringError, match=r"trained on lines Heta-3836, .* but records .* hold Heta-3836, NeIII-3869, Hzet-3890, NeIII-3968, Heps-3971;"):
        score_records(trained_ae.export_path, other_lines, tmp_path / "s1", progress=False)
    other_size = tmp_path / "size"
    convert_maps([tiny_survey], other_size, ConvertOptions(size=8))
    with pytest.raises(ScoringError, match="takes 16x16 maps but records .* hold 8x8; convert with --size 16"):
        score_records(trained_ae.export_path, other_size, tmp_path / "s2", progress=False)
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s2").exists()


def test_bad_model_dir_and_empty_split(trained_ae, tiny_records, tmp_path):
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(ScoringError, match="not a SavedModel directory"):
        score_records(tmp_path / "notamodel", tiny_records, tmp_path / "out", progress=False)
    result = runner.invoke(app, ["score", str(tmp_path / "notamodel"), str(tiny_records), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "not a SavedModel directory" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(ScoringError, match="no galaxies in split"):
        score_records(trained_ae.export_path, tiny_records, tmp_path / "out", splits=("nosuch",), progress=False)


def test_neighbors_exclude_self_and_suggest_close_ids(tiny_scores):
    table, latents, _ = load_scores(tiny_scores)
    query = str(table["id"][0])
    rows = nearest_neighbors(tiny_scores, query, k=4)
    assert len(rows) == 4 and query not in [r[0] for r in rows]
    distances = [r[2] for r in rows]
    assert distances == sorted(distances)
    expected = np.sort(np.linalg.norm(latents[1:] - latents[0], axis=1))[:4]
    np.testing.assert_allclose(distances, expected, rtol=1e-5)
    with pytest.raises(ScoringError, match=rf"not in .*did you mean {re.escape(query[:-1])}"):
        nearest_neighbors(tiny_scores, query[:-1] + "9", k=3)
    result = runner.invoke(app, ["neighbors", str(tiny_scores), "nosuch-1"])
    assert result.exit_code == 1 and "is not in" in result.output and "Traceback" not in result.output


@pytest.fixture(scope="module")
def pipeline_report(tiny_scores, tmp_path_factory):
    """The report command's output for the tiny survey: (its printed output, index.html)."""
    out = tmp_path_factory.mktemp("report") / "report"
    result = runner.invoke(app, ["report", str(tiny_scores), "--out", str(out), "--top", "3"])
    assert result.exit_code == 0, result.output
    return result.output, out / "index.html"


def test_evaluation_numbers_agree_in_cli_csv_and_report(tiny_scores, pipeline_report):
    result = runner.invoke(app, ["evaluate", str(tiny_scores), "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    with open(tiny_scores / "evaluation.csv", newline="") as stream:
        rows = list(csv.reader(stream))
    model_row = next(row for row in rows if row[0] == "anomaly_score")
    auroc_column = rows[0].index(next(name for name in rows[0] if name.startswith("AUROC")))
    assert model_row[auroc_column] in result.output
    payload = json.loads((tiny_scores / "evaluation.json").read_text())
    assert payload["n_galaxies"] == 32 and "pca_error" in json.dumps(payload)

    _, index = pipeline_report
    assert model_row[auroc_column].split(" ")[0] in index.read_text()
    figures = list((index.parent / "figures").glob("*.png"))
    assert any(f.name.startswith("gallery_") for f in figures) and any("loss" in f.name for f in figures)
    assert all(f.stat().st_size > 1000 for f in figures)


@pytest.mark.skipif(find_chromium() is None, reason="Chromium not installed (apt-get install chromium)")
def test_pipeline_report_renders_in_chromium(pipeline_report, tmp_path):
    assert_page_renders(pipeline_report[1], tmp_path)


def test_evaluate_without_labels_is_a_clear_error(tiny_scores, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("plateifu,class\nnobody-1,SF\n")
    result = runner.invoke(app, ["evaluate", str(tiny_scores), "--labels", str(labels)])
    assert result.exit_code == 1 and "no galaxy has a label" in result.output
