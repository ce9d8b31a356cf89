"""``convert --scale re``: every galaxy spans the same number of effective radii on the grid."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from archive_server import drpall_row, write_drpall
from simulated import REAL_FILES
from typer.testing import CliRunner

from ifskeras.cli.app import app
from ifskeras.records import ConvertError, ConvertOptions, convert_maps, read_examples, read_index
from ifskeras.survey.archive import CatalogueError, read_effective_radii
from ifskeras.survey.maps import read_maps, sky_position
from ifskeras.survey.preprocess import PreprocessError, fit_to_grid, radius_box
from ifskeras.survey.synth import effective_radius_spaxels, make_galaxy, make_survey, write_maps_file

HA = 15  # Ha-6564 among the 19 default lines
SIZE = 16


def _write_radii(path, rows):
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, ["plateifu", "re_arcsec"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def two_sizes(tmp_path_factory):
    """Face-on, nearly noiseless discs: bundles of 61 and 127 fibres reaching 1.5 or 2.5 Re."""
    root = tmp_path_factory.mktemp("physical-grid")
    (root / "maps").mkdir()
    rows, factors = [], {}
    for index, (fibres, factor) in enumerate((f, s) for f in (61, 127) for s in (1.5, 2.5) for _ in range(2)):
        galaxy = make_galaxy(np.random.default_rng(index), "SF", ifu_fibres=fibres, size_factor=factor,
                             snr_level=1e4, inclination=0.0, defects=False)
        plateifu = f"{7001 + index}-{fibres}01"
        write_maps_file(root / "maps" / f"manga-{plateifu}-MAPS-HYB10-GAU-MILESHC.fits.gz", galaxy,
                        plateifu=plateifu, mangaid=f"1-{index}", ra=150.0, dec=2.0)
        radius = 0.5 * effective_radius_spaxels(galaxy.flux.shape[-1], factor)
        rows.append({"plateifu": plateifu, "re_arcsec": radius})
        factors[plateifu] = factor
    radii = _write_radii(root / "radii.csv", rows)
    for scale, catalogue in (("bundle", None), ("re", str(radii))):
        convert_maps([root / "maps"], root / scale,
                     ConvertOptions(size=SIZE, scale=scale, radii=catalogue, val_fraction=0, test_fraction=0))
    return root, factors


def _light_radius(flux, valid, aperture):
    """Radius (grid pixels) holding half the Halpha light within ``aperture`` of the grid centre."""
    yy, xx = np.indices(flux.shape) + 0.5
    radius = np.hypot(yy - SIZE / 2, xx - SIZE / 2)
    light = np.clip(flux, 0, None) * valid * (radius < aperture)
    order = np.argsort(radius.ravel())
    cumulative = np.cumsum(light.ravel()[order])
    return radius.ravel()[order][np.searchsorted(cumulative, cumulative[-1] / 2)]


def _size_ratio(root, scale, factors):
    """Median light radius of galaxies whose bundle reaches 1.5 Re over those reaching 2.5 Re."""
    ids = sorted(factors)
    examples = read_examples(root / scale, ids)
    sizes = {1.5: [], 2.5: []}
    for i, plateifu in enumerate(ids):
        # An aperture inside every bundle's footprint on both grids, so truncation plays no part.
        sizes[factors[plateifu]].append(_light_radius(examples["flux"][i, HA, :, :, 0],
                                                      examples["valid"][i, HA, :, :, 0], 0.44 * SIZE))
    return np.median(sizes[1.5]) / np.median(sizes[2.5])


def test_re_scale_gives_galaxies_one_size_on_the_grid(two_sizes):
    root, factors = two_sizes
    # On the bundle's grid a galaxy whose bundle reaches 1.5 Re looks 1.67x larger than one
    # reaching 2.5 Re (measured 1.31: the PSF, fixed in spaxels, blurs the smaller ones
    # more); on the Re grid they look alike (measured 0.94).
    assert _size_ratio(root, "bundle", factors) > 1.2
    assert 0.9 < _size_ratio(root, "re", factors) < 1.1


def test_synthetic_maps_are_centred_on_their_wcs_reference_pixel(two_sizes):
    root, _ = two_sizes
    for path in sorted((root / "maps").glob("*.fits.gz")):
        maps = read_maps(path)
        size = maps.flux.shape[-1]
        # The synthetic files put CRPIX at (size + 1) / 2 and the object on it: the map's middle.
        assert maps.centre == pytest.approx((size / 2, size / 2), abs=1e-6)
        assert maps.spaxel_arcsec == pytest.approx(0.5, rel=1e-6)


def test_re_scale_records_what_it_did(two_sizes):
    root, factors = two_sizes
    from ifskeras.records import load_manifest

    manifest = load_manifest(root / "re")
    assert manifest.preprocessing["scale"] == "re" and manifest.preprocessing["re_span"] == 3.0
    assert manifest.preprocessing["radii"]["file"] == "radii.csv"
    assert len(manifest.preprocessing["radii"]["sha256"]) == 64
    assert load_manifest(root / "bundle").preprocessing["scale"] == "bundle"
    index = {row["id"]: row for row in read_index(root / "re")}
    for plateifu, row in index.items():
        radius_spaxels = float(row["re_arcsec"]) / 0.5
        # The box spans 3 Re around the galaxy, whatever the bundle.
        assert float(row["box_side"]) == pytest.approx(3.0 * radius_spaxels)
    bundle_index = read_index(root / "bundle")
    assert all(row["re_arcsec"] in ("", None) for row in bundle_index)


def test_a_galaxy_without_a_radius_fails_with_its_reason_and_the_rest_converts(tmp_path):
    survey = make_survey(tmp_path / "maps", 4, seed=2)
    radii = read_effective_radii(survey.catalog_csv)
    missing = sorted(radii)[0]
    rows = [{"plateifu": p, "re_arcsec": r} for p, r in radii.items() if p != missing]
    result = convert_maps([tmp_path / "maps"], tmp_path / "records",
                          ConvertOptions(size=SIZE, scale="re", radii=str(_write_radii(tmp_path / "r.csv", rows))))
    assert result.converted == 3
    [failure] = result.failures
    assert missing in failure["path"] and f"no effective radius for plate-IFU {missing}" in failure["reason"]


def test_a_repeat_observation_takes_its_galaxys_radius(tmp_path):
    # One galaxy (MANGAID 1-7) seen with 61 and 19 fibres; the catalogue lists only the small cube,
    # as a `survey select` sample keeps one cube per galaxy.
    (tmp_path / "maps").mkdir()
    for plateifu, fibres in (("8001-6101", 61), ("8002-1901", 19)):
        galaxy = make_galaxy(np.random.default_rng(fibres), "SF", ifu_fibres=fibres, defects=False)
        write_maps_file(tmp_path / "maps" / f"manga-{plateifu}-MAPS-HYB10-GAU-MILESHC.fits.gz", galaxy,
                        plateifu=plateifu, mangaid="1-7", ra=150.0, dec=2.0)
    radii = _write_radii(tmp_path / "radii.csv", [{"plateifu": "8002-1901", "re_arcsec": 5.0}])
    result = convert_maps([tmp_path / "maps"], tmp_path / "records",
                          ConvertOptions(size=SIZE, scale="re", radii=str(radii)))
    assert result.converted == 1 and not result.failures
    [row] = read_index(tmp_path / "records")
    assert row["id"] == "8001-6101" and float(row["re_arcsec"]) == 5.0  # the larger bundle, the galaxy's radius


def test_re_scale_options_are_checked():
    with pytest.raises(ConvertError, match="needs a catalogue"):
        ConvertOptions(scale="re")
    with pytest.raises(ConvertError, match="needs mode 'fit'"):
        ConvertOptions(scale="re", mode="pad", radii="r.csv")
    with pytest.raises(ConvertError, match="re_span"):
        ConvertOptions(scale="re", radii="r.csv", re_span=0)
    with pytest.raises(ConvertError, match="scale must be one of"):
        ConvertOptions(scale="kpc")
    with pytest.raises(ConvertError, match="used only with scale 're'"):
        ConvertOptions(radii="r.csv")


def test_radius_box_and_a_given_box_on_the_grid():
    assert radius_box(10.0, 12.0, 2.0, 3.0) == (7.0, 9.0, 6.0)
    with pytest.raises(PreprocessError, match="radius and span > 0"):
        radius_box(10.0, 12.0, 0.0, 3.0)
    flux = np.ones((1, 20, 20), np.float32)
    valid = np.zeros_like(flux, bool)
    valid[:, 5:15, 5:15] = True
    # A box twice the covered square: the covered part fills the middle half of the grid.
    grid = fit_to_grid(flux, flux, valid, 8, box=(0.0, 0.0, 20.0))
    assert grid.box == (0.0, 0.0, 20.0)
    np.testing.assert_array_equal(grid.valid[0].any(axis=0), [False, False, True, True, True, True, False, False])
    np.testing.assert_allclose(grid.flux[grid.valid], 1.0)


def test_effective_radii_from_every_catalogue_kind(tmp_path):
    write_drpall(tmp_path / "drpall.fits", [drpall_row("8000-1901", "1-1", nsa_elpetro_th50_r=3.5),
                                            drpall_row("8000-1902", "1-2", nsa_elpetro_th50_r=-9999.0)])
    assert read_effective_radii(tmp_path / "drpall.fits") == {"8000-1901": pytest.approx(3.5)}
    sample = _write_radii(tmp_path / "sample.csv", [{"plateifu": "8000-1901", "re_arcsec": 2.25},
                                                    {"plateifu": "8000-1902", "re_arcsec": ""}])
    assert read_effective_radii(sample) == {"8000-1901": 2.25}
    survey = make_survey(tmp_path / "synth", 3, seed=1)
    from_csv = read_effective_radii(survey.catalog_csv)
    assert from_csv == pytest.approx(read_effective_radii(tmp_path / "synth" / "catalog.fits"))
    assert len(from_csv) == 3 and all(2.0 < radius < 20.0 for radius in from_csv.values())
    (tmp_path / "bad.csv").write_text("plateifu,z\n8000-1901,0.03\n")
    with pytest.raises(CatalogueError, match="bad.csv.*no effective-radius column"):
        read_effective_radii(tmp_path / "bad.csv")
    from astropy.table import Table

    Table({"PLATEIFU": ["8000-1901", "8000-1902"], "re_arcsec": [2.5, -9999.0]}).write(tmp_path / "radii.ecsv")
    assert read_effective_radii(tmp_path / "radii.ecsv") == {"8000-1901": 2.5}
    (tmp_path / "excel.csv").write_text("\ufeffplateifu,re_arcsec\n8000-1901,2.5\n", encoding="utf-8")
    assert read_effective_radii(tmp_path / "excel.csv") == {"8000-1901": 2.5}
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(CatalogueError, match="no rows"):
        read_effective_radii(tmp_path / "empty.csv")
    (tmp_path / "twice.csv").write_text("plateifu,re_arcsec\n8000-1901,2\n8000-1901,3\n")
    with pytest.raises(CatalogueError, match="two effective radii"):
        read_effective_radii(tmp_path / "twice.csv")


def test_convert_cli_takes_a_drpall(tmp_path):
    survey = make_survey(tmp_path / "maps", 3, seed=4)
    with open(survey.catalog_csv, newline="") as stream:
        rows = [drpall_row(row["plateifu"], row["mangaid"], nsa_elpetro_th50_r=4.0) for row in csv.DictReader(stream)]
    write_drpall(tmp_path / "drpall.fits", rows)
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "maps"), "--out", str(tmp_path / "records"),
                                      "--size", "8", "--scale", "re", "--drpall", str(tmp_path / "drpall.fits"),
                                      "--re-span", "2", "-q"])
    assert result.exit_code == 0, result.output
    assert [float(row["box_side"]) for row in read_index(tmp_path / "records")] == pytest.approx([2 * 4.0 / 0.5] * 3)


@pytest.mark.skipif(not REAL_FILES, reason="real MaNGA files in ../shared/data are absent")
@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name[:15])
def test_real_files_place_the_galaxy_through_their_wcs(path):
    maps = read_maps(path)
    size = maps.flux.shape[-1]
    # The DAP puts the IFU centre on pixel CRPIX (1-based), the object within a fraction of a spaxel of it.
    assert maps.spaxel_arcsec == pytest.approx(0.5, rel=1e-3)
    assert np.allclose(maps.centre, size / 2 + 0.5, atol=0.1)
    assert sky_position({}, 10.0, 10.0)[1] != sky_position({}, 10.0, 10.0)[1]  # no WCS: NaN, no error


@pytest.mark.skipif(not REAL_FILES, reason="real MaNGA files in ../shared/data are absent")
def test_real_files_convert_on_the_re_grid(tmp_path):
    radii = _write_radii(tmp_path / "radii.csv", [{"plateifu": path.name.split("-")[1] + "-" + path.name.split("-")[2],
                                                   "re_arcsec": 4.0} for path in REAL_FILES])
    result = convert_maps(REAL_FILES, tmp_path / "records",
                          ConvertOptions(size=SIZE, scale="re", radii=str(radii)))
    assert result.converted == len(REAL_FILES) and not result.failures
    for row in read_index(tmp_path / "records"):
        centre = read_maps(row["path"]).centre
        side = float(row["box_side"])
        assert side == pytest.approx(3 * 4.0 / 0.5, rel=1e-5)
        assert float(row["box_y0"]) + side / 2 == pytest.approx(centre[0])
        assert float(row["box_x0"]) + side / 2 == pytest.approx(centre[1])


def test_cluster_parts_given_the_catalogue_by_different_paths_merge(tmp_path):
    from ifskeras.records import merge_records

    survey = make_survey(tmp_path / "maps", 6, seed=5)
    copies = []
    for index in range(2):
        copy = tmp_path / f"copy{index}" / "catalog.csv"
        copy.parent.mkdir()
        copy.write_bytes(survey.catalog_csv.read_bytes())
        copies.append(copy)
    parts = []
    for index, catalogue in enumerate(copies):
        part = tmp_path / f"part{index}"
        convert_maps([tmp_path / "maps"], part, ConvertOptions(size=8, scale="re", radii=str(catalogue),
                                                              num_workers=2, worker_index=index))
        parts.append(part)
    manifest = merge_records(parts, tmp_path / "merged")
    assert manifest["totals"]["examples"] == 6 and manifest["preprocessing"]["scale"] == "re"
