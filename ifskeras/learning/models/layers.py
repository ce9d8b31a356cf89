"""ConvLSTM encoder and decoder over the wavelength-ordered sequence of line maps."""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["ConvLSTMEncoder", "ConvLSTMDecoder", "check_architecture"]


def check_architecture(*, filters, kernel_size, size=None, num_lines=None) -> tuple[int, ...]:
    """Validate the shared architecture arguments; returns ``filters`` as a tuple of ints."""
    try:
        filters = tuple(int(f) for f in filters)
    except (TypeError, ValueError):
        message = f"filters must be a non-empty sequence of positive ints. Received: filters={filters!r}"
        raise ValueError(message) from None
    if not filters or min(filters) <= 0:
        raise ValueError(f"filters must be a non-empty sequence of positive ints. Received: filters={filters!r}")
    if int(kernel_size) != kernel_size or kernel_size <= 0:
        raise ValueError(f"kernel_size must be a positive int. Received: kernel_size={kernel_size!r}")
    if num_lines is not None and (int(num_lines) != num_lines or num_lines <= 0):
        raise ValueError(f"num_lines must be a positive int. Received: num_lines={num_lines!r}")
    if size is not None:
        factor = 2 ** len(filters)
        if int(size) != size or size <= 0 or size % factor:
            raise ValueError(
                f"size must be a positive multiple of 2**len(filters) = {factor} (one 2x downsampling per "
                f"encoder layer). Received: size={size!r} with filters={filters!r}"
            )
    return filters


def _merge_lines(x):
    """[B, L, H, W, C] -> [B * L, H, W, C]."""
    return ops.reshape(x, (-1, *x.shape[2:]))


def _split_lines(x, num_lines):
    """[B * L, H, W, C] -> [B, L, H, W, C]."""
    return ops.reshape(x, (-1, num_lines, *x.shape[1:]))


@keras.saving.register_keras_serializable(package="ifskeras")
class ConvLSTMEncoder(keras.layers.Layer):
    """Stacked ConvLSTM2D layers over the line axis, each halving the map size.

    Input [B, L, S, S, C] (scaled maps); output [B, (S / 2**n)**2 * filters[-1]]: the
    last state of the final ConvLSTM (after it has read all L lines), flattened.

    Parameters
    ----------
    filters : sequence of int
        Filters of each ConvLSTM2D layer, one 2x downsampling per layer.
    kernel_size : int
        Square kernel of the input and recurrent convolutions.

    The input convolution of each ConvLSTM has stride 2, so the recurrence runs at
    the reduced size.
    """

    def __init__(self, filters=(16, 32), kernel_size: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_architecture(filters=filters, kernel_size=kernel_size)
        self.kernel_size = int(kernel_size)
        last = len(self.filters) - 1
        self.recurrent_layers = [
            keras.layers.ConvLSTM2D(
                f,
                self.kernel_size,
                strides=2,
                padding="same",
                return_sequences=i < last,
                unroll=True,
                dtype=self.dtype_policy,
                name=f"conv_lstm_{i}",
            )
            for i, f in enumerate(self.filters)
        ]
        self.flatten = keras.layers.Flatten(dtype=self.dtype_policy, name="flatten")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.recurrent_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs, training=None):
        x = inputs
        for layer in self.recurrent_layers:
            x = layer(x, training=training)
        return self.flatten(x)

    def compute_output_shape(self, input_shape):
        reduced = input_shape[2] // 2 ** len(self.filters) if input_shape[2] is not None else None
        width = reduced * reduced * self.filters[-1] if reduced is not None else None
        return (input_shape[0], width)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
        }

    @classmethod
    def from_config(cls, config):
        # Models saved before the unused "pool" option was removed store downsampling="stride".
        config = {k: v for k, v in config.items() if k != "downsampling"}
        return cls(**config)


@keras.saving.register_keras_serializable(package="ifskeras")
class ConvLSTMDecoder(keras.layers.Layer):
    """Latent vector -> [B, L, S, S, 1] scaled maps, mirroring :class:`ConvLSTMEncoder`.

    A Dense layer maps the latent vector to a (S / 2**n) x (S / 2**n) x filters[-1]
    map, which is repeated over the L steps with a learned per-line embedding added
    (so each step knows which line it draws). ConvLSTM2D layers (filters reversed),
    each followed by a 2x bilinear upsampling, bring it back to S x S, and a linear
    Conv2D(1) applied to every line gives the output, in float32 under any policy.

    Parameters
    ----------
    num_lines, size : int
        L and S of the output.
    filters, kernel_size
        As in the encoder (the decoder reverses ``filters``).
    """

    def __init__(self, num_lines: int, size: int, filters=(16, 32), kernel_size: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_architecture(filters=filters, kernel_size=kernel_size, size=size, num_lines=num_lines)
        self.num_lines = int(num_lines)
        self.size = int(size)
        self.kernel_size = int(kernel_size)
        self.base_size = self.size // 2 ** len(self.filters)
        self.dense = keras.layers.Dense(
            self.base_size * self.base_size * self.filters[-1], dtype=self.dtype_policy, name="dense"
        )
        self.recurrent_layers = [
            keras.layers.ConvLSTM2D(
                f,
                self.kernel_size,
                padding="same",
                return_sequences=True,
                unroll=True,
                dtype=self.dtype_policy,
                name=f"conv_lstm_{i}",
            )
            for i, f in enumerate(reversed(self.filters))
        ]
        self.upsample = keras.layers.UpSampling2D(2, interpolation="bilinear", dtype=self.dtype_policy, name="upsample")
        self.output_conv = keras.layers.Conv2D(1, self.kernel_size, padding="same", dtype="float32", name="output_conv")

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.line_embedding = self.add_weight(
            shape=(self.num_lines, 1, 1, self.filters[-1]),
            initializer=keras.initializers.RandomNormal(stddev=0.05),
            name="line_embedding",
        )
        size, channels = self.base_size, self.filters[-1]
        for layer in self.recurrent_layers:
            layer.build((None, self.num_lines, size, size, channels))
            size, channels = 2 * size, layer.filters
        self.output_conv.build((None, self.size, self.size, channels))

    def call(self, latent, training=None):
        x = self.dense(latent)
        x = ops.reshape(x, (-1, 1, self.base_size, self.base_size, self.filters[-1]))
        x = x + ops.cast(self.line_embedding, x.dtype)[None]
        for layer in self.recurrent_layers:
            x = layer(x, training=training)
            x = _split_lines(self.upsample(_merge_lines(x)), self.num_lines)
        return _split_lines(self.output_conv(_merge_lines(x)), self.num_lines)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_lines, self.size, self.size, 1)

    def get_config(self):
        return {
            **super().get_config(),
            "num_lines": self.num_lines,
            "size": self.size,
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
        }
