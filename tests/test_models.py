"""ConvLSTM autoencoder and VAE: construction, serialisation, losses, scoring, precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from ifskeras.learning.config import ModelConfig
from ifskeras.learning.models import (
    ConvLSTMAutoencoder,
    ConvLSTMVAE,
    build_model,
    kl_to_standard_normal,
    masked_gaussian_nll,
    masked_squared_error,
)
from ifskeras.learning.models.losses import masked_pixel_likelihood
from ifskeras.learning.models.vae import NELBO_SAMPLES, NELBO_SEED

tfd = tfp.distributions

LINES, SIZE, BATCH = 3, 16, 3
TINY = {"latent_dim": 4, "filters": (4, 8)}
KINDS = ["ae", "vae"]


def tiny_model(kind="ae", **kwargs):
    return build_model(ModelConfig(kind=kind, **{**TINY, **kwargs}), num_lines=LINES, size=SIZE)


@pytest.fixture(scope="module")
def galaxies():
    """Flux, ivar and valid [BATCH, LINES, SIZE, SIZE, 1]: blobs with noise and a masked corner."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    blob = np.exp(-((xx - 7.5) ** 2 + (yy - 8.0) ** 2) / 12.0)
    ratios = rng.uniform(0.5, 3.0, (BATCH, LINES, 1, 1))
    flux = ratios * blob + rng.normal(0, 0.05, (BATCH, LINES, SIZE, SIZE))
    ivar = np.full_like(flux, 1 / 0.05**2) * rng.uniform(0.5, 2, flux.shape)
    valid = np.ones_like(flux)
    valid[:, :, :4, :5] = 0
    valid[1, 2] = 0  # one line without any valid pixel
    return tuple(tf.constant(a[..., None], tf.float32) for a in (flux, ivar, valid))


def reference_kl(mean, log_var):
    return 0.5 * np.sum(np.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)


FORMAT_2_SCORES = {"anomaly_score", "line_error", "line_valid_fraction", "latent_mean", "reconstruction"}
CHI2_SCORES = {"chi2_score", "chi2_per_line", "chi2_peak_per_line"}
NELBO_SCORES = {"nelbo_score", "nll_per_line", "latent_kl"}


def noisy_ivar(ivar, valid):
    """``ivar`` with valid pixels that have no usable inverse variance: 0, negative, NaN, inf."""
    ivar = ivar.numpy().copy()
    ivar[0, 0, 8, 8:12, 0] = [0.0, -1.0, np.nan, np.inf]
    assert np.all(valid.numpy()[0, 0, 8, 8:12, 0] == 1)
    return tf.constant(ivar)


def reference_chi2(model, flux, ivar, valid, softening, line_mask):
    """(chi2 per line [B, L], pooled chi2 [B]) in numpy, asinh scaling, from the model's reconstruction."""
    flux, ivar, valid = (np.asarray(a, np.float64) for a in (flux * valid, ivar, valid))
    target = np.arcsinh(flux / softening)
    reconstruction = np.asarray(model(tf.constant(flux, tf.float32)), np.float64)
    used = (valid > 0) & np.isfinite(ivar) & (ivar > 0)
    variance = np.where(used, 1.0 / np.where(used, ivar, 1.0) / (flux**2 + softening**2), np.inf)
    chi2 = np.where(used, (target - reconstruction) ** 2 / variance, 0.0)
    sums, counts = chi2.sum(axis=(2, 3, 4)), used.sum(axis=(2, 3, 4))
    per_line = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    pooled = (sums * line_mask).sum(axis=1) / (counts * line_mask).sum(axis=1)
    return per_line, pooled


