"""Simulated MAPS files for the tests: good ones from ``ifskeras.survey.synth``, broken ones derived from them.

Every good file is a synthetic galaxy written by the package's own generator
(:func:`ifskeras.survey.synth.make_galaxy`, :func:`~ifskeras.survey.synth.write_maps_file`,
:func:`~ifskeras.survey.synth.make_survey`). What the generator cannot make on purpose -
truncated files, missing extensions or lines, wrong channel names, wrong data types, all
pixels masked - is made here by small functions that start from a synthetic file
(:func:`galaxy_hdulist`) and break one thing.

Also here: where the real MaNGA files live (``REAL_DATA``) and the small conversion options
the records tests share (:func:`small_options`).
"""

from __future__ import annotations

import gzip
import tempfile
from collections.abc import Iterable
from io import BytesIO
from pathlib import Path

import numpy as np
from astropy.io import fits

from ifskeras.survey.maps import DAP_MASK_BITS
from ifskeras.survey.synth import SyntheticGalaxy, make_galaxy, write_maps_file

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_FILES = sorted(REAL_DATA.glob("manga-*-MAPS-*.fits.gz")) if REAL_DATA.is_dir() else []

NOCOV = 1 << DAP_MASK_BITS["NOCOV"]
DONOTUSE = 1 << DAP_MASK_BITS["DONOTUSE"]
#: The three extensions of a MAPS file the reader needs, in file order.
EMLINE_EXTENSIONS = ("EMLINE_GFLUX", "EMLINE_GFLUX_IVAR", "EMLINE_GFLUX_MASK")
#: Side of the maps of the smallest (19-fibre) bundle, what :func:`galaxy` makes by default.
MAP_SIZE = 32

# ----------------------------------------------------------------------------- good galaxies


def galaxy(seed: int = 0, galaxy_class: str = "SF", *, ifu_fibres: int = 19, defects: bool = False,
           **options) -> SyntheticGalaxy:
    """One synthetic galaxy, 32 x 32 spaxels (19-fibre bundle) and without defect patches by default."""
    return make_galaxy(np.random.default_rng(seed), galaxy_class, ifu_fibres=ifu_fibres, defects=defects, **options)


def write_galaxy(path: str | Path, plateifu: str = "10001-1901", *, seed: int = 0, galaxy_class: str = "SF",
                 ra: float = 150.0, dec: float = 2.0, mangaid: str | None = None, **options) -> Path:
    """A synthetic galaxy (:func:`galaxy`) as a MAPS file; gzip-compressed when the name ends in ``.gz``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_maps_file(path, galaxy(seed, galaxy_class, **options), plateifu=plateifu,
                           mangaid=f"1-{seed:06d}" if mangaid is None else mangaid, ra=ra, dec=dec)


def interior_spaxels(maps, count: int) -> list[tuple[int, int]]:
    """The ``count`` spaxels nearest the map centre that are valid in every line (``maps.valid`` [L, H, W])."""
    valid = maps.valid.all(axis=0)
    height, width = valid.shape
    y, x = np.nonzero(valid)
    order = np.argsort(np.hypot(y - (height - 1) / 2, x - (width - 1) / 2), kind="stable")
    if order.size < count:
        raise ValueError(f"only {order.size} spaxels are valid in every line, {count} wanted")
    return [(int(y[i]), int(x[i])) for i in order[:count]]


# ----------------------------------------------------------------------------- broken files


def galaxy_hdulist(plateifu: str = "10001-1901", **options) -> fits.HDUList:
    """A synthetic MAPS file (:func:`write_galaxy`) opened in memory with writable arrays, ready to break."""
    with tempfile.TemporaryDirectory() as directory:
        data = write_galaxy(Path(directory) / "maps.fits", plateifu, **options).read_bytes()
    hdul = fits.HDUList.fromstring(data)
    for hdu in hdul[1:]:
        hdu.data = np.array(hdu.data)  # a writable copy, native of the file's byte order
    return hdul


def channel_names(header: fits.Header) -> list[str]:
    return [header[key] for key in sorted(k for k in header if k.startswith("C") and k[1:].isdigit())]


def _set_channels(header: fits.Header, names: Iterable[str]) -> None:
    for key in [k for k in header if k.startswith("C") and k[1:].isdigit()]:
        del header[key]
    for index, name in enumerate(names, start=1):
        header[f"C{index:02d}"] = name


def reorder_channels(hdul: fits.HDUList, order: Iterable[str]) -> fits.HDUList:
    """Store the lines in another channel order, data and channel names together (still a valid file)."""
    order = list(order)
    for name in EMLINE_EXTENSIONS:
        hdu = hdul[name]
        current = channel_names(hdu.header)
        hdu.data = hdu.data[[current.index(line) for line in order]]
        _set_channels(hdu.header, order)
    return hdul


def drop_lines(hdul: fits.HDUList, *lines: str) -> fits.HDUList:
    """Remove lines (their planes and channel names) from all three extensions."""
    kept = [line for line in channel_names(hdul["EMLINE_GFLUX"].header) if line not in lines]
    return reorder_channels(hdul, kept)


def rename_channels(hdul: fits.HDUList, extension: str, names: Iterable[str]) -> fits.HDUList:
    """Give one extension other channel names, its data untouched (the extensions then disagree)."""
    _set_channels(hdul[extension].header, names)
    return hdul


def without_channel_keys(hdul: fits.HDUList, extension: str = "EMLINE_GFLUX") -> fits.HDUList:
    """Delete the C01..Cnn channel names of one extension."""
    _set_channels(hdul[extension].header, ())
    return hdul


def without_extension(hdul: fits.HDUList, extension: str) -> fits.HDUList:
    del hdul[extension]
    return hdul


def retyped(hdul: fits.HDUList, extension: str, dtype) -> fits.HDUList:
    """Store one extension's data as another type (e.g. integer flux, floating-point mask)."""
    hdul[extension].data = hdul[extension].data.astype(dtype)
    return hdul


