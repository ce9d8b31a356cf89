"""Masked per-example losses on [B, L, S, S, 1] maps (float32 maths throughout).

Every function returns one value per galaxy (or per galaxy and line) and never NaN:
a galaxy (or line) without any valid pixel gets 0.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

__all__ = [
    "masked_squared_error",
    "masked_squared_error_per_line",
    "masked_gaussian_nll",
    "kl_to_standard_normal",
]

tfd = tfp.distributions

_EXAMPLE_AXES = (1, 2, 3, 4)
_PIXEL_AXES = (2, 3, 4)


def _float32(*tensors):
    return [tf.cast(t, tf.float32) for t in tensors]


def masked_squared_error(target, prediction, weights):
    """Weighted mean of ``(target - prediction)**2`` over each galaxy's pixels: [B].

    ``weights`` is 0 at invalid pixels (the valid mask, or inverse variances times the
    mask); the mean is ``sum(w * err**2) / sum(w)``, 0 for a galaxy whose weights sum to 0.
    Invalid pixels are excluded with ``tf.where``, so NaN or inf there cannot leak.
    """
    target, prediction, weights = _float32(target, prediction, weights)
    used = weights > 0
    squared = tf.where(used, tf.square(target - prediction), 0.0)
    weights = tf.where(used, weights, 0.0)
    return tf.math.divide_no_nan(
        tf.reduce_sum(weights * squared, axis=_EXAMPLE_AXES), tf.reduce_sum(weights, axis=_EXAMPLE_AXES)
    )


def masked_squared_error_per_line(target, prediction, valid):
    """Mean squared error over the valid pixels of each line: ([B, L] error, [B, L] valid fraction).

    A line without valid pixels gets error 0 and valid fraction 0.
    """
    target, prediction, valid = _float32(target, prediction, valid)
    used = valid > 0
    squared = tf.where(used, tf.square(target - prediction), 0.0)
    count = tf.reduce_sum(tf.cast(used, tf.float32), axis=_PIXEL_AXES)
    pixels = tf.cast(tf.reduce_prod(tf.shape(valid)[2:]), tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(squared, axis=_PIXEL_AXES), count), count / pixels


def masked_gaussian_nll(target, loc, scale, valid):
    """Negative log-likelihood of ``target`` under ``Normal(loc, scale)``, summed over valid pixels: [B].

    Built with ``tfd.Normal``; ``scale`` broadcasts against ``loc`` (e.g. one value per
    line, [1, L, 1, 1, 1]). The sum (not the mean) makes ``nll + KL`` the negative ELBO.
    """
    target, loc, scale, valid = _float32(target, loc, scale, valid)
    used = valid > 0
    log_prob = tfd.Normal(loc=loc, scale=scale).log_prob(tf.where(used, target, loc))
    return -tf.reduce_sum(tf.where(used, log_prob, 0.0), axis=_EXAMPLE_AXES)


def kl_to_standard_normal(latent_mean, latent_log_var):
    """Analytic ``KL(N(mean, exp(log_var)) || N(0, I))`` per example: [B], via ``tfd.kl_divergence``."""
    latent_mean, latent_log_var = _float32(latent_mean, latent_log_var)
    posterior = tfd.MultivariateNormalDiag(loc=latent_mean, scale_diag=tf.exp(0.5 * latent_log_var))
    prior = tfd.MultivariateNormalDiag(loc=tf.zeros_like(latent_mean), scale_diag=tf.ones_like(latent_mean))
    return tfd.kl_divergence(posterior, prior)
