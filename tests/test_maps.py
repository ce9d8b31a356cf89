"""The MAPS reader on real DAP files, synthetic files and deliberately broken ones."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
from astropy.io import fits
from simulated import (
    MAP_SIZE,
    REAL_FILES,
    drop_lines,
    galaxy,
    galaxy_hdulist,
    interior_spaxels,
    reorder_channels,
    retyped,
    truncate,
    without_channel_keys,
    without_extension,
    write_galaxy,
    write_hdulist,
)

from ifskeras.survey.lines import DEFAULT_LINES, DR15_LINES, LineSelectionError, pretty_line_name, select_lines
from ifskeras.survey.maps import (
    MapsFormatError,
    MissingExtensionError,
    MissingLineError,
    NotFitsError,
    read_maps,
)

needs_real_data = pytest.mark.skipif(not REAL_FILES, reason="real MaNGA files in ../shared/data are absent")


def test_default_lines_are_the_papers_19_in_wavelength_order():
    waves = [DR15_LINES[name] for name in DEFAULT_LINES]
    assert len(DEFAULT_LINES) == 19
    assert waves == sorted(waves)
    assert all(3800 < w < 8000 for w in waves)
    assert "OII-3727" not in DEFAULT_LINES and "Hthe-3798" not in DEFAULT_LINES


def test_select_lines_by_name_and_range():
    assert select_lines(["ha-6564", "HB-4862"]) == ("Hb-4862", "Ha-6564")
    assert select_lines(wavelength_range=(6500, 6600)) == ("NII-6549", "Ha-6564", "NII-6585")
    with pytest.raises(LineSelectionError, match="Unknown emission line 'Hx-1'"):
        select_lines(["Hx-1"])
    assert pretty_line_name("OIII-5008") == "[OIII] 5008"
    assert pretty_line_name("Ha-6564") == "H\u03b1 6564"


@needs_real_data
@pytest.mark.realdata
@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name[:15])
def test_real_file_matches_fits_values(path):
    maps = read_maps(path)
    with fits.open(path) as hdul:
        names = [hdul["EMLINE_GFLUX"].header[f"C{i:02d}"] for i in range(1, 23)]
        raw_flux = hdul["EMLINE_GFLUX"].data
        raw_ivar = hdul["EMLINE_GFLUX_IVAR"].data
        raw_mask = hdul["EMLINE_GFLUX_MASK"].data
        primary = hdul[0].header
    assert maps.lines == DEFAULT_LINES
    assert maps.flux.shape == (19,) + raw_flux.shape[1:]
    assert maps.flux.dtype == np.float32 and maps.flux.dtype.isnative
    assert maps.plateifu == primary["PLATEIFU"] and maps.mangaid == primary["MANGAID"]
    assert maps.ra == pytest.approx(primary["OBJRA"]) and maps.dec == pytest.approx(primary["OBJDEC"])
    assert maps.meta["DAPTYPE"] == "HYB10-GAU-MILESHC"
    for line in ("Ha-6564", "OIII-5008", "Hb-4862"):
        ours, theirs = DEFAULT_LINES.index(line), names.index(line)
        expected_valid = (
            ((raw_mask[theirs] & ((1 << 0) | (1 << 30))) == 0)
            & (raw_ivar[theirs] > 0)
            & np.isfinite(raw_flux[theirs])
        )
        np.testing.assert_array_equal(maps.valid[ours], expected_valid)
        np.testing.assert_array_equal(maps.flux[ours][expected_valid], raw_flux[theirs][expected_valid])
        assert np.all(maps.flux[ours][~expected_valid] == 0)
        assert np.all(maps.ivar[ours][~expected_valid] == 0)
    # mask==0 and ivar>0 disagree on some pixels of real files: both rules must apply.
    assert ((raw_mask != 0) & (raw_ivar > 0)).any()


def test_channels_found_by_name_not_position(tmp_path):
    shuffled = list(DR15_LINES)[::-1]
    path = write_hdulist(tmp_path / "manga-1-2-MAPS.fits", reorder_channels(galaxy_hdulist(), shuffled))
    maps = read_maps(path, lines=["ha-6564"])
    with fits.open(path) as hdul:
        expected = hdul["EMLINE_GFLUX"].data[shuffled.index("Ha-6564")]
    assert maps.valid[0].any()
    np.testing.assert_array_equal(maps.flux[0][maps.valid[0]], expected[maps.valid[0]])
    # Same values as the file in the generator's order: the reader followed the names.
    in_order = read_maps(write_galaxy(tmp_path / "manga-1-3-MAPS.fits"), lines=["ha-6564"])
    np.testing.assert_array_equal(maps.flux, in_order.flux)
    assert maps.lines == ("Ha-6564",)


def test_masked_nonfinite_and_overflow_pixels_are_invalid(tmp_path):
    hdul = galaxy_hdulist()
    assert hdul["EMLINE_GFLUX_MASK"].data[:, 0, 0].all()  # the corner lies outside the bundle: NOCOV
    nan, inf, huge, negative_ivar, unreliable = interior_spaxels(galaxy().as_galaxy_maps(DR15_LINES), 5)
    hdul["EMLINE_GFLUX"].data[(slice(None), *nan)] = np.nan
    hdul["EMLINE_GFLUX"].data[(slice(None), *inf)] = np.inf
    hdul["EMLINE_GFLUX"].data[(slice(None), *huge)] = 1e38
    hdul["EMLINE_GFLUX_IVAR"].data[(slice(None), *negative_ivar)] = -1.0
    hdul["EMLINE_GFLUX_MASK"].data[(slice(None), *unreliable)] = 1 << 5  # UNRELIABLE: kept by default
    path = write_hdulist(tmp_path / "m.fits.gz", hdul)
    maps = read_maps(path)
    for y, x in ((0, 0), nan, inf, huge, negative_ivar):
        assert not maps.valid[:, y, x].any()
        assert np.all(maps.flux[:, y, x] == 0) and np.all(maps.ivar[:, y, x] == 0)
    assert maps.valid[(slice(None), *unreliable)].all()
    assert not read_maps(path, reject_bits=("NOCOV", "DONOTUSE", "UNRELIABLE")).valid[(slice(None), *unreliable)].any()
    assert np.isfinite(maps.flux).all()


def test_plateifu_falls_back_to_file_name(tmp_path):
    hdul = galaxy_hdulist()
    del hdul[0].header["PLATEIFU"]
    path = write_hdulist(tmp_path / "manga-8143-3701-MAPS-HYB10-GAU-MILESHC.fits", hdul)
    assert read_maps(path).plateifu == "8143-3701"


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda p: p.write_bytes(b""), NotFitsError, "file is empty"),
        (lambda p: p.write_bytes(os.urandom(4000)), NotFitsError, "not a FITS file"),
        (lambda p: p.write_bytes(b"SIMPLE = T\nthis is text, not FITS\n" * 10), NotFitsError, "not a FITS file"),
    ],
    ids=["empty", "random-bytes", "text"],
)
def test_unreadable_files_raise_typed_errors(tmp_path, make, error, message):
    path = tmp_path / "manga-1-1-MAPS.fits.gz"
    make(path)
    with pytest.raises(error, match=message) as info:
        read_maps(path)
    assert str(path) in str(info.value)


def test_truncated_gzip(tmp_path):
    path = truncate(write_galaxy(tmp_path / "manga-1-2-MAPS.fits.gz"))
    with pytest.raises(NotFitsError, match="truncated") as info:
        read_maps(path)
    assert str(path) in str(info.value)

    cut = write_galaxy(tmp_path / "cut.fits")
    cut.write_bytes(cut.read_bytes()[:-1000])
    with pytest.raises(NotFitsError, match="truncated"):
        read_maps(cut)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(NotFitsError, match="does not exist"):
        read_maps(tmp_path / "absent.fits")
    with pytest.raises(NotFitsError, match="is a directory"):
        read_maps(tmp_path)


def test_missing_extension_names_what_is_present(tmp_path):
    path = write_hdulist(tmp_path / "m.fits", without_extension(galaxy_hdulist(), "EMLINE_GFLUX_IVAR"))
    with pytest.raises(MissingExtensionError, match="missing extension EMLINE_GFLUX_IVAR; extensions present: PRIMARY"):
        read_maps(path)


def test_missing_line_names_line_and_available(tmp_path):
    path = write_hdulist(tmp_path / "m.fits", drop_lines(galaxy_hdulist(), "HeII-4687"))
    with pytest.raises(MissingLineError, match=r"HeII-4687 not in EMLINE_GFLUX; available: OII-3727") as info:
        read_maps(path)
    assert str(path) in str(info.value)


def test_no_channel_keys(tmp_path):
    path = write_hdulist(tmp_path / "m.fits", without_channel_keys(galaxy_hdulist()))
    with pytest.raises(MapsFormatError, match="no channel keys"):
        read_maps(path)


def test_wrong_dimensionality_and_shape_mismatch(tmp_path):
    hdul = galaxy_hdulist()
    hdul["EMLINE_GFLUX"].data = hdul["EMLINE_GFLUX"].data[0]
    path = write_hdulist(tmp_path / "flat.fits", hdul)
    with pytest.raises(MapsFormatError, match="2 dimensions, expected 3"):
        read_maps(path)

    hdul = galaxy_hdulist()
    hdul["EMLINE_GFLUX_IVAR"].data = hdul["EMLINE_GFLUX_IVAR"].data[:, :5, :5].copy()
    path = write_hdulist(tmp_path / "mismatch.fits", hdul)
    with pytest.raises(MapsFormatError, match=rf"shapes differ: EMLINE_GFLUX \(22, {MAP_SIZE}, {MAP_SIZE}\)"):
        read_maps(path)


def test_integer_flux_is_refused(tmp_path):
    path = write_hdulist(tmp_path / "int.fits", retyped(galaxy_hdulist(), "EMLINE_GFLUX", np.int16))
    with pytest.raises(MapsFormatError, match="int16 data, expected floating point"):
        read_maps(path)


def test_gzip_and_plain_read_identically(tmp_path):
    plain = write_galaxy(tmp_path / "a.fits")
    packed = tmp_path / "a.fits.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a, b = read_maps(plain), read_maps(packed)
    assert a.valid.any()
    np.testing.assert_array_equal(a.flux, b.flux)
    np.testing.assert_array_equal(a.valid, b.valid)


def test_other_quantity_and_bad_arguments(tmp_path):
    path = write_galaxy(tmp_path / "a.fits")
    with pytest.raises(MissingExtensionError, match="EMLINE_GVEL"):
        read_maps(path, quantity="gvel")
    with pytest.raises(ValueError, match="Received: 'XYZ'"):
        read_maps(path, quantity="xyz")
    with pytest.raises(ValueError, match="Unknown mask bits"):
        read_maps(path, reject_bits=("NOPE",))


def test_unreadable_permissions(tmp_path, monkeypatch):
    path = write_galaxy(tmp_path / "a.fits")
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: simulate the check a normal user meets
        monkeypatch.setattr(os, "access", lambda p, mode: False)
    with pytest.raises(NotFitsError, match="permission denied"):
        read_maps(path)
