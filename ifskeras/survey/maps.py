"""Reader of MaNGA DAP MAPS files: emission-line maps with inverse variance and validity.

Each DAP quantity comes as three extensions, ``X``, ``X_IVAR`` and ``X_MASK``, whose
channels are named in header keys ``C01..Cnn``. Channels are always found by name.
"""

from __future__ import annotations

import gzip
import io
import os
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ifskeras.common.errors import FileProblemError
from ifskeras.survey.lines import DEFAULT_LINES, wavelength_of

__all__ = [
    "DAP_MASK_BITS",
    "DEFAULT_REJECT_BITS",
    "MAX_ABS_FLUX",
    "GalaxyMaps",
    "MapsReadError",
    "NotFitsError",
    "MissingExtensionError",
    "MissingLineError",
    "MapsFormatError",
    "read_maps",
    "channel_names",
    "sky_position",
]

#: MANGA_DAPPIXMASK bit numbers.
DAP_MASK_BITS = {
    "NOCOV": 0, "LOWCOV": 1, "DEADFIBER": 2, "FORESTAR": 3, "NOVALUE": 4,
    "UNRELIABLE": 5, "MATHERROR": 6, "FITFAILED": 7, "NEARBOUND": 8,
    "NOCORRECTION": 9, "MULTICOMP": 10, "DONOTUSE": 30,
}
#: Bits that make a pixel unusable by default: no coverage, or the DAP says do not use.
DEFAULT_REJECT_BITS: tuple[str, ...] = ("NOCOV", "DONOTUSE")
#: Values beyond this (in 1e-17 erg/s/cm^2/spaxel) are overflow artefacts, not fluxes:
#: the brightest MaNGA spaxels are below 1e5, and squares of 1e20 still fit float64.
MAX_ABS_FLUX = 1e20
_QUANTITIES = ("GFLUX", "SFLUX", "GEW", "SEW", "GVEL", "GSIGMA")
_META_KEYS = ("DAPTYPE", "VERSDAP", "VERSDRP3", "DAPQUAL", "EBVGAL")


class MapsReadError(FileProblemError):
    """A MAPS file could not be read; the message names the file and the problem."""


class NotFitsError(MapsReadError):
    """The file is empty, not FITS, truncated or unreadable."""


class MissingExtensionError(MapsReadError):
    """A required extension (e.g. EMLINE_GFLUX_IVAR) is absent."""


class MissingLineError(MapsReadError):
    """A requested emission line is not among the file's channels."""


class MapsFormatError(MapsReadError):
    """The extensions exist but their shape, type or channel keys are wrong."""


@dataclass(frozen=True)
class GalaxyMaps:
    """Emission-line maps of one galaxy, each array [L, H, W] in native byte order."""

    flux: np.ndarray
    ivar: np.ndarray
    valid: np.ndarray
    lines: tuple[str, ...]
    plateifu: str
    mangaid: str = ""
    ra: float = float("nan")
    dec: float = float("nan")
    quantity: str = "GFLUX"
    unit: str = ""
    path: str = ""
    meta: dict = field(default_factory=dict)
    #: The galaxy's position (OBJRA/OBJDEC) on the maps through their WCS, as ``(y, x)`` in
    #: pixel coordinates where pixel ``i`` spans ``[i, i + 1)``; NaN without a usable WCS.
    centre: tuple[float, float] = (float("nan"), float("nan"))
    #: Spaxel side in arcsec from the WCS (0.5 for MaNGA); NaN without a usable WCS.
    spaxel_arcsec: float = float("nan")

    @property
    def wavelengths(self) -> np.ndarray:
        return np.array([wavelength_of(name) for name in self.lines])


def channel_names(header) -> list[str]:
    """Channel names from the ``C01..Cnn`` keys of a DAP extension header, in channel order."""
    names = []
    index = 1
    while f"C{index:02d}" in header:
        names.append(str(header[f"C{index:02d}"]).strip())
        index += 1
    return names


