"""Label tables: BPT/WHAN classes from MAPS files and records, catalogue cross-matching, the CLI.

Synthetic surveys are small (a dozen galaxies); catalogues are written by the tests.
The real-file check skips when ../shared/data is absent.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from simulated import NOCOV, REAL_FILES, bad_inputs, galaxy_hdulist, write_galaxy, write_hdulist
from typer.testing import CliRunner

from ifskeras.cli.app import app
from ifskeras.discovery.labels import (
    BPT_LABEL_COLUMNS,
    LabelError,
    bpt_labels,
    failures_path,
    kpc_to_arcsec,
    match_catalog,
    read_catalog,
    survey_galaxies,
    write_label_table,
)
from ifskeras.survey.bpt import BPT_CLASSES, covariance_factor
from ifskeras.survey.synth import make_survey

runner = CliRunner()
CLEAR_CLASSES = {"SF": 1, "Seyfert": 1, "LINER": 1}
SURVEY_SIZE = 9


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """Nine synthetic galaxies, three each of SF, Seyfert and LINER, with their catalogue."""
    directory = tmp_path_factory.mktemp("labels-survey")
    make_survey(directory, SURVEY_SIZE, seed=11, class_fractions=CLEAR_CLASSES)
    return directory


@pytest.fixture(scope="module")
def truth(survey) -> dict[str, dict]:
    with open(survey / "catalog.csv", newline="") as stream:
        return {row["plateifu"]: row for row in csv.DictReader(stream)}


@pytest.fixture(scope="module")
def maps_labels(survey) -> dict[str, dict]:
    return {row["plateifu"]: row for row in bpt_labels([survey]).rows}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def with_equivalent_widths(path: Path, plateifu: str, ew_ha: float, ew_nii: float, *, seed: int = 0,
                           galaxy_class: str = "SF", masked_outlier: bool = False) -> Path:
    """A synthetic MAPS file with EMLINE_GEW extensions: uniform widths, optionally a masked central outlier."""
    hdul = galaxy_hdulist(plateifu, seed=seed, galaxy_class=galaxy_class)
    flux_header = hdul["EMLINE_GFLUX"].header
    lines = [flux_header[f"C{i:02d}"] for i in range(1, flux_header["NAXIS3"] + 1)]
    shape = hdul["EMLINE_GFLUX"].data.shape
    widths = np.full(shape, 1.0, ">f4")
    widths[lines.index("Ha-6564")] = ew_ha
    widths[lines.index("NII-6585")] = ew_nii
    mask = np.zeros(shape, ">i4")
    if masked_outlier:
        centre = (shape[1] // 2, shape[2] // 2)
        widths[(lines.index("Ha-6564"), *centre)] = 1e4
        mask[(lines.index("Ha-6564"), *centre)] = NOCOV
    for suffix, data in (("", widths), ("_IVAR", np.full(shape, 100.0, ">f4")), ("_MASK", mask)):
        header = hdul[f"EMLINE_GFLUX{suffix}"].header.copy()
        header["EXTNAME"] = f"EMLINE_GEW{suffix}"
        hdul.append(fits.ImageHDU(data, header=header))
    return write_hdulist(path, hdul)


# ----------------------------------------------------------------------------- label bpt


def test_bpt_labels_recover_the_synthetic_classes(maps_labels, truth):
    assert len(maps_labels) == SURVEY_SIZE
    agree = [name for name, row in maps_labels.items() if row["class"] == truth[name]["class"]]
    assert len(agree) >= SURVEY_SIZE - 1, {name: (row["class"], truth[name]["class"]) for name, row in maps_labels.items()}
    for row in maps_labels.values():
        assert row["bpt_class"] in BPT_CLASSES
        assert row["whan_class"] == "" and np.isnan(row["ew_ha"]), "synthetic files hold no EMLINE_GEW"
        assert row["mangaid"] == truth[row["plateifu"]]["mangaid"]
        assert row["radius_arcsec"] == 1.5 and 20 <= row["n_spaxels"] <= 37  # 3-spaxel circle: at most 29 + edges


def test_aperture_snr_is_the_naive_snr_over_the_covariance_factor(survey, maps_labels):
    from ifskeras.survey.bpt import aperture_sums
    from ifskeras.survey.maps import read_maps

    path = sorted(survey.glob("*MAPS*.fits.gz"))[0]
    maps = read_maps(path, ["Ha-6564"])
    total, naive_ivar = aperture_sums(maps.flux, maps.ivar, maps.valid, 3.0)
    row = maps_labels[maps.plateifu]
    naive_snr = total[0] * np.sqrt(naive_ivar[0])
    assert row["snr_ha_6564"] == pytest.approx(naive_snr / float(covariance_factor(row["n_spaxels"])), rel=1e-9)


def test_records_give_the_labels_of_their_maps(survey, maps_labels, tmp_path):
    from ifskeras.records import ConvertOptions, convert_maps

    exact = tmp_path / "pad"
    convert_maps([survey], exact, ConvertOptions(size=48, mode="pad", val_fraction=0.2, test_fraction=0.2))
    from_records = {row["plateifu"]: row for row in bpt_labels([exact]).rows}
    assert set(from_records) == set(maps_labels)
    for name, row in from_records.items():
        # pad mode keeps native spaxels: the same sums, counts and classes.
        for column in ("class", "bpt_class", "n_spaxels", "mangaid"):
            assert row[column] == maps_labels[name][column], (name, column)
        assert row["snr_ha_6564"] == pytest.approx(maps_labels[name]["snr_ha_6564"], rel=1e-5)
        assert row["log_nii_ha"] == pytest.approx(maps_labels[name]["log_nii_ha"], abs=1e-5)

    resampled = tmp_path / "fit"
    convert_maps([survey], resampled, ConvertOptions(size=16, val_fraction=0.2, test_fraction=0.2))
    gridded = {row["plateifu"]: row for row in bpt_labels([resampled]).rows}
    assert sum(gridded[name]["class"] == maps_labels[name]["class"] for name in gridded) >= SURVEY_SIZE - 1
    for name, row in gridded.items():
        # Different pixels, the same aperture in arcsec: counts and S/N stay close to the native ones.
        assert row["n_spaxels"] == pytest.approx(maps_labels[name]["n_spaxels"], rel=0.8)
        assert row["snr_ha_6564"] == pytest.approx(maps_labels[name]["snr_ha_6564"], rel=0.3)


def test_whan_from_equivalent_widths(tmp_path):
    name = "manga-{}-MAPS-HYB10-GAU-MILESHC.fits.gz".format
    with_equivalent_widths(tmp_path / name("20001-1901"), "20001-1901", 0.3, 0.2, galaxy_class="LINER")
    with_equivalent_widths(tmp_path / name("20001-1902"), "20001-1902", 1.5, 1.0, galaxy_class="LINER")
    with_equivalent_widths(tmp_path / name("20001-3701"), "20001-3701", 25.0, 5.0, galaxy_class="SF",
                           masked_outlier=True)
    rows = {row["plateifu"]: row for row in bpt_labels([tmp_path]).rows}
    passive, retired, star_forming = rows["20001-1901"], rows["20001-1902"], rows["20001-3701"]
    assert (passive["whan_class"], passive["class"]) == ("passive", "retired")
    assert passive["ew_ha"] == pytest.approx(0.3) and passive["ew_nii"] == pytest.approx(0.2)
    assert passive["bpt_class"] == "LINER", "the lines are there: only the WHAN class calls the galaxy retired"
    assert (retired["whan_class"], retired["class"]) == ("retired", "retired")
    assert star_forming["ew_ha"] == pytest.approx(25.0), "the masked central outlier stays out of the mean"
    assert (star_forming["whan_class"], star_forming["class"]) == ("SF", "SF")


def test_unreadable_files_are_listed_and_the_rest_labelled(tmp_path):
    inputs = bad_inputs(tmp_path / "in")
    table = bpt_labels([tmp_path / "in", tmp_path / "absent.fits"])
    labelled = {row["plateifu"]: row for row in table.rows}
    assert set(labelled) == {"9001-1901", "9005-1905"}
    assert labelled["9005-1905"]["class"] == "unclassified", "every pixel masked: no line detected"
    failed = {Path(failure["path"]).name: failure["reason"] for failure in table.failures}
    assert set(failed) == {inputs["truncated"].name, inputs["text"].name, inputs["missing_line"].name, "absent.fits"}
    assert "Ha-6564" in failed[inputs["missing_line"].name] and "truncated" in failed[inputs["truncated"].name]

    out = tmp_path / "labels.csv"
    assert write_label_table(table, out) == failures_path(out) == tmp_path / "labels.failures.csv"
    rows = read_csv(out)
    assert list(rows[0]) == list(BPT_LABEL_COLUMNS)
    assert len(read_csv(failures_path(out))) == 4

    # Matching reads only primary headers: the text file fails, the truncated one still names its galaxy.
    galaxies, header_failures = survey_galaxies([tmp_path / "in"])
    assert [Path(failure["path"]).name for failure in header_failures] == [inputs["text"].name]
    assert "9002-1902" in {galaxy["plateifu"] for galaxy in galaxies}


def test_physical_radius_needs_a_redshift(survey, maps_labels):
    names = sorted(maps_labels)
    redshifts = {names[0]: 0.03, names[1]: 0.15}
    table = bpt_labels([survey], radius_kpc=1.0, redshifts=redshifts)
    rows = {row["plateifu"]: row for row in table.rows}
    assert set(rows) == set(names[:2])
    # Flat LCDM (H0 = 70, Om0 = 0.3), integrated by hand: D_A(0.03) = 123.89 Mpc, 0.60065 kpc/";
    # D_A(0.15) = 539.26 Mpc, 2.61441 kpc/".
    assert rows[names[0]]["radius_arcsec"] == pytest.approx(1 / 0.60065, rel=1e-4)
    assert rows[names[1]]["radius_arcsec"] == pytest.approx(1 / 2.61441, rel=1e-4)
    assert rows[names[1]]["n_spaxels"] < maps_labels[names[1]]["n_spaxels"] <= rows[names[0]]["n_spaxels"]
    assert {failure["reason"] for failure in table.failures} == {f"no redshift for {name}" for name in names[2:]}
    with pytest.raises(LabelError, match="redshift"):
        kpc_to_arcsec(1.0, 0.0)
    with pytest.raises(LabelError, match="needs redshifts"):
        bpt_labels([survey], radius_kpc=1.0)


# ----------------------------------------------------------------------------- label match


def test_match_by_plateifu_from_a_csv_catalogue(survey, truth, tmp_path):
    names = sorted(truth)
    catalogue = tmp_path / "agn.csv"
    with open(catalogue, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["PlateIFU", "AGN_TYPE", "log_mass"])
        for name in names[:5]:
            writer.writerow([f" {name} ", "AGN" if truth[name]["class"] == "Seyfert" else "nonAGN", 10.5])
        writer.writerow(["99999-1901", "AGN", 11.0])  # not in the survey
        writer.writerow([names[0], "AGN" if truth[names[0]]["class"] == "Seyfert" else "nonAGN", 10.5])  # same again
    galaxies, failures = survey_galaxies([survey])
    assert failures == [] and [g["plateifu"] for g in galaxies] == names
    result = match_catalog(read_catalog(catalogue), galaxies, key="plateifu", columns=["AGN_TYPE", "LOG_MASS"])
    assert result.table.columns == ("plateifu", "mangaid", "AGN_TYPE", "LOG_MASS")
    assert [row["plateifu"] for row in result.table.rows] == names[:5]
    assert all(row["LOG_MASS"] == "10.5" and row["mangaid"] == truth[row["plateifu"]]["mangaid"]
               for row in result.table.rows)
    assert result.unmatched_catalog == ["99999-1901"] and result.unmatched_galaxies == names[5:]


def test_match_by_mangaid_from_a_fits_catalogue_labels_every_observation(survey, truth, tmp_path):
    # A repeat observation of the first galaxy under another plate-IFU, same MaNGA-ID.
    first = sorted(truth)[0]
    repeat = write_galaxy(tmp_path / "repeat" / "manga-30001-1901-MAPS-HYB10-GAU-MILESHC.fits.gz", "30001-1901",
                          mangaid=truth[first]["mangaid"])
    catalogue = tmp_path / "drpall.fits"
    table = Table({"MANGAID": np.array([row["mangaid"] + "   " for row in truth.values()], dtype="S12"),
                   "CLASS_NAME": np.array([row["class"].encode() for row in truth.values()], dtype="S10"),
                   "Z": np.full(len(truth), 0.03)})
    table.write(catalogue)
    loaded = read_catalog(catalogue)
    assert loaded["MANGAID"].dtype.kind == "U" and loaded["MANGAID"][0] == truth[sorted(truth)[0]]["mangaid"]

    galaxies, _ = survey_galaxies([survey, repeat])
    result = match_catalog(loaded, galaxies, key="mangaid", columns=["class_name", "Z"])
    labels = {row["plateifu"]: row for row in result.table.rows}
    assert len(labels) == SURVEY_SIZE + 1 and not result.unmatched_galaxies and not result.unmatched_catalog
    assert labels["30001-1901"]["class_name"] == labels[first]["class_name"] == truth[first]["class"]
    assert labels[first]["Z"] == "0.03"


def test_the_synthetic_catalogue_matches_its_own_records(survey, truth, tmp_path):
    from ifskeras.records import ConvertOptions, convert_maps

    records = tmp_path / "records"
    convert_maps([survey], records, ConvertOptions(size=8, val_fraction=0.2, test_fraction=0.2))
    galaxies, failures = survey_galaxies([records])
    assert failures == [] and len(galaxies) == SURVEY_SIZE
    result = match_catalog(read_catalog(survey / "catalog.fits"), galaxies, key="plateifu", columns=["class"])
    assert {row["plateifu"]: row["class"] for row in result.table.rows} == {k: v["class"] for k, v in truth.items()}


def test_match_errors_name_the_problem(truth, tmp_path):
    galaxies = [{"plateifu": name, "mangaid": row["mangaid"]} for name, row in truth.items()]
    names = sorted(truth)
    catalogue = Table({"plateifu": names, "agn": ["yes"] * len(names)})
    with pytest.raises(LabelError, match=r"no column 'bpt'; available columns: plateifu, agn"):
        match_catalog(catalogue, galaxies, key="plateifu", columns=["bpt"])
    with pytest.raises(LabelError, match="no column 'mangaid'; available columns: plateifu, agn"):
        match_catalog(catalogue, galaxies, key="mangaid", columns=["agn"])

    conflicting = Table({"plateifu": [names[0], names[0], names[1], names[1]], "agn": ["yes", "no", "yes", "yes"]})
    with pytest.raises(LabelError, match=rf"1 plateifu value\(s\) appear in several rows.*{names[0]}: no \| yes"):
        match_catalog(conflicting, galaxies, key="plateifu", columns=["agn"])
    agreeing = match_catalog(conflicting[2:], galaxies, key="plateifu", columns=["agn"])
    assert [row["agn"] for row in agreeing.table.rows] == ["yes"]

    masked = Table({"plateifu": [names[0], ""], "agn": [1.5, 2.0]}, masked=True)
    masked["agn"].mask = [True, False]
    result = match_catalog(masked, galaxies, key="plateifu", columns=["agn"])
    assert result.table.rows[0]["agn"] == "" and result.catalog_rows_without_key == 1

    with pytest.raises(LabelError, match="catalogue does not exist"):
        read_catalog(tmp_path / "absent.fits")
    (tmp_path / "text.fits").write_text("not a table")
    with pytest.raises(LabelError, match=r"text.fits: cannot read the catalogue as fits"):
        read_catalog(tmp_path / "text.fits")

    from_old_records = [{**galaxy, "has_mangaid": False} for galaxy in galaxies]
    with pytest.raises(LabelError, match="no mangaid column"):
        match_catalog(catalogue, from_old_records, key="mangaid", columns=["agn"])
    with pytest.raises(LabelError, match="written from the survey"):
        match_catalog(catalogue, galaxies, key="plateifu", columns=["plateifu"])


# ----------------------------------------------------------------------------- CLI


def test_cli_label_bpt_writes_labels_usable_by_convert(survey, truth, tmp_path):
    out = tmp_path / "labels.csv"
    result = runner.invoke(app, ["label", "bpt", str(survey), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert len(rows) == SURVEY_SIZE and read_csv(failures_path(out)) == []

    from ifskeras.records import ConvertOptions, convert_maps, read_index

    records = tmp_path / "records"
    convert_maps([survey], records, ConvertOptions(size=8, labels=str(out), label_column="class"))
    assert {row["id"]: row["label"] for row in read_index(records)} == {row["plateifu"]: row["class"] for row in rows}

    summary = runner.invoke(app, ["label", "bpt", str(survey), "--out", str(out)])
    assert summary.exit_code == 0 and f"labelled {SURVEY_SIZE} galaxies" in summary.output

    no_redshifts = runner.invoke(app, ["label", "bpt", str(survey), "--out", str(out), "--radius-kpc", "1"])
    assert no_redshifts.exit_code == 1 and "--redshifts" in no_redshifts.output
    nothing = runner.invoke(app, ["label", "bpt", str(tmp_path / "absent.fits"), "--out", str(tmp_path / "x.csv")])
    assert nothing.exit_code == 1 and "no galaxy was labelled" in nothing.output


def test_cli_label_match(survey, truth, tmp_path):
    catalogue = tmp_path / "classes.ecsv"
    Table({"mangaid": [row["mangaid"] for row in truth.values()][:4],
           "kind": [row["class"] for row in truth.values()][:4]}).write(catalogue)
    out = tmp_path / "matched.csv"
    result = runner.invoke(app, ["label", "match", str(catalogue), "--survey", str(survey), "--key", "mangaid",
                                 "--column", "kind", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"matched 4 of {SURVEY_SIZE} survey galaxies by mangaid" in result.output
    assert f"{SURVEY_SIZE - 4} survey galaxies have no catalogue row" in result.output
    rows = read_csv(out)
    assert list(rows[0]) == ["plateifu", "mangaid", "kind"]
    assert all(row["kind"] == truth[row["plateifu"]]["class"] for row in rows)

    missing = runner.invoke(app, ["label", "match", str(catalogue), "--survey", str(survey), "--column", "AGN",
                                  "--out", str(out)])
    assert missing.exit_code == 1 and "available columns: mangaid, kind" in missing.output
    wrong_key = runner.invoke(app, ["label", "match", str(catalogue), "--survey", str(survey), "--key", "objid",
                                    "--column", "kind", "--out", str(out)])
    assert wrong_key.exit_code == 1 and "plateifu or mangaid" in wrong_key.output


# ----------------------------------------------------------------------------- real MaNGA files


@pytest.mark.realdata
@pytest.mark.skipif(len(REAL_FILES) < 2, reason="real MaNGA files in ../shared/data are absent")
def test_real_files_get_their_published_central_classes(tmp_path):
    out = tmp_path / "real.csv"
    result = runner.invoke(app, ["label", "bpt", str(REAL_FILES[0].parent), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    rows = {row["plateifu"]: row for row in read_csv(out)}
    star_forming, retired = rows["7815-3702"], rows["8143-3701"]
    # 7815-3702: bright lines below Kauffmann 2003 (log [NII]/Ha -0.35, log [OIII]/Hb -0.74), W(Ha) 36 A.
    assert (star_forming["class"], star_forming["bpt_class"]) == ("SF", "SF")
    assert float(star_forming["ew_ha"]) > 6 and float(star_forming["snr_ha_6564"]) > 100
    assert star_forming["mangaid"] == "1-113540"
    # 8143-3701: Hb undetected, W(Ha) 0.27 A and W([NII]) 0.29 A: line-less by WHAN, retired by our class.
    assert retired["class"] == "retired" and retired["whan_class"] in ("passive", "retired")
    assert retired["bpt_class"] in ("weak", "LINER") and float(retired["ew_ha"]) < 3
    assert float(retired["snr_hb_4862"]) < 3 < float(retired["snr_nii_6585"])


def test_match_writes_nan_catalogue_values_as_unlabelled():
    from astropy.table import Table

    from ifskeras.discovery.labels import match_catalog

    catalog = Table({"plateifu": ["1-1", "1-2"], "agn_frac": [0.5, float("nan")]})
    galaxies = [{"plateifu": "1-1", "mangaid": ""}, {"plateifu": "1-2", "mangaid": ""}]
    result = match_catalog(catalog, galaxies, key="plateifu", columns=["agn_frac"])
    values = {row["plateifu"]: row["agn_frac"] for row in result.table.rows}
    assert values == {"1-1": "0.5", "1-2": ""}
