"""The SavedModel's noise-aware and likelihood scores (formats 3 and 4), recomputed outside the model.

The trained smoke runs' exports are loaded with ``tf.saved_model.load`` only; chi2 is
recomputed in numpy from the ``encode``/``decode`` endpoints and the asinh scaling,
the VAE's negative ELBO with tfp from the same endpoints and the seeds in metadata.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfp = pytest.importorskip("tensorflow_probability")
tfd = tfp.distributions

FORMAT_2_OUTPUTS = {"anomaly_score", "line_error", "line_valid_fraction", "latent_mean", "reconstruction"}
TIED_COPIES = ["NII-6549", "OI-6365", "OIII-4960"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "savedmodel.md"


@pytest.fixture(scope="module")
def record_batch(tiny_records):
    """Six galaxies of the tiny records, with some valid pixels given no usable ivar."""
    from ifskeras.records import read_examples, read_index

    ids = [row["id"] for row in read_index(tiny_records)][:6]
    batch = read_examples(tiny_records, ids)
    ivar = batch["ivar"].copy()
    valid_pixels = np.argwhere(batch["valid"][0, 0, ..., 0] > 0)[:3]
    for (y, x), value in zip(valid_pixels, (0.0, np.nan, np.inf)):
        ivar[0, 0, y, x, 0] = value
    return {"flux": batch["flux"], "ivar": ivar, "valid": batch["valid"]}


def load(result):
    model = tf.saved_model.load(str(result.export_path))
    return model, json.loads(model.metadata()["json"].numpy().decode())


@pytest.fixture(scope="module")
def exported_ae(trained_ae):
    """(the AE's SavedModel loaded with TensorFlow only, its metadata)."""
    return load(trained_ae)


@pytest.fixture(scope="module")
def exported_vae(trained_vae):
    """(the VAE's SavedModel loaded with TensorFlow only, its metadata)."""
    return load(trained_vae)


def reference_chi2_maps(model, metadata, batch):
    """(chi2 [B, L, S, S, 1], pixels used [B, L, S, S, 1]) in float64 numpy."""
    flux = batch["flux"] * batch["valid"]
    ivar, valid = batch["ivar"], batch["valid"]
    softening = metadata["softening"]
    assert metadata["scaling"] == "asinh"
    latent = model.encode(flux)["latent_mean"]
    reconstruction = model.decode(latent)["scaled_reconstruction"].numpy().astype(np.float64)
    flux = flux.astype(np.float64)
    target = np.arcsinh(flux / softening)
    used = (valid > 0) & np.isfinite(ivar) & (ivar > 0)
    safe_ivar = np.where(used, ivar, 1.0)
    variance = 1.0 / safe_ivar / (flux**2 + softening**2)  # (d asinh(f/s) / df)**2 / ivar
    return np.where(used, (target - reconstruction) ** 2 / variance, 0.0), used


def reference_chi2(model, metadata, batch):
    """(chi2 per line [B, L], chi2 over the non-tied lines [B]) in float64 numpy."""
    chi2, used = reference_chi2_maps(model, metadata, batch)
    sums, counts = chi2.sum(axis=(2, 3, 4)), used.sum(axis=(2, 3, 4))
    independent = np.array([line not in metadata["chi2_excluded_lines"] for line in metadata["lines"]])
    pooled = sums[:, independent].sum(axis=1) / counts[:, independent].sum(axis=1)
    return np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0), pooled


def reference_peak(chi2, used, *, window, min_pixels):
    """Highest window mean of chi2 per line [B, L], window by window in plain loops (0 without a window)."""
    batch, lines, size = chi2.shape[0], chi2.shape[1], chi2.shape[2]
    peak = np.zeros((batch, lines))
    for b in range(batch):
        for line in range(lines):
            for y in range(size - window + 1):
                for x in range(size - window + 1):
                    n = used[b, line, y:y + window, x:x + window].sum()
                    if n >= min_pixels:
                        peak[b, line] = max(peak[b, line], chi2[b, line, y:y + window, x:x + window].sum() / n)
    return peak


def test_format_version_4_is_written_and_documented(trained_ae, trained_vae, exported_ae, exported_vae):
    from ifskeras.learning.export import FORMAT_VERSION, read_model_metadata

    assert FORMAT_VERSION == 4
    for result, (_, metadata) in ((trained_ae, exported_ae), (trained_vae, exported_vae)):
        assert metadata["format_version"] == 4 == read_model_metadata(result.export_path)["format_version"]
        assert (metadata["chi2_peak_window"], metadata["chi2_peak_min_pixels"]) == (3, 5)
        assert metadata["chi2_excluded_lines"] == TIED_COPIES
        assert metadata["tied_lines"] == {"OIII-4960": "OIII-5008", "NII-6549": "NII-6585", "OI-6365": "OI-6302"}
    assert exported_vae[1]["nelbo_samples"] == 8 and "nelbo_samples" not in exported_ae[1]
    text = DOCS.read_text()
    assert re.search(r"^# SavedModel reference \(format version 4\)", text, re.M)
    for version in (1, 2, 3, 4):
        assert re.search(rf"^\| {version} \|", text, re.M), f"format version {version} missing from the history"
    for name in ("chi2_score", "chi2_per_line", "chi2_peak_per_line", "nelbo_score", "nll_per_line", "latent_kl",
                 "score_flux", "decode"):
        assert f"`{name}`" in text, name


