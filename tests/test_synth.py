"""Synthetic survey: DAP file format, footprint, physics of the line ratios, determinism, CLI."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from typer.testing import CliRunner

from ifskeras.survey.bpt import central_aperture_fluxes
from ifskeras.survey.lines import DEFAULT_LINES, DR15_LINES, DR17_LINES
from ifskeras.survey.maps import DAP_MASK_BITS, read_maps
from ifskeras.survey.synth import (
    CASE_B_BALMER,
    CATALOG_COLUMNS,
    CLASSES,
    DAP_TIED_LINES,
    DOUBLET_RATIOS,
    IFU_MAP_SIZES,
    SurveyExistsError,
    class_counts,
    make_galaxy,
    make_survey,
    parse_class_fractions,
    write_maps_file,
)

NOCOV = 1 << DAP_MASK_BITS["NOCOV"]
DONOTUSE = 1 << DAP_MASK_BITS["DONOTUSE"]
NEARBOUND = 1 << DAP_MASK_BITS["NEARBOUND"]
FILE_NAME = re.compile(r"^manga-(\d+)-(\d+)-MAPS-HYB10-GAU-MILESHC\.fits\.gz$")
#: One full plate (17 IFUs: every bundle size) with every class present.
PLATE_FRACTIONS = {"SF": 0.3, "composite": 0.1, "Seyfert": 0.2, "LINER": 0.15, "retired": 0.1, "blueberry": 0.15}


@pytest.fixture(scope="module")
def plate_survey(tmp_path_factory):
    out = tmp_path_factory.mktemp("plate") / "survey"
    return make_survey(out, 17, seed=5, class_fractions=PLATE_FRACTIONS)


def _galaxy(galaxy_class="SF", seed=0, **kwargs):
    return make_galaxy(np.random.default_rng(seed), galaxy_class, **kwargs)


def test_file_names_follow_the_survey_and_plateifus_are_unique(plate_survey):
    names = sorted(path.name for path in plate_survey.out_dir.glob("manga-*"))
    assert names == sorted(path.name for path in plate_survey.paths)
    designs = []
    for name, row in zip([p.name for p in plate_survey.paths], plate_survey.rows):
        plate, design = FILE_NAME.match(name).groups()
        assert f"{plate}-{design}" == row["plateifu"] and plate == "10001"
        assert design.startswith(str(row["ifu_fibres"])) and len(design) == len(str(row["ifu_fibres"])) + 2
        assert row["map_size"] == IFU_MAP_SIZES[row["ifu_fibres"]]
        designs.append(design)
    assert len(set(designs)) == 17
    assert {"1901", "1902", "3701", "3704", "6104", "9102", "12701", "12705"} <= set(designs)


def test_catalogue_csv_and_fits_list_every_file_with_its_parameters(plate_survey):
    with open(plate_survey.catalog_csv, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0]) == CATALOG_COLUMNS
    assert [row["file"] for row in rows] == [path.name for path in plate_survey.paths]
    table = Table.read(plate_survey.catalog_fits)
    assert tuple(table.colnames) == CATALOG_COLUMNS
    assert list(table["plateifu"]) == [row["plateifu"] for row in rows]
    assert np.allclose(table["ra"], [float(row["ra"]) for row in rows])
    assert plate_survey.counts == class_counts(17, PLATE_FRACTIONS)
    assert set(plate_survey.counts) == set(CLASSES)
    for row in rows:
        assert 0 <= float(row["inclination"]) <= 90 and 0 <= float(row["position_angle"]) < 180
        assert float(row["size_factor"]) in (1.5, 2.5) and float(row["snr_level"]) > 0
        assert -10.5 <= float(row["dec"]) <= 71.5 and 0 <= float(row["ra"]) < 360


def test_headers_channels_units_and_big_endian_types(plate_survey):
    path = plate_survey.paths[0]
    with fits.open(path) as hdul:
        hdul.verify("exception")
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "EMLINE_GFLUX", "EMLINE_GFLUX_IVAR", "EMLINE_GFLUX_MASK"]
        primary = hdul[0].header
        assert primary["PLATEIFU"] == plate_survey.rows[0]["plateifu"]
        assert primary["MANGAID"] == plate_survey.rows[0]["mangaid"]
        assert primary["OBJRA"] == pytest.approx(plate_survey.rows[0]["ra"])
        assert primary["OBJDEC"] == pytest.approx(plate_survey.rows[0]["dec"])
        assert primary["VERSDAP"] == "ifskeras-synth" and primary["DAPTYPE"] == "HYB10-GAU-MILESHC"
        for hdu in hdul[1:]:
            assert [hdu.header[f"C{i:02d}"] for i in range(1, 23)] == list(DR15_LINES)
            assert "C23" not in hdu.header and hdu.header["MASKNAME"] == "MANGA_DAPPIXMASK"
        assert hdul["EMLINE_GFLUX"].header["BUNIT"] == "1E-17 erg/s/cm^2/spaxel"
        assert hdul["EMLINE_GFLUX_IVAR"].header["BUNIT"] == "(1E-17 erg/s/cm^2/spaxel)^{-2}"
        assert hdul["EMLINE_GFLUX"].data.dtype == np.dtype(">f4")
        assert hdul["EMLINE_GFLUX_IVAR"].data.dtype == np.dtype(">f4")
        assert hdul["EMLINE_GFLUX_MASK"].data.dtype == np.dtype(">i4")


def test_hexagonal_footprint_is_nocov_outside(plate_survey):
    for path, row in zip(plate_survey.paths, plate_survey.rows):
        with fits.open(path) as hdul:
            flux, ivar, mask = (hdul[name].data for name in ("EMLINE_GFLUX", "EMLINE_GFLUX_IVAR", "EMLINE_GFLUX_MASK"))
        size = row["map_size"]
        assert mask.shape == (22, size, size)
        outside = (mask & NOCOV) > 0
        assert (outside == outside[0]).all(), "coverage is the same for every line"
        assert ((mask[outside] & DONOTUSE) > 0).all()
        assert (flux[outside] == 0).all() and (ivar[outside] == 0).all()
        for corner in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
            assert outside[0][corner]
        centre = size // 2
        # Vertices on the middle row (as in real files), flat edges at top and bottom.
        assert (~outside[0, centre, :]).sum() == size - 2
        assert (~outside[0, :, centre]).sum() < size - 5
        # Area of a hexagon of circumradius size / 2 - 1.
        area = 1.5 * np.sqrt(3) * (size / 2 - 1) ** 2
        assert (~outside[0]).sum() == pytest.approx(area, rel=0.05)


def test_read_maps_returns_exactly_what_was_written(tmp_path):
    galaxy = _galaxy("Seyfert", seed=11, ifu_fibres=61)
    path = write_maps_file(tmp_path / "manga-10001-6101-MAPS-HYB10-GAU-MILESHC.fits.gz", galaxy,
                           plateifu="10001-6101", mangaid="1-000007", ra=150.25, dec=2.5)
    maps = read_maps(path, tuple(DR15_LINES))
    expected = galaxy.as_galaxy_maps(tuple(DR15_LINES), plateifu="10001-6101")
    np.testing.assert_array_equal(maps.flux, expected.flux)
    np.testing.assert_array_equal(maps.ivar, expected.ivar)
    np.testing.assert_array_equal(maps.valid, expected.valid)
    np.testing.assert_array_equal(maps.flux[maps.valid], galaxy.flux[maps.valid])
    assert (maps.valid == ((galaxy.mask == 0) & (galaxy.ivar > 0))).all()
    assert (maps.flux[~maps.valid] == 0).all() and (maps.ivar[~maps.valid] == 0).all()
    # NEARBOUND spaxels keep data and ivar in the file but DONOTUSE makes them invalid.
    nearbound = (galaxy.mask & NEARBOUND) > 0
    assert nearbound.any() and (galaxy.ivar[nearbound] > 0).all() and not maps.valid[nearbound].any()
    assert (maps.plateifu, maps.mangaid, maps.ra, maps.dec) == ("10001-6101", "1-000007", 150.25, 2.5)
    assert maps.unit == "1E-17 erg/s/cm^2/spaxel" and maps.meta["VERSDAP"] == "ifskeras-synth"


def test_dr17_files_have_35_channels_and_the_19_default_lines(tmp_path):
    galaxy = _galaxy("LINER", seed=2, dap="dr17", ifu_fibres=19)
    assert galaxy.lines == tuple(DR17_LINES) and galaxy.flux.shape == (35, 32, 32)
    path = write_maps_file(tmp_path / "manga-10001-1901-MAPS-HYB10-GAU-MILESHC.fits.gz", galaxy, plateifu="10001-1901")
    with fits.open(path) as hdul:
        header = hdul["EMLINE_GFLUX_MASK"].header
        assert header["C35"] == "Peps-9548" and "C36" not in header
    maps = read_maps(path)
    assert maps.lines == DEFAULT_LINES and maps.flux.shape == (19, 32, 32)
    index = [galaxy.lines.index(name) for name in DEFAULT_LINES]
    np.testing.assert_array_equal(maps.flux[maps.valid], galaxy.flux[index][maps.valid])


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    first = make_survey(tmp_path / "a", 4, seed=9)
    second = make_survey(tmp_path / "b", 4, seed=9)
    third = make_survey(tmp_path / "c", 4, seed=10)
    for one, two in zip(first.paths, second.paths):
        assert one.read_bytes() == two.read_bytes()
    assert first.catalog_csv.read_bytes() == second.catalog_csv.read_bytes()
    assert first.catalog_fits.read_bytes() == second.catalog_fits.read_bytes()
    assert any(one.read_bytes() != other.read_bytes() for one, other in zip(first.paths, third.paths))
    np.testing.assert_array_equal(_galaxy("SF", seed=4).flux, _galaxy("SF", seed=4).flux)


def test_balmer_lines_follow_case_b_without_dust_and_redden_with_it():
    clean = _galaxy("SF", seed=3, dust_av=0.0, ifu_fibres=19)
    lines = clean.lines
    hb = clean.model[lines.index("Hb-4862")]
    bright = hb > 1e-3 * hb.max()
    for name, ratio in CASE_B_BALMER.items():
        if name in lines:
            np.testing.assert_allclose(clean.model[lines.index(name)][bright] / hb[bright], ratio, rtol=1e-4)
    for class_name in CLASSES:
        dusty = _galaxy(class_name, seed=8, snr_level=2.0, ha_peak=60.0, dust_av=0.8)
        maps = dusty.as_galaxy_maps(tuple(DR15_LINES))
        flux, _ = central_aperture_fluxes(maps)
        decrement = flux["Ha-6564"] / flux["Hb-4862"]
        assert decrement >= 2.86, class_name
        assert flux["Hgam-4341"] / flux["Hb-4862"] <= CASE_B_BALMER["Hgam-4341"] * 1.05, class_name
        model_hb = dusty.model[dusty.lines.index("Hb-4862")]
        lit = model_hb > 1e-3 * model_hb.max()
        assert (dusty.model[dusty.lines.index("Ha-6564")][lit] / model_hb[lit] >= 2.86 * (1 - 1e-5)).all()


def test_doublet_ratios_hold_in_the_model_and_the_dap_tied_lines_in_the_files():
    galaxy = _galaxy("Seyfert", seed=6, dust_av=0.0, dap="dr17")
    lines = galaxy.lines
    for weak, (strong, ratio) in DOUBLET_RATIOS.items():
        denominator = galaxy.model[lines.index(strong)]
        lit = denominator > 1e-3 * denominator.max()
        np.testing.assert_allclose(galaxy.model[lines.index(weak)][lit] / denominator[lit], ratio, rtol=1e-4)
    for weak, (strong, ratio) in DAP_TIED_LINES.items():
        w, s = lines.index(weak), lines.index(strong)
        np.testing.assert_allclose(galaxy.flux[w], ratio * galaxy.flux[s], rtol=1e-6)
        covered = galaxy.ivar[s] > 0
        np.testing.assert_allclose(galaxy.ivar[w][covered], galaxy.ivar[s][covered] / ratio**2, rtol=1e-5)


def test_noise_is_drawn_from_the_written_ivar():
    galaxy = _galaxy("SF", seed=21, ifu_fibres=127, ha_peak=30.0)
    maps = galaxy.as_galaxy_maps(tuple(DR15_LINES))
    pulls = []
    for index, name in enumerate(maps.lines):
        if name in DAP_TIED_LINES:
            continue
        sigma = np.zeros_like(maps.ivar[index])
        sigma[maps.valid[index]] = maps.ivar[index][maps.valid[index]] ** -0.5
        unclipped = maps.valid[index] & (galaxy.model[index] > 5 * sigma)  # zero-clipping negligible
        pulls.append((maps.flux[index] - galaxy.model[index])[unclipped] / sigma[unclipped])
    pulls = np.concatenate(pulls)
    assert pulls.size > 10_000
    assert abs(pulls.mean()) < 0.03 and pulls.std() == pytest.approx(1.0, abs=0.03)
    assert (galaxy.flux >= 0).all(), "the DAP's Gaussian fluxes are never negative"


def test_surface_brightness_and_noise_span_the_real_files():
    bright = _galaxy("SF", seed=1, ha_peak=70.0, snr_level=0.7, ifu_fibres=37).as_galaxy_maps()
    faint = _galaxy("retired", seed=1, snr_level=1.5, ifu_fibres=37).as_galaxy_maps()
    ha = DEFAULT_LINES.index("Ha-6564")
    # Real 7815-3702: Ha median ~4, 99th percentile ~76, ivar median ~500; 8143-3701: 0.05, ~1000.
    assert 1.0 < np.median(bright.flux[ha][bright.valid[ha]]) < 15.0
    assert 30.0 < np.percentile(bright.flux[ha][bright.valid[ha]], 99) < 120.0
    assert 150.0 < np.median(bright.ivar[ha][bright.valid[ha]]) < 1500.0
    assert np.median(faint.flux[ha][faint.valid[ha]]) < 0.1
    assert 300.0 < np.median(faint.ivar[ha][faint.valid[ha]]) < 3000.0


def test_class_counts_parse_fractions_and_bad_arguments(tmp_path):
    assert class_counts(100) == {"SF": 60, "composite": 13, "Seyfert": 5, "LINER": 9, "retired": 12, "blueberry": 1}
    assert class_counts(7, {"SF": 1, "Seyfert": 1}) == {"SF": 4, "Seyfert": 3}
    assert parse_class_fractions("sf=0.5, LINER=0.5") == {"SF": 0.5, "LINER": 0.5}
    for text in ("SF", "Quasar=1", "SF=x", "SF=-1"):
        with pytest.raises(ValueError):
            parse_class_fractions(text)
    with pytest.raises(ValueError, match="galaxy_class"):
        _galaxy("spiral")
    with pytest.raises(ValueError, match="dr15"):
        _galaxy("SF", dap="dr16")
    with pytest.raises(ValueError, match="ifu_fibres"):
        _galaxy("SF", ifu_fibres=7)
    with pytest.raises(ValueError, match="dust_av"):
        _galaxy("SF", dust_av=-0.1)
    with pytest.raises(ValueError, match="ha_peak"):
        _galaxy("SF", ha_peak=0.0)
    with pytest.raises(ValueError, match="positive"):
        make_survey(tmp_path / "none", 0)


def test_existing_survey_is_refused_and_overwrite_removes_only_its_files(tmp_path):
    out = tmp_path / "survey"
    first = make_survey(out, 3, seed=1)
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(SurveyExistsError, match="already holds a survey"):
        make_survey(out, 2, seed=1)
    second = make_survey(out, 2, seed=2, overwrite=True)
    assert sorted(out.glob("manga-*")) == sorted(second.paths)
    assert not first.paths[2].exists() and (out / "notes.txt").read_text() == "keep me"


def test_cli_synth_writes_a_survey_and_refuses_to_overwrite(tmp_path):
    from ifskeras.cli.app import app

    runner = CliRunner()
    out = tmp_path / "cli-survey"
    result = runner.invoke(app, ["synth", str(out), "--n", "3", "--seed", "1", "--fractions", "SF=2,Seyfert=1"])
    assert result.exit_code == 0, result.output
    assert "wrote 3 MAPS files" in result.output and "Seyfert" in result.output
    assert len(list(out.glob("manga-*-MAPS-HYB10-GAU-MILESHC.fits.gz"))) == 3 and (out / "catalog.fits").exists()

    refused = runner.invoke(app, ["synth", str(out), "--n", "2"])
    assert refused.exit_code == 1
    assert "already holds a survey" in refused.output and "--overwrite" in refused.output

    replaced = runner.invoke(app, ["synth", str(out), "--n", "2", "--dap", "dr17", "--overwrite", "--quiet"])
    assert replaced.exit_code == 0, replaced.output
    assert len(list(out.glob("manga-*"))) == 2

    bad = runner.invoke(app, ["synth", str(tmp_path / "x"), "--fractions", "Quasar=1"])
    assert bad.exit_code != 0 and not (tmp_path / "x").exists()
