"""Scoring a VAE: the SavedModel path of ``ifskeras score`` on the VAE equals the model's own score."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

pytest.importorskip("tensorflow")


def test_vae_scores_match_the_keras_model(trained_vae, tiny_records, tmp_path):
    import keras

    import ifskeras.learning.models  # noqa: F401  registers the custom classes
    from ifskeras.discovery.score import load_scores, score_records
    from ifskeras.records import load_manifest, read_examples

    result = score_records(trained_vae.export_path, tiny_records, tmp_path / "scores", k=3, umap=False,
                           progress=False)
    table, latents, provenance = load_scores(result.out_dir)
    manifest = load_manifest(tiny_records)
    assert result.n_galaxies == sum(manifest.examples(s) for s in ("train", "val", "test"))
    assert provenance["model_metadata"]["model_class"] == "ConvLSTMVAE"

    model = keras.saving.load_model(str(trained_vae.model_path))
    examples = read_examples(tiny_records, list(table["id"]))
    tied = np.array([line in provenance["chi2_excluded_lines"] for line in provenance["model_metadata"]["lines"]])
    direct = model.score(examples["flux"], examples["valid"], examples["ivar"],
                         chi2_line_mask=(~tied).astype("float32"))
    # The VAE is scored from its posterior mean and fixed posterior draws: deterministic and
    # equal to the Keras model's score.
    np.testing.assert_allclose(table["anomaly_score"], np.asarray(direct["anomaly_score"]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(latents, np.asarray(direct["latent_mean"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(table["nelbo_score"], np.asarray(direct["nelbo_score"]), rtol=1e-5)
    np.testing.assert_allclose(table["chi2_score"], np.asarray(direct["chi2_score"]), rtol=1e-5)
    assert tied.sum() == 3 and provenance["noise_aware_scores"]
    # The likelihood per line and the KL: the parts nelbo_score is the sum of.
    lines = provenance["model_metadata"]["lines"]
    nll = np.column_stack([table[f"nll_{line}"] for line in lines])
    np.testing.assert_allclose(nll, np.asarray(direct["nll_per_line"]), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(table["nelbo_kl"], np.asarray(direct["latent_kl"]), rtol=1e-5)
    np.testing.assert_allclose(nll.sum(axis=1) + table["nelbo_kl"], table["nelbo_score"], rtol=1e-5)
    fits = Table.read(result.out_dir / "scores.fits")
    assert "negative log-likelihood" in fits[f"nll_{lines[0]}"].description
    np.testing.assert_allclose(np.asarray(fits["nelbo_kl"]), table["nelbo_kl"], rtol=1e-12)
    for column in ("knn_score", "combined_score", "anomaly_percentile", "nelbo_score", "nelbo_percentile",
                   "chi2_percentile"):
        assert np.isfinite(table[column]).all(), column
    assert np.isnan(table["umap_x"]).all()  # umap=False
