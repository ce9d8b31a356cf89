"""Synthetic survey: DAP file format, footprint, physics of the line ratios, determinism, CLI,
and the two variants (classic pinned byte for byte; what realistic adds, feature by feature)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import re

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from simulated import REAL_FILES
from typer.testing import CliRunner

from ifskeras.survey.bpt import aperture_sums, central_aperture_fluxes, classify_bpt
from ifskeras.survey.lines import DEFAULT_LINES, DR15_LINES, DR17_LINES
from ifskeras.survey.maps import DAP_MASK_BITS, read_maps
from ifskeras.survey.synth import (
    CASE_B_BALMER,
    CATALOG_COLUMNS,
    CLASSES,
    CLASSIC_DOUBLET_RATIOS,
    DAP_TIED_LINES,
    DEFAULT_VARIANT,
    DOUBLET_RATIOS,
    IFU_MAP_SIZES,
    REALISTIC_CATALOG_COLUMNS,
    REALISTIC_CLASS_FRACTIONS,
    VARIANT_CARD,
    VARIANTS,
    SurveyExistsError,
    catalog_columns,
    class_counts,
    default_class_fractions,
    file_variant,
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


@pytest.mark.parametrize("variant, ratios", [("classic", CLASSIC_DOUBLET_RATIOS), ("realistic", DOUBLET_RATIOS)])
def test_doublet_ratios_hold_in_the_model_and_the_dap_tied_lines_in_the_files(variant, ratios):
    galaxy = _galaxy("Seyfert", seed=6, dust_av=0.0, dap="dr17", variant=variant)
    lines = galaxy.lines
    for weak, (strong, ratio) in ratios.items():
        denominator = galaxy.model[lines.index(strong)]
        lit = denominator > 1e-3 * denominator.max()
        np.testing.assert_allclose(galaxy.model[lines.index(weak)][lit] / denominator[lit], ratio, rtol=1e-4)
    for weak in DAP_TIED_LINES:
        strong, ratio = ratios[weak]
        w, s = lines.index(weak), lines.index(strong)
        np.testing.assert_allclose(galaxy.flux[w], ratio * galaxy.flux[s], rtol=1e-6)
        covered = galaxy.ivar[s] > 0
        np.testing.assert_allclose(galaxy.ivar[w][covered], galaxy.ivar[s][covered] / ratio**2, rtol=1e-5)


def test_realistic_ties_the_doublets_at_the_dap_values_and_classic_keeps_its_own():
    dap_values = {"OIII-4960": 0.340, "NII-6549": 0.327, "OI-6365": 0.328}
    assert {weak: ratio for weak, (_, ratio) in DAP_TIED_LINES.items()} == dap_values
    assert all(DOUBLET_RATIOS[weak][1] == ratio for weak, ratio in dap_values.items())
    assert [CLASSIC_DOUBLET_RATIOS[weak][1] for weak in dap_values] == [0.335, 0.34, 0.32]
    realistic = _galaxy("SF", seed=2, variant="realistic")
    index = realistic.lines.index
    for weak, ratio in dap_values.items():
        strong = DAP_TIED_LINES[weak][0]
        lit = realistic.flux[index(strong)] > 0
        ratios = realistic.flux[index(weak)][lit] / realistic.flux[index(strong)][lit]
        np.testing.assert_allclose(ratios, ratio, rtol=1e-6)


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_FILES, reason="real MaNGA files in ../shared/data are absent")
@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name[6:15])
def test_dap_tied_lines_are_the_ratios_of_the_real_files(path):
    maps = read_maps(path, tuple(DR15_LINES))
    for weak, (strong, ratio) in DAP_TIED_LINES.items():
        w, s = maps.lines.index(weak), maps.lines.index(strong)
        lit = maps.valid[w] & maps.valid[s] & (maps.flux[s] > 0)
        assert lit.sum() > 300
        np.testing.assert_allclose(maps.flux[w][lit] / maps.flux[s][lit], ratio, rtol=1e-5)


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


# ----------------------------------------------------------------------------- variants

#: sha256 over the decompressed MAPS files and catalog.csv of two tiny classic surveys (one
#: galaxy of every class in DR15; three DR17 galaxies), computed with the code as it was
#: before variants existed (commit d02ed22). Decompressed, so a zlib update cannot break it;
#: catalog.fits is left out because its bytes belong to astropy's writer.
CLASSIC_SURVEY_SHA256 = {
    "dr15": "3578b9f8f505022a0bdca8a0fd66c1b2abad2c995945a08d9c82ad63192add74",
    "dr17": "c3bd6a7acd4b95be6126f883d56eaccf9e735d1c4e2b7743b8c0e5a8e2110e71",
}
EVERY_CLASS = {name: 1.0 for name in CLASSES}


def _survey_sha256(summary) -> str:
    digest = hashlib.sha256()
    for path in summary.paths:
        digest.update(gzip.decompress(path.read_bytes()))
    digest.update(summary.catalog_csv.read_bytes())
    return digest.hexdigest()


def _auroc(positive, negative) -> float:
    """Probability that a positive scores above a negative (ties count half)."""
    positive, negative = np.asarray(positive)[:, None], np.asarray(negative)[None, :]
    return float(np.mean(positive > negative) + 0.5 * np.mean(positive == negative))


def _central_ha(galaxy, radius=3.0) -> float:
    """Mean noiseless Ha surface brightness within ``radius`` spaxels of the map centre."""
    ha = galaxy.model[galaxy.lines.index("Ha-6564")]
    rows, columns = np.indices(ha.shape) - (ha.shape[0] - 1) / 2
    return float(ha[np.hypot(rows, columns) <= radius].mean())


def _axis_ratio(image: np.ndarray, radius: float) -> float:
    """Minor/major axis ratio from the second moments of ``image`` within ``radius`` of the map centre."""
    rows, columns = np.indices(image.shape) - (image.shape[0] - 1) / 2
    weight = np.where(np.hypot(rows, columns) <= radius, image, 0.0)
    moments = np.array([
        [np.sum(weight * columns**2), np.sum(weight * rows * columns)],
        [np.sum(weight * rows * columns), np.sum(weight * rows**2)],
    ])
    minor, major = np.linalg.eigvalsh(moments)
    return float(np.sqrt(minor / major))


def _has_peak_near(image: np.ndarray, column: float, row: float, *, window=3, tolerance=2.0) -> bool:
    """Whether a local maximum of ``image`` (over a (2 window + 1)^2 box) lies within ``tolerance`` spaxels."""
    size = image.shape[0]
    padded = np.pad(image, window, constant_values=-np.inf)
    neighbourhood_max = np.max([
        padded[window + dy: window + dy + size, window + dx: window + dx + size]
        for dy in range(-window, window + 1) for dx in range(-window, window + 1)
    ], axis=0)
    peaks = np.argwhere(image >= neighbourhood_max)
    return bool(np.hypot(peaks[:, 0] - row, peaks[:, 1] - column).min() <= tolerance)


def _neighbour_correlation(galaxy) -> tuple[float, float]:
    """Correlation of the noise pulls of horizontally adjacent spaxels, and the pulls' std.

    Only spaxels whose noiseless flux is 5 sigma above zero (zero-clipping negligible) and
    lines the DAP does not tie (tied ones copy their partner's noise).
    """
    left, right, pulls = [], [], []
    for index, name in enumerate(galaxy.lines):
        if name in DAP_TIED_LINES:
            continue
        ivar = galaxy.ivar[index].astype(float)
        pull = (galaxy.flux[index] - galaxy.model[index]) * np.sqrt(ivar)
        usable = (galaxy.mask[index] == 0) & (ivar > 0) & (galaxy.model[index] * np.sqrt(ivar) > 5)
        pairs = usable[:, :-1] & usable[:, 1:]
        left.append(pull[:, :-1][pairs])
        right.append(pull[:, 1:][pairs])
        pulls.append(pull[usable])
    left, right = np.concatenate(left), np.concatenate(right)
    return float(np.corrcoef(left, right)[0, 1]), float(np.concatenate(pulls).std())


@pytest.fixture(scope="module")
def realistic_plate(tmp_path_factory):
    out = tmp_path_factory.mktemp("realistic") / "survey"
    return make_survey(out, 17, seed=5, variant="realistic")


def test_classic_survey_is_byte_identical_to_the_survey_before_variants(tmp_path):
    dr15 = make_survey(tmp_path / "dr15", 6, seed=5, class_fractions=EVERY_CLASS, variant="classic")
    dr17 = make_survey(tmp_path / "dr17", 3, seed=2, dap="dr17", variant="classic")
    assert set(dr15.counts) == set(CLASSES)
    assert _survey_sha256(dr15) == CLASSIC_SURVEY_SHA256["dr15"]
    assert _survey_sha256(dr17) == CLASSIC_SURVEY_SHA256["dr17"]
    # Classic files and catalogues carry no variant mark: they predate it.
    with fits.open(dr15.paths[0]) as hdul:
        assert VARIANT_CARD not in hdul[0].header and file_variant(hdul[0].header) == "classic"
    assert tuple(Table.read(dr15.catalog_fits).colnames) == CATALOG_COLUMNS == catalog_columns("classic")
    assert VARIANT_CARD not in fits.getheader(dr15.catalog_fits, 1)
    assert make_survey(tmp_path / "default", 1, seed=5).variant == DEFAULT_VARIANT in VARIANTS


def test_realistic_files_and_catalogue_name_their_variant(realistic_plate):
    assert realistic_plate.variant == "realistic"
    for path in realistic_plate.paths[:3]:
        with fits.open(path) as hdul:
            hdul.verify("exception")
            assert hdul[0].header[VARIANT_CARD] == "realistic" == file_variant(hdul[0].header)
        assert read_maps(path).flux.shape[0] == 19, "realistic files read like any MAPS file"
    with open(realistic_plate.catalog_csv, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0]) == CATALOG_COLUMNS + REALISTIC_CATALOG_COLUMNS == catalog_columns("realistic")
    assert {row["variant"] for row in rows} == {"realistic"}
    assert fits.getheader(realistic_plate.catalog_fits, 1)[VARIANT_CARD] == "realistic"
    expected = {name: count for name, count in class_counts(17, REALISTIC_CLASS_FRACTIONS).items() if count}
    assert realistic_plate.counts == expected


def test_realistic_class_mix_has_mangas_share_of_retired_galaxies():
    realistic = class_counts(1000, default_class_fractions("realistic"))
    classic = class_counts(1000, default_class_fractions("classic"))
    assert 250 <= realistic["retired"] <= 300 and classic["retired"] == 120
    assert realistic["Seyfert"] == classic["Seyfert"] and realistic["blueberry"] == classic["blueberry"]


def test_unknown_variant_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="variant must be one of"):
        _galaxy("SF", variant="hard")
    with pytest.raises(ValueError, match="variant must be one of"):
        make_survey(tmp_path / "none", 2, variant="hard")
    assert not (tmp_path / "none").exists()


def test_realistic_ha_brightness_overlaps_between_classes_and_classic_does_not():
    """Seyferts and blueberries vs SF, 19-fibre galaxies: neither the total Ha flux nor the
    central surface brightness ranks them in the realistic survey; the classic central
    surface brightness does."""
    per_class = {"SF": 160, "Seyfert": 80, "blueberry": 80}
    measured = {}
    for variant in ("classic", "realistic"):
        total, central = {}, {}
        for galaxy_class, count in per_class.items():
            galaxies = [_galaxy(galaxy_class, seed=1000 + seed, ifu_fibres=19, variant=variant)
                        for seed in range(count)]
            total[galaxy_class] = [galaxy.params["ha_total"] for galaxy in galaxies]
            central[galaxy_class] = [_central_ha(galaxy) for galaxy in galaxies]
        measured[variant] = {
            name: _auroc(values["Seyfert"] + values["blueberry"], values["SF"])
            for name, values in (("total", total), ("central", central))
        }
    assert 0.35 < measured["realistic"]["total"] < 0.65, measured
    assert 0.35 < measured["realistic"]["central"] < 0.65, measured
    assert measured["classic"]["central"] > 0.75, measured


def test_realistic_noise_is_correlated_between_neighbours_and_ivar_stays_per_spaxel():
    classic_correlation, classic_std = _neighbour_correlation(_galaxy("SF", seed=21, ifu_fibres=127, ha_peak=30.0))
    correlation, std = _neighbour_correlation(_galaxy("SF", seed=21, ifu_fibres=127, ha_peak=30.0, variant="realistic"))
    assert abs(classic_correlation) < 0.05 and correlation > 0.5
    # The written ivar is each spaxel's own variance, as in the DAP, which ignores covariance.
    assert classic_std == pytest.approx(1.0, abs=0.03) and std == pytest.approx(1.0, abs=0.05)


def test_diffuse_ionised_gas_makes_nii_ha_rise_outwards_in_realistic_discs():
    def outward_rise(galaxy):
        """log [NII]/Ha in the outer disc (0.6-0.85 of the bundle radius) minus the inner quarter's."""
        ha, nii = (galaxy.model[galaxy.lines.index(name)] for name in ("Ha-6564", "NII-6585"))
        rows, columns = np.indices(ha.shape) - (ha.shape[0] - 1) / 2
        radius = np.hypot(rows, columns) / (ha.shape[0] / 2 - 1)
        inner, outer = radius < 0.25, (radius > 0.6) & (radius < 0.85)
        return np.log10(nii[outer].sum() / ha[outer].sum()) - np.log10(nii[inner].sum() / ha[inner].sum())

    rises = {}
    for variant in ("classic", "realistic"):
        galaxies = [_galaxy("SF", seed=seed, ifu_fibres=37, inclination=30.0, variant=variant) for seed in range(16)]
        rises[variant] = np.array([outward_rise(galaxy) for galaxy in galaxies])
        levels = np.array([galaxy.params["dig_level"] for galaxy in galaxies])
        assert ((levels >= 0.02) & (levels <= 0.10)).all() if variant == "realistic" else (levels == 0).all()
    # Classic discs only have the metallicity gradient: [NII]/Ha falls outwards.
    assert (rises["classic"] < 0).all() and np.median(rises["realistic"]) > 0.1, rises


def test_realistic_seyferts_include_off_centre_and_weak_nuclei():
    def central_bpt_class(galaxy):
        model = galaxy.model.astype(float)
        flux, _ = aperture_sums(model, np.ones_like(model), np.ones_like(model, dtype=bool), 3.0)
        return str(classify_bpt(dict(zip(galaxy.lines, flux))))

    def oiii_peak_distance(galaxy):
        oiii = galaxy.model[galaxy.lines.index("OIII-5008")]
        row, column = np.unravel_index(np.argmax(oiii), oiii.shape)
        return float(np.hypot(row - (oiii.shape[0] - 1) / 2, column - (oiii.shape[1] - 1) / 2))

    classic = [_galaxy("Seyfert", seed=seed, ifu_fibres=37) for seed in range(40)]
    realistic = [_galaxy("Seyfert", seed=seed, ifu_fibres=37, variant="realistic") for seed in range(40)]
    assert {central_bpt_class(galaxy) for galaxy in classic} == {"Seyfert"}
    assert max(oiii_peak_distance(galaxy) for galaxy in classic) < 1.0
    assert all(galaxy.params["agn_offset"] == 0 for galaxy in classic)

    off_centre = [galaxy for galaxy in realistic if galaxy.params["agn_offset"] > 0]
    assert 6 <= len(off_centre) <= 20, "about 30% of Seyferts"
    for galaxy in off_centre:
        offset = galaxy.params["agn_offset"]
        assert 1.0 <= offset <= 4.0, "0.5 to 2 arcsec"
        # The galaxy sits within half a spaxel of the map centre in each axis.
        assert oiii_peak_distance(galaxy) == pytest.approx(offset, abs=1.2)
    # Weak nuclei are diluted by the host's star formation: some leave the Seyfert region.
    diluted = [galaxy for galaxy in realistic if central_bpt_class(galaxy) != "Seyfert"]
    assert len(diluted) >= 4 and all(galaxy.params["agn_fraction"] < 0.2 for galaxy in diluted)


def test_realistic_bars_elongate_the_centre_of_face_on_discs():
    ratios = {0: [], 1: []}
    for seed in range(40):
        galaxy = _galaxy("SF", seed=seed, ifu_fibres=61, inclination=0.0, variant="realistic")
        ha = galaxy.model[galaxy.lines.index("Ha-6564")].astype(float)
        ratios[galaxy.params["barred"]].append(_axis_ratio(ha, 2.5 * galaxy.params["scale_length"]))
    assert len(ratios[1]) >= 6 and len(ratios[0]) >= 20, "about 30% of discs are barred"
    assert np.median(ratios[1]) < 0.85 < 0.9 < np.median(ratios[0]), ratios
    assert all(_galaxy("SF", seed=seed, variant="classic").params["barred"] == 0 for seed in range(5))


def test_realistic_edge_on_discs_are_thin_and_more_inclined_than_classic_ones():
    realistic = [_galaxy("SF", seed=seed, ifu_fibres=61, variant="realistic") for seed in range(60)]
    edge_on = [galaxy for galaxy in realistic if galaxy.params["edge_on"]]
    assert 4 <= len(edge_on) <= 18, "about 15% of discs"
    assert all(84 <= galaxy.params["inclination"] <= 90 for galaxy in edge_on)
    ratios = [_axis_ratio(galaxy.model[galaxy.lines.index("Ha-6564")].astype(float), 30) for galaxy in edge_on]
    assert np.median(ratios) < 0.3, ratios
    # The classic disc thickness caps the drawn inclination below 82 degrees.
    assert max(_galaxy("SF", seed=seed).params["inclination"] for seed in range(60)) < 82


def test_realistic_companions_are_a_second_flux_peak_in_the_bundle():
    at_companion, mirrored, seed = [], [], 0
    while len(at_companion) < 12:
        galaxy = _galaxy(CLASSES[seed % len(CLASSES)], seed=seed, ifu_fibres=61, variant="realistic")
        seed += 1
        dx, dy = galaxy.params["companion_dx"], galaxy.params["companion_dy"]
        if dx == 0 and dy == 0:
            continue
        ha = galaxy.model[galaxy.lines.index("Ha-6564")].astype(float)
        centre = (ha.shape[0] - 1) / 2
        at_companion.append(_has_peak_near(ha, centre + dx, centre + dy))
        mirrored.append(_has_peak_near(ha, centre - dx, centre - dy))
    assert 12 / seed == pytest.approx(0.12, abs=0.07), "about 12% of galaxies have a companion"
    assert np.mean(at_companion) >= 0.9 and np.mean(mirrored) <= 0.1, (at_companion, mirrored)


def test_cli_synth_variant_option(tmp_path):
    from ifskeras.cli.app import app

    runner = CliRunner()
    out = tmp_path / "realistic"
    result = runner.invoke(app, ["synth", str(out), "--n", "2", "--seed", "1", "--variant", "realistic", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "realistic" in result.output
    with fits.open(sorted(out.glob("manga-*"))[0]) as hdul:
        assert hdul[0].header[VARIANT_CARD] == "realistic"

    bad = runner.invoke(app, ["synth", str(tmp_path / "x"), "--variant", "hard"])
    assert bad.exit_code != 0 and not (tmp_path / "x").exists()
    # The option defaults to the library's constant; its help must name that default.
    import typer

    option = next(param for param in typer.main.get_command(app).commands["synth"].params if param.name == "variant")
    assert option.default is None and f"default: {DEFAULT_VARIANT}," in option.help


def test_depth_scales_the_inverse_variance_and_nothing_else():
    import numpy as np

    from ifskeras.survey.synth import make_galaxy

    deep = make_galaxy(np.random.default_rng(5), "SF", ifu_fibres=19, defects=False)
    shallow = make_galaxy(np.random.default_rng(5), "SF", ifu_fibres=19, defects=False, depth=0.3)
    np.testing.assert_array_equal(deep.model, shallow.model)
    covered = deep.ivar > 0
    ratio = shallow.ivar[covered] / deep.ivar[covered]
    # The background noise scales with depth; the line's own photon noise does not, so
    # bright spaxels lose a little less.
    assert np.median(ratio) == pytest.approx(0.3, abs=0.005) and 0.299 < ratio.min() and ratio.max() < 0.36
    assert shallow.params["snr_level"] == pytest.approx(0.3 * deep.params["snr_level"], rel=1e-3)
