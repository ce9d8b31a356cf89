"""ConvLSTM variational autoencoder: the autoencoder with a TFP posterior, prior and likelihood."""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from ifskeras.learning.models.autoencoder import ConvLSTMAutoencoder
from ifskeras.learning.models.losses import (
    latent_posterior,
    masked_pixel_likelihood,
    safe_target,
    standard_normal_prior,
)

tfd = tfp.distributions

__all__ = ["ConvLSTMVAE", "LATENT_LOG_VAR_RANGE", "MIN_LIKELIHOOD_SCALE", "NELBO_SAMPLES", "NELBO_SEED"]

#: Bounds of the posterior log-variance, so exp() can neither overflow nor vanish.
LATENT_LOG_VAR_RANGE = (-20.0, 10.0)
#: Floor of the likelihood scale in scaled-flux units, so the NLL stays bounded.
MIN_LIKELIHOOD_SCALE = 1e-3
#: Posterior samples of the negative-ELBO score: its Monte Carlo error on the
#: reconstruction term falls as 1 / sqrt(NELBO_SAMPLES), its cost grows linearly.
NELBO_SAMPLES = 8
#: Stateless seed of the score's posterior samples (fixed: the same galaxy always gets the same score).
NELBO_SEED = (2602, 18426)
#: Upper bound (exclusive) of the int32 seeds drawn from the model's SeedGenerator.
_INT32_SEED_RANGE = 2**31 - 1


