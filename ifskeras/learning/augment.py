"""On-device augmentation of galaxies: one random transform per galaxy, shared by its lines.

A galaxy is three [L, S, S, 1] tensors (flux, ivar, valid); the lines are folded into
channels ([B, L, S, S, 1] -> [B, S, S, L]) so that every line, the inverse variance and
the valid mask of one galaxy move together, while each galaxy of a batch draws its own
transform. All randomness comes from stateless ops seeded by a [2] integer ``seed``,
so a run is repeatable and each replica of a distributed run can get its own seed.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

__all__ = ["GalaxyAugment", "apply_dihedral", "dihedral_galaxies", "INTERPOLATIONS"]

INTERPOLATIONS = ("bilinear", "nearest")
#: A bilinearly resampled pixel stays valid only if its interpolation weights on valid
#: input pixels sum to at least this (1 up to float rounding): no hole leaks into it.
VALID_WEIGHT_THRESHOLD = 0.999
_MAX_SEED = 2**31 - 1
#: Stateless RNG algorithm, fixed so XLA-compiled and plain graphs draw the same numbers.
RNG_ALGORITHM = "philox"


def apply_dihedral(images, index):
    """Apply one of the 8 symmetries of the square to each image of a batch.

    Parameters
    ----------
    images : tensor [B, S, S, C]
        Square images; all channels of an image get the same symmetry.
    index : int tensor [B]
        ``index % 4`` quarter turns, then a left-right flip if ``index >= 4``.
        Index 0 is the identity.

    Per-sample selection uses ``tf.where`` masks (no gather or control flow), so the
    op compiles under XLA.
    """
    index = tf.reshape(tf.cast(index, tf.int32), (-1, 1, 1, 1))
    quarter_turns = index % 4
    transposed = tf.transpose(images, (0, 2, 1, 3))
    rotated = tf.where(
        quarter_turns == 0,
        images,
        tf.where(
            quarter_turns == 1,
            tf.reverse(transposed, axis=[1]),
            tf.where(quarter_turns == 2, tf.reverse(images, axis=[1, 2]), tf.reverse(transposed, axis=[2])),
        ),
    )
    return tf.where(index >= 4, tf.reverse(rotated, axis=[2]), rotated)


def _dihedral_source_pixels(size: int) -> np.ndarray:
    """[8, size * size] int32: for symmetry ``k``, the flat input pixel each output pixel reads.

    Built by applying :func:`apply_dihedral`'s symmetries (same index convention) to
    a grid of pixel numbers.
    """
    grid = np.arange(size * size, dtype=np.int32).reshape(size, size)
    maps = []
    for index in range(8):
        moved = np.rot90(grid, index % 4)
        maps.append((moved[:, ::-1] if index >= 4 else moved).ravel())
    return np.stack(maps)


def dihedral_galaxies(cubes, index):
    """Apply one symmetry of the square per galaxy to [B, L, S, S, 1] cubes.

    Same result as :func:`apply_dihedral` on the lines folded into channels, but as one
    ``tf.gather`` of whole pixels (the L values of a pixel are contiguous after one
    transpose) through precomputed index maps: 3x faster than the ``tf.where`` chain at
    19 x 64 x 64 on CPU, and gather compiles under XLA. Needs a static square size;
    falls back to :func:`apply_dihedral` otherwise.
    """
    size = cubes.shape[-2]
    if size is None or cubes.shape[-3] != size:
        return _unfold_lines(apply_dihedral(_fold_lines(cubes), index))
    sources = tf.gather(tf.constant(_dihedral_source_pixels(size)), tf.cast(index, tf.int32))  # [B, S*S]
    shape = tf.shape(cubes)
    pixels = tf.transpose(tf.reshape(cubes, tf.stack([shape[0], shape[1], size * size])), (0, 2, 1))  # [B, S*S, L]
    moved = tf.gather(pixels, sources, axis=1, batch_dims=1)
    return tf.reshape(tf.transpose(moved, (0, 2, 1)), shape)


def _mask_and_flip(flux, ivar, valid, index):
    """Zero the invalid pixels, then apply symmetry ``index[b]`` to galaxy ``b`` (None: none).

    Invalid pixels (which may hold NaN) become exact zeros first, so no later op can
    carry their values into a valid pixel and the output is clean.
    """
    valid = tf.cast(valid > 0, tf.float32)
    flux = tf.where(valid > 0, flux, 0.0)
    ivar = None if ivar is None else tf.where(valid > 0, ivar, 0.0)
    if index is not None:
        flux, ivar, valid = (None if t is None else dihedral_galaxies(t, index) for t in (flux, ivar, valid))
    return flux, ivar, valid


#: The same ops compiled by XLA, which fuses the masking into the gathers: about 45% less
#: CPU time per [16, 19, 64, 64, 1] batch (pure data movement, so bit-identical results).
_mask_and_flip_xla = tf.function(_mask_and_flip, jit_compile=True)


def _fold_in(seed, data):
    """An independent seed for one random op, derived from the call's seed."""
    return tf.random.experimental.stateless_fold_in(seed, data, alg=RNG_ALGORITHM)


