"""Property-based checks (hypothesis): exact record round trips, exact FITS reading, no leak of masked pixels.

Each property holds for *any* input the strategies draw, including float32 edge cases
(subnormals, negative zero, the largest finite values) and garbage (NaN, inf, 1e38,
negative ivar) at masked pixels. Examples are derandomized, so a run is repeatable.
"""

from __future__ import annotations

import functools
import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ifskeras.survey.lines import DR15_LINES
from ifskeras.survey.maps import DAP_MASK_BITS, MAX_ABS_FLUX, read_maps
from ifskeras.survey.preprocess import DEFAULT_MIN_COVERAGE, PreprocessError, to_grid
from ifskeras.records import decode_galaxy, encode_example

PROPERTY_SETTINGS = settings(
    max_examples=30, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TF_SETTINGS = settings(PROPERTY_SETTINGS, max_examples=15)

FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Any finite float32, subnormals and -0.0 included.
FINITE32 = st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True)
#: Values a masked pixel may hold in a real file: they must never reach a valid output pixel.
GARBAGE = np.array([np.nan, np.inf, -np.inf, 1e38, -1e38, -7.0, 0.0, 3.0e-39], np.float32)
EDGE_VALUES = np.array([0.0, -0.0, 1e-45, -1e-45, 1.1754942e-38, FLOAT32_MAX, -FLOAT32_MAX, 1.0], np.float32)


def bits(array) -> np.ndarray:
    """The raw float32 bit patterns (so -0.0 != 0.0 and every subnormal is compared exactly)."""
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)


@st.composite
def finite_cubes(draw, max_lines: int = 3, max_size: int = 6):
    """(flux, ivar, valid) [L, S, S] of arbitrary finite float32 values."""
    shape = (draw(st.integers(1, max_lines)), *(2 * [draw(st.integers(1, max_size))]))
    flux = draw(arrays(np.float32, shape, elements=FINITE32))
    ivar = draw(arrays(np.float32, shape, elements=FINITE32))
    valid = draw(arrays(np.bool_, shape))
    return flux, ivar, valid


@st.composite
def maps_of_shape(draw, shape):
    """Plausible (flux, ivar, valid) maps of ``shape`` plus two garbage fillings of the masked pixels."""
    valid = draw(arrays(np.bool_, shape, elements=st.booleans(), fill=st.nothing()))  # each pixel drawn
    flux = draw(arrays(np.float32, shape, elements=st.floats(-1e6, 1e6, width=32)))
    ivar = draw(arrays(np.float32, shape, elements=st.floats(2.0**-10, 1e6, width=32)))
    picks = st.integers(0, len(GARBAGE) - 1)
    fillings = [tuple(GARBAGE[draw(arrays(np.int64, shape, elements=picks))] for _ in range(2)) for _ in range(2)]
    return flux, ivar, valid, fillings


