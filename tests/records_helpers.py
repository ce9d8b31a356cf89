"""Tiny DAP-like MAPS files for the records tests (deterministic, a few kB each)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np

from ifskeras.survey.lines import DR15_LINES

NOCOV = 1 << 0
DONOTUSE = 1 << 30
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def galaxy_cubes(size: int = 20, *, seed: int = 0, n_lines: int = 22, hexagon: bool = True):
    """Smooth exponential-disc flux, ivar and DAP mask cubes [n_lines, size, size]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] + 0.5
    centre = size / 2 + rng.uniform(-1, 1, 2)
    radius = np.hypot(y - centre[0], x - centre[1])
    scale = size / 6 * rng.uniform(0.7, 1.3)
    amplitudes = rng.uniform(0.5, 20.0, n_lines)
    flux = amplitudes[:, None, None] * np.exp(-radius / scale)[None]
    sigma = 0.05 * np.ones_like(flux)
    flux = flux + rng.normal(0, 1, flux.shape) * sigma
    ivar = 1 / sigma**2
    mask = np.zeros(flux.shape, np.int32)
    if hexagon:
        u, v = (x - size / 2) / (size / 2 - 1), (y - size / 2) / (size / 2 - 1)
        outside = (np.abs(v) > 0.87) | (np.abs(v) * 0.5 + np.abs(u) * 0.87 > 0.87)
        mask[:, outside] |= NOCOV
        ivar[:, outside] = 0
        flux[:, outside] = 0
    bad = rng.random(flux.shape) < 0.02
    mask[bad] |= DONOTUSE
    return flux.astype(np.float32), ivar.astype(np.float32), mask


def write_maps(
    path: str | Path,
    plateifu: str,
    *,
    size: int = 20,
    seed: int = 0,
    lines=tuple(DR15_LINES),
    all_invalid: bool = False,
    ra: float = 150.0,
    dec: float = 2.0,
    compress: bool = False,
) -> Path:
    """Write a MAPS file with EMLINE_GFLUX, _IVAR (float32) and _MASK (int32), channels in C01..Cnn."""
    from astropy.io import fits

    flux, ivar, mask = galaxy_cubes(size, seed=seed, n_lines=len(lines))
    if all_invalid:
        mask[:] |= NOCOV
    primary = fits.PrimaryHDU()
    primary.header["PLATEIFU"] = plateifu
    primary.header["MANGAID"] = f"1-{seed}"
    primary.header["OBJRA"] = ra
    primary.header["OBJDEC"] = dec
    hdus = [primary]
    for suffix, data in (("", flux), ("_IVAR", ivar), ("_MASK", mask)):
        hdu = fits.ImageHDU(data, name=f"EMLINE_GFLUX{suffix}")
        for index, line in enumerate(lines, start=1):
            hdu.header[f"C{index:02d}"] = line
        if suffix == "":
            hdu.header["BUNIT"] = "1E-17 erg/s/cm^2/spaxel"
        hdus.append(hdu)
    path = Path(path)
    plain = path.with_suffix("") if compress else path
    fits.HDUList(hdus).writeto(plain, overwrite=True)
    if compress:
        with open(plain, "rb") as source, gzip.open(path, "wb") as target:
            shutil.copyfileobj(source, target)
        plain.unlink()
    return path


def make_survey(directory: str | Path, count: int, *, size: int = 16, start_seed: int = 0) -> list[Path]:
    """``count`` good MAPS files named like MaNGA products, sizes varying around ``size``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        seed = start_seed + index
        plateifu = f"{8000 + seed}-{1901 + seed % 5}"
        side = size + (seed % 3) * 2
        paths.append(write_maps(directory / f"manga-{plateifu}-MAPS-HYB10-GAU-MILESHC.fits", plateifu,
                                size=side, seed=seed, ra=150.0 + index, dec=2.0 - index))
    return paths


def bad_inputs(directory: str | Path) -> dict[str, Path]:
    """One file for each kind of bad input, by kind."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    good = write_maps(directory / "manga-9001-1901-MAPS-HYB10-GAU-MILESHC.fits.gz", "9001-1901", compress=True)
    truncated = write_maps(directory / "manga-9002-1902-MAPS-HYB10-GAU-MILESHC.fits.gz", "9002-1902",
                           seed=2, compress=True)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    text = directory / "manga-9003-1903-MAPS-HYB10-GAU-MILESHC.fits.gz"
    text.write_text("this is not a FITS file\n")
    missing_line = write_maps(
        directory / "manga-9004-1904-MAPS-HYB10-GAU-MILESHC.fits", "9004-1904",
        lines=tuple(line for line in DR15_LINES if line != "Ha-6564"),
    )
    empty = write_maps(directory / "manga-9005-1905-MAPS-HYB10-GAU-MILESHC.fits", "9005-1905", all_invalid=True)
    return {"good": good, "truncated": truncated, "text": text, "missing_line": missing_line, "all_invalid": empty}


# ----------------------------------------------------------------------------- fixtures
import pytest  # noqa: E402  (fixtures below are imported by the records test modules)

#: Small grid and shards so a dozen galaxies spread over several shards.
TEST_SIZE = 8
TEST_SHARD_MB = 0.03


def small_options(**overrides):
    from ifskeras.records import ConvertOptions

    return ConvertOptions(**{"size": TEST_SIZE, "shard_mb": TEST_SHARD_MB, "min_shards": 2, **overrides})


@pytest.fixture(scope="session")
def survey_dir(tmp_path_factory):
    """Twelve good MAPS files."""
    directory = tmp_path_factory.mktemp("survey")
    make_survey(directory, 12, size=14)
    return directory


@pytest.fixture(scope="session")
def records_dir(tmp_path_factory, survey_dir):
    """The survey converted at 8 x 8, several shards per split (read-only for tests)."""
    from ifskeras.records import convert_maps

    out = tmp_path_factory.mktemp("records") / "records"
    convert_maps([survey_dir], out, small_options(val_fraction=0.2, test_fraction=0.2))
    return out
