"""ConvLSTM variational autoencoder: the autoencoder with a Gaussian posterior and likelihood."""

from __future__ import annotations

import keras
import tensorflow as tf

from ifskeras.learning.models.autoencoder import ConvLSTMAutoencoder
from ifskeras.learning.models.losses import kl_to_standard_normal, masked_gaussian_nll

__all__ = ["ConvLSTMVAE", "LATENT_LOG_VAR_RANGE", "MIN_LIKELIHOOD_SCALE"]

#: Bounds of the posterior log-variance, so exp() can neither overflow nor vanish.
LATENT_LOG_VAR_RANGE = (-20.0, 10.0)
#: Floor of the likelihood scale in scaled-flux units, so the NLL stays bounded.
MIN_LIKELIHOOD_SCALE = 1e-3


@keras.saving.register_keras_serializable(package="ifskeras")
class ConvLSTMVAE(ConvLSTMAutoencoder):
    """ConvLSTM variational autoencoder; same constructor and interface as the autoencoder.

    Posterior ``q(z|x) = N(latent_mean, exp(latent_log_var))`` (diagonal), prior
    ``N(0, I)``. Training draws ``z = mean + exp(log_var / 2) * eps`` with ``eps`` from
    ``tf.random.stateless_normal(seed=seed)`` when a [2] int ``seed`` is given (the
    trainer passes one per step and replica), else from the model's Keras
    ``SeedGenerator``; with ``training=False`` ``z`` is the mean.

    Likelihood: ``tfd.Normal(reconstruction, scale)`` at each valid pixel in scaled
    space, with one learned scale per line, ``exp(likelihood_log_scale[l])``
    (initialised to 1). With ``ivar_weighting`` the pixel's own noise, propagated into
    scaled space, adds in quadrature:
    ``scale**2 = exp(2 likelihood_log_scale[l]) + 1 / ivar_scaled + MIN_LIKELIHOOD_SCALE**2``.
    ``reconstruction_loss`` is the NLL summed over valid pixels (nats), ``kl_loss`` the
    analytic ``KL(q(z|x) || N(0, I))``, and ``loss = reconstruction_loss + beta * kl_loss``
    with ``beta`` read from the non-trainable ``model.beta`` (the negative ELBO when
    ``beta == 1``). Learning the likelihood scale balances the two terms by itself
    (the "sigma-VAE" of Rybkin et al. 2021), so summing over pixels does not swamp the KL.
    """

    kind = "vae"

    def build(self, input_shape):
        super().build(input_shape)
        self.likelihood_log_scale = self.add_weight(
            shape=(self.num_lines,), initializer="zeros", dtype="float32", autocast=False, name="likelihood_log_scale"
        )
        self.seed_generator = keras.random.SeedGenerator(name="latent_seed_generator")

    def _make_latent_heads(self) -> dict:
        return {
            **super()._make_latent_heads(),
            "latent_log_var": keras.layers.Dense(self.latent_dim, dtype="float32", name="latent_log_var"),
        }

    def _encode_scaled(self, scaled, training):
        encoded = super()._encode_scaled(scaled, training)
        encoded["latent_log_var"] = tf.clip_by_value(encoded["latent_log_var"], *LATENT_LOG_VAR_RANGE)
        return encoded

    def _latent(self, encoded, *, training, seed=None):
        mean = encoded["latent_mean"]
        if not training:
            return mean
        if seed is None:
            epsilon = keras.random.normal(tf.shape(mean), seed=self.seed_generator, dtype="float32")
        else:
            epsilon = tf.random.stateless_normal(tf.shape(mean), seed=seed, dtype=tf.float32, alg="philox")
        return mean + tf.exp(0.5 * encoded["latent_log_var"]) * epsilon

    def _reconstruction_loss(self, target, reconstruction, flux, ivar, valid):
        variance = tf.reshape(tf.exp(2.0 * self.likelihood_log_scale), (1, self.num_lines, 1, 1, 1))
        variance = variance + MIN_LIKELIHOOD_SCALE**2
        if self.ivar_weighting:
            variance = variance + self._scaled_variance(flux, ivar, valid)
        return masked_gaussian_nll(target, reconstruction, tf.sqrt(variance), valid)

    def _regularisation_losses(self, encoded):
        return {"kl_loss": kl_to_standard_normal(encoded["latent_mean"], encoded["latent_log_var"])}

    def _total_loss(self, losses):
        return losses["reconstruction_loss"] + tf.cast(self.beta, tf.float32) * losses["kl_loss"]

    def _latent_summary(self, encoded):
        return {
            **super()._latent_summary(encoded),
            "latent_scale": tf.exp(0.5 * tf.cast(encoded["latent_log_var"], tf.float32)),
        }