@st.composite
def masked_maps(draw, max_lines: int = 3, max_side: int = 12):
    """:func:`maps_of_shape` of a random [L, H, W]."""
    shape = (draw(st.integers(1, max_lines)), draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    return draw(maps_of_shape(shape))


def poisoned(flux, ivar, valid, filling):
    """The maps with ``filling`` (flux garbage, ivar garbage) at every masked pixel."""
    return np.where(valid, flux, filling[0]), np.where(valid, ivar, filling[1])


# ----------------------------------------------------------------------------- records

@PROPERTY_SETTINGS
@given(cubes=finite_cubes(), plateifu=st.text(st.characters(codec="utf-8"), max_size=12),
       label=st.text(st.characters(codec="utf-8"), max_size=12), ra=st.floats(-360, 360), dec=st.floats(-90, 90))
@example(cubes=(EDGE_VALUES.reshape(2, 2, 2), EDGE_VALUES[::-1].reshape(2, 2, 2), np.ones((2, 2, 2), bool)),
         plateifu="7815-3702", label="Seyfert", ra=0.0, dec=-0.0)
def test_encode_decode_is_bitwise_exact_for_any_finite_float32(cubes, plateifu, label, ra, dec):
    flux, ivar, valid = cubes
    galaxy = decode_galaxy(encode_example(plateifu, flux, ivar, valid, label=label, ra=ra, dec=dec), flux.shape)
    np.testing.assert_array_equal(bits(galaxy["flux"]), bits(flux))
    np.testing.assert_array_equal(bits(galaxy["ivar"]), bits(ivar))
    np.testing.assert_array_equal(galaxy["valid"], valid)
    assert (galaxy["id"], galaxy["label"]) == (plateifu, label)
    assert galaxy["ra"] == float(np.float32(ra)) and galaxy["dec"] == float(np.float32(dec))


@TF_SETTINGS
@given(cubes=finite_cubes(max_size=5))
@example(cubes=(EDGE_VALUES.reshape(2, 2, 2), EDGE_VALUES[::-1].reshape(2, 2, 2), np.array(2 * [np.eye(2)], bool)))
def test_tensorflow_parse_gives_the_same_bits_directly_and_in_dataset_map(cubes):
    import tensorflow as tf

    from ifskeras.records import parse_example

    flux, ivar, valid = cubes
    blob = encode_example("1-1", flux, ivar, valid)
    direct = parse_example(tf.constant(blob), flux.shape)
    dataset = tf.data.Dataset.from_tensors(blob).map(lambda serialized: parse_example(serialized, flux.shape))
    for parsed in (direct, next(iter(dataset))):
        np.testing.assert_array_equal(bits(parsed["flux"].numpy()[..., 0]), bits(flux))
        np.testing.assert_array_equal(bits(parsed["ivar"].numpy()[..., 0]), bits(ivar))
        np.testing.assert_array_equal(parsed["valid"].numpy()[..., 0], valid.astype(np.float32))


# ----------------------------------------------------------------------------- FITS reader

MASK_VALUES = [0, 1, 2, 1 << 5, 1 << 30, (1 << 30) | 1, -(2**31)]


@PROPERTY_SETTINGS
@given(cubes=finite_cubes(max_size=5), data=st.data(), compress=st.booleans())
def test_read_maps_returns_the_written_values_at_valid_pixels(cubes, data, compress):
    flux, ivar, _ = cubes
    mask = data.draw(arrays(np.int32, flux.shape, elements=st.sampled_from(MASK_VALUES)))
    channels = list(DR15_LINES)[: flux.shape[0]]
    hdus = [fits.PrimaryHDU()]
    hdus[0].header["PLATEIFU"] = "7443-12703"
    for suffix, cube in (("", flux), ("_IVAR", ivar), ("_MASK", mask)):
        hdu = fits.ImageHDU(cube, name=f"EMLINE_GFLUX{suffix}")
        for index, channel in enumerate(channels, start=1):
            hdu.header[f"C{index:02d}"] = channel
        hdus.append(hdu)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "manga-7443-12703-MAPS.fits"
        fits.HDUList(hdus).writeto(path)
        if compress:
            packed = path.with_name(path.name + ".gz")
            packed.write_bytes(gzip.compress(path.read_bytes()))
            path = packed
        maps = read_maps(path, channels)
    reject = (1 << DAP_MASK_BITS["NOCOV"]) | (1 << DAP_MASK_BITS["DONOTUSE"])
    expected = ((mask.astype(np.int64) & reject) == 0) & (ivar > 0) & (np.abs(flux) <= MAX_ABS_FLUX)
    np.testing.assert_array_equal(maps.valid, expected)
    np.testing.assert_array_equal(bits(maps.flux[expected]), bits(flux[expected]))
    np.testing.assert_array_equal(bits(maps.ivar[expected]), bits(ivar[expected]))
    assert not maps.flux[~expected].any() and not maps.ivar[~expected].any()
    assert maps.flux.dtype == np.float32 and maps.flux.dtype.isnative


# ----------------------------------------------------------------------------- preprocessing

def overlap_lengths(start: float, side: float, n_in: int, size: int) -> np.ndarray:
    """[size, n_in] length shared by output pixel j and input pixel i (written independently of the library)."""
    out = np.zeros((size, n_in))
    for j in range(size):
        low, high = start + j * side / size, start + (j + 1) * side / size
        for i in range(n_in):
            out[j, i] = max(0.0, min(high, i + 1) - max(low, i))
    return out


@settings(PROPERTY_SETTINGS, max_examples=60)  # about a third are refused (too little coverage)
@given(maps=masked_maps(), size=st.integers(1, 10))
def test_fit_mode_output_comes_only_from_valid_input(maps, size):
    flux, ivar, valid, fillings = maps
    try:
        grids = [to_grid(*poisoned(flux, ivar, valid, filling), valid, size, mode="fit") for filling in fillings]
    except PreprocessError:
        event("refused: nothing reaches the coverage threshold")
        return  # refused, not invented
    grid = grids[0]
    # Garbage at masked pixels changes nothing, bit for bit.
    for name in ("flux", "ivar", "valid"):
        np.testing.assert_array_equal(getattr(grids[1], name), getattr(grid, name))
    assert grids[1].box == grid.box
    assert np.isfinite(grid.flux).all() and np.isfinite(grid.ivar).all()
    assert not grid.flux[~grid.valid].any() and not grid.ivar[~grid.valid].any()
    assert (grid.ivar[grid.valid] > 0).all()
    y0, x0, side = grid.box
    rows = overlap_lengths(y0, side, flux.shape[1], size)
    cols = overlap_lengths(x0, side, flux.shape[2], size)
    pixel_area = (side / size) ** 2
    for line in range(flux.shape[0]):
        area = rows @ valid[line].astype(float) @ cols.T
        out_valid = grid.valid[line]
        # Valid output <=> enough valid input area (with float32 slack at the threshold).
        assert (area[out_valid] >= DEFAULT_MIN_COVERAGE * pixel_area * (1 - 1e-4)).all()
        assert out_valid[area >= DEFAULT_MIN_COVERAGE * pixel_area * (1 + 1e-4)].all()
        # Each valid output is an average of the valid inputs it overlaps.
        for j, k in zip(*np.nonzero(out_valid)):
            support = (np.outer(rows[j], cols[k]) > 0) & valid[line]
            values = flux[line][support]
            tolerance = 1e-5 * np.abs(values).max() + 1e-30
            assert values.min() - tolerance <= grid.flux[line, j, k] <= values.max() + tolerance


@PROPERTY_SETTINGS
@given(maps=masked_maps(), size=st.integers(1, 10))
def test_pad_mode_keeps_exact_values_and_masks(maps, size):
    flux, ivar, valid, fillings = maps
    try:
        grid = to_grid(*poisoned(flux, ivar, valid, fillings[0]), valid, size, mode="pad")
    except PreprocessError:
        return
    y0, x0, _ = (int(v) for v in grid.box)
    ys, xs = np.arange(size) + y0, np.arange(size) + x0
    inside = ((ys >= 0) & (ys < flux.shape[1]))[:, None] & ((xs >= 0) & (xs < flux.shape[2]))[None, :]
    expected_valid = np.zeros_like(grid.valid)
    expected_valid[:, inside] = valid[:, ys.clip(0, flux.shape[1] - 1)][:, :, xs.clip(0, flux.shape[2] - 1)][:, inside]
    np.testing.assert_array_equal(grid.valid, expected_valid)
    source_flux = flux[:, ys.clip(0, flux.shape[1] - 1)][:, :, xs.clip(0, flux.shape[2] - 1)]
    source_ivar = ivar[:, ys.clip(0, flux.shape[1] - 1)][:, :, xs.clip(0, flux.shape[2] - 1)]
    np.testing.assert_array_equal(bits(grid.flux[grid.valid]), bits(source_flux[grid.valid]))
    np.testing.assert_array_equal(bits(grid.ivar[grid.valid]), bits(source_ivar[grid.valid]))
    assert not grid.flux[~grid.valid].any() and not grid.ivar[~grid.valid].any()


# ----------------------------------------------------------------------------- augmentation

@functools.cache
def augment_layer(kind: str):
    """One layer per variant, built once (layer construction costs more than a call)."""
    from ifskeras.learning.augment import GalaxyAugment

    moves = {"max_rotation_degrees": 15.0, "max_translation_pixels": 2.0}
    return {
        "dihedral": lambda: GalaxyAugment(dihedral=True),
        "bilinear": lambda: GalaxyAugment(dihedral=True, **moves),
        "nearest": lambda: GalaxyAugment(dihedral=True, interpolation="nearest", **moves),
    }[kind]()


@st.composite
def augment_batches(draw):
    """[B, L, S, S] maps of B galaxies, garbage fillings and a [2] seed."""
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *(2 * [draw(st.integers(2, 8))]))
    flux, ivar, valid, fillings = draw(maps_of_shape(shape))
    seed = draw(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)))
    return flux, ivar, valid, fillings, list(seed)