def all_masked(hdul: fits.HDUList) -> fits.HDUList:
    """Flag every pixel of every line NOCOV: a readable file with nothing usable."""
    hdul["EMLINE_GFLUX_MASK"].data |= NOCOV
    return hdul


def fits_bytes(hdul: fits.HDUList) -> bytes:
    buffer = BytesIO()
    hdul.writeto(buffer)
    return buffer.getvalue()


def write_hdulist(path: str | Path, hdul: fits.HDUList) -> Path:
    """Write a (broken) file; gzip-compressed when the name ends in ``.gz``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = fits_bytes(hdul)
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def truncate(path: str | Path, fraction: float = 0.5) -> Path:
    """Cut a file to the first ``fraction`` of its bytes, as an interrupted download leaves it."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


#: A DR17 release, for files of "another release" than the synthetic ones.
DR17_VERSDAP = "3.1.0"
DR17_DAPTYPE = "HYB10-MILESHC-MASTARHC2"


def with_release(path: str | Path, *, versdap: str = DR17_VERSDAP, daptype: str = DR17_DAPTYPE,
                 target: str | Path | None = None) -> Path:
    """Rewrite a MAPS file (in place, or as ``target``) with another DAP release in its primary header."""
    data = Path(path).read_bytes()
    hdul = fits.HDUList.fromstring(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    hdul[0].header["VERSDAP"] = versdap
    hdul[0].header["DAPTYPE"] = daptype
    return write_hdulist(target or path, hdul)


def bad_inputs(directory: str | Path) -> dict[str, Path]:
    """One good file and one file of each kind of bad input, by kind (MaNGA file names)."""
    directory = Path(directory)
    name = "manga-{}-MAPS-HYB10-GAU-MILESHC.fits{}".format
    good = write_galaxy(directory / name("9001-1901", ".gz"), "9001-1901", seed=1)
    truncated = truncate(write_galaxy(directory / name("9002-1902", ".gz"), "9002-1902", seed=2))
    text = directory / name("9003-1903", ".gz")
    text.write_text("this is not a FITS file\n")
    missing_line = write_hdulist(directory / name("9004-1904", ""),
                                 drop_lines(galaxy_hdulist("9004-1904", seed=4), "Ha-6564"))
    empty = write_hdulist(directory / name("9005-1905", ""), all_masked(galaxy_hdulist("9005-1905", seed=5)))
    return {"good": good, "truncated": truncated, "text": text, "missing_line": missing_line, "all_invalid": empty}


# ----------------------------------------------------------------------------- records options

#: Small grid and shards so a dozen galaxies spread over several shards.
TEST_SIZE = 8
TEST_SHARD_MB = 0.03


def small_options(**overrides):
    """Conversion options of the records tests: 8 x 8 maps, ~3 galaxies per shard, at least 2 shards."""
    from ifskeras.records import ConvertOptions

    return ConvertOptions(**{"size": TEST_SIZE, "shard_mb": TEST_SHARD_MB, "min_shards": 2, **overrides})