# ---------------------------------------------------------------- construction
@pytest.mark.parametrize("kind, cls", [("ae", ConvLSTMAutoencoder), ("vae", ConvLSTMVAE)])
def test_build_model_kind_and_attributes(kind, cls):
    model = tiny_model(kind, scaling="log", softening=0.5)
    assert type(model) is cls and isinstance(model, keras.Model)
    assert (model.num_lines, model.size, model.latent_dim) == (LINES, SIZE, 4)
    assert (model.scaling, model.softening) == ("log", 0.5)
    assert model.config_dict()["kind"] == kind
    assert not model.beta.trainable and float(model.beta.numpy()) == 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": 18}, "Received: size=18 with filters=(4, 8)"),
        ({"num_lines": 0}, "Received: num_lines=0"),
        ({"latent_dim": 0}, "Received: latent_dim=0"),
        ({"filters": ()}, "Received: filters=()"),
        ({"filters": (4, -1)}, "Received: filters=(4, -1)"),
        ({"kernel_size": 0}, "Received: kernel_size=0"),
        ({"scaling": "sqrt"}, "Received: kind='sqrt'"),
        ({"softening": 0.0}, "Received: softening=0.0"),
        ({"beta": -1.0}, "Received: beta=-1.0"),
    ],
)
def test_bad_arguments(kwargs, message):
    arguments = {"num_lines": LINES, "size": SIZE, **TINY, **kwargs}
    with pytest.raises(ValueError, match=f"{message}$".replace("(", r"\(").replace(")", r"\)")):
        ConvLSTMAutoencoder(**arguments)


@pytest.mark.parametrize("size, filters", [(8, (2,)), (32, (2, 2)), (48, (2, 2, 2))])
def test_other_sizes(size, filters):
    model = ConvLSTMVAE(num_lines=2, size=size, latent_dim=2, filters=filters)
    flux = tf.ones((1, 2, size, size, 1))
    assert model(flux).shape == (1, 2, size, size, 1)
    assert model.score(flux, flux)["line_error"].shape == (1, 2)


# ---------------------------------------------------------------- interface
@pytest.mark.parametrize("kind", KINDS)
def test_output_shapes_and_dtypes(kind, galaxies):
    flux, ivar, valid = galaxies
    model = tiny_model(kind)
    reconstruction = model(flux, training=False)
    assert reconstruction.shape == flux.shape and reconstruction.dtype == tf.float32
    encoded = model.encode(flux)
    expected_keys = {"latent_mean", "latent_log_var"} if kind == "vae" else {"latent_mean"}
    assert set(encoded) == expected_keys
    assert all(v.shape == (BATCH, 4) for v in encoded.values())
    losses = model.per_example_losses(flux, ivar, valid, training=True, seed=tf.constant([1, 2], tf.int32))
    expected_losses = {"loss", "reconstruction_loss"} | ({"kl_loss"} if kind == "vae" else set())
    assert set(losses) == expected_losses
    for value in losses.values():
        assert value.shape == (BATCH,) and value.dtype == tf.float32
        assert np.all(np.isfinite(value))
    scores = model.score(flux, valid)
    latent_scores = {"latent_scale"} if kind == "vae" else set()
    assert set(scores) == FORMAT_2_SCORES | latent_scores
    assert scores["anomaly_score"].shape == (BATCH,)
    assert scores["line_error"].shape == scores["line_valid_fraction"].shape == (BATCH, LINES)
    assert scores["reconstruction"].shape == flux.shape
    noise_aware = model.score(flux, valid, ivar)
    likelihood_scores = NELBO_SCORES if kind == "vae" else set()
    assert set(noise_aware) == FORMAT_2_SCORES | latent_scores | CHI2_SCORES | likelihood_scores
    for key in ("chi2_score", "nelbo_score", "latent_kl"):
        assert noise_aware.get(key, tf.zeros(BATCH)).shape == (BATCH,)
    for key in ("chi2_per_line", "chi2_peak_per_line", "nll_per_line"):
        assert noise_aware.get(key, tf.zeros((BATCH, LINES))).shape == (BATCH, LINES)


