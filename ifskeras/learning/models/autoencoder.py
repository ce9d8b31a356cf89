"""ConvLSTM autoencoder over wavelength-ordered emission-line maps (the base model)."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from ifskeras.learning.models.layers import ConvLSTMDecoder, ConvLSTMEncoder, check_architecture
from ifskeras.learning.models.losses import (
    masked_chi_square_per_line,
    masked_squared_error,
    masked_squared_error_per_line,
    peak_chi_square_per_line,
    pooled_line_mean,
)
from ifskeras.learning.models.scaling import FluxScaling

__all__ = ["ConvLSTMAutoencoder"]


@keras.saving.register_keras_serializable(package="ifskeras")
class ConvLSTMAutoencoder(keras.Model):
    """ConvLSTM autoencoder of a galaxy's L line maps, each S x S.

    Inputs are physical fluxes [B, L, S, S, 1] (1e-17 erg/s/cm^2/spaxel) with their
    inverse variances and 0/1 valid masks of the same shape. The first layer
    (:class:`FluxScaling`) maps fluxes to scaled space; the encoder
    (:class:`ConvLSTMEncoder`) reads the lines in wavelength order and a Dense layer
    gives the latent vector; the decoder (:class:`ConvLSTMDecoder`) draws the L maps
    back in scaled space. Invalid pixels are set to 0 flux before encoding in
    :meth:`per_example_losses` and :meth:`score` and never enter a loss.

    The reconstruction loss is the mean squared error in scaled space over each
    galaxy's valid pixels; with ``ivar_weighting`` each pixel is weighted by its inverse
    variance propagated into scaled space, ``ivar / (d scaled / d flux)**2``, and the
    weighted mean is taken (weights normalised per galaxy).

    Parameters
    ----------
    num_lines, size : int
        L and S; ``size`` must be a multiple of ``2**len(filters)``.
    latent_dim : int
        Size of the latent vector.
    filters : sequence of int
        ConvLSTM2D filters of the encoder, one 2x downsampling each; the decoder mirrors them.
    kernel_size : int
        Convolution kernel size.
    scaling : {"asinh", "log", "none"}
        Flux scaling, see :class:`FluxScaling`.
    softening : float
        Softening flux of the scaling.
    ivar_weighting : bool
        Weight pixels by their propagated inverse variance in the loss.
    beta : float
        Initial value of the non-trainable ``beta`` variable (KL weight; unused by the AE,
        kept so every model has the same interface).

    Examples
    --------
    >>> model = ConvLSTMAutoencoder(num_lines=3, size=16, latent_dim=4, filters=(4, 8))
    >>> flux = keras.ops.ones((2, 3, 16, 16, 1))
    >>> losses = model.per_example_losses(flux, flux, flux, training=True)
    >>> scores = model.score(flux, flux)  # anomaly_score, line_error, latent_mean, ...
    >>> noise_aware = model.score(flux, flux, flux)  # adds chi2_score, chi2_per_line, chi2_peak_per_line
    """

    kind = "ae"

    def __init__(
        self,
        num_lines: int,
        size: int,
        *,
        latent_dim: int = 32,
        filters=(16, 32),
        kernel_size: int = 3,
        scaling: str = "asinh",
        softening: float = 0.1,
        ivar_weighting: bool = False,
        beta: float = 1.0,
        loss_line_mask=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = check_architecture(filters=filters, kernel_size=kernel_size, size=size, num_lines=num_lines)
        if int(latent_dim) != latent_dim or latent_dim <= 0:
            raise ValueError(f"latent_dim must be a positive int. Received: latent_dim={latent_dim!r}")
        if not math.isfinite(beta) or beta < 0:
            raise ValueError(f"beta must be a finite number >= 0. Received: beta={beta!r}")
        self.num_lines = int(num_lines)
        self.size = int(size)
        self.latent_dim = int(latent_dim)
        self.kernel_size = int(kernel_size)
        self.ivar_weighting = bool(ivar_weighting)
        # Lines the training loss counts (1) or leaves out (0); None: every line.
        self.loss_line_mask = None if loss_line_mask is None else tuple(float(v) for v in loss_line_mask)
        if self.loss_line_mask is not None and (len(self.loss_line_mask) != self.num_lines
                                                or not any(self.loss_line_mask)):
            raise ValueError(f"loss_line_mask must have {self.num_lines} values, not all 0. "
                             f"Received: {loss_line_mask!r}")
        self.flux_scaling = FluxScaling(scaling, softening, name="flux_scaling")
        self.scaling = self.flux_scaling.kind
        self.softening = self.flux_scaling.softening
        self.encoder = ConvLSTMEncoder(self.filters, self.kernel_size, dtype=self.dtype_policy, name="encoder")
        self.latent_heads = self._make_latent_heads()
        self.decoder = ConvLSTMDecoder(
            self.num_lines, self.size, self.filters, self.kernel_size, dtype=self.dtype_policy, name="decoder"
        )
        self.initial_beta = float(beta)
        self.beta = keras.Variable(self.initial_beta, trainable=False, dtype="float32", autocast=False, name="beta")
        self.build((None, self.num_lines, self.size, self.size, 1))

    # ------------------------------------------------------------------ structure
    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.flux_scaling.build(input_shape)
        self.encoder.build(input_shape)
        features = self.encoder.compute_output_shape(input_shape)
        for head in self.latent_heads.values():
            head.build(features)
        self.decoder.build((None, self.latent_dim))

    def _make_latent_heads(self) -> dict:
        """Dense layers (float32) from encoder features to each latent parameter, by name."""
        return {"latent_mean": keras.layers.Dense(self.latent_dim, dtype="float32", name="latent_mean")}

    def get_config(self):
        return {
            **super().get_config(),
            "num_lines": self.num_lines,
            "size": self.size,
            "latent_dim": self.latent_dim,
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
            "scaling": self.scaling,
            "softening": self.softening,
            "ivar_weighting": self.ivar_weighting,
            "beta": self.initial_beta,
            "loss_line_mask": None if self.loss_line_mask is None else list(self.loss_line_mask),
        }

    @classmethod
    def from_config(cls, config):
        # Models saved before the unused "pool" option was removed store downsampling="stride".
        config = {k: v for k, v in config.items() if k != "downsampling"}
        return cls(**config)

    def config_dict(self) -> dict:
        """The architecture as a plain dict (kind, shapes, latent size, scaling, ...)."""
        config = self.get_config()
        return {"kind": self.kind, **{k: v for k, v in config.items() if k not in ("name", "trainable", "dtype")}}

    # ------------------------------------------------------------------ scaling
    def scale_flux(self, flux):
        """Physical fluxes -> scaled space (float32)."""
        return self.flux_scaling(flux)

    def unscale(self, scaled):
        """Scaled values -> physical fluxes (float32)."""
        return self.flux_scaling.inverse(scaled)

    # ------------------------------------------------------------------ forward
    def _encode_scaled(self, scaled, training):
        features = self.encoder(scaled, training=training)
        return {name: head(features) for name, head in self.latent_heads.items()}

    def _latent(self, encoded, *, training, seed=None):
        """The latent vector fed to the decoder (the AE is deterministic)."""
        del training, seed
        return encoded["latent_mean"]

    def _decode(self, latent, training):
        return tf.cast(self.decoder(latent, training=training), tf.float32)

    def call(self, flux, training=False):
        """Reconstruction in scaled space, [B, L, S, S, 1] float32."""
        encoded = self._encode_scaled(self.scale_flux(flux), training)
        return self._decode(self._latent(encoded, training=training), training)

    def decode(self, latent):
        """Reconstruction in scaled space from latent vectors [B, D]: [B, L, S, S, 1] float32."""
        return self._decode(tf.cast(latent, tf.float32), False)

    def encode(self, flux, training=False):
        """Latent parameters: ``{"latent_mean": [B, D]}`` (the VAE adds ``"latent_log_var"``)."""
        return self._encode_scaled(self.scale_flux(flux), training)

    # ------------------------------------------------------------------ losses
    def _scaled_variance(self, flux, ivar, valid):
        """Flux variance propagated into scaled space; 0 at invalid pixels or ivar <= 0."""
        variance = tf.where((valid > 0) & (ivar > 0), tf.math.reciprocal_no_nan(ivar), 0.0)
        return variance * tf.square(self.flux_scaling.derivative(flux))

    def _reconstruction_loss(self, target, reconstruction, flux, ivar, valid):
        """Per-galaxy masked MSE in scaled space (inverse-variance weighted if asked): [B]."""
        if self.ivar_weighting:
            weights = tf.math.reciprocal_no_nan(self._scaled_variance(flux, ivar, valid))
        else:
            weights = valid
        return masked_squared_error(target, reconstruction, weights)

    def _regularisation_losses(self, encoded):
        """Extra per-example loss terms added to the reconstruction loss (none for the AE)."""
        del encoded
        return {}

    def _total_loss(self, losses):
        """The optimised per-example loss from the named terms."""
        return losses["reconstruction_loss"]

    def per_example_losses(self, flux, ivar, valid, *, training: bool, seed=None):
        """Per-galaxy losses: dict of [B] float32 tensors.

        ``"loss"`` (what is optimised) and ``"reconstruction_loss"``; the VAE adds
        ``"kl_loss"``. ``seed`` ([2] int32) drives the VAE's latent sampling when
        ``training``; the AE ignores it. Fluxes at invalid pixels are ignored.
        """
        flux, ivar, valid = _sanitise(flux, ivar, valid)
        target = self.scale_flux(flux)
        encoded = self._encode_scaled(target, training)
        reconstruction = self._decode(self._latent(encoded, training=training, seed=seed), training)
        losses = {"reconstruction_loss": self._reconstruction_loss(target, reconstruction, flux, ivar,
                                                                   self._counted(valid))}
        losses.update(self._regularisation_losses(encoded))
        losses["loss"] = self._total_loss(losses)
        return losses

    def _counted(self, valid):
        """``valid`` with the lines left out of the loss (``loss_line_mask``) zeroed."""
        if self.loss_line_mask is None:
            return valid
        return valid * tf.reshape(tf.constant(self.loss_line_mask, tf.float32), (1, -1, 1, 1, 1))

    # ------------------------------------------------------------------ scoring
    def score(self, flux, valid, ivar=None, *, chi2_line_mask=None):
        """Deterministic anomaly scores from the mean latent vector.

        Returns a dict of float32 tensors:

        - ``"anomaly_score"`` [B]: masked MSE in scaled space over the valid pixels of
          every line (the paper's reconstruction error; ivar never changes it);
        - ``"line_error"`` [B, L]: the same per line (0 for a line without valid pixels);
        - ``"line_valid_fraction"`` [B, L]: fraction of valid pixels of each line;
        - ``"latent_mean"`` [B, D]; ``"reconstruction"`` [B, L, S, S, 1] in physical
          units; for the VAE ``"latent_scale"`` [B, D].

        With ``ivar`` (inverse variances of the fluxes, same shape) the noise-aware scores
        are added:

        - ``"chi2_per_line"`` [B, L]: mean over the line's pixels with ``valid`` and
          ``ivar > 0`` of ``(scaled - reconstruction)**2 / var_scaled``, where
          ``var_scaled = (d scaled / d flux)**2 / ivar`` is the flux variance propagated
          into scaled space at the observed flux (0 for a line without such pixels);
        - ``"chi2_peak_per_line"`` [B, L]: the highest mean of the same chi2 in a 3 x 3
          window of the line's map (windows with at least 5 such pixels; 0 without
          one): a compact residual, such as a nucleus, is not averaged away over the
          whole map (``rank_score`` is built from it);
        - ``"chi2_score"`` [B]: the same mean pooled over the pixels of the lines in
          ``chi2_line_mask`` ([L], 1 = counted; None = every line): each pixel weighs
          the same, as in ``anomaly_score``;
        - VAE only: ``"nelbo_score"``, ``"nll_per_line"``, ``"latent_kl"`` (see
          :class:`~ifskeras.learning.models.ConvLSTMVAE`).

        Without ``ivar`` the outputs are exactly those of format-2 SavedModels.

        A model trained with lines left out of its loss (``loss_line_mask``) never learnt
        to reconstruct them: they are left out of ``anomaly_score``, ``chi2_score`` and the
        VAE's likelihood scores too (``line_error``, ``chi2_per_line`` and
        ``chi2_peak_per_line`` still show them, ``nll_per_line`` gives them 0; ``rank_score``
        leaves them out through the metadata's ``chi2_excluded_lines``).
        """
        flux, _, valid = _sanitise(flux, None, valid)
        target = self.scale_flux(flux)
        encoded = self._encode_scaled(target, False)
        reconstruction = self._decode(encoded["latent_mean"], False)
        line_error, line_valid_fraction = masked_squared_error_per_line(target, reconstruction, valid)
        counted = self._counted(valid)
        if self.loss_line_mask is not None:
            learnt = tf.constant(self.loss_line_mask, tf.float32)
            chi2_line_mask = learnt if chi2_line_mask is None else tf.cast(chi2_line_mask, tf.float32) * learnt
        result = {
            "anomaly_score": masked_squared_error(target, reconstruction, counted),
            "line_error": line_error,
            "line_valid_fraction": line_valid_fraction,
            "reconstruction": self.unscale(reconstruction),
        }
        result.update(self._latent_summary(encoded))
        if ivar is not None:
            # Non-finite inverse variances leave their pixels out of the noise-aware scores
            # only: the encoder input, and so every score above, does not depend on ivar.
            ivar = tf.cast(ivar, tf.float32)
            ivar = tf.where(tf.math.is_finite(ivar) & (valid > 0), ivar, 0.0)
            scaled_variance = self._scaled_variance(flux, ivar, valid)
            chi2_sums, chi2_counts = masked_chi_square_per_line(target, reconstruction, scaled_variance)
            result["chi2_per_line"] = tf.math.divide_no_nan(chi2_sums, chi2_counts)
            result["chi2_peak_per_line"] = peak_chi_square_per_line(target, reconstruction, scaled_variance)
            result["chi2_score"] = pooled_line_mean(chi2_sums, chi2_counts, chi2_line_mask)
            result.update(self._likelihood_scores(target, flux, ivar, counted, encoded))
        return result

    def _likelihood_scores(self, target, flux, ivar, valid, encoded):
        """Scores from the model's likelihood (none for the AE, which has no likelihood)."""
        del target, flux, ivar, valid, encoded
        return {}

    def _latent_summary(self, encoded):
        return {"latent_mean": tf.cast(encoded["latent_mean"], tf.float32)}


def _sanitise(flux, ivar, valid):
    """Cast to float32, binarise ``valid`` and zero flux and ivar at invalid or non-finite pixels."""
    flux = tf.cast(flux, tf.float32)
    valid = tf.cast(tf.cast(valid, tf.float32) > 0, tf.float32)
    finite = tf.math.is_finite(flux)
    if ivar is not None:
        ivar = tf.cast(ivar, tf.float32)
        finite &= tf.math.is_finite(ivar)
    valid = tf.where(finite, valid, 0.0)
    flux = tf.where(valid > 0, flux, 0.0)
    if ivar is not None:
        ivar = tf.where(valid > 0, ivar, 0.0)
    return flux, ivar, valid