def run_augment(kind, flux, ivar, valid, seed):
    """Call the layer in training mode on [B, L, S, S] numpy maps; numpy [B, L, S, S] back."""
    import tensorflow as tf

    tensors = [tf.constant(np.asarray(a, np.float32)[..., None]) for a in (flux, ivar, valid)]
    out = augment_layer(kind)(*tensors, training=True, seed=tf.constant(seed, tf.int32))
    return [t.numpy()[..., 0] for t in out]


def square_symmetries(cube):
    """The 8 images of [L, S, S] maps under the symmetries of the square."""
    rotations = [np.rot90(cube, k, axes=(1, 2)) for k in range(4)]
    return rotations + [np.flip(r, axis=2) for r in rotations]


@TF_SETTINGS
@given(batch=augment_batches())
def test_dihedral_augment_permutes_pixels_exactly(batch):
    flux, ivar, valid, fillings, seed = batch
    out_flux, out_ivar, out_valid = run_augment("dihedral", *poisoned(flux, ivar, valid, fillings[0]), valid, seed)
    clean_flux, clean_ivar = np.where(valid, flux, 0), np.where(valid, ivar, 0)
    for b in range(flux.shape[0]):
        np.testing.assert_array_equal(out_valid[b].sum(axis=(1, 2)), valid[b].sum(axis=(1, 2)))
        matches = [
            k for k, (f, i, v) in enumerate(zip(*(square_symmetries(c[b]) for c in (clean_flux, clean_ivar, valid))))
            if np.array_equal(bits(out_flux[b]), bits(f)) and np.array_equal(bits(out_ivar[b]), bits(i))
            and np.array_equal(out_valid[b], v.astype(np.float32))
        ]
        assert matches, f"galaxy {b}: output is none of the 8 symmetries of the input"


