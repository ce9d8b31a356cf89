"""``ifskeras survey select``: cubes chosen from DRPall/DAPall tables built with the real column names and types.

Every cut is checked on its own (how many it removes and which cubes survive), then the
one-cube-per-galaxy rule, the DAPall join in both file layouts, the errors for unusable
catalogues, and the command line.
"""

from __future__ import annotations

import csv

import pytest
from archive_server import dapall_row, drpall_row, write_dapall, write_drpall
from typer.testing import CliRunner

from ifskeras.cli.app import app
from ifskeras.survey.archive import (
    SAMPLE_COLUMNS,
    CatalogueError,
    SelectionOptions,
    maps_path,
    read_drpall,
    select_sample,
    write_sample_csv,
)

PRIMARY, SECONDARY, COLOUR_ENHANCED, FILLER = 1 << 10, 1 << 11, 1 << 12, 1 << 13
CRITICAL = 1 << 30
BADDEPTH = 1 << 1
DR17_HYB10 = "HYB10-MILESHC-MASTARSSP"
DR17_SPX = "SPX-MILESHC-MASTARSSP"


def _plateifus(selection) -> list[str]:
    return [row["plateifu"] for row in selection.rows]


def _removed(selection, prefix: str) -> int:
    matching = [cut for cut in selection.cuts if cut.name.startswith(prefix)]
    assert len(matching) == 1, [cut.name for cut in selection.cuts]
    return matching[0].removed


# ----------------------------------------------------------------------------- SAS paths


def test_maps_paths_are_the_archive_paths_of_the_readme():
    assert maps_path("dr17", 8143, 3701) == (
        "dr17/manga/spectro/analysis/v3_1_1/3.1.0/HYB10-MILESHC-MASTARSSP/8143/3701/"
        "manga-8143-3701-MAPS-HYB10-MILESHC-MASTARSSP.fits.gz")
    assert maps_path("dr15", 7443, 12701) == (
        "dr15/manga/spectro/analysis/v2_4_3/2.2.1/HYB10-GAU-MILESHC/7443/12701/"
        "manga-7443-12701-MAPS-HYB10-GAU-MILESHC.fits.gz")
    assert maps_path("DR17", 8143, 3701, "spx-mileshc-mastarssp").endswith(
        "/SPX-MILESHC-MASTARSSP/8143/3701/manga-8143-3701-MAPS-SPX-MILESHC-MASTARSSP.fits.gz")