def read_maps(
    path: str | os.PathLike,
    lines: Sequence[str] = DEFAULT_LINES,
    *,
    quantity: str = "GFLUX",
    reject_bits: Sequence[str] = DEFAULT_REJECT_BITS,
    max_abs_flux: float = MAX_ABS_FLUX,
) -> GalaxyMaps:
    """Read emission-line maps, their inverse variance and a validity mask.

    Parameters
    ----------
    path : path-like
        A DAP MAPS file, ``.fits`` or ``.fits.gz``.
    lines : sequence of str
        DAP channel names, matched case-insensitively; the paper's 19 lines by default.
    quantity : str
        Extension family: ``GFLUX`` (Gaussian-fitted flux, default), ``SFLUX``, ``GEW``,
        ``SEW``, ``GVEL`` or ``GSIGMA``.
    reject_bits : sequence of str
        MANGA_DAPPIXMASK bit names that make a pixel invalid (default NOCOV, DONOTUSE).
    max_abs_flux : float
        Pixels whose absolute value exceeds this are treated as invalid.

    Returns
    -------
    GalaxyMaps
        ``valid`` is False where a rejected mask bit is set, where ivar <= 0 or where
        value or ivar is not finite (the DAP's mask and ivar disagree on some pixels,
        so both rules apply); invalid pixels hold 0 in flux and ivar.

    Raises
    ------
    MapsReadError
        A subclass naming the file and the problem.

    Examples
    --------
    >>> maps = read_maps("manga-7815-3702-MAPS-HYB10-GAU-MILESHC.fits.gz")  # doctest: +SKIP
    >>> maps.flux.shape  # doctest: +SKIP
    (19, 42, 42)
    """
    path = Path(path)
    quantity = quantity.upper()
    if quantity not in _QUANTITIES:
        raise ValueError(f"quantity must be one of {_QUANTITIES}. Received: {quantity!r}")
    unknown_bits = [bit for bit in reject_bits if bit not in DAP_MASK_BITS]
    if unknown_bits:
        raise ValueError(
            f"Unknown mask bits {unknown_bits}; known: {sorted(DAP_MASK_BITS)}. "
            f"Received: {list(reject_bits)}"
        )
    from astropy.io import fits  # deferred: keeps `import ifskeras.survey.maps` light

    source = _check_readable(path)
    try:
        with warnings.catch_warnings(record=True) as caught, fits.open(source, memmap=False) as hdul:
            warnings.simplefilter("always")
            primary = hdul[0].header
            value_hdu = _extension(hdul, f"EMLINE_{quantity}", path)
            ivar_hdu = _extension(hdul, f"EMLINE_{quantity}_IVAR", path)
            mask_hdu = _extension(hdul, f"EMLINE_{quantity}_MASK", path)
            available = channel_names(value_hdu.header)
            if not available:
                raise MapsFormatError(
                    path, f"extension EMLINE_{quantity} has no channel keys C01..Cnn"
                )
            indices = _channel_indices(available, lines, path, f"EMLINE_{quantity}")
            ivar_names = channel_names(ivar_hdu.header)
            if ivar_names and ivar_names != available:
                raise MapsFormatError(
                    path,
                    f"channels of EMLINE_{quantity}_IVAR {ivar_names} differ from "
                    f"EMLINE_{quantity} {available}",
                )
            value = _cube(value_hdu, path, len(available), floating=True)
            ivar = _cube(ivar_hdu, path, len(available), floating=True)
            mask = _cube(mask_hdu, path, len(available), floating=False)
            if not value.shape == ivar.shape == mask.shape:
                raise MapsFormatError(
                    path,
                    f"shapes differ: EMLINE_{quantity} {value.shape}, "
                    f"_IVAR {ivar.shape}, _MASK {mask.shape}",
                )
            value = value[indices]
            ivar = ivar[indices]
            mask = mask[indices]
            unit = str(value_hdu.header.get("BUNIT", ""))
            meta = {key: primary[key] for key in _META_KEYS if key in primary}
            plateifu = str(primary.get("PLATEIFU", "")).strip() or _plateifu_from_name(path)
            mangaid = str(primary.get("MANGAID", "")).strip()
            ra = _first_float(primary, ("OBJRA", "IFURA"))
            dec = _first_float(primary, ("OBJDEC", "IFUDEC"))
            centre, spaxel_arcsec = sky_position(value_hdu.header, ra, dec)
            truncation = [str(w.message) for w in caught if "truncat" in str(w.message).lower()]
            if truncation:
                raise NotFitsError(path, f"file is truncated ({truncation[0]})")
    except MissingExtensionError as error:
        # A truncated file looks like one with missing extensions: say which it is.
        problem = _truncation_problem(path)
        if problem:
            raise NotFitsError(path, problem) from error
        raise
    except MapsReadError:
        raise
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, TypeError, ValueError,
            IndexError, KeyError) as error:
        # astropy reports a truncated data unit read from memory (.fits.gz) as e.g. "buffer
        # is too small for requested array": say that the file is truncated when it is.
        problem = _truncation_problem(path) or f"not a readable FITS file ({type(error).__name__}: {error})"
        raise NotFitsError(path, problem) from error

    # Native byte order, float32: the files are big-endian and TF wants little-endian.
    value = value.astype(np.float32, copy=False)
    ivar = ivar.astype(np.float32, copy=False)
    reject_mask = sum(1 << DAP_MASK_BITS[bit] for bit in reject_bits)
    with np.errstate(invalid="ignore", over="ignore"):
        valid = (
            ((mask.astype(np.int64) & reject_mask) == 0)
            & np.isfinite(value)
            & np.isfinite(ivar)
            & (ivar > 0)
            & (np.abs(value) <= max_abs_flux)
        )
    flux = np.where(valid, value, np.float32(0)).astype(np.float32)
    ivar = np.where(valid, ivar, np.float32(0)).astype(np.float32)
    return GalaxyMaps(
        flux=flux,
        ivar=ivar,
        valid=valid,
        lines=tuple(available[i] for i in indices),
        plateifu=plateifu,
        mangaid=mangaid,
        ra=ra,
        dec=dec,
        quantity=quantity,
        unit=unit,
        path=str(path),
        meta=meta,
        centre=centre,
        spaxel_arcsec=spaxel_arcsec,
    )


