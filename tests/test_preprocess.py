"""Fixed-size grids: area-weighted fit (flux and ivar bookkeeping) and exact pad."""

import numpy as np
import pytest
from simulated import NOCOV, REAL_FILES, galaxy

from ifskeras.survey.maps import read_maps
from ifskeras.survey.preprocess import (
    PreprocessError,
    covered_box,
    fit_to_grid,
    overlap_matrix,
    pad_to_grid,
    to_grid,
)

realdata = pytest.mark.skipif(not REAL_FILES, reason="real MaNGA files not in ../shared/data")
#: Total valid flux of every line of a synthetic star-forming galaxy in a 19-fibre bundle
#: (hexagon 28 spaxels across) is kept to this fraction on 16 x 16 and 32 x 32 grids (output
#: pixels of 1.75 and 0.875 spaxels), and to COARSE_FLUX_TOLERANCE on 8 x 8 (3.5 spaxels).
FLUX_TOLERANCE = 0.02
COARSE_FLUX_TOLERANCE = 0.07


def _footprint_cubes(seed):
    """Flux, ivar and validity of a synthetic galaxy, valid wherever the bundle has data (no holes)."""
    made = galaxy(seed, "SF", ifu_fibres=19)
    valid = ((made.mask & NOCOV) == 0) & (made.ivar > 0)
    return np.where(valid, made.flux, 0).astype(np.float32), np.where(valid, made.ivar, 0).astype(np.float32), valid


def test_overlap_matrix_rows_cover_output_pixels():
    matrix = overlap_matrix(-0.5, 5.0, 4, 4)
    assert matrix.shape == (4, 4)
    np.testing.assert_allclose(matrix.sum(axis=1), [0.75, 1.25, 1.25, 0.75])  # ends stick out
    np.testing.assert_allclose(matrix.sum(axis=0), 1.0)  # every input pixel fully used


def test_covered_box_is_square_around_bounding_box():
    valid = np.zeros((2, 10, 12), bool)
    valid[0, 2:6, 3:11] = True  # 4 rows x 8 columns
    assert covered_box(valid) == (0.0, 3.0, 8)
    with pytest.raises(PreprocessError, match="no valid pixel"):
        covered_box(np.zeros((2, 4, 4), bool))


def test_fit_conserves_flux_exactly_when_all_valid():
    rng = np.random.default_rng(1)
    flux = rng.uniform(0, 10, (3, 12, 12)).astype(np.float32)
    ivar = np.full_like(flux, 4.0)
    for size in (4, 5, 8, 12, 16):
        grid = fit_to_grid(flux, ivar, flux >= 0, size)
        assert grid.valid.all()
        area = grid.spaxels_per_pixel**2
        np.testing.assert_allclose(grid.flux.sum(axis=(1, 2)) * area, flux.sum(axis=(1, 2)), rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_conserves_flux_of_hexagonal_footprint_within_tolerance(seed):
    flux, ivar, valid = _footprint_cubes(seed)
    assert covered_box(valid)[2] == 28 and not valid.all()
    for size, tolerance in ((8, COARSE_FLUX_TOLERANCE), (16, FLUX_TOLERANCE), (32, FLUX_TOLERANCE)):
        grid = fit_to_grid(flux, ivar, valid, size)
        total_in = (flux * valid).sum(axis=(1, 2))
        total_out = (grid.flux * grid.valid).sum(axis=(1, 2)) * grid.spaxels_per_pixel**2
        np.testing.assert_allclose(total_out, total_in, rtol=tolerance)


def test_fit_fills_masked_holes_with_the_local_mean():
    flux = np.full((1, 8, 8), 3.0, np.float32)
    valid = np.ones_like(flux, bool)
    valid[0, 2, 5] = False
    flux[~valid] = 0
    grid = fit_to_grid(flux, np.ones_like(flux), valid, 4)
    assert grid.valid.all()
    np.testing.assert_allclose(grid.flux, 3.0)


def test_fit_ivar_is_the_inverse_variance_of_the_mean():
    flux = np.zeros((1, 8, 8), np.float32)
    ivar = np.full_like(flux, 2.0)
    ivar[0, :2, :2] = 8.0
    grid = fit_to_grid(flux, ivar, np.ones_like(flux, bool), 4)
    # 2x2 blocks of equal weights: ivar of the mean = sum of ivars
    assert grid.ivar[0, 1, 1] == pytest.approx(8.0)
    assert grid.ivar[0, 0, 0] == pytest.approx(32.0)
    # Monte Carlo: the scatter of resampled noise matches 1/sqrt(ivar) where weights differ
    rng = np.random.default_rng(0)
    sigma = 1 / np.sqrt(ivar)
    valid = np.ones_like(flux, bool)
    valid[0, 3, 3] = False
    samples = np.stack([fit_to_grid(rng.normal(0, sigma).astype(np.float32), ivar, valid, 3).flux
                        for _ in range(2000)])
    grid = fit_to_grid(flux, ivar, valid, 3)
    np.testing.assert_allclose(samples.std(axis=0), 1 / np.sqrt(grid.ivar), rtol=0.08)


def test_fit_validity_follows_coverage_threshold_and_never_leaks_invalid_flux():
    flux = np.ones((2, 4, 4), np.float32)
    valid = np.ones_like(flux, bool)
    valid[0, :, 2:] = False  # line 1 stays valid everywhere, so the box is the whole map
    flux[~valid] = 1e6  # must never reach a valid output pixel
    flux[0, 0, 3] = np.nan
    ivar = np.ones_like(flux)
    grid = fit_to_grid(flux, ivar, valid, 2, min_coverage=0.5)
    np.testing.assert_array_equal(grid.valid[0], [[True, False], [True, False]])
    assert grid.valid[1].all()
    np.testing.assert_allclose(grid.flux[0][grid.valid[0]], 1.0)
    assert grid.flux[0][~grid.valid[0]].max() == 0 and grid.ivar[0][~grid.valid[0]].max() == 0
    upsampled = fit_to_grid(flux, ivar, valid, 8)
    assert upsampled.flux.max() == pytest.approx(1.0)
    assert upsampled.valid[0, :, :4].all() and not upsampled.valid[0, :, 4:].any()
    strict = fit_to_grid(flux, ivar, valid, 3, min_coverage=1.0)
    np.testing.assert_array_equal(strict.valid[0].any(axis=0), [True, False, False])


def test_pad_crops_and_pads_around_the_centre_exactly():
    flux = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7) + 1
    ivar = flux * 2
    valid = np.ones_like(flux, bool)
    padded = pad_to_grid(flux, ivar, valid, 9)
    assert padded.box == (-2.0, -1.0, 9.0)
    np.testing.assert_array_equal(padded.flux[:, 2:7, 1:8], flux)
    np.testing.assert_array_equal(padded.ivar[:, 2:7, 1:8], ivar)
    assert padded.valid.sum() == valid.sum() and padded.flux[~padded.valid].max() == 0
    cropped = pad_to_grid(flux, ivar, valid, 3)
    np.testing.assert_array_equal(cropped.flux, flux[:, 1:4, 2:5])