def test_ae_chi2_matches_numpy(exported_ae, record_batch):
    model, metadata = exported_ae
    out = model.score(record_batch["flux"], record_batch["valid"], record_batch["ivar"])
    per_line, pooled = reference_chi2(model, metadata, record_batch)
    assert "nelbo_score" not in out
    assert np.all(pooled > 0) and np.isfinite(out["chi2_score"].numpy()).all()
    np.testing.assert_allclose(out["chi2_per_line"].numpy(), per_line, rtol=1e-4)
    np.testing.assert_allclose(out["chi2_score"].numpy(), pooled, rtol=1e-4)
    # Counting the tied copies would change the galaxy score: the exclusion is real.
    all_lines = reference_chi2(model, {**metadata, "chi2_excluded_lines": []}, record_batch)[1]
    assert np.abs(all_lines - pooled).max() > 1e-3 * pooled.max()
    per_line_error = np.abs(out["chi2_per_line"].numpy() - per_line) / np.maximum(per_line, 1e-12)
    galaxy_error = np.abs(out["chi2_score"].numpy() - pooled) / pooled
    print(f"AE chi2 vs numpy (float64): max rel diff per line {per_line_error.max():.2e}, "
          f"galaxy {galaxy_error.max():.2e}")


@pytest.mark.parametrize("which", ["ae", "vae"])
def test_peak_chi2_matches_a_window_by_window_computation(which, exported_ae, exported_vae, record_batch):
    model, metadata = exported_ae if which == "ae" else exported_vae
    out = model.score(record_batch["flux"], record_batch["valid"], record_batch["ivar"])
    chi2, used = reference_chi2_maps(model, metadata, record_batch)
    peak = reference_peak(chi2[..., 0], used[..., 0], window=3, min_pixels=5)
    np.testing.assert_allclose(out["chi2_peak_per_line"].numpy(), peak, rtol=1e-4, atol=1e-6)
    assert np.all(peak > 0)


def test_peak_chi2_finds_a_compact_residual_the_map_mean_dilutes():
    from ifskeras.learning.models.losses import masked_chi_square_per_line, peak_chi_square_per_line

    target = np.zeros((2, 1, 12, 12, 1), np.float32)
    prediction = np.ones_like(target)  # chi2 = 1 wherever the variance is 1
    variance = np.ones_like(target)
    prediction[0, 0, 4:7, 5:8] = np.sqrt(10.0)  # a 3 x 3 "nucleus" with chi2 = 10
    variance[1] = 0.0
    variance[1, 0, 0, 0:2] = variance[1, 0, 1, 0:2] = 1.0  # 4 measured pixels: no window has 5
    peak = peak_chi_square_per_line(target, prediction, variance).numpy()
    sums, counts = (t.numpy() for t in masked_chi_square_per_line(target, prediction, variance))
    assert peak[0, 0] == pytest.approx(10.0, rel=1e-5)
    assert sums[0, 0] / counts[0, 0] == pytest.approx(1 + 9 * 9 / 144, rel=1e-5)  # the mean: 1.56
    assert peak[1, 0] == 0.0 and counts[1, 0] == 4
    variance[1, 0, 2, 0] = 1.0  # a fifth measured pixel: the corner window now counts
    assert peak_chi_square_per_line(target, prediction, variance).numpy()[1, 0] == pytest.approx(1.0)
    # A map smaller than the window has no window at all.
    small = np.ones((2, 1, 2, 2, 1), np.float32)
    np.testing.assert_array_equal(peak_chi_square_per_line(small, 0 * small, small).numpy(), 0.0)


def test_score_without_ivar_keeps_the_format_2_outputs(exported_vae, record_batch):
    model, _ = exported_vae
    flux, valid, ivar = record_batch["flux"], record_batch["valid"], record_batch["ivar"]
    full = model.score(flux, valid, ivar)
    for without_ivar in (model.score(flux, valid), model.score_flux(flux, valid)):
        assert set(without_ivar) == FORMAT_2_OUTPUTS | {"latent_scale"}
        # Two traced graphs of the same maths: equal up to float32 rounding.
        for key, value in without_ivar.items():
            np.testing.assert_allclose(value.numpy(), full[key].numpy(), rtol=1e-5, atol=1e-6, err_msg=key)
    assert set(model.signatures["score"].structured_input_signature[1]) == {"flux", "valid", "ivar"}
    assert set(model.signatures["score_flux"].structured_input_signature[1]) == {"flux", "valid"}


