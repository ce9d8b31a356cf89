"""Masked per-example losses and scores on [B, L, S, S, 1] maps (float32 maths throughout).

Every loss or score returns one value per galaxy (or per galaxy and line) and never NaN:
a galaxy (or line) without any valid pixel gets 0.

The VAE's distributions are ``tfp.distributions`` objects built here from tensors:
:func:`latent_posterior`, :func:`standard_normal_prior` and
:func:`masked_pixel_likelihood`. They are built inside a model method or a loss and
only tensors leave the model (``tfp.layers`` do not work in Keras 3).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

__all__ = [
    "masked_squared_error",
    "masked_squared_error_per_line",
    "masked_chi_square_per_line",
    "peak_chi_square_per_line",
    "PEAK_WINDOW",
    "PEAK_MIN_PIXELS",
    "pooled_line_mean",
    "latent_posterior",
    "standard_normal_prior",
    "masked_pixel_likelihood",
    "safe_target",
    "masked_gaussian_nll",
    "kl_to_standard_normal",
]

tfd = tfp.distributions

_EXAMPLE_AXES = (1, 2, 3, 4)
_PIXEL_AXES = (2, 3, 4)
#: Axes of one line's map, [S, S, 1]: the event of the per-line likelihood.
_MAP_NDIMS = 3


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


def masked_chi_square_per_line(target, prediction, variance):
    """Sum of ``(target - prediction)**2 / variance`` and pixel count per line: ([B, L], [B, L]).

    Only pixels with ``variance > 0`` count (the caller sets 0 at invalid pixels and at
    pixels without a usable inverse variance), so NaN or inf there cannot leak.
    """
    target, prediction, variance = _float32(target, prediction, variance)
    used = variance > 0
    chi_square = tf.where(used, tf.square(target - prediction) / tf.where(used, variance, 1.0), 0.0)
    return tf.reduce_sum(chi_square, axis=_PIXEL_AXES), tf.reduce_sum(tf.cast(used, tf.float32), axis=_PIXEL_AXES)


#: Side of the square window of :func:`peak_chi_square_per_line`, in map pixels.
PEAK_WINDOW = 3
#: Measured pixels a window needs (at least half of it) to count.
PEAK_MIN_PIXELS = 5


def peak_chi_square_per_line(target, prediction, variance, *, window: int = PEAK_WINDOW,
                             min_pixels: int = PEAK_MIN_PIXELS):
    """Highest mean of ``(target - prediction)**2 / variance`` in a ``window`` x ``window`` square, per line: [B, L].

    Windows lie wholly inside the map and count only pixels with ``variance > 0``; a
    window with fewer than ``min_pixels`` such pixels is skipped, and a line without any
    counted window (or a map smaller than the window) gets 0. Why a local peak: an AGN's or a compact starburst's residual
    sits in a few neighbouring pixels, and the mean over the whole map
    (:func:`masked_chi_square_per_line`) divides it by every pixel of the galaxy.
    """
    target, prediction, variance = _float32(target, prediction, variance)
    if target.shape[2] is not None and target.shape[2] < window:  # no window fits in the map
        return tf.zeros(tf.shape(target)[:2], tf.float32)
    used = variance > 0
    chi_square = tf.where(used, tf.square(target - prediction) / tf.where(used, variance, 1.0), 0.0)
    shape = tf.shape(chi_square)
    # One image per (galaxy, line): [B * L, S, S, 1].
    images = tf.reshape(chi_square, tf.concat([[-1], shape[2:]], axis=0))
    counts = tf.reshape(tf.cast(used, tf.float32), tf.shape(images))
    area = float(window * window)
    window_sum = tf.nn.avg_pool2d(images, window, 1, "VALID") * area
    window_count = tf.nn.avg_pool2d(counts, window, 1, "VALID") * area
    # Counts are sums of 0/1 through a float average: compare half a pixel below.
    enough = window_count > min_pixels - 0.5
    window_mean = tf.where(enough, window_sum / tf.where(enough, window_count, 1.0), -1.0)
    peak = tf.reduce_max(window_mean, axis=(1, 2, 3))
    return tf.reshape(tf.maximum(peak, 0.0), shape[:2])


def pooled_line_mean(sums, counts, line_mask=None):
    """Per-pixel mean over the lines in ``line_mask``, from per-line sums and counts: [B].

    ``sum over lines of sums / sum over lines of counts``, so each pixel weighs the same
    whatever its line; ``line_mask`` ([L], 1 = counts, None = every line) leaves lines
    out. 0 for a galaxy without any counted pixel.
    """
    sums, counts = _float32(sums, counts)
    if line_mask is not None:
        line_mask = tf.cast(line_mask, tf.float32)[None, :]
        sums, counts = sums * line_mask, counts * line_mask
    return tf.math.divide_no_nan(tf.reduce_sum(sums, axis=-1), tf.reduce_sum(counts, axis=-1))


def latent_posterior(latent_mean, latent_log_var):
    """``q(z|x) = N(mean, diag(exp(log_var)))`` as a float32 ``tfd.MultivariateNormalDiag``, batch [B], event [D]."""
    latent_mean, latent_log_var = _float32(latent_mean, latent_log_var)
    return tfd.MultivariateNormalDiag(loc=latent_mean, scale_diag=tf.exp(0.5 * latent_log_var))


def standard_normal_prior(latent_dim: int):
    """``p(z) = N(0, I)`` over ``latent_dim`` dimensions (float32, event [D])."""
    return tfd.MultivariateNormalDiag(loc=tf.zeros([latent_dim]), scale_diag=tf.ones([latent_dim]))


def masked_pixel_likelihood(loc, scale, valid):
    """``p(x|z)``: independent ``Normal(loc, scale)`` pixels, invalid pixels masked out.

    A ``tfd.Independent(tfd.Masked(tfd.Normal(loc, scale), valid > 0))`` over each
    line's map: batch shape [B, L], event [S, S, 1], so ``log_prob`` gives the
    log-likelihood of each line summed over its valid pixels (0 for a line without
    any). ``scale`` broadcasts against ``loc`` (e.g. one value per line,
    [1, L, 1, 1, 1]). Pass targets through :func:`safe_target` first, so the masked
    pixels hold finite values and no NaN reaches a gradient.
    """
    loc, scale, valid = _float32(loc, scale, valid)
    scale = tf.broadcast_to(scale, tf.shape(loc))
    pixels = tfd.Masked(tfd.Normal(loc=loc, scale=scale), validity_mask=valid > 0)
    return tfd.Independent(pixels, reinterpreted_batch_ndims=_MAP_NDIMS)


def safe_target(target, loc, valid):
    """``target`` with ``loc`` at invalid pixels: finite there, whatever the input held."""
    target, loc, valid = _float32(target, loc, valid)
    return tf.where(valid > 0, target, loc)


def masked_gaussian_nll(target, loc, scale, valid):
    """Negative log-likelihood of ``target`` under ``Normal(loc, scale)``, summed over valid pixels: [B].

    The log-probability of :func:`masked_pixel_likelihood`, summed over lines. The sum
    (not the mean) makes ``nll + KL`` the negative ELBO.
    """
    likelihood = masked_pixel_likelihood(loc, scale, valid)
    return -tf.reduce_sum(likelihood.log_prob(safe_target(target, loc, valid)), axis=-1)


def kl_to_standard_normal(latent_mean, latent_log_var):
    """Analytic ``KL(q(z|x) || N(0, I))`` per example: [B], via ``tfd.kl_divergence``."""
    posterior = latent_posterior(latent_mean, latent_log_var)
    return tfd.kl_divergence(posterior, standard_normal_prior(posterior.event_shape[-1]))