@pytest.mark.parametrize("kwargs, message", [
    ({"release": "dr16"}, "release must be one of dr17, dr15"),
    ({"release": "dr15", "daptype": DR17_HYB10}, "daptype of dr15 must be one of"),
    ({"targets": ("primary", "ancillary")}, "targets must be among"),
    ({"targets": ("any", "primary")}, "cannot be combined"),
    ({"z_min": 0.1, "z_max": 0.05}, "z_min must not exceed z_max"),
])
def test_bad_options_are_refused_with_the_value_received(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SelectionOptions(**kwargs)


# ----------------------------------------------------------------------------- the cuts


def test_target_cut_keeps_the_main_sample_by_default_and_any_subset_on_request(tmp_path):
    drpall = write_drpall(tmp_path / "drpall.fits", [
        drpall_row("8000-1901", "1-1", mngtarg1=PRIMARY),
        drpall_row("8000-1902", "1-2", mngtarg1=SECONDARY),
        drpall_row("8000-3701", "1-3", mngtarg1=COLOUR_ENHANCED | PRIMARY),
        drpall_row("8000-3702", "1-4", mngtarg1=0, mngtarg3=1 << 5),  # ancillary only
        drpall_row("8000-3703", "1-5", mngtarg1=FILLER),
    ])
    default = select_sample(drpall)
    assert _plateifus(default) == ["8000-1901", "8000-1902", "8000-3701"]
    assert _removed(default, "not a primary/secondary/colour-enhanced target") == 2

    secondary = select_sample(drpall, options=SelectionOptions(targets=("secondary",)))
    assert _plateifus(secondary) == ["8000-1902"]
    enhanced = select_sample(drpall, options=SelectionOptions(targets="color-enhanced"))
    assert _plateifus(enhanced) == ["8000-3701"]
    everything = select_sample(drpall, options=SelectionOptions(targets=("any",)))
    assert len(everything.rows) == 5 and not [cut for cut in everything.cuts if "target" in cut.name]


def test_critical_drp_quality_is_dropped_unless_kept(tmp_path):
    drpall = write_drpall(tmp_path / "drpall.fits", [
        drpall_row("8000-1901", "1-1", drp3qual=0),
        drpall_row("8000-1902", "1-2", drp3qual=CRITICAL | BADDEPTH),
        drpall_row("8000-3701", "1-3", drp3qual=BADDEPTH),  # a warning bit, not critical
    ])
    selection = select_sample(drpall)
    assert _plateifus(selection) == ["8000-1901", "8000-3701"]
    assert _removed(selection, "DRP3QUAL CRITICAL") == 1
    kept = select_sample(drpall, options=SelectionOptions(drop_critical=False))
    assert len(kept.rows) == 3 and not [cut for cut in kept.cuts if "CRITICAL" in cut.name]


def test_redshift_and_axis_ratio_cuts_are_inclusive_and_drop_unknown_values(tmp_path):
    drpall = write_drpall(tmp_path / "drpall.fits", [
        drpall_row("8000-1901", "1-1", z=0.01, nsa_elpetro_ba=0.9),
        drpall_row("8000-1902", "1-2", z=0.05, nsa_elpetro_ba=0.5),
        drpall_row("8000-3701", "1-3", z=0.10, nsa_elpetro_ba=0.2),
        drpall_row("8000-3702", "1-4", z=-9999.0, nsa_elpetro_ba=-9999.0),  # not in the NSA
    ])
    in_range = select_sample(drpall, options=SelectionOptions(z_min=0.02, z_max=0.10))
    assert _plateifus(in_range) == ["8000-1902", "8000-3701"]
    assert _removed(in_range, "z outside [0.02, 0.1]") == 2
    below = select_sample(drpall, options=SelectionOptions(z_max=0.05))
    assert _plateifus(below) == ["8000-1901", "8000-1902"]  # the unknown z fails a z cut
    round_enough = select_sample(drpall, options=SelectionOptions(ba_min=0.5))
    assert _plateifus(round_enough) == ["8000-1901", "8000-1902"]
    assert _removed(round_enough, "b/a below 0.5") == 2
    no_cut = select_sample(drpall)
    assert len(no_cut.rows) == 4  # without a cut, unknown values stay


def test_one_cube_per_galaxy_prefers_the_largest_bundle_then_sn_then_plate(tmp_path):
    drpall = write_drpall(tmp_path / "drpall.fits", [
        # galaxy 1-1: the 61-fibre cube wins over a 37-fibre one with more S/N
        drpall_row("8000-3701", "1-1", bluesn2=90.0, redsn2=90.0),
        drpall_row("8001-6101", "1-1", bluesn2=10.0, redsn2=10.0),
        # galaxy 1-2: same bundle size, higher BLUESN2 + REDSN2 wins
        drpall_row("8000-1901", "1-2", bluesn2=10.0, redsn2=10.0),
        drpall_row("8002-1902", "1-2", bluesn2=15.0, redsn2=10.0),
        # galaxy 1-3: a complete tie goes to the lowest plate (numerically: 9000 before 10000)
        drpall_row("10000-1901", "1-3"),
        drpall_row("9000-1901", "1-3"),
        # galaxy 1-4: the bigger cube is critical, so the repeat left after the cuts is chosen
        drpall_row("8000-12701", "1-4", drp3qual=CRITICAL),
        drpall_row("8003-1901", "1-4"),
    ])
    selection = select_sample(drpall)
    assert _plateifus(selection) == ["8001-6101", "8002-1902", "8003-1901", "9000-1901"]
    assert _removed(selection, "repeat observation") == 3
    assert selection.cuts[-1].remaining == 4
    all_cubes = select_sample(drpall, options=SelectionOptions(one_per_galaxy=False))
    assert len(all_cubes.rows) == 7


def test_cubes_without_a_mangaid_are_each_a_galaxy_of_their_own(tmp_path):
    drpall = write_drpall(tmp_path / "drpall.fits", [
        drpall_row("8000-1901", ""), drpall_row("8000-1902", ""), drpall_row("8000-3701", "1-5"),
    ])
    selection = select_sample(drpall)
    assert _plateifus(selection) == ["8000-1901", "8000-1902", "8000-3701"]
    assert _removed(selection, "repeat observation") == 0


def test_sample_rows_carry_the_catalogue_values_and_the_maps_path(tmp_path):
    drpall = write_drpall(tmp_path / "drpall.fits", [
        drpall_row("8143-3701", "1-338922", z=0.0412, nsa_z=0.05, nsa_elpetro_th50_r=6.5, nsa_elpetro_ba=0.73),
    ])
    (row,) = select_sample(drpall).rows
    assert set(row) == set(SAMPLE_COLUMNS)
    assert (row["plateifu"], row["mangaid"], row["plate"], row["ifudesign"]) == ("8143-3701", "1-338922", 8143, 3701)
    assert row["z"] == pytest.approx(0.0412, rel=1e-6)  # 'z' is preferred to 'nsa_z'
    assert row["re_arcsec"] == pytest.approx(6.5) and row["ba"] == pytest.approx(0.73, rel=1e-6)
    assert (row["ifu_fibres"], row["release"], row["daptype"]) == (37, "dr17", DR17_HYB10)
    assert row["path"] == maps_path("dr17", 8143, 3701)

    out = write_sample_csv(tmp_path / "out" / "sample.csv", [row, {**row, "plateifu": "8143-3702", "z": float("nan")}])
    with open(out, newline="") as stream:
        written = list(csv.DictReader(stream))
    assert list(written[0]) == list(SAMPLE_COLUMNS)
    assert written[0]["z"] == "0.0412" and written[0]["path"] == row["path"]
    assert written[1]["z"] == ""  # unknown values are empty cells
    assert [path.name for path in out.parent.iterdir()] == ["sample.csv"]  # no temporary left


# ----------------------------------------------------------------------------- DAPall join


def _dap_catalogues(tmp_path, layout: str = "dr17"):
    daptype = DR17_HYB10 if layout == "dr17" else "HYB10-GAU-MILESHC"
    drpall = write_drpall(tmp_path / "drpall.fits", [
        drpall_row("8000-1901", "1-1"),
        drpall_row("8000-1902", "1-2"),  # absent from the DAPall
        drpall_row("8000-3701", "1-3"),  # the DAP did not finish
        drpall_row("8000-3702", "1-4"),  # DAPQUAL CRITICAL
        drpall_row("8000-3703", "1-5", bluesn2=99.0, redsn2=99.0),  # repeat: lower DAPall S/N loses
        drpall_row("8001-3701", "1-5", bluesn2=1.0, redsn2=1.0),
    ], layout=layout)
    rows = [
        dapall_row("8000-1901", "1-1", daptype),
        dapall_row("8000-3701", "1-3", daptype, dapdone=False),
        dapall_row("8000-3702", "1-4", daptype, dapqual=CRITICAL),
        dapall_row("8000-3703", "1-5", daptype, snr_med=(5.0, 4.0, 5.0, 5.0)),
        dapall_row("8001-3701", "1-5", daptype, snr_med=(5.0, 12.0, 5.0, 5.0)),
    ]
    if layout == "dr17":  # another analysis in its own extension, which must not leak in
        rows += [dapall_row("8000-1902", "1-2", DR17_SPX)]
    dapall = write_dapall(tmp_path / "dapall.fits", rows, layout=layout)
    return drpall, dapall


@pytest.mark.parametrize("layout", ["dr17", "dr15"])
def test_dapall_join_keeps_finished_good_analyses_and_breaks_ties_by_its_sn(tmp_path, layout):
    drpall, dapall = _dap_catalogues(tmp_path, layout)
    selection = select_sample(drpall, dapall, SelectionOptions(release=layout))
    assert _plateifus(selection) == ["8000-1901", "8001-3701"]
    assert _removed(selection, "not in the DAPall") == 1
    assert _removed(selection, "DAP did not finish") == 1
    assert _removed(selection, "DAPQUAL CRITICAL") == 1
    assert _removed(selection, "repeat observation") == 1
    expected_daptype = DR17_HYB10 if layout == "dr17" else "HYB10-GAU-MILESHC"
    assert {row["daptype"] for row in selection.rows} == {expected_daptype}
    kept = select_sample(drpall, dapall, SelectionOptions(release=layout, drop_critical=False))
    assert "8000-3702" in _plateifus(kept)


def test_dapall_rows_of_another_daptype_are_chosen_by_its_extension(tmp_path):
    drpall, dapall = _dap_catalogues(tmp_path, "dr17")
    selection = select_sample(drpall, dapall, SelectionOptions(daptype=DR17_SPX))
    assert _plateifus(selection) == ["8000-1902"]
    assert selection.rows[0]["path"].endswith("manga-8000-1902-MAPS-SPX-MILESHC-MASTARSSP.fits.gz")


def test_a_dapall_of_the_other_release_is_refused_naming_file_and_daptypes(tmp_path):
    drpall, dapall = _dap_catalogues(tmp_path, "dr15")
    with pytest.raises(CatalogueError, match=rf"{dapall}: no rows with DAPTYPE {DR17_HYB10} \(DAPTYPEs in the "
                                             r"file: HYB10-GAU-MILESHC\)"):
        select_sample(drpall, dapall, SelectionOptions(release="dr17"))


# ----------------------------------------------------------------------------- catalogue layouts and errors


def test_dr15_layout_is_read_from_extension_one_and_missing_design_columns_come_from_plateifu(tmp_path):
    drpall = write_drpall(tmp_path / "drpall.fits", [drpall_row("7443-12701", "12-84617", ifudesignsize=127)],
                          layout="dr15", drop=("plate", "ifudsgn", "ifudesignsize", "z"))
    catalogue = read_drpall(drpall)
    assert (catalogue.plate.tolist(), catalogue.ifudesign.tolist()) == ([7443], [12701])
    assert catalogue.ifu_fibres.tolist() == [127]  # the IFU design's leading digits
    assert catalogue.z == pytest.approx([0.03])  # nsa_z when there is no z
    (row,) = select_sample(drpall, options=SelectionOptions(release="dr15")).rows
    assert row["mangaid"] == "12-84617" and row["path"] == maps_path("dr15", 7443, 12701)


@pytest.mark.parametrize("dropped, named", [
    (("mngtarg1",), "'mngtarg1'"),
    (("drp3qual",), "'drp3qual'"),
    (("z", "nsa_z"), "'z' or 'nsa_z'"),
    (("nsa_elpetro_ba",), "'nsa_elpetro_ba'"),
    (("mangaid",), "'mangaid'"),
])
def test_a_missing_column_is_named_with_the_file(tmp_path, dropped, named):
    drpall = write_drpall(tmp_path / "drpall.fits", [drpall_row("8000-1901", "1-1")], drop=dropped)
    with pytest.raises(CatalogueError) as caught:
        select_sample(drpall)
    assert str(caught.value).startswith(f"{drpall}: no column {named}")


def test_files_that_are_not_catalogues_are_refused_clearly(tmp_path):
    from astropy.io import fits

    image = tmp_path / "image.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(name="FLUX")]).writeto(image)
    with pytest.raises(CatalogueError, match=r"image.fits: no galaxy table: no extension named MANGA"):
        read_drpall(image)
    with pytest.raises(CatalogueError, match=r"missing.fits: file does not exist"):
        read_drpall(tmp_path / "missing.fits")
    text = tmp_path / "notes.fits"
    text.write_text("not a FITS file\n")
    with pytest.raises(CatalogueError, match=r"notes.fits: not a readable FITS file"):
        read_drpall(text)
    drpall = write_drpall(tmp_path / "drpall.fits", [drpall_row("8000-1901", "1-1")])
    with pytest.raises(CatalogueError, match=r"image.fits: no extension named HYB10-MILESHC-MASTARSSP and no "
                                             r"table with a DAPTYPE column"):
        select_sample(drpall, image)


# ----------------------------------------------------------------------------- command line


def test_cli_select_prints_each_cut_and_writes_the_sample(tmp_path):
    drpall, dapall = _dap_catalogues(tmp_path, "dr17")
    out = tmp_path / "sample.csv"
    run = CliRunner().invoke(app, ["survey", "select", str(drpall), str(dapall), "--out", str(out),
                                   "--z-max", "0.05"])
    assert run.exit_code == 0, run.output
    assert f"read 6 cubes from {drpall}" in run.output
    assert "DAPQUAL CRITICAL" in run.output and "removed      1,      3 left" in run.output
    assert f"wrote 2 cubes (dr17, {DR17_HYB10}) to {out}" in run.output
    with open(out, newline="") as stream:
        assert [row["plateifu"] for row in csv.DictReader(stream)] == ["8000-1901", "8001-3701"]


def test_cli_select_reports_a_missing_column_in_one_line(tmp_path):
    drpall = write_drpall(tmp_path / "drpall.fits", [drpall_row("8000-1901", "1-1")], drop=("drp3qual",))
    run = CliRunner().invoke(app, ["survey", "select", str(drpall), "--out", str(tmp_path / "s.csv")])
    assert run.exit_code == 1
    assert f"error: {drpall}: no column 'drp3qual'" in run.output
    assert "Traceback" not in run.output and not (tmp_path / "s.csv").exists()
    kept = CliRunner().invoke(app, ["survey", "select", str(drpall), "--keep-critical", "--out",
                                    str(tmp_path / "s.csv")])
    assert kept.exit_code == 0, kept.output
