"""GalaxyAugment and apply_dihedral: one transform per galaxy, masks kept, stateless seeds."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ifskeras.learning.augment import GalaxyAugment, apply_dihedral, dihedral_galaxies
from ifskeras.learning.config import AugmentConfig

BATCH, LINES, SIZE = 4, 3, 8
SEED = tf.constant([11, 12], tf.int32)

ALL_OPS = {"dihedral": True, "max_rotation_degrees": 15.0, "max_translation_pixels": 1.5, "ivar_noise": True}
OP_VARIANTS = {
    "dihedral": {"dihedral": True},
    "rotation": {"dihedral": False, "max_rotation_degrees": 20.0},
    "translation": {"dihedral": False, "max_translation_pixels": 2.0},
    "nearest": {"dihedral": False, "max_rotation_degrees": 20.0, "interpolation": "nearest"},
    "noise": {"dihedral": False, "ivar_noise": True},
    "all": ALL_OPS,
}


@pytest.fixture(scope="module")
def galaxies():
    """Asymmetric maps whose lines are scaled copies of one image: [B, L, S, S, 1] each."""
    rng = np.random.default_rng(3)
    image = rng.uniform(1.0, 2.0, (BATCH, 1, SIZE, SIZE))
    flux = image * np.arange(1, LINES + 1).reshape(1, LINES, 1, 1)
    ivar = rng.uniform(50.0, 100.0, flux.shape)
    valid = np.ones_like(flux)
    valid[:, :, 0, :3] = 0
    valid[:, :, 5, 6] = 0
    return tuple(tf.constant(a[..., None], tf.float32) for a in (flux, ivar, valid))


def square_symmetries(image):
    """The 8 images of a 2D array under the symmetries of the square (numpy)."""
    rotations = [np.rot90(image, k) for k in range(4)]
    return rotations + [np.fliplr(r) for r in rotations]


# ---------------------------------------------------------------- dihedral group
def test_dihedral_gives_the_eight_symmetries():
    image = np.arange(SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)
    images = tf.constant(np.broadcast_to(image[None, :, :, None], (8, SIZE, SIZE, 1)))
    results = apply_dihedral(images, tf.range(8)).numpy()[..., 0]
    assert len({r.tobytes() for r in results}) == 8
    expected = {s.tobytes() for s in square_symmetries(image)}
    assert {r.tobytes() for r in results} == expected
    np.testing.assert_array_equal(results[0], image)


@pytest.mark.parametrize("size", [SIZE, 5])
def test_dihedral_galaxies_matches_apply_dihedral(size):
    """The gather path equals the transpose/reverse path for every symmetry, odd sizes too."""
    cubes = tf.constant(np.random.default_rng(0).normal(size=(8, LINES, size, size, 1)), tf.float32)
    folded = tf.transpose(cubes[..., 0], (0, 2, 3, 1))
    expected = tf.transpose(apply_dihedral(folded, tf.range(8)), (0, 3, 1, 2))[..., None]
    np.testing.assert_array_equal(dihedral_galaxies(cubes, tf.range(8)), expected)
    dynamic = tf.function(dihedral_galaxies, input_signature=[
        tf.TensorSpec([None, LINES, None, None, 1]), tf.TensorSpec([None], tf.int32)])
    np.testing.assert_array_equal(dynamic(cubes, tf.range(8)), expected)  # falls back without a static size


@pytest.mark.parametrize("variant", [v for v in OP_VARIANTS if v not in ("noise", "all")])
def test_without_ivar_flux_and_mask_are_unchanged(variant, galaxies):
    """Passing ivar=None (nothing reads it) skips its work and changes nothing else."""
    flux, ivar, valid = galaxies
    augment = GalaxyAugment(**OP_VARIANTS[variant])
    with_ivar = augment(flux, ivar, valid, training=True, seed=SEED)
    without = augment(flux, None, valid, training=True, seed=SEED)
    assert without[1] is None
    np.testing.assert_array_equal(without[0], with_ivar[0])
    np.testing.assert_array_equal(without[2], with_ivar[2])
    assert augment(flux[0], None, valid[0], training=True, seed=SEED)[1] is None
    with pytest.raises(ValueError, match="ivar_noise.*pass ivar"):
        GalaxyAugment(ivar_noise=True)(flux, None, valid, training=True, seed=SEED)


def test_dihedral_compiles_under_xla(galaxies):
    flux, ivar, valid = galaxies
    augment = GalaxyAugment(dihedral=True)
    compiled = tf.function(lambda f, i, v: augment(f, i, v, training=True, seed=SEED), jit_compile=True)
    for got, expected in zip(compiled(flux, ivar, valid), augment(flux, ivar, valid, training=True, seed=SEED)):
        np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------- properties
@pytest.mark.parametrize("variant", OP_VARIANTS)
def test_same_transform_for_every_line(variant, galaxies):
    flux, ivar, valid = galaxies
    flux_out, _, valid_out = GalaxyAugment(**{**OP_VARIANTS[variant], "ivar_noise": False})(
        flux, ivar, valid, training=True, seed=SEED
    )
    ratios = flux_out.numpy() / np.arange(1, LINES + 1).reshape(1, LINES, 1, 1, 1)
    np.testing.assert_allclose(ratios, np.broadcast_to(ratios[:, :1], ratios.shape), rtol=1e-5)
    np.testing.assert_array_equal(valid_out, np.broadcast_to(valid_out[:, :1], valid_out.shape))


@pytest.mark.parametrize("variant", OP_VARIANTS)
def test_galaxies_get_different_transforms(variant, galaxies):
    flux, ivar, valid = galaxies
    same = tf.repeat(flux[:1], BATCH, axis=0), tf.repeat(ivar[:1], BATCH, axis=0), tf.repeat(valid[:1], BATCH, axis=0)
    flux_out, _, _ = GalaxyAugment(**OP_VARIANTS[variant])(*same, training=True, seed=SEED)
    assert len({f.tobytes() for f in flux_out.numpy()}) > 1


@pytest.mark.parametrize("variant", OP_VARIANTS)
def test_masks_stay_aligned(variant, galaxies):
    flux, ivar, valid = galaxies
    poisoned_flux = tf.where(valid > 0, flux, 1e6)
    poisoned_ivar = tf.where(valid > 0, ivar, 1e-12)
    augment = GalaxyAugment(**OP_VARIANTS[variant])
    clean = augment(flux, ivar, valid, training=True, seed=SEED)
    flux_out, ivar_out, valid_out = augment(poisoned_flux, poisoned_ivar, valid, training=True, seed=SEED)
    for got, expected in zip((flux_out, ivar_out, valid_out), clean):
        np.testing.assert_array_equal(got, expected)  # values at invalid pixels never leak
    assert set(np.unique(valid_out.numpy())) <= {0.0, 1.0}
    invalid = valid_out.numpy() == 0
    assert np.all(flux_out.numpy()[invalid] == 0) and np.all(ivar_out.numpy()[invalid] == 0)
    assert np.all(ivar_out.numpy()[~invalid] > 0)
    assert valid_out.numpy().sum() <= valid.numpy().sum()


def test_dihedral_moves_mask_with_flux(galaxies):
    flux, ivar, valid = galaxies
    flux_out, ivar_out, valid_out = GalaxyAugment(dihedral=True)(flux, ivar, valid, training=True, seed=SEED)
    for b in range(BATCH):
        original = [s for s in square_symmetries(valid.numpy()[b, 0, ..., 0])]
        k = next(i for i, s in enumerate(original) if np.array_equal(s, valid_out.numpy()[b, 0, ..., 0]))
        for line in range(LINES):
            np.testing.assert_array_equal(
                flux_out.numpy()[b, line, ..., 0], square_symmetries((flux * valid).numpy()[b, line, ..., 0])[k]
            )
            np.testing.assert_array_equal(
                ivar_out.numpy()[b, line, ..., 0], square_symmetries((ivar * valid).numpy()[b, line, ..., 0])[k]
            )


def test_nearest_integer_shift_is_exact(galaxies):
    flux, ivar, valid = galaxies
    augment = GalaxyAugment(dihedral=False, max_translation_pixels=3.0, interpolation="nearest")
    flux_out, _, valid_out = augment(flux, ivar, valid, training=True, seed=SEED)
    kept = flux_out.numpy()[valid_out.numpy() > 0]
    assert np.all(np.isin(kept, (flux * valid).numpy()))


def test_noise_follows_ivar(galaxies):
    flux, ivar, valid = galaxies
    many = 64
    big = [tf.repeat(t, many, axis=0) for t in (flux, ivar, valid)]
    flux_out, ivar_out, valid_out = GalaxyAugment(dihedral=False, ivar_noise=True)(*big, training=True, seed=SEED)
    pulls = ((flux_out - big[0]) * tf.sqrt(big[1])).numpy()[big[2].numpy() > 0]
    assert abs(pulls.mean()) < 0.05 and abs(pulls.std() - 1.0) < 0.05
    np.testing.assert_allclose(ivar_out.numpy()[big[2].numpy() > 0], 0.5 * big[1].numpy()[big[2].numpy() > 0])
    np.testing.assert_array_equal(valid_out, big[2])


# ---------------------------------------------------------------- randomness and modes
def test_identity_at_inference(galaxies):
    augment = GalaxyAugment(**ALL_OPS)
    for got, expected in zip(augment(*galaxies, training=False, seed=SEED), galaxies):
        np.testing.assert_array_equal(got, expected)
    for got, expected in zip(augment(*galaxies, training=False), galaxies):
        np.testing.assert_array_equal(got, expected)


def test_fixed_seed_is_deterministic(galaxies):
    first = GalaxyAugment(**ALL_OPS)(*galaxies, training=True, seed=SEED)
    second = GalaxyAugment(**ALL_OPS)(*galaxies, training=True, seed=SEED)
    other = GalaxyAugment(**ALL_OPS)(*galaxies, training=True, seed=tf.constant([11, 13], tf.int32))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_seed_generator_when_no_seed(galaxies):
    augment = GalaxyAugment(**ALL_OPS, seed=5)
    first = augment(*galaxies, training=True)[0]
    assert not np.array_equal(first, augment(*galaxies, training=True)[0])
    np.testing.assert_array_equal(GalaxyAugment(**ALL_OPS, seed=5)(*galaxies, training=True)[0], first)


@pytest.mark.parametrize("variant", OP_VARIANTS)
def test_same_result_eager_tf_function_and_dataset_map(variant, galaxies):
    augment = GalaxyAugment(**OP_VARIANTS[variant])
    eager = augment(*galaxies, training=True, seed=SEED)
    traced = tf.function(lambda f, i, v: augment(f, i, v, training=True, seed=SEED))(*galaxies)
    dataset = tf.data.Dataset.from_tensors(galaxies).map(lambda f, i, v: augment(f, i, v, training=True, seed=SEED))
    mapped = next(iter(dataset))
    for a, b, c in zip(eager, traced, mapped):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(c, a, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant", OP_VARIANTS)
def test_xla_compiled_masking_and_symmetries_give_the_same_numbers(variant, galaxies):
    """jit_compile=True (the default) changes no output bit; NaN at invalid pixels never leaks."""
    flux, ivar, valid = galaxies
    flux = tf.where(valid > 0, flux, np.nan)  # invalid pixels hold NaN: both must zero them
    compiled = GalaxyAugment(**OP_VARIANTS[variant])(flux, ivar, valid, training=True, seed=SEED)
    plain = GalaxyAugment(**OP_VARIANTS[variant], jit_compile=False)(flux, ivar, valid, training=True, seed=SEED)
    for a, b in zip(compiled, plain):
        assert np.isfinite(a.numpy()).all()
        np.testing.assert_array_equal(a, b)


def test_xla_function_is_the_one_called(galaxies, monkeypatch):
    from ifskeras.learning import augment as augment_module

    calls = []

    def counted(*args):
        calls.append(1)
        return augment_module._mask_and_flip(*args)

    monkeypatch.setattr(augment_module, "_mask_and_flip_xla", counted)
    GalaxyAugment(dihedral=True)(*galaxies, training=True, seed=SEED)
    GalaxyAugment(dihedral=True, jit_compile=False)(*galaxies, training=True, seed=SEED)
    assert calls == [1]


def test_dataset_map_unbatched_and_without_seed(galaxies):
    augment = GalaxyAugment(**ALL_OPS, seed=1)
    dataset = tf.data.Dataset.from_tensor_slices(galaxies).map(lambda f, i, v: augment(f, i, v, training=True))
    outputs = list(dataset)
    assert len(outputs) == BATCH
    assert all(t.shape == (LINES, SIZE, SIZE, 1) and t.dtype == tf.float32 for out in outputs for t in out)


# ---------------------------------------------------------------- construction
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_rotation_degrees": -1.0}, "Received: max_rotation_degrees=-1.0"),
        ({"max_rotation_degrees": 200.0}, "Received: max_rotation_degrees=200.0"),
        ({"max_translation_pixels": -0.5}, "Received: max_translation_pixels=-0.5"),
        ({"max_translation_pixels": float("nan")}, "Received: max_translation_pixels=nan"),
        ({"interpolation": "cubic"}, "Received: interpolation='cubic'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=f"{message}$"):
        GalaxyAugment(**kwargs)


def test_config_round_trip(galaxies):
    augment = GalaxyAugment(**ALL_OPS, interpolation="nearest", seed=4, jit_compile=False)
    restored = keras.layers.deserialize(keras.layers.serialize(augment))
    assert isinstance(restored, GalaxyAugment)
    assert restored.get_config() == augment.get_config()
    for a, b in zip(restored(*galaxies, training=True, seed=SEED), augment(*galaxies, training=True, seed=SEED)):
        np.testing.assert_array_equal(a, b)


def test_from_augment_config():
    config = AugmentConfig(dihedral=False, max_rotation_degrees=5.0, max_translation_pixels=1.0, ivar_noise=True)
    augment = GalaxyAugment.from_augment_config(config)
    assert (augment.dihedral, augment.max_rotation_degrees, augment.max_translation_pixels, augment.ivar_noise) == (
        False,
        5.0,
        1.0,
        True,
    )