@keras.saving.register_keras_serializable(package="ifskeras")
class ConvLSTMVAE(ConvLSTMAutoencoder):
    """ConvLSTM variational autoencoder; same constructor and interface as the autoencoder.

    Every distribution is a ``tfp.distributions`` object built inside the model's
    methods from the float32 encoder heads and decoder output (only tensors leave the
    model, also under a mixed-precision policy):

    - posterior ``q(z|x)``: ``tfd.MultivariateNormalDiag(latent_mean, exp(latent_log_var / 2))``;
    - prior ``p(z)``: ``tfd.MultivariateNormalDiag(0, 1)``;
    - likelihood ``p(x|z)``: ``tfd.Independent(tfd.Masked(tfd.Normal(decoder(z), scale),
      valid))`` over each line's valid pixels in scaled space, with one learned scale per
      line, ``exp(likelihood_log_scale[l])`` (initialised to 1). With
      ``ivar_weighting`` the pixel's own noise, propagated into scaled space, adds in
      quadrature: ``scale**2 = exp(2 likelihood_log_scale[l]) + 1 / ivar_scaled +
      MIN_LIKELIHOOD_SCALE**2``.

    Training draws one ``z ~ q(z|x)`` with ``posterior.sample(seed=seed)``, a stateless
    int32 seed: the trainer passes one per step and replica; without one, a seed is
    drawn from the model's Keras ``SeedGenerator`` and the replica id folded in (every
    replica would otherwise draw the same numbers). With ``training=False`` ``z`` is
    the posterior mean. ``reconstruction_loss`` is ``-log p(x|z)`` (nats, summed over
    valid pixels), ``kl_loss`` is ``tfd.kl_divergence(q, p)``, and
    ``loss = reconstruction_loss + beta * kl_loss`` with ``beta`` read from the
    non-trainable ``model.beta`` (the negative ELBO when ``beta == 1``). Learning the
    likelihood scale balances the two terms by itself (the "sigma-VAE" of Rybkin et
    al. 2021), so summing over pixels does not swamp the KL.

    ``score(flux, valid, ivar)`` adds the likelihood scores (beta = 1, whatever the
    training beta):

    - ``"nll_per_line"`` [B, L]: ``-E_q[log p(x_l|z)]`` per line, estimated with
      ``NELBO_SAMPLES`` samples ``z_k = latent_mean + latent_scale * eps_k``, where
      ``eps = tf.random.stateless_normal([NELBO_SAMPLES, D], seed=NELBO_SEED,
      alg="philox")`` is shared by every galaxy: a galaxy's score is the same in any
      batch, on any call;
    - ``"latent_kl"`` [B]: ``KL(q(z|x) || p(z))``, analytic;
    - ``"nelbo_score"`` [B]: the negative ELBO, ``sum(nll_per_line) + latent_kl`` (nats).
      With ``ivar_weighting`` the likelihood reads ``ivar``, as in training.
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

    # ------------------------------------------------------------------ distributions
    def _posterior(self, encoded):
        """``q(z|x)``, a float32 ``tfd.MultivariateNormalDiag`` (used inside methods only)."""
        return latent_posterior(encoded["latent_mean"], encoded["latent_log_var"])

    def _likelihood(self, reconstruction, flux, ivar, valid):
        """``p(x|z)`` around ``reconstruction``: batch [B, L], event [S, S, 1] (see the class docstring)."""
        variance = tf.reshape(self._line_variance(), (1, self.num_lines, 1, 1, 1))
        if self.ivar_weighting:
            variance = variance + self._scaled_variance(flux, ivar, valid)
        return masked_pixel_likelihood(reconstruction, tf.sqrt(variance), valid)

    def likelihood_line_scale(self):
        """The learned likelihood scale of each line, floor included, in scaled units: [L] float32.

        The scale of ``p(x|z)`` at every pixel of line ``l`` when the model has no
        ``ivar_weighting``; with it, ``sqrt(scale[l]**2 + var_scaled)`` at each pixel.
        """
        return tf.sqrt(self._line_variance())

    def _line_variance(self):
        """``exp(2 likelihood_log_scale) + MIN_LIKELIHOOD_SCALE**2``: [L] float32."""
        return tf.exp(2.0 * self.likelihood_log_scale) + MIN_LIKELIHOOD_SCALE**2

    def _sampling_seed(self, seed):
        """The int32 [2] stateless seed of one posterior sample."""
        if seed is not None:
            return tf.cast(seed, tf.int32)
        seed = keras.random.randint((2,), 0, _INT32_SEED_RANGE, seed=self.seed_generator, dtype="int32")
        context = tf.distribute.get_replica_context()
        replica = 0 if context is None else context.replica_id_in_sync_group
        return tf.random.experimental.stateless_fold_in(seed, tf.cast(replica, tf.int32))

    # ------------------------------------------------------------------ losses
    def _latent(self, encoded, *, training, seed=None):
        if not training:
            return encoded["latent_mean"]
        return self._posterior(encoded).sample(seed=self._sampling_seed(seed))

    def _reconstruction_loss(self, target, reconstruction, flux, ivar, valid):
        likelihood = self._likelihood(reconstruction, flux, ivar, valid)
        return -tf.reduce_sum(likelihood.log_prob(safe_target(target, reconstruction, valid)), axis=-1)

    def _regularisation_losses(self, encoded):
        posterior = self._posterior(encoded)
        return {"kl_loss": tfd.kl_divergence(posterior, standard_normal_prior(self.latent_dim))}

    def _total_loss(self, losses):
        return losses["reconstruction_loss"] + tf.cast(self.beta, tf.float32) * losses["kl_loss"]

    # ------------------------------------------------------------------ scoring
    def _likelihood_scores(self, target, flux, ivar, valid, encoded):
        posterior = self._posterior(encoded)
        latent_mean, latent_scale = posterior.mean(), posterior.stddev()
        # One set of standard-normal draws for every galaxy (common random numbers): a
        # galaxy's score does not depend on the batch it is in, and repeats exactly.
        epsilons = tf.random.stateless_normal(
            [NELBO_SAMPLES, self.latent_dim], seed=tf.constant(NELBO_SEED, tf.int32), dtype=tf.float32, alg="philox"
        )

        def line_nll(epsilon):
            reconstruction = self._decode(latent_mean + latent_scale * epsilon[None, :], False)
            likelihood = self._likelihood(reconstruction, flux, ivar, valid)
            return -likelihood.log_prob(safe_target(target, reconstruction, valid))

        # One decoder pass at a time: memory stays that of one reconstruction of the batch.
        per_sample = tf.map_fn(
            line_nll, epsilons, fn_output_signature=tf.TensorSpec([None, self.num_lines], tf.float32),
            parallel_iterations=1,
        )
        nll_per_line = tf.reduce_mean(per_sample, axis=0)
        latent_kl = tfd.kl_divergence(posterior, standard_normal_prior(self.latent_dim))
        return {
            "nelbo_score": tf.reduce_sum(nll_per_line, axis=-1) + latent_kl,
            "nll_per_line": nll_per_line,
            "latent_kl": latent_kl,
        }

    def _latent_summary(self, encoded):
        return {
            **super()._latent_summary(encoded),
            "latent_scale": tf.exp(0.5 * tf.cast(encoded["latent_log_var"], tf.float32)),
        }

