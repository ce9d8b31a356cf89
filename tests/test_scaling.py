"""FluxScaling: values, inverse, derivative, validation, serialisation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ifskeras.learning.models import FluxScaling

FLUXES = np.array([-3.0, -0.05, 0.0, 0.01, 0.1, 1.0, 250.0], np.float32)


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("asinh", np.arcsinh(FLUXES / 0.1)),
        ("log", np.log10(np.maximum(FLUXES, 0) / 0.1 + 1)),
        ("none", FLUXES),
    ],
)
def test_values(kind, expected):
    scaled = FluxScaling(kind, softening=0.1)(FLUXES)
    assert scaled.dtype == tf.float32
    np.testing.assert_allclose(scaled, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["asinh", "none"])
def test_inverse_round_trip(kind):
    layer = FluxScaling(kind, softening=0.3)
    np.testing.assert_allclose(layer.inverse(layer(FLUXES)), FLUXES, rtol=1e-5, atol=1e-6)


def test_log_inverse_clips_negative_fluxes():
    layer = FluxScaling("log", softening=0.3)
    np.testing.assert_allclose(layer.inverse(layer(FLUXES)), np.maximum(FLUXES, 0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["asinh", "log", "none"])
def test_derivative_matches_autodiff(kind):
    layer = FluxScaling(kind, softening=0.2)
    flux = tf.constant(FLUXES[FLUXES > 0])  # log's derivative is defined by clipping below 0
    with tf.GradientTape() as tape:
        tape.watch(flux)
        scaled = layer(flux)
    np.testing.assert_allclose(layer.derivative(flux), tape.gradient(scaled, flux), rtol=1e-5)


def test_log_derivative_is_finite_for_negative_flux():
    derivative = FluxScaling("log", softening=0.2).derivative(tf.constant([-5.0]))
    np.testing.assert_allclose(derivative, [1 / (0.2 * np.log(10))], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "sqrt"}, "Received: kind='sqrt'"),
        ({"softening": 0.0}, "Received: softening=0.0"),
        ({"softening": -1.0}, "Received: softening=-1.0"),
        ({"softening": float("inf")}, "Received: softening=inf"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=f"{message}$"):
        FluxScaling(**kwargs)


def test_config_round_trip():
    layer = FluxScaling("log", softening=0.25, name="scale")
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(restored, FluxScaling)
    assert restored.get_config() == layer.get_config()
    np.testing.assert_array_equal(restored(FLUXES), layer(FLUXES))


def test_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = FluxScaling("asinh", softening=0.1)
        assert layer(FLUXES).dtype == tf.float32
        np.testing.assert_allclose(layer(FLUXES), np.arcsinh(FLUXES / 0.1), rtol=1e-6)
    finally:
        keras.mixed_precision.set_global_policy("float32")