def _fold_lines(x):
    """[B, L, S, S, 1] -> [B, S, S, L]."""
    return tf.transpose(x[..., 0], (0, 2, 3, 1))


def _unfold_lines(x):
    """[B, S, S, L] -> [B, L, S, S, 1]."""
    return tf.transpose(x, (0, 3, 1, 2))[..., None]


@keras.saving.register_keras_serializable(package="ifskeras")
class GalaxyAugment(keras.layers.Layer):
    """Random symmetries, small rotations and shifts, and noise, one draw per galaxy.

    Called as ``augment(flux, ivar, valid, training=True, seed=None)`` on [B, L, S, S, 1]
    tensors (or one unbatched [L, S, S, 1] galaxy, e.g. in ``tf.data`` before
    batching); returns ``(flux, ivar, valid)`` of the same shapes, float32. ``ivar``
    may be None when nothing downstream reads it (then None comes back and no work is
    spent moving it; ``ivar_noise`` needs it). With ``training=False`` the inputs come
    back unchanged. In training, fluxes and ivar are first set to 0 at invalid pixels
    (``valid`` to exactly 0 or 1); then, in this order:

    1. ``dihedral``: one of the 8 symmetries of the square (quarter turns and a flip);
       exact, no interpolation.
    2. ``max_rotation_degrees`` / ``max_translation_pixels``: a rotation by a uniform
       angle in [-max, max] about the map centre and a uniform shift in [-max, max]
       pixels per axis (``tf.raw_ops.ImageProjectiveTransformV3``; pixels from outside
       the map are invalid). With ``interpolation="bilinear"`` the op resamples
       ``flux * valid``, ``variance * valid`` and ``valid``; a pixel stays valid only if
       its weights on valid input pixels sum to >= 0.999, and its flux and variance are
       the valid-weighted averages (the interpolated variance is an upper bound on the
       true variance of the average). Values at invalid pixels never enter a valid
       one. ``"nearest"`` moves whole pixels, masks included. Skipped when both are 0,
       so the dihedral-only layer compiles under XLA (the projective op does not).
    3. ``ivar_noise``: adds ``N(0, 1 / ivar)`` noise at valid pixels and halves ivar
       there (the new flux carries twice the variance).

    Random draws use stateless ops seeded by ``seed`` (a [2] int tensor; the trainer
    passes a different one per step and replica); without one, a seed is drawn from
    the layer's ``keras.random.SeedGenerator`` (same numbers on every replica).

    Parameters
    ----------
    dihedral : bool
        Random rotations by multiples of 90 degrees and flips.
    max_rotation_degrees : float
        Largest extra rotation, in [0, 180].
    max_translation_pixels : float
        Largest shift per axis, >= 0.
    ivar_noise : bool
        Add noise drawn from the inverse variances.
    interpolation : {"bilinear", "nearest"}
        Resampling of the rotation and shift.
    seed : int or None
        Seed of the fallback ``SeedGenerator``.
    jit_compile : bool
        Compile the masking and the symmetries with XLA (same numbers, about half the
        CPU time; one compilation per input shape, well under a second). The rotation
        and shift op is never compiled (XLA does not support it).

    Examples
    --------
    >>> augment = GalaxyAugment(dihedral=True, max_translation_pixels=2.0)
    >>> flux = ivar = valid = keras.ops.ones((4, 19, 32, 32, 1))
    >>> flux, ivar, valid = augment(flux, ivar, valid, training=True, seed=[1, 2])
    """

    def __init__(
        self,
        dihedral: bool = True,
        max_rotation_degrees: float = 0.0,
        max_translation_pixels: float = 0.0,
        ivar_noise: bool = False,
        interpolation: str = "bilinear",
        seed: int | None = None,
        jit_compile: bool = True,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not (math.isfinite(max_rotation_degrees) and 0.0 <= max_rotation_degrees <= 180.0):
            raise ValueError(
                f"max_rotation_degrees must be in [0, 180]. Received: max_rotation_degrees={max_rotation_degrees!r}"
            )
        if not (math.isfinite(max_translation_pixels) and max_translation_pixels >= 0.0):
            raise ValueError(
                "max_translation_pixels must be a finite number >= 0. "
                f"Received: max_translation_pixels={max_translation_pixels!r}"
            )
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {INTERPOLATIONS}. Received: interpolation={interpolation!r}"
            )
        self.dihedral = bool(dihedral)
        self.max_rotation_degrees = float(max_rotation_degrees)
        self.max_translation_pixels = float(max_translation_pixels)
        self.ivar_noise = bool(ivar_noise)
        self.interpolation = interpolation
        self.seed = seed
        self.jit_compile = bool(jit_compile)
        self.seed_generator = keras.random.SeedGenerator(seed, name="augment_seed_generator")

    @classmethod
    def from_augment_config(cls, config, **kwargs) -> "GalaxyAugment":
        """The layer an :class:`ifskeras.learning.config.AugmentConfig` describes."""
        return cls(
            dihedral=config.dihedral,
            max_rotation_degrees=config.max_rotation_degrees,
            max_translation_pixels=config.max_translation_pixels,
            ivar_noise=config.ivar_noise,
            **kwargs,
        )

    @property
    def is_identity(self) -> bool:
        """True if training changes nothing (beyond zeroing invalid pixels)."""
        return not (self.dihedral or self.max_rotation_degrees or self.max_translation_pixels or self.ivar_noise)

    def build(self, *args, **kwargs):
        self.built = True

    def call(self, flux, ivar, valid, training=None, seed=None):
        if ivar is None and self.ivar_noise:
            raise ValueError("ivar_noise draws noise from the inverse variances: pass ivar, not None")
        flux, valid = tf.cast(flux, tf.float32), tf.cast(valid, tf.float32)
        ivar = None if ivar is None else tf.cast(ivar, tf.float32)
        if not training:
            return flux, ivar, valid
        unbatched = flux.shape.rank == 4
        if unbatched:
            flux, ivar, valid = (None if t is None else t[None] for t in (flux, ivar, valid))
        if seed is None:
            seed = keras.random.randint((2,), 0, _MAX_SEED, seed=self.seed_generator, dtype="int32")
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
        flux, ivar, valid = self._transform(flux, ivar, valid, seed)
        if unbatched:
            flux, ivar, valid = (None if t is None else t[0] for t in (flux, ivar, valid))
        return flux, ivar, valid

    def _transform(self, flux, ivar, valid, seed):
        index = None
        if self.dihedral:
            index = tf.random.stateless_uniform(
                (tf.shape(flux)[0],), seed=_fold_in(seed, 0), maxval=8, dtype=tf.int32, alg=RNG_ALGORITHM
            )
        mask_and_flip = _mask_and_flip_xla if self.jit_compile else _mask_and_flip
        flux, ivar, valid = mask_and_flip(flux, ivar, valid, index)
        if self.max_rotation_degrees > 0 or self.max_translation_pixels > 0:
            flux, ivar, valid = self._resample(flux, ivar, valid, _fold_in(seed, 1))
        if self.ivar_noise:
            noise = tf.random.stateless_normal(tf.shape(flux), seed=_fold_in(seed, 2), alg=RNG_ALGORITHM)
            used = (valid > 0) & (ivar > 0)
            flux = tf.where(used, flux + noise * tf.math.rsqrt(tf.where(used, ivar, 1.0)), flux)
            ivar = tf.where(used, 0.5 * ivar, ivar)
        return flux, ivar, valid

    def _resample(self, flux, ivar, valid, seed):
        """Rotate and shift each galaxy (all lines, ivar and mask alike)."""
        num_lines = flux.shape[1]
        size = tf.shape(flux)[2]
        batch = tf.shape(flux)[0]
        draws = tf.random.stateless_uniform((batch, 3), seed=seed, minval=-1.0, maxval=1.0, alg=RNG_ALGORITHM)
        angle = draws[:, 0] * (self.max_rotation_degrees * math.pi / 180.0)
        shift_x = draws[:, 1] * self.max_translation_pixels
        shift_y = draws[:, 2] * self.max_translation_pixels
        centre = (tf.cast(size, tf.float32) - 1.0) / 2.0
        cos, sin = tf.cos(angle), tf.sin(angle)
        # Output pixel (x, y) reads input R(angle) (p - centre - shift) + centre.
        transforms = tf.stack(
            [
                cos,
                -sin,
                centre - cos * (centre + shift_x) + sin * (centre + shift_y),
                sin,
                cos,
                centre - sin * (centre + shift_x) - cos * (centre + shift_y),
                tf.zeros_like(cos),
                tf.zeros_like(cos),
            ],
            axis=1,
        )
        planes = [flux * valid, valid]
        if ivar is not None:
            planes.append(tf.where(valid > 0, tf.math.reciprocal_no_nan(ivar), 0.0) * valid)
        images = tf.concat([_fold_lines(t) for t in planes], axis=-1)
        moved = tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=transforms,
            output_shape=tf.shape(images)[1:3],
            fill_value=0.0,
            interpolation=self.interpolation.upper(),
            fill_mode="CONSTANT",
        )
        flux_sum, weight, *variance_sum = (
            _unfold_lines(t) for t in tf.split(moved, len(planes) * [num_lines], axis=-1)
        )
        valid = tf.cast(weight >= VALID_WEIGHT_THRESHOLD, tf.float32)
        flux = tf.where(valid > 0, tf.math.divide_no_nan(flux_sum, weight), 0.0)
        if ivar is None:
            return flux, None, valid
        variance = tf.where(valid > 0, tf.math.divide_no_nan(variance_sum[0], weight), 0.0)
        return flux, tf.math.reciprocal_no_nan(variance), valid

    def compute_output_shape(self, flux_shape, ivar_shape=None, valid_shape=None):
        return flux_shape, flux_shape, flux_shape

    def get_config(self):
        return {
            **super().get_config(),
            "dihedral": self.dihedral,
            "max_rotation_degrees": self.max_rotation_degrees,
            "max_translation_pixels": self.max_translation_pixels,
            "ivar_noise": self.ivar_noise,
            "interpolation": self.interpolation,
            "seed": self.seed,
            "jit_compile": self.jit_compile,
        }