def sky_position(header, ra: float, dec: float) -> tuple[tuple[float, float], float]:
    """``((y, x), spaxel_arcsec)``: where ``(ra, dec)`` falls on a map with this header's WCS.

    ``y, x`` are pixel coordinates with pixel ``i`` spanning ``[i, i + 1)`` (the
    convention of :mod:`ifskeras.survey.preprocess`); everything is NaN when the header
    has no celestial WCS or the position is unknown, so files without one still read.
    """
    nowhere = ((float("nan"), float("nan")), float("nan"))
    if not (np.isfinite(ra) and np.isfinite(dec)):
        return nowhere
    from astropy.wcs import WCS  # deferred, as astropy.io.fits above

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FITSFixedWarning about date cards: harmless here
            celestial = WCS(header).celestial
            if celestial.naxis != 2:
                return nowhere
            x, y = celestial.world_to_pixel_values(ra, dec)
            scales = celestial.proj_plane_pixel_scales()
        spaxel = float(np.mean([getattr(value, "value", value) for value in scales])) * 3600.0
    except Exception:  # a malformed WCS must not stop reading the maps
        return nowhere
    # world_to_pixel gives 0-based pixel centres; pixel i spans [i, i + 1) here.
    centre = (float(y) + 0.5, float(x) + 0.5)
    if not (np.isfinite(centre).all() and np.isfinite(spaxel) and spaxel > 0):
        return nowhere
    return centre, spaxel


