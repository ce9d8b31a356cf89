"""Tiny hand-made DAP MAPS files for reader tests, including deliberately broken ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from ifskeras.survey.lines import DR15_LINES

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_FILES = sorted(REAL_DATA.glob("manga-*-MAPS-*.fits.gz")) if REAL_DATA.is_dir() else []


def tiny_maps_hdulist(
    *,
    plateifu: str = "10001-1901",
    size: int = 8,
    channels=tuple(DR15_LINES),
    seed: int = 0,
    flux_dtype=np.float32,
) -> fits.HDUList:
    """A valid MAPS file with only the EMLINE_GFLUX family, random positive fluxes."""
    rng = np.random.default_rng(seed)
    shape = (len(channels), size, size)
    flux = rng.uniform(0.1, 5.0, shape).astype(flux_dtype)
    ivar = rng.uniform(100, 1000, shape).astype(np.float32)
    mask = np.zeros(shape, np.int32)
    mask[:, 0, 0] = 1 | (1 << 30)  # NOCOV + DONOTUSE corner, as the DAP writes
    primary = fits.PrimaryHDU()
    primary.header["PLATEIFU"] = plateifu
    primary.header["MANGAID"] = "1-000001"
    primary.header["OBJRA"] = 180.5
    primary.header["OBJDEC"] = -1.25
    hdus = [primary]
    for name, data in (("EMLINE_GFLUX", flux), ("EMLINE_GFLUX_IVAR", ivar), ("EMLINE_GFLUX_MASK", mask)):
        hdu = fits.ImageHDU(data, name=name)
        for index, channel in enumerate(channels, start=1):
            hdu.header[f"C{index:02d}"] = channel
        hdus.append(hdu)
    return fits.HDUList(hdus)


def write_tiny_maps(path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tiny_maps_hdulist(**kwargs).writeto(path, overwrite=True)
    return path
