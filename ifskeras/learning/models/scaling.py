"""Flux scaling: the first layer of every model, so exported models take physical fluxes."""

from __future__ import annotations

import math

import keras
from keras import ops

from ifskeras.learning.config import SCALINGS

__all__ = ["FluxScaling"]

_LN10 = math.log(10.0)


@keras.saving.register_keras_serializable(package="ifskeras")
class FluxScaling(keras.layers.Layer):
    """Map physical line fluxes to the scaled space the network sees.

    Fluxes are in 1e-17 erg/s/cm^2/spaxel; ``s`` is ``softening`` in the same units.

    * ``"asinh"``: ``y = asinh(f / s)``; linear (``f / s``) for ``|f| << s``,
      logarithmic for ``|f| >> s``, defined for negative (noise) fluxes.
    * ``"log"``: ``y = log10(max(f, 0) / s + 1)``; negative fluxes map to 0, so the
      inverse of a scaled value is never below 0 and ``inverse(scale(f)) == max(f, 0)``.
    * ``"none"``: ``y = f``.

    The layer always computes in float32 (also under a mixed-precision policy): the
    scaled values feed the loss, whose maths stays float32.

    Parameters
    ----------
    kind : {"asinh", "log", "none"}
        The scaling function.
    softening : float
        Flux scale ``s`` (> 0) of the asinh or log scaling; ignored by ``"none"``.

    Examples
    --------
    >>> layer = FluxScaling(kind="asinh", softening=0.1)
    >>> y = layer(keras.ops.convert_to_tensor([[0.0, 0.1, 10.0]]))
    >>> x = layer.inverse(y)  # back to physical fluxes
    """

    def __init__(self, kind: str = "asinh", softening: float = 0.1, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if kind not in SCALINGS:
            raise ValueError(f"kind must be one of {SCALINGS}. Received: kind={kind!r}")
        if not softening > 0 or not math.isfinite(softening):
            raise ValueError(f"softening must be a finite number > 0. Received: softening={softening!r}")
        self.kind = kind
        self.softening = float(softening)
        self.supports_masking = True

    def call(self, flux):
        flux = ops.cast(flux, "float32")
        if self.kind == "asinh":
            return ops.arcsinh(flux / self.softening)
        if self.kind == "log":
            return ops.log(ops.maximum(flux, 0.0) / self.softening + 1.0) / _LN10
        return flux

    def inverse(self, scaled):
        """Physical fluxes from scaled values (the inverse of ``call``)."""
        scaled = ops.cast(scaled, "float32")
        if self.kind == "asinh":
            return self.softening * ops.sinh(scaled)
        if self.kind == "log":
            return self.softening * (ops.exp(scaled * _LN10) - 1.0)
        return scaled

    def derivative(self, flux):
        """``d scaled / d flux`` at ``flux``: propagates flux errors into scaled space.

        For ``"log"`` the derivative is taken at ``max(flux, 0)``, so negative (noise)
        fluxes get the finite slope of ``flux = 0`` rather than 0.
        """
        flux = ops.cast(flux, "float32")
        if self.kind == "asinh":
            return ops.rsqrt(ops.square(flux) + self.softening**2)
        if self.kind == "log":
            return 1.0 / ((ops.maximum(flux, 0.0) + self.softening) * _LN10)
        return ops.ones_like(flux)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "softening": self.softening}