def test_scale_and_unscale_invert(galaxies):
    flux = galaxies[0]
    model = tiny_model("ae", scaling="asinh", softening=0.2)
    np.testing.assert_allclose(model.scale_flux(flux), np.arcsinh(flux.numpy() / 0.2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.unscale(model.scale_flux(flux)), flux, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_score_reconstruction_is_physical(kind, galaxies):
    flux, _, valid = galaxies
    model = tiny_model(kind)
    scores = model.score(flux, valid)
    np.testing.assert_allclose(scores["reconstruction"], model.unscale(model(flux * valid)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores["latent_mean"], model.encode(flux * valid)["latent_mean"], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- serialisation
@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trip(kind, galaxies):
    model = tiny_model(kind, scaling="log", ivar_weighting=True, beta=0.5)
    config = model.get_config()
    for argument in ("num_lines", "size", "latent_dim", "filters", "kernel_size", "scaling", "softening", "beta"):
        assert argument in config
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone(galaxies[0]), model(galaxies[0]))


@pytest.mark.parametrize("kind", KINDS)
def test_keras_file_round_trip(kind, galaxies, tmp_path):
    flux, ivar, valid = galaxies
    model = tiny_model(kind)
    model.beta.assign(0.25)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(model)
    assert float(restored.beta.numpy()) == 0.25
    np.testing.assert_array_equal(restored(flux), model(flux))
    for key, value in model.score(flux, valid).items():
        np.testing.assert_array_equal(restored.score(flux, valid)[key], value)


# ---------------------------------------------------------------- losses
@pytest.mark.parametrize("kind", KINDS)
def test_loss_falls_with_adam(kind, galaxies):
    flux, ivar, valid = galaxies
    keras.utils.set_random_seed(1)
    model = tiny_model(kind)
    optimizer = keras.optimizers.Adam(1e-2)

    @tf.function
    def step(seed):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model.per_example_losses(flux, ivar, valid, training=True, seed=seed)["loss"])
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    losses = [float(step(tf.constant([0, i], tf.int32))) for i in range(20)]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ivar_weighting", [False, True])
def test_invalid_pixels_do_not_change_losses_or_scores(kind, ivar_weighting, galaxies):
    flux, ivar, valid = galaxies
    model = tiny_model(kind, ivar_weighting=ivar_weighting)
    corrupted_flux = tf.where(valid > 0, flux, 1e4)
    corrupted_flux = tf.tensor_scatter_nd_update(corrupted_flux, [[0, 0, 0, 0, 0]], [np.nan])
    corrupted_ivar = tf.where(valid > 0, ivar, -3.0)
    seed = tf.constant([3, 4], tf.int32)
    for training in (False, True):
        clean = model.per_example_losses(flux, ivar, valid, training=training, seed=seed)
        dirty = model.per_example_losses(corrupted_flux, corrupted_ivar, valid, training=training, seed=seed)
        for key in clean:
            np.testing.assert_array_equal(dirty[key], clean[key])
    for key, value in model.score(flux, valid).items():
        np.testing.assert_array_equal(model.score(corrupted_flux, valid)[key], value)
    for key, value in model.score(flux, valid, ivar).items():
        np.testing.assert_array_equal(model.score(corrupted_flux, valid, corrupted_ivar)[key], value)


@pytest.mark.parametrize("kind", KINDS)
def test_galaxy_without_valid_pixels_contributes_zero(kind, galaxies):
    flux, ivar, valid = galaxies
    valid = tf.concat([tf.zeros_like(valid[:1]), valid[1:]], axis=0)
    model = tiny_model(kind, ivar_weighting=True)
    losses = model.per_example_losses(flux, ivar, valid, training=True)
    assert float(losses["reconstruction_loss"][0]) == 0.0
    assert all(np.all(np.isfinite(v)) for v in losses.values())
    scores = model.score(flux, valid, ivar)
    assert float(scores["anomaly_score"][0]) == 0.0 and float(scores["chi2_score"][0]) == 0.0
    np.testing.assert_array_equal(scores["line_error"][0], 0.0)
    np.testing.assert_array_equal(scores["chi2_per_line"][0], 0.0)
    assert all(np.all(np.isfinite(v)) for v in scores.values())


def test_ae_loss_is_masked_mse_in_scaled_space(galaxies):
    flux, ivar, valid = galaxies
    model = tiny_model("ae")
    losses = model.per_example_losses(flux, ivar, valid, training=False)
    flux = flux * valid  # the model zeroes invalid pixels before encoding
    error = (model.scale_flux(flux).numpy() - model(flux).numpy()) ** 2 * valid.numpy()
    expected = error.sum(axis=(1, 2, 3, 4)) / valid.numpy().sum(axis=(1, 2, 3, 4))
    np.testing.assert_allclose(losses["reconstruction_loss"], expected, rtol=1e-5)
    np.testing.assert_array_equal(losses["loss"], losses["reconstruction_loss"])
    np.testing.assert_allclose(model.score(flux, valid)["anomaly_score"], expected, rtol=1e-5)


def test_ae_ivar_weighting_uses_propagated_errors(galaxies):
    flux, ivar, valid = galaxies
    model = tiny_model("ae", ivar_weighting=True, scaling="asinh", softening=0.1)
    losses = model.per_example_losses(flux, ivar, valid, training=False)
    flux = flux * valid
    weights = ivar.numpy() * (flux.numpy() ** 2 + 0.1**2) * valid.numpy()
    error = (model.scale_flux(flux).numpy() - model(flux).numpy()) ** 2
    expected = (weights * error).sum(axis=(1, 2, 3, 4)) / weights.sum(axis=(1, 2, 3, 4))
    np.testing.assert_allclose(losses["reconstruction_loss"], expected, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_tied_copies_can_be_left_out_of_the_loss(kind, galaxies):
    flux, ivar, valid = galaxies
    lines = ["OIII-4960", "OIII-5008", "Ha-6564"]  # [OIII]4960 is the DAP's tied copy of 5008
    config = ModelConfig(kind=kind, tied_lines_in_loss=False, **TINY)
    model = build_model(config, num_lines=LINES, size=SIZE, lines=lines)
    assert model.loss_line_mask == (0.0, 1.0, 1.0)
    counted = valid.numpy() * np.array([0.0, 1.0, 1.0]).reshape(1, LINES, 1, 1, 1)
    losses = model.per_example_losses(flux, ivar, valid, training=False)
    flux = flux * valid
    residual = model.scale_flux(flux).numpy() - model(flux).numpy()
    if kind == "ae":
        expected = (residual**2 * counted).sum(axis=(1, 2, 3, 4)) / counted.sum(axis=(1, 2, 3, 4))
    else:
        sigma = model.likelihood_line_scale().numpy().reshape(1, LINES, 1, 1, 1)
        nll = 0.5 * (residual / sigma) ** 2 + np.log(sigma) + 0.5 * np.log(2 * np.pi)
        expected = (nll * counted).sum(axis=(1, 2, 3, 4))
    np.testing.assert_allclose(losses["reconstruction_loss"], expected, rtol=1e-4)
    # The copy's reconstruction was never trained: galaxy-level scores leave it out too, while
    # the per-line errors still show it.
    scores = model.score(flux, valid, ivar)
    expected_anomaly = (residual**2 * counted).sum(axis=(1, 2, 3, 4)) / counted.sum(axis=(1, 2, 3, 4))
    np.testing.assert_allclose(scores["anomaly_score"], expected_anomaly, rtol=1e-4)
    assert np.all(scores["line_error"].numpy()[:, 0] > 0)
    chi2_lines, pixels = np.asarray(scores["chi2_per_line"]), valid.numpy().sum(axis=(2, 3, 4))
    pooled = (chi2_lines * pixels)[:, 1:].sum(axis=1) / pixels[:, 1:].sum(axis=1)  # the copy left out
    np.testing.assert_allclose(scores["chi2_score"], pooled, rtol=1e-4)
    if kind == "vae":
        assert np.all(scores["nll_per_line"].numpy()[:, 0] == 0)
    assert type(model).from_config(model.get_config()).loss_line_mask == (0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="needs the model's line names"):
        build_model(config, num_lines=LINES, size=SIZE)


def test_export_lists_the_lines_left_out_of_the_loss(tmp_path):
    from ifskeras.learning.export import export_model, read_model_metadata

    lines = ["OIII-4960", "OIII-5008", "Ha-6564"]
    model = build_model(ModelConfig(tied_lines_in_loss=False, **TINY), num_lines=LINES, size=SIZE, lines=lines)
    metadata = read_model_metadata(export_model(model, tmp_path / "model", lines=lines, size=SIZE))
    assert metadata["loss_excluded_lines"] == ["OIII-4960"]
    assert metadata["chi2_excluded_lines"] == ["OIII-4960"]
    assert metadata["model_config"]["loss_line_mask"] == [0.0, 1.0, 1.0]


def test_kl_matches_closed_form():
    mean = np.array([[0.0, 0.0], [1.0, -2.0], [0.3, 0.1]], np.float32)
    log_var = np.array([[0.0, 0.0], [0.5, -1.0], [-3.0, 2.0]], np.float32)
    np.testing.assert_allclose(kl_to_standard_normal(mean, log_var), reference_kl(mean, log_var), rtol=1e-5, atol=1e-7)


def test_vae_loss_combines_terms_with_beta(galaxies):
    flux, ivar, valid = galaxies
    model = tiny_model("vae")
    model.beta.assign(0.3)
    losses = model.per_example_losses(flux, ivar, valid, training=False)
    encoded = model.encode(flux * valid)
    expected_kl = reference_kl(encoded["latent_mean"].numpy().astype(np.float64),
                               encoded["latent_log_var"].numpy().astype(np.float64))
    # The KL sums terms near 1 that nearly cancel (an untrained posterior is close to the
    # prior): float32 leaves an absolute error of a few 1e-7 per latent dimension, which is
    # more than 1e-4 of a KL of 0.002 (seen once in CI).
    np.testing.assert_allclose(losses["kl_loss"], expected_kl, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(losses["loss"], losses["reconstruction_loss"] + 0.3 * losses["kl_loss"], rtol=1e-6)


def test_vae_reconstruction_loss_is_gaussian_nll(galaxies):
    flux, ivar, valid = galaxies
    model = tiny_model("vae")
    log_scale = np.array([0.0, -0.5, 0.7], np.float32)
    model.likelihood_log_scale.assign(log_scale)
    losses = model.per_example_losses(flux, ivar, valid, training=False)
    sigma = np.sqrt(np.exp(2 * log_scale) + 1e-6).reshape(1, LINES, 1, 1, 1)
    flux = flux * valid
    residual = model.scale_flux(flux).numpy() - model(flux).numpy()
    nll = 0.5 * (residual / sigma) ** 2 + np.log(sigma) + 0.5 * np.log(2 * np.pi)
    expected = (nll * valid.numpy()).sum(axis=(1, 2, 3, 4))
    np.testing.assert_allclose(losses["reconstruction_loss"], expected, rtol=1e-4)


def test_masked_functions_direct():
    target = tf.constant([[1.0, 2.0], [3.0, 5.0]])[:, :, None, None, None]
    prediction = tf.zeros_like(target)
    weights = tf.constant([[1.0, 0.0], [1.0, 3.0]])[:, :, None, None, None]
    np.testing.assert_allclose(masked_squared_error(target, prediction, weights), [1.0, (9 + 75) / 4])
    nll = masked_gaussian_nll(target, prediction, tf.ones_like(target), tf.cast(weights > 0, tf.float32))
    np.testing.assert_allclose(nll, [0.5 + 0.5 * np.log(2 * np.pi), 17 + np.log(2 * np.pi)], rtol=1e-6)


# ---------------------------------------------------------------- sampling
def test_vae_sampling_follows_seed(galaxies):
    flux, ivar, valid = galaxies
    model = tiny_model("vae")

    def loss(training, seed=None):
        return model.per_example_losses(flux, ivar, valid, training=training, seed=seed)["reconstruction_loss"]

    seed_a, seed_b = tf.constant([1, 2], tf.int32), tf.constant([1, 3], tf.int32)
    np.testing.assert_array_equal(loss(True, seed_a), loss(True, seed_a))
    assert not np.array_equal(loss(True, seed_a), loss(True, seed_b))
    assert not np.array_equal(loss(True), loss(True))  # SeedGenerator advances
    np.testing.assert_array_equal(loss(False, seed_a), loss(False, seed_b))  # the mean at inference


def test_ae_is_deterministic_in_training(galaxies):
    flux, ivar, valid = galaxies
    model = tiny_model("ae")
    first = model.per_example_losses(flux, ivar, valid, training=True, seed=tf.constant([1, 2], tf.int32))
    second = model.per_example_losses(flux, ivar, valid, training=True)
    np.testing.assert_array_equal(first["loss"], second["loss"])


# ---------------------------------------------------------------- scoring
def test_line_error_and_valid_fraction(galaxies):
    flux, _, valid = galaxies
    model = tiny_model("ae")
    scores = model.score(flux, valid)
    error = (model.scale_flux(flux * valid).numpy() - model(flux * valid).numpy()) ** 2 * valid.numpy()
    count = valid.numpy().sum(axis=(2, 3, 4))
    expected = np.divide(error.sum(axis=(2, 3, 4)), count, out=np.zeros_like(count), where=count > 0)
    np.testing.assert_allclose(scores["line_error"], expected, rtol=1e-5)
    np.testing.assert_allclose(scores["line_valid_fraction"], count / SIZE**2)
    assert float(scores["line_error"][1, 2]) == 0.0 and float(scores["line_valid_fraction"][1, 2]) == 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_score_traces_with_fixed_signature(kind, galaxies):
    flux, _, valid = galaxies
    model = tiny_model(kind)
    spec = tf.TensorSpec((None, LINES, SIZE, SIZE, 1), tf.float32)
    traced = tf.function(model.score, input_signature=[spec, spec])
    eager = model.score(flux, valid)
    for key, value in traced(flux, valid).items():
        np.testing.assert_allclose(value, eager[key], rtol=1e-5, atol=1e-6)
    assert traced(flux[:1], valid[:1])["anomaly_score"].shape == (1,)
    ivar = galaxies[1]
    traced_with_ivar = tf.function(model.score, input_signature=[spec, spec, spec])
    eager = model.score(flux, valid, ivar)
    for key, value in traced_with_ivar(flux, valid, ivar).items():
        np.testing.assert_allclose(value, eager[key], rtol=1e-5, atol=1e-5)


def test_score_exports(galaxies, tmp_path):
    flux, _, valid = galaxies
    model = tiny_model("vae")
    spec = tf.TensorSpec((None, LINES, SIZE, SIZE, 1), tf.float32)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("score", model.score, input_signature=[spec, spec])
    archive.write_out(str(tmp_path / "exported"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "exported"))
    exported = loaded.score(flux, valid)
    for key, value in model.score(flux, valid).items():
        np.testing.assert_allclose(exported[key], value, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- precision
@pytest.fixture
def mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("kind", KINDS)
def test_mixed_precision_outputs_float32(kind, galaxies, mixed_bfloat16):
    flux, ivar, valid = galaxies
    model = tiny_model(kind)
    assert model.encoder.compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model.weights)
    assert model(flux).dtype == tf.float32
    with tf.GradientTape() as tape:
        losses = model.per_example_losses(flux, ivar, valid, training=True, seed=tf.constant([1, 2], tf.int32))
        loss = tf.reduce_mean(losses["loss"])
    assert all(v.dtype == tf.float32 and np.all(np.isfinite(v)) for v in losses.values())
    gradients = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None and g.dtype == tf.float32 for g in gradients)
    assert all(v.dtype == tf.float32 for v in model.score(flux, valid).values())
    noise_aware = model.score(flux, valid, ivar)
    assert all(v.dtype == tf.float32 and np.all(np.isfinite(v)) for v in noise_aware.values())


# ---------------------------------------------------------------- noise-aware and likelihood scores
@pytest.mark.parametrize("kind", KINDS)
def test_chi2_matches_numpy(kind, galaxies):
    flux, ivar, valid = galaxies
    ivar = noisy_ivar(ivar, valid)
    model = tiny_model(kind, scaling="asinh", softening=0.1)
    line_mask = np.array([1.0, 0.0, 1.0])  # line 1 stands for a tied copy
    scores = model.score(flux, valid, ivar, chi2_line_mask=line_mask)
    per_line, pooled = reference_chi2(model, flux, ivar, valid, 0.1, line_mask)
    np.testing.assert_allclose(scores["chi2_per_line"], per_line, rtol=2e-5)
    np.testing.assert_allclose(scores["chi2_score"], pooled, rtol=2e-5)
    _, pooled_all_lines = reference_chi2(model, flux, ivar, valid, 0.1, np.ones(LINES))
    np.testing.assert_allclose(model.score(flux, valid, ivar)["chi2_score"], pooled_all_lines, rtol=2e-5)
    assert not np.allclose(pooled, pooled_all_lines)  # the mask matters
    # ivar only adds scores: everything else is the ivar-free score, bit for bit.
    without_ivar = model.score(flux, valid)
    for key, value in without_ivar.items():
        np.testing.assert_array_equal(scores[key], value)


def test_vae_training_sample_is_the_tfp_posterior_sample(galaxies):
    flux, _, valid = galaxies
    model = tiny_model("vae")
    encoded = model.encode(flux * valid)
    seed = tf.constant([5, 6], tf.int32)
    posterior = tfd.MultivariateNormalDiag(encoded["latent_mean"], tf.exp(0.5 * encoded["latent_log_var"]))
    np.testing.assert_allclose(model._latent(encoded, training=True, seed=seed), posterior.sample(seed=seed),
                               rtol=1e-6)
    # Without a seed the SeedGenerator gives a fresh int32 seed each call.
    first, second = (model._latent(encoded, training=True) for _ in range(2))
    assert not np.array_equal(first, second)


def test_vae_nelbo_matches_tfp_and_repeats(galaxies):
    flux, ivar, valid = galaxies
    model = tiny_model("vae", ivar_weighting=True)
    model.likelihood_log_scale.assign([-1.0, -0.5, 0.2])
    scores = model.score(flux, valid, ivar)

    flux = flux * valid
    target = model.scale_flux(flux)
    encoded = model.encode(flux)
    mean, scale = encoded["latent_mean"], tf.exp(0.5 * encoded["latent_log_var"])
    epsilons = tf.random.stateless_normal([NELBO_SAMPLES, 4], seed=NELBO_SEED, alg="philox")
    noise_variance = np.where(valid > 0, 1 / ivar.numpy() / (flux.numpy() ** 2 + 0.1**2), 0.0)
    pixel_scale = np.sqrt(np.exp(2 * np.array([-1.0, -0.5, 0.2])).reshape(1, LINES, 1, 1, 1) + 1e-6 + noise_variance)
    pixel_scale = pixel_scale.astype(np.float32)
    nll = []
    for epsilon in epsilons:
        reconstruction = model.decode(mean + scale * epsilon)
        log_prob = tfd.Normal(reconstruction, pixel_scale).log_prob(target).numpy()
        nll.append(-(log_prob * valid.numpy()).sum(axis=(2, 3, 4)))
    nll_per_line = np.mean(nll, axis=0)
    kl = tfd.kl_divergence(tfd.MultivariateNormalDiag(mean, scale), tfd.MultivariateNormalDiag(tf.zeros(4), tf.ones(4)))
    np.testing.assert_allclose(scores["nll_per_line"], nll_per_line, rtol=1e-5)
    np.testing.assert_allclose(scores["latent_kl"], kl, rtol=1e-5, atol=1e-6)  # float32 cancellation near 0
    np.testing.assert_allclose(scores["nelbo_score"], nll_per_line.sum(axis=1) + kl.numpy(), rtol=1e-5)
    # Fixed draws shared by every galaxy: the same score on every call and in any batch.
    np.testing.assert_array_equal(model.score(flux, valid, ivar)["nelbo_score"], scores["nelbo_score"])
    alone = model.score(flux[2:], valid[2:], ivar[2:])["nelbo_score"]
    np.testing.assert_allclose(alone, scores["nelbo_score"][2:], rtol=1e-6)


def test_masked_pixel_likelihood_per_line():
    loc = tf.zeros([2, 3, 2, 2, 1])
    valid = np.ones([2, 3, 2, 2, 1], np.float32)
    valid[1, 2] = 0
    valid[0, 1, 0, 0, 0] = 0
    likelihood = masked_pixel_likelihood(loc, tf.ones([1, 3, 1, 1, 1]), valid)
    assert likelihood.batch_shape == (2, 3) and likelihood.event_shape == (2, 2, 1)
    log_prob = likelihood.log_prob(tf.ones_like(loc)).numpy()
    per_pixel = -0.5 - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(log_prob, valid.sum(axis=(2, 3, 4)) * per_pixel, rtol=1e-6)
    assert log_prob[1, 2] == 0.0