def test_to_grid_rejects_bad_arguments():
    flux = np.ones((1, 4, 4), np.float32)
    with pytest.raises(PreprocessError, match="mode"):
        to_grid(flux, flux, flux > 0, 4, mode="zoom")
    with pytest.raises(PreprocessError, match="size"):
        to_grid(flux, flux, flux > 0, 0)
    with pytest.raises(PreprocessError, match="lines, height, width"):
        to_grid(flux[0], flux[0], flux[0] > 0, 4)
    with pytest.raises(PreprocessError, match="no valid pixel"):
        to_grid(flux, flux, flux < 0, 4, mode="fit")
    with pytest.raises(PreprocessError, match="no valid pixel"):
        to_grid(flux, flux, flux < 0, 4, mode="pad")


@realdata
@pytest.mark.realdata
@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name.split("-MAPS")[0])
def test_pad_mode_values_equal_fits_values_pixel_by_pixel(path):
    from astropy.io import fits

    maps = read_maps(path)
    size = 32
    grid = pad_to_grid(maps.flux, maps.ivar, maps.valid, size)
    with fits.open(path) as hdul:
        names = [hdul["EMLINE_GFLUX"].header[f"C{i:02d}"] for i in range(1, 23)]
        index = [names.index(line) for line in maps.lines]
        raw_flux = hdul["EMLINE_GFLUX"].data[index]
        raw_ivar = hdul["EMLINE_GFLUX_IVAR"].data[index]
    y0, x0 = int(grid.box[0]), int(grid.box[1])
    window = (slice(None), slice(y0, y0 + size), slice(x0, x0 + size))
    kept = grid.valid
    assert kept.any()
    np.testing.assert_array_equal(grid.flux[kept], raw_flux[window][kept].astype(np.float32))
    np.testing.assert_array_equal(grid.ivar[kept], raw_ivar[window][kept].astype(np.float32))
    np.testing.assert_array_equal(kept, maps.valid[window])


@realdata
@pytest.mark.realdata
def test_fit_mode_conserves_bright_line_flux_of_real_galaxy():
    maps = read_maps(REAL_FILES[0])
    ha = maps.lines.index("Ha-6564")
    for size in (16, 64):
        grid = fit_to_grid(maps.flux, maps.ivar, maps.valid, size)
        total_in = (maps.flux[ha] * maps.valid[ha]).sum()
        total_out = (grid.flux[ha] * grid.valid[ha]).sum() * grid.spaxels_per_pixel**2
        assert total_out == pytest.approx(total_in, rel=FLUX_TOLERANCE)