@TF_SETTINGS
@pytest.mark.parametrize("kind", ["bilinear", "nearest"])
@given(batch=augment_batches())
def test_rotation_and_shift_never_revive_masked_pixels(kind, batch):
    flux, ivar, valid, fillings, seed = batch
    outs = [run_augment(kind, *poisoned(flux, ivar, valid, filling), valid, seed) for filling in fillings]
    for first, second in zip(*outs):  # garbage under the mask changes nothing, bit for bit
        np.testing.assert_array_equal(bits(first), bits(second))
    out_flux, out_ivar, out_valid = outs[0]
    kept = out_valid > 0
    assert np.isfinite(out_flux).all() and np.isfinite(out_ivar).all()
    assert not out_flux[~kept].any() and not out_ivar[~kept].any() and (out_ivar[kept] > 0).all()
    # The same transform moving the *invalid* indicator of a fully valid map: how much of
    # each output pixel comes from masked input. A pixel may stay valid only if ~none does.
    ones = np.ones_like(flux)
    leaked, _, valid_if_all_valid = run_augment(kind, 1.0 - valid, ones, ones, seed)
    assert (valid_if_all_valid[kept] > 0).all()
    assert (leaked[kept] <= 1.5e-3).all(), leaked[kept].max()
    for b in range(flux.shape[0]):
        for line in range(flux.shape[1]):
            inputs = flux[b, line][valid[b, line]]
            values = out_flux[b, line][kept[b, line]]
            if kind == "nearest":  # whole pixels move: every kept value is a valid input value
                # (TensorFlow's CPU kernels flush subnormals to zero: 1e-45 may arrive as 0)
                flushed = np.where(np.abs(inputs) < np.finfo(np.float32).tiny, np.float32(0), inputs)
                assert np.isin(values, flushed).all()
            elif values.size:
                tolerance = 1e-5 * np.abs(inputs).max() + 1e-30
                assert inputs.min() - tolerance <= values.min() and values.max() <= inputs.max() + tolerance