def _check_readable(path: Path):
    """Check the file can be opened; return what to hand astropy (bytes in memory for gzip).

    astropy streams gzip through small reads (about 4x slower than decompressing once),
    and MAPS files are about 10 MB unpacked, so gzip files are decompressed here.
    """
    if not path.exists():
        raise NotFitsError(path, "file does not exist")
    if path.is_dir():
        raise NotFitsError(path, "is a directory, not a FITS file")
    if not os.access(path, os.R_OK):
        raise NotFitsError(path, "permission denied")
    if path.stat().st_size == 0:
        raise NotFitsError(path, "file is empty")
    with open(path, "rb") as stream:
        head = stream.read(2)
    if head == b"\x1f\x8b":
        try:
            data = gzip.decompress(path.read_bytes())
        except (OSError, EOFError, zlib.error) as error:
            raise NotFitsError(path, f"corrupt or truncated gzip ({error})") from error
        start, source = data[:80], io.BytesIO(data)
    else:
        with open(path, "rb") as stream:
            start = stream.read(80)
        source = path
    if not start.startswith(b"SIMPLE  ="):
        raise NotFitsError(path, "not a FITS file (no SIMPLE card at the start)")
    return source


def _truncation_problem(path: Path) -> str:
    """Describe how a file is truncated, or return '' if it is whole (only called on errors)."""
    with open(path, "rb") as stream:
        gzipped = stream.read(2) == b"\x1f\x8b"
    if gzipped:
        try:
            with gzip.open(path, "rb") as stream:
                size = 0
                while chunk := stream.read(1 << 20):
                    size += len(chunk)
        except (OSError, EOFError, zlib.error) as error:
            return f"corrupt or truncated gzip ({error})"
    else:
        size = path.stat().st_size
    if size % 2880:
        return f"file is truncated: {size} bytes is not a whole number of 2880-byte FITS blocks"
    return ""


def _extension(hdul, name: str, path: Path):
    try:
        return hdul[name]
    except KeyError:
        present = [hdu.name for hdu in hdul]
        raise MissingExtensionError(
            path, f"missing extension {name}; extensions present: {', '.join(present)}"
        ) from None


def _channel_indices(available: list[str], lines: Sequence[str], path: Path, ext: str) -> list[int]:
    lookup = {name.lower(): index for index, name in enumerate(available)}
    missing = [line for line in lines if line.lower() not in lookup]
    if missing:
        raise MissingLineError(
            path,
            f"line(s) {', '.join(missing)} not in {ext}; available: {', '.join(available)}",
        )
    return [lookup[line.lower()] for line in lines]


def _cube(hdu, path: Path, n_channels: int, *, floating: bool) -> np.ndarray:
    data = hdu.data
    if data is None:
        raise MapsFormatError(path, f"extension {hdu.name} has no data")
    if data.ndim != 3:
        raise MapsFormatError(
            path, f"extension {hdu.name} has {data.ndim} dimensions, expected 3 (channel, y, x)"
        )
    if data.shape[0] != n_channels:
        raise MapsFormatError(
            path, f"extension {hdu.name} has {data.shape[0]} channels, header names {n_channels}"
        )
    if floating and data.dtype.kind != "f":
        raise MapsFormatError(
            path, f"extension {hdu.name} holds {data.dtype.name} data, expected floating point"
        )
    if not floating and data.dtype.kind not in "iu":
        raise MapsFormatError(
            path, f"extension {hdu.name} holds {data.dtype.name} data, expected an integer bitmask"
        )
    return np.asarray(data)


def _first_float(header, keys: Sequence[str]) -> float:
    for key in keys:
        if key in header:
            try:
                return float(header[key])
            except (TypeError, ValueError):
                continue
    return float("nan")


def _plateifu_from_name(path: Path) -> str:
    parts = path.name.split("-")
    if len(parts) >= 3 and parts[0] == "manga":
        return f"{parts[1]}-{parts[2]}"
    return path.name.split(".")[0]
