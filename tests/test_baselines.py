"""Tests of the baseline scores (and the latent k-NN score) on toy maps and latents with an injected outlier."""

import numpy as np
import pytest

from ifskeras.discovery.baselines import (
    isolation_forest_scores,
    pca_reconstruction_error,
    random_scores,
)
from ifskeras.discovery.neighbours import knn_latent_scores

SEED = 3
N, L, S = 60, 3, 6
OUTLIER = 17


def _maps():
    """Galaxies built from two smooth templates plus noise; galaxy OUTLIER has a bright off-centre blob."""
    rng = np.random.default_rng(SEED)
    yy, xx = np.mgrid[:S, :S]
    disc = np.exp(-np.hypot(xx - S / 2, yy - S / 2) / 2)
    ring = np.exp(-((np.hypot(xx - S / 2, yy - S / 2) - 2) ** 2))
    line_ratios = rng.uniform(0.5, 2, (1, L, 1, 1))
    amplitudes = rng.uniform(0.5, 2, (N, 1, 2, 1, 1))
    x = line_ratios * (amplitudes[:, :, 0] * disc + amplitudes[:, :, 1] * ring)
    x = x + rng.normal(0, 0.02, x.shape)
    x[OUTLIER, :, 0, 0] += 5.0
    valid = np.ones(x.shape, dtype=bool)
    valid[:, :, -1, -1] = False  # one corner never observed
    return x.astype(np.float32), valid


TRAIN = np.arange(N) != OUTLIER


def test_pca_error_ranks_outlier_first_and_ignores_invalid_pixels():
    x, valid = _maps()
    errors = pca_reconstruction_error(x[TRAIN], x, valid_train=valid[TRAIN], valid_all=valid, n_components=4)
    assert errors.shape == (N,)
    assert int(np.argmax(errors)) == OUTLIER
    corrupted = x.copy()
    corrupted[:, :, -1, -1] = 1e6  # invalid pixels: their values must not matter
    flat, flat_valid = corrupted.reshape(N, -1), valid.reshape(N, -1)
    again = pca_reconstruction_error(flat[TRAIN], flat, valid_train=flat_valid[TRAIN], valid_all=flat_valid,
                                     n_components=4)
    np.testing.assert_allclose(again, errors, rtol=1e-5)
    incremental = pca_reconstruction_error(x[TRAIN], x, valid_train=valid[TRAIN], valid_all=valid, n_components=4,
                                           batch_size=20)
    assert int(np.argmax(incremental)) == OUTLIER


def test_pca_error_nan_without_valid_pixels_and_checks_arguments():
    x, valid = _maps()
    valid_all = valid.copy()
    valid_all[0] = False
    errors = pca_reconstruction_error(x, x, valid_train=valid, valid_all=valid_all, n_components=3)
    assert np.isnan(errors[0]) and np.isfinite(errors[1:]).all()
    with pytest.raises(ValueError, match="n_components"):
        pca_reconstruction_error(x, x, n_components=N)
    with pytest.raises(ValueError, match="same number of pixels"):
        pca_reconstruction_error(x, x[:, :2], n_components=3)
    with pytest.raises(ValueError, match="valid mask"):
        pca_reconstruction_error(x, x, valid_train=valid[:, :2], n_components=3)


def test_isolation_forest_on_pca_features_ranks_outlier_first():
    x, valid = _maps()
    scores = isolation_forest_scores(x[:40], x, valid_train=valid[:40], valid_all=valid, n_components=4,
                                     n_estimators=100, seed=SEED)
    assert scores.shape == (N,)
    assert int(np.argmax(scores)) == OUTLIER
    np.testing.assert_array_equal(
        scores,
        isolation_forest_scores(x[:40], x, valid_train=valid[:40], valid_all=valid, n_components=4,
                                n_estimators=100, seed=SEED),
    )


def _latents():
    rng = np.random.default_rng(SEED)
    z = rng.normal(size=(N, 5))
    z[OUTLIER] += 12.0
    return z


def test_knn_latent_scores():
    z = _latents()
    scores = knn_latent_scores(z, k=4)
    assert int(np.argmax(scores)) == OUTLIER
    # Self is excluded by index: an exact duplicate still counts as a neighbour at distance 0.
    twins = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0], [6.0, 0.0]])
    np.testing.assert_allclose(knn_latent_scores(twins, k=1), [0.0, 0.0, 1.0, 1.0])
    # Fitted on a subset: galaxies outside it take their k nearest from the subset.
    fit = np.array([True, False, True, True])
    np.testing.assert_allclose(knn_latent_scores(twins, k=1, fit_mask=fit), [5.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="k must satisfy"):
        knn_latent_scores(twins, k=4)


def test_random_scores():
    r = random_scores(N, seed=SEED)
    assert r.shape == (N,) and ((0 <= r) & (r < 1)).all()
    np.testing.assert_array_equal(r, random_scores(N, seed=SEED))
