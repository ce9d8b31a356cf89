"""ConvLSTM autoencoder and variational autoencoder models (Keras 3).

``build_model(config, num_lines=L, size=S)`` is the one entry point the training loop
and exporter use; the classes are registered with Keras serialisation (package
``"ifskeras"``), so ``keras.saving.load_model`` restores them once this package is imported.
"""

from __future__ import annotations

from ifskeras.learning.models.autoencoder import ConvLSTMAutoencoder
from ifskeras.learning.models.layers import ConvLSTMDecoder, ConvLSTMEncoder
from ifskeras.learning.models.losses import (
    kl_to_standard_normal,
    latent_posterior,
    masked_chi_square_per_line,
    masked_gaussian_nll,
    masked_pixel_likelihood,
    masked_squared_error,
    masked_squared_error_per_line,
    standard_normal_prior,
)
from ifskeras.learning.models.scaling import FluxScaling
from ifskeras.learning.models.vae import ConvLSTMVAE

__all__ = [
    "build_model",
    "ConvLSTMAutoencoder",
    "ConvLSTMVAE",
    "ConvLSTMEncoder",
    "ConvLSTMDecoder",
    "FluxScaling",
    "masked_squared_error",
    "masked_squared_error_per_line",
    "masked_chi_square_per_line",
    "masked_gaussian_nll",
    "kl_to_standard_normal",
    "latent_posterior",
    "standard_normal_prior",
    "masked_pixel_likelihood",
]

_MODEL_CLASSES = {"ae": ConvLSTMAutoencoder, "vae": ConvLSTMVAE}


def build_model(config, *, num_lines: int, size: int, lines=None) -> ConvLSTMAutoencoder | ConvLSTMVAE:
    """The model a :class:`ifskeras.learning.config.ModelConfig` describes, for L lines of S x S maps.

    Parameters
    ----------
    config : ModelConfig
        ``kind`` picks :class:`ConvLSTMAutoencoder` (``"ae"``) or :class:`ConvLSTMVAE`
        (``"vae"``); the other fields become constructor arguments.
    num_lines, size : int
        L and S of the inputs; ``size`` must be a multiple of ``2**len(config.filters)``.
    lines : sequence of str, optional
        The L line names; needed when ``config.tied_lines_in_loss`` is false, to find the
        tied doublet copies the loss leaves out.

    Examples
    --------
    >>> from ifskeras.learning.config import ModelConfig
    >>> model = build_model(ModelConfig(filters=(4, 8), latent_dim=4), num_lines=3, size=16)
    """
    if config.kind not in _MODEL_CLASSES:
        raise ValueError(f"config.kind must be one of {tuple(_MODEL_CLASSES)}. Received: kind={config.kind!r}")
    loss_line_mask = None
    if not getattr(config, "tied_lines_in_loss", True):
        if lines is None or len(lines) != num_lines:
            raise ValueError("tied_lines_in_loss=False needs the model's line names (lines=) to find the tied copies")
        from ifskeras.survey.lines import tied_lines_among

        tied = tied_lines_among(lines)
        loss_line_mask = [0.0 if line in tied else 1.0 for line in lines]
    return _MODEL_CLASSES[config.kind](
        num_lines=num_lines,
        size=size,
        latent_dim=config.latent_dim,
        filters=config.filters,
        kernel_size=config.kernel_size,
        scaling=config.scaling,
        softening=config.softening,
        ivar_weighting=config.ivar_weighting,
        beta=config.beta,
        loss_line_mask=loss_line_mask,
        name=f"convlstm_{config.kind}",
    )
