"""``ifskeras score MODEL RECORDS --model OTHER``: one scores table from several models."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")


def test_an_ensemble_averages_its_members_rank_scores(trained_ae, trained_vae, tiny_records, tiny_scores, tmp_path):
    from ifskeras.discovery.score import load_scores, score_records

    ae, _, _ = load_scores(tiny_scores)
    vae_dir = score_records(trained_vae.export_path, tiny_records, tmp_path / "vae", k=3, umap=False,
                            progress=False).out_dir
    vae, _, _ = load_scores(vae_dir)
    both = score_records([trained_ae.export_path, trained_vae.export_path], tiny_records, tmp_path / "both",
                         k=3, umap=False, progress=False)
    table, latents, provenance = load_scores(both.out_dir)
    _, ae_latents, _ = load_scores(tiny_scores)

    assert list(table["id"]) == list(ae["id"]) == list(vae["id"])
    np.testing.assert_allclose(table["rank_score"], (ae["rank_score"] + vae["rank_score"]) / 2, rtol=1e-6)
    np.testing.assert_allclose(table["rank_score_spread"], np.abs(ae["rank_score"] - vae["rank_score"]) / 2,
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(table["anomaly_score"], (ae["anomaly_score"] + vae["anomaly_score"]) / 2, rtol=1e-6)
    np.testing.assert_allclose(table["chi2_score"], (ae["chi2_score"] + vae["chi2_score"]) / 2, rtol=1e-6)
    # Only the VAE gives a negative ELBO: an ensemble keeps the scores every member gives.
    assert "nelbo_score" in vae and "nelbo_score" not in table
    assert "nelbo_kl" in vae and not [name for name in table if name.startswith("nll_") or name == "nelbo_kl"]
    # Latent spaces of two trainings cannot be averaged: the first model's are kept.
    np.testing.assert_allclose(latents, ae_latents, rtol=1e-6)
    np.testing.assert_allclose(table["knn_score"], ae["knn_score"], rtol=1e-6)
    train = table["split"] == "train"
    assert table["rank_percentile"][train].max() == pytest.approx(100.0)
    assert len(provenance["model_dirs"]) == 2
    # Scoring one model stays as it was: no spread column.
    assert "rank_score_spread" not in ae

    # The report's gallery bars: an ensemble's are z-scores of the models' mean errors, and say so.
    from ifskeras.discovery.pipeline import _gallery_items

    first = [str(table["id"][0])]
    ensemble_item = _gallery_items(both.out_dir, table, provenance, first)[0]
    single_table, _, single_provenance = load_scores(tiny_scores)
    single_item = _gallery_items(tiny_scores, single_table, single_provenance, first)[0]
    assert "mean errors" in ensemble_item["line_z_label"] and single_item["line_z_label"] is None
    used_lines = len(provenance["model_metadata"]["lines"]) - len(provenance["rank_excluded_lines"])
    assert np.isfinite(ensemble_item["line_z"]).sum() == np.isfinite(single_item["line_z"]).sum() == used_lines


def test_ensemble_errors_and_the_cli(trained_ae, trained_vae, tiny_records, tmp_path):
    from typer.testing import CliRunner

    from ifskeras.cli.app import app
    from ifskeras.discovery.score import ScoringError, load_scores, score_records

    with pytest.raises(ScoringError, match="given twice"):
        score_records([trained_ae.export_path, trained_ae.export_path], tiny_records, tmp_path / "x", progress=False)
    with pytest.raises(ScoringError, match="not a SavedModel"):
        score_records([trained_ae.export_path, tmp_path], tiny_records, tmp_path / "y", progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()

    result = CliRunner().invoke(app, ["score", str(trained_vae.export_path), str(tiny_records), "--out",
                                      str(tmp_path / "cli"), "--model", str(trained_ae.export_path), "-k", "3",
                                      "--no-umap", "-q"])
    assert result.exit_code == 0, result.output
    table, _, provenance = load_scores(tmp_path / "cli")
    assert [path.rsplit("/", 3)[-3] for path in provenance["model_dirs"]][0].startswith("vae")
    assert np.isfinite(table["rank_score_spread"]).all()


def test_members_must_rank_on_the_same_errors():
    from pathlib import Path

    from ifskeras.discovery.score import ScoringError, _check_ensemble

    format_3 = {"format_version": 3, "chi2_excluded_lines": ["OIII-4960"]}
    format_4 = {**format_3, "format_version": 4}
    _check_ensemble([Path("a"), Path("b")], [format_3, dict(format_3)])
    _check_ensemble([Path("a"), Path("b")], [format_4, dict(format_4)])
    with pytest.raises(ScoringError, match="ranks on other errors.*format 2 against 3"):
        _check_ensemble([Path("a"), Path("b")], [format_3, {"format_version": 2}])
    # A format-3 member ranks on the whole-map chi2, a format-4 one on its peak.
    with pytest.raises(ScoringError, match="ranks on other errors.*format 3 against 4"):
        _check_ensemble([Path("a"), Path("b")], [format_4, format_3])


def test_a_model_refuses_records_of_another_grid(trained_ae, tiny_records):
    from ifskeras.discovery.score import ScoringError, check_model_matches_records
    from ifskeras.learning.export import read_model_metadata
    from ifskeras.records import load_manifest, records_grid

    metadata = read_model_metadata(trained_ae.export_path)
    manifest = load_manifest(tiny_records)
    assert metadata["records_grid"] == records_grid(manifest.preprocessing)
    assert metadata["records_grid"]["scale"] == "bundle"
    check_model_matches_records(metadata, manifest, model_dir="model", records_dir="records")
    other = {**metadata, "records_grid": {**metadata["records_grid"], "scale": "re", "re_span": 3.0}}
    with pytest.raises(ScoringError, match=r"another grid: scale 're' \(records: 'bundle'\)"):
        check_model_matches_records(other, manifest, model_dir="model", records_dir="records")