def test_vae_nelbo_matches_tfp(exported_vae, record_batch):
    model, metadata = exported_vae
    out = model.score(record_batch["flux"], record_batch["valid"], record_batch["ivar"])
    flux = record_batch["flux"] * record_batch["valid"]
    ivar, valid = record_batch["ivar"], record_batch["valid"]
    encoded = model.encode(flux)
    mean, scale = encoded["latent_mean"], encoded["latent_scale"]
    target = np.arcsinh(flux / metadata["softening"])
    used = (valid > 0) & np.isfinite(ivar) & (ivar > 0)
    assert metadata["model_config"]["ivar_weighting"]  # the pixel noise enters the likelihood scale
    noise_variance = np.where(used, 1.0 / np.where(used, ivar, 1.0) / (flux**2 + metadata["softening"] ** 2), 0.0)
    epsilons = tf.random.stateless_normal([metadata["nelbo_samples"], metadata["latent_dim"]],
                                          seed=metadata["nelbo_seed"], alg=metadata["nelbo_sampling_algorithm"])
    nll = []
    for epsilon in epsilons:
        decoded = model.decode(mean + scale * epsilon)
        line_scale = decoded["likelihood_line_scale"].numpy().reshape(1, -1, 1, 1, 1)
        pixel_scale = np.sqrt(line_scale**2 + noise_variance).astype(np.float32)
        likelihood = tfd.Normal(decoded["scaled_reconstruction"], pixel_scale)
        log_prob = likelihood.log_prob(target).numpy().astype(np.float64)
        nll.append(-np.where(valid > 0, log_prob, 0.0).sum(axis=(2, 3, 4)))
    nll_per_line = np.mean(nll, axis=0)
    latent_dim = metadata["latent_dim"]
    prior = tfd.MultivariateNormalDiag(tf.zeros(latent_dim), tf.ones(latent_dim))
    kl = tfd.kl_divergence(tfd.MultivariateNormalDiag(mean, scale), prior)
    nelbo = nll_per_line.sum(axis=1) + kl.numpy().astype(np.float64)
    np.testing.assert_allclose(out["nll_per_line"].numpy(), nll_per_line, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(out["latent_kl"].numpy(), kl.numpy(), rtol=1e-4, atol=1e-6)  # float32 cancellation
    np.testing.assert_allclose(out["nelbo_score"].numpy(), nelbo, rtol=1e-5)
    difference = np.abs(out["nelbo_score"].numpy() - nelbo)
    print(f"VAE nelbo vs tfp (float64 sums): max rel diff {np.max(difference / np.abs(nelbo)):.2e}, "
          f"max abs diff {difference.max():.3g} nats of {np.abs(nelbo).max():.4g}; "
          f"nll_per_line max abs diff {np.abs(out['nll_per_line'].numpy() - nll_per_line).max():.3g}")


def test_vae_nelbo_is_deterministic_and_batch_independent(exported_vae, record_batch):
    model, _ = exported_vae
    flux, valid, ivar = record_batch["flux"], record_batch["valid"], record_batch["ivar"]
    first = model.score(flux, valid, ivar)["nelbo_score"].numpy()
    np.testing.assert_array_equal(model.score(flux, valid, ivar)["nelbo_score"].numpy(), first)
    alone = model.score(flux[3:4], valid[3:4], ivar[3:4])["nelbo_score"].numpy()
    np.testing.assert_allclose(alone, first[3:4], rtol=1e-6)
    assert len(np.unique(first)) == len(first)  # galaxies differ


@pytest.mark.long  # starts TensorFlow in a subprocess
def test_scores_run_in_plain_tensorflow(trained_vae, exported_vae, record_batch, tmp_path):
    model, _ = exported_vae
    expected = {k: v.numpy() for k, v in model.score(record_batch["flux"], record_batch["valid"],
                                                      record_batch["ivar"]).items()}
    np.savez(tmp_path / "batch.npz", **record_batch)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np, tensorflow as tf
        batch = np.load({str(tmp_path / 'batch.npz')!r})
        model = tf.saved_model.load({str(trained_vae.export_path)!r})
        out = {{k: v.numpy() for k, v in model.score(batch["flux"], batch["valid"], batch["ivar"]).items()}}
        old = model.score(batch["flux"], batch["valid"])
        out["old_anomaly_score"] = old["anomaly_score"].numpy()
        np.savez({str(tmp_path / 'out.npz')!r}, **out)
        loaded = [name for name in sys.modules if name.split(".")[0] in ("ifskeras", "tensorflow_probability")]
        assert not loaded, loaded
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                               cwd=tmp_path, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert completed.returncode == 0, completed.stderr[-2000:]
    out = np.load(tmp_path / "out.npz")
    for key in ("nelbo_score", "nll_per_line", "latent_kl", "chi2_score", "chi2_per_line", "anomaly_score"):
        np.testing.assert_allclose(out[key], expected[key], rtol=1e-6, err_msg=key)
    np.testing.assert_allclose(out["old_anomaly_score"], expected["anomaly_score"], rtol=1e-6)
