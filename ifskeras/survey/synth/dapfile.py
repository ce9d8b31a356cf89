"""The DAP MAPS file format of synthetic galaxies: names, headers and bytes on disc.

- :func:`maps_file_name`: the survey's file name of a plate-IFU;
- :func:`write_maps_file`: a :class:`~ifskeras.survey.synth.galaxy.SyntheticGalaxy` as a
  primary header plus the three ``EMLINE_GFLUX`` extensions of the DAP format, with the
  survey's header keys and a celestial WCS (:func:`_wcs_cards`), so
  :func:`ifskeras.survey.maps.read_maps` reads it exactly like a real file;
- a minimal FITS encoder (:func:`_fits_card`, :func:`_fits_header`, :func:`_fits_data`) and
  deterministic gzip (:func:`_gzip`).

Files are written atomically (:func:`ifskeras.common.files.atomic_write_bytes`) and carry no
timestamps: the same galaxy gives the same bytes. The primary header names the survey variant
in ``SYNTHVAR`` (:func:`file_variant` reads it back); classic files carry no such card, as
they did before variants existed, so a missing card means ``classic``.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from ifskeras.common.files import atomic_write_bytes
from ifskeras.survey.synth.galaxy import SyntheticGalaxy
from ifskeras.survey.synth.instrument import _FLUX_UNIT, PSF_FWHM_SPAXELS

__all__ = ["SYNTH_VERSION", "VARIANT_CARD", "maps_file_name", "write_maps_file", "file_variant"]

#: VERSDAP written into synthetic files.
SYNTH_VERSION = "ifskeras-synth"
#: Primary-header card naming the survey variant of a synthetic file (absent: classic).
VARIANT_CARD = "SYNTHVAR"
#: The variant whose files carry no variant card, so they stay byte-identical to the files
#: written before variants existed.
_UNMARKED_VARIANT = "classic"

_DAPTYPE = "HYB10-GAU-MILESHC"
_FILE_SUFFIX = "MAPS-HYB10-GAU-MILESHC.fits.gz"
_IVAR_UNIT = "(1E-17 erg/s/cm^2/spaxel)^{-2}"
_SPAXEL_DEG = 0.5 / 3600.0


def maps_file_name(plateifu: str) -> str:
    """Survey file name of a plate-IFU, e.g. ``manga-10001-1901-MAPS-HYB10-GAU-MILESHC.fits.gz``."""
    return f"manga-{plateifu}-{_FILE_SUFFIX}"


def write_maps_file(
    path: str | os.PathLike,
    galaxy: SyntheticGalaxy,
    *,
    plateifu: str,
    mangaid: str = "",
    ra: float = 0.0,
    dec: float = 0.0,
) -> Path:
    """Write a galaxy as a DAP MAPS file (primary header + the three EMLINE_GFLUX extensions).

    Parameters
    ----------
    path : path-like
        Output file; gzip-compressed when the name ends in ``.gz``. Written atomically.
    galaxy : SyntheticGalaxy
        From :func:`~ifskeras.survey.synth.make_galaxy`.
    plateifu, mangaid : str
        Written into PLATEIFU and MANGAID.
    ra, dec : float
        Degrees, written into OBJRA / OBJDEC (and IFURA / IFUDEC).

    Returns
    -------
    pathlib.Path
        The written file. No timestamps are written: the same galaxy gives the same bytes.

    Notes
    -----
    The file is assembled by a minimal FITS writer (fixed-format cards, big-endian data,
    2880-byte blocks) rather than astropy, whose header handling took most of the time of a
    survey; gzip uses run-length deflate, about twice as fast as level 1 for 7% more bytes.
    """
    path = Path(path)
    plate, _, ifu = plateifu.partition("-")
    primary = [
        ("SIMPLE", True, "conforms to FITS standard"),
        ("BITPIX", 8, "array data type"),
        ("NAXIS", 0, "number of array dimensions"),
        ("EXTEND", True, ""),
        ("MASKNAME", "MANGA_DAPPIXMASK", "Bits in sdssMaskbits.par used by mask extension"),
        ("IFURA", float(ra), "IFU R.A. (J2000 deg.)"),
        ("IFUDEC", float(dec), "IFU Dec. (J2000 deg.)"),
        ("OBJRA", float(ra), "Object R.A. (J2000 deg.)"),
        ("OBJDEC", float(dec), "Object Dec. (J2000 deg.)"),
    ]
    if plate.isdigit():
        primary.append(("PLATEID", int(plate), "Current plate"))
    if ifu.isdigit():
        primary.append(("IFUDSGN", int(ifu), "ifuDesign"))
    primary += [
        ("PLATEIFU", plateifu, "PLATEID-ifuDesign"),
        ("MANGAID", mangaid, "MaNGA ID number"),
        ("RFWHM", PSF_FWHM_SPAXELS / 2.0, "Reconstructed FWHM in r-band (arcsec)"),
        ("DAPTYPE", _DAPTYPE, "DAP analysis method keyword"),
        ("VERSDAP", SYNTH_VERSION, "Synthetic survey, not the MaNGA DAP"),
        ("DAPQUAL", 0, "DAP quality bitmask"),
        ("SYNCLASS", galaxy.galaxy_class, "ifskeras synthetic class"),
    ]
    if galaxy.variant != _UNMARKED_VARIANT:
        primary.append((VARIANT_CARD, galaxy.variant, "ifskeras synthetic survey variant"))
    chunks = [_fits_header(primary)]
    n_lines, height, width = galaxy.flux.shape
    for extname, data, kind in (
        ("EMLINE_GFLUX", galaxy.flux.astype(">f4"), "DATA"),
        ("EMLINE_GFLUX_IVAR", galaxy.ivar.astype(">f4"), "ERROR"),
        ("EMLINE_GFLUX_MASK", galaxy.mask.astype(">i4"), "QUALITY"),
    ):
        cards = [
            ("XTENSION", "IMAGE", "Image extension"),
            ("BITPIX", -32 if data.dtype.kind == "f" else 32, "array data type"),
            ("NAXIS", 3, "number of array dimensions"),
            ("NAXIS1", width, ""),
            ("NAXIS2", height, ""),
            ("NAXIS3", n_lines, ""),
            ("PCOUNT", 0, "number of parameters"),
            ("GCOUNT", 1, "number of groups"),
            *_wcs_cards(width, ra, dec),
            ("MASKNAME", "MANGA_DAPPIXMASK", ""),
        ]
        cards += [(f"C{index:02d}", name, f"Data in channel {index}") for index, name in enumerate(galaxy.lines, 1)]
        if kind != "QUALITY":
            cards.append(("BUNIT", _FLUX_UNIT if kind == "DATA" else _IVAR_UNIT, "Unit of pixel value"))
        cards += [("HDUCLASS", "SDSS", "SDSS format class"), ("HDUCLAS1", "CUBE", "Data format"),
                  ("HDUCLAS2", kind, "")]
        if kind != "DATA":
            cards.append(("SCIDATA", "EMLINE_GFLUX", "Associated data extension"))
        if kind != "ERROR":
            cards.append(("ERRDATA", "EMLINE_GFLUX_IVAR", "Associated inv. variance extension"))
        if kind != "QUALITY":
            cards.append(("QUALDATA", "EMLINE_GFLUX_MASK", "Associated quality extension"))
        cards.append(("EXTNAME", extname, "extension name"))
        chunks += [_fits_header(cards), _fits_data(data)]
    payload = b"".join(chunks)
    if path.name.endswith(".gz"):
        payload = _gzip(payload)
    atomic_write_bytes(path, payload)
    return path


def file_variant(header) -> str:
    """Survey variant of a synthetic MAPS file from its primary header (a mapping of cards).

    Examples
    --------
    >>> file_variant({"VERSDAP": "ifskeras-synth", "SYNTHVAR": "realistic"})
    'realistic'
    >>> file_variant({"VERSDAP": "ifskeras-synth"})
    'classic'
    """
    return str(header.get(VARIANT_CARD, _UNMARKED_VARIANT))


def _wcs_cards(size: int, ra: float, dec: float) -> list[tuple]:
    reference = (size + 1) / 2.0  # 1-based pixel of the map centre
    return [
        ("WCSAXES", 3, "Number of coordinate axes"),
        ("CRPIX1", reference, "Pixel coordinate of reference point"),
        ("CRPIX2", reference, "Pixel coordinate of reference point"),
        ("CRPIX3", 1.0, "Pixel coordinate of reference point"),
        ("PC1_1", -_SPAXEL_DEG, "Coordinate transformation matrix element"),
        ("PC2_2", _SPAXEL_DEG, "Coordinate transformation matrix element"),
        ("CDELT1", 1.0, "[deg] Coordinate increment at reference point"),
        ("CDELT2", 1.0, "[deg] Coordinate increment at reference point"),
        ("CDELT3", 1.0, "Coordinate increment at reference point"),
        ("CUNIT1", "deg", "Units of coordinate increment and value"),
        ("CUNIT2", "deg", "Units of coordinate increment and value"),
        ("CTYPE1", "RA---TAN", "Right ascension, gnomonic projection"),
        ("CTYPE2", "DEC--TAN", "Declination, gnomonic projection"),
        ("CRVAL1", float(ra), "[deg] Coordinate value at reference point"),
        ("CRVAL2", float(dec), "[deg] Coordinate value at reference point"),
        ("CRVAL3", 1.0, "Coordinate value at reference point"),
        ("RADESYS", "ICRS", "Equatorial coordinate system"),
    ]


def _fits_card(key: str, value, comment: str = "") -> str:
    """One 80-character FITS header card in fixed format."""
    if isinstance(value, (bool, np.bool_)):
        text = f"{'T' if value else 'F':>20}"
    elif isinstance(value, (int, np.integer)):
        text = f"{int(value):>20}"
    elif isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            raise ValueError(f"FITS header values must be finite. Received: {key}={value!r}")
        number = f"{float(value):.16G}"
        mantissa, _, exponent = number.partition("E")
        if "." not in mantissa:
            mantissa += ".0"
        text = f"{mantissa + ('E' + exponent if exponent else ''):>20}"
    else:
        quoted = str(value).replace("'", "''")
        text = f"'{quoted:<8}'"
        if len(text) < 20:
            text = f"{text:<20}"
    card = f"{key:<8}= {text}"
    if comment:
        card += f" / {comment}"
    if len(card) > 80 and len(f"{key:<8}= {text}") > 80:
        raise ValueError(f"FITS card too long for {key}. Received: {value!r}")
    return f"{card[:80]:<80}"


def _fits_header(cards: list[tuple]) -> bytes:
    """Header unit: cards, END, padded with blanks to a multiple of 2880 bytes."""
    text = "".join(_fits_card(*card) for card in cards) + f"{'END':<80}"
    text += " " * (-len(text) % 2880)
    return text.encode("ascii")


def _fits_data(data: np.ndarray) -> bytes:
    """Data unit: big-endian bytes padded with zeros to a multiple of 2880 bytes."""
    raw = data.tobytes()
    return raw + b"\0" * (-len(raw) % 2880)


def _gzip(payload: bytes) -> bytes:
    """gzip stream with run-length deflate and no timestamp (deterministic bytes)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 9, zlib.Z_RLE)
    return compressor.compress(payload) + compressor.flush()
