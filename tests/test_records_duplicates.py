"""Copies, repeat observations and DAP releases: which file a galaxy's record comes from."""

import csv
import itertools

import pytest
from simulated import DR17_DAPTYPE, DR17_VERSDAP, small_options, truncate, with_release, write_galaxy

from ifskeras.survey.maps import read_maps
from ifskeras.survey.synth import SYNTH_VERSION
from ifskeras.records import ConvertError, convert_maps, merge_records, peek_identity, read_index, verify_records
from ifskeras.records.inputs import HeaderIdentity
from ifskeras.records.naming import part_of, split_of
from ifskeras.records.plan import bundle_fibres

GOOD_NAME = "manga-7977-12705-MAPS-HYB10-GAU-MILESHC.fits.gz"
#: Sorts before GOOD_NAME, so the old "first path wins" rule picked it.
DAMAGED_NAME = "manga-1-1-MAPS-TRUNC.fits.gz"
SYNTH_DAPTYPE = "HYB10-GAU-MILESHC"


def _name(plateifu):
    return f"manga-{plateifu}-MAPS-HYB10-GAU-MILESHC.fits.gz"


def _csv_rows(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def _repeat(plateifu, kept, mangaid):
    return {"id": plateifu, "mangaid": mangaid, "kept": str(kept), "reason": f"repeat observation of MANGAID {mangaid}"}


def test_a_damaged_copy_never_displaces_a_readable_copy(tmp_path):
    """A byte-truncated copy whose header is intact sorts first: the good copy is still converted."""
    maps = tmp_path / "maps"
    good = write_galaxy(maps / GOOD_NAME, "7977-12705", seed=7)
    damaged = maps / DAMAGED_NAME
    damaged.write_bytes(good.read_bytes())
    truncate(damaged, 0.5)  # the header (first 2880 bytes unpacked) survives, the maps do not
    assert peek_identity(damaged).plateifu == "7977-12705"

    out = tmp_path / "records"
    result = convert_maps([maps], out, small_options())

    assert result.converted == 1 and result.manifest["totals"]["examples"] == 1
    (row,) = read_index(out)
    assert (row["id"], row["path"]) == ("7977-12705", str(good))
    (failure,) = result.failures
    assert failure["path"] == str(damaged) and "truncated" in failure["reason"]
    assert failure["replaced_by"] == str(good)
    assert _csv_rows(out / "failures.csv") == [{"path": str(damaged), "reason": failure["reason"],
                                                "replaced_by": str(good)}]
    assert result.duplicates == [] and _csv_rows(out / "duplicates.csv") == []
    totals = result.manifest["totals"]
    assert totals["inputs"] == 2 == totals["examples"] + totals["failures"] + totals["duplicates"]


def test_the_header_scan_reads_identity_and_release_as_the_reader_does(tmp_path):
    path = write_galaxy(tmp_path / _name("7977-12705"), "7977-12705", mangaid="1-234567")
    assert peek_identity(path) == HeaderIdentity("7977-12705", "1-234567", "12705", SYNTH_VERSION, SYNTH_DAPTYPE)
    maps = read_maps(path)
    assert (maps.mangaid, maps.meta["VERSDAP"], maps.meta["DAPTYPE"]) == ("1-234567", SYNTH_VERSION, SYNTH_DAPTYPE)
    assert peek_identity(with_release(path, target=tmp_path / "dr17.fits"))[3:] == (DR17_VERSDAP, DR17_DAPTYPE)


def test_bundle_size_is_the_ifu_design_without_its_last_two_digits():
    assert [bundle_fibres(p) for p in ("7977-12705", "8143-3701", "7000-1901", "7000-9102")] == [127, 37, 19, 91]
    assert bundle_fibres("7000-1901", "12705") == 127  # the IFUDSGN card wins
    assert bundle_fibres("unnamed") == 0


def test_repeat_observations_keep_the_largest_bundle_then_the_first_plateifu(tmp_path):
    maps = tmp_path / "maps"
    mangaid = "1-000042"
    paths = {plateifu: write_galaxy(maps / _name(plateifu), plateifu, seed=seed, mangaid=mangaid)
             for seed, plateifu in enumerate(("7000-1901", "7990-3701", "8000-12702", "8001-12701"))}
    other = write_galaxy(maps / _name("7001-1902"), "7001-1902", seed=9, mangaid="1-000043")
    labels = tmp_path / "labels.csv"
    labels.write_text("plateifu,class\n7000-1901,AGN\n")  # on an observation that is not converted

    out = tmp_path / "records"
    result = convert_maps([maps], out, small_options(labels=str(labels)))

    rows = {row["id"]: row for row in read_index(out)}
    assert set(rows) == {"8000-12702", "7001-1902"}
    assert rows["8000-12702"]["path"] == str(paths["8000-12702"]) and rows["7001-1902"]["path"] == str(other)
    assert (rows["8000-12702"]["mangaid"], rows["7001-1902"]["mangaid"]) == (mangaid, "1-000043")
    assert rows["8000-12702"]["label"] == "AGN" and result.manifest["labels"]["unmatched"] == 0
    kept = paths["8000-12702"]
    assert result.duplicates == [{**_repeat(p, kept, mangaid), "path": str(paths[p])}
                                 for p in ("7000-1901", "7990-3701", "8001-12701")]
    assert _csv_rows(out / "duplicates.csv") == result.duplicates and result.failures == []
    assert verify_records(out).ok


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_damaged_observation_falls_back_to_the_next(tmp_path, jobs):
    maps = tmp_path / "maps"
    mangaid = "1-000077"
    largest = truncate(write_galaxy(maps / _name("8000-12701"), "8000-12701", seed=1, mangaid=mangaid))
    middle = write_galaxy(maps / _name("7000-3701"), "7000-3701", seed=2, mangaid=mangaid)
    smallest = write_galaxy(maps / _name("6000-1901"), "6000-1901", seed=3, mangaid=mangaid)

    result = convert_maps([maps], tmp_path / "records", small_options(), jobs=jobs)

    assert [(row["id"], row["path"]) for row in read_index(tmp_path / "records")] == [("7000-3701", str(middle))]
    assert [(f["path"], f["replaced_by"]) for f in result.failures] == [(str(largest), str(middle))]
    assert result.duplicates == [{**_repeat("6000-1901", middle, mangaid), "path": str(smallest)}]


def test_every_file_of_a_galaxy_failing_lists_each_without_replacement(tmp_path):
    maps = tmp_path / "maps"
    broken = [truncate(write_galaxy(maps / _name(p), p, seed=1, mangaid="1-000005"))
              for p in ("7000-1901", "7001-3701")]
    result = convert_maps([maps], tmp_path / "records", small_options())
    assert result.converted == 0 and result.duplicates == []
    assert sorted((f["path"], f["replaced_by"]) for f in result.failures) == sorted((str(p), "") for p in broken)


def test_files_without_mangaid_are_grouped_by_plateifu_only(tmp_path):
    maps = tmp_path / "maps"
    first = write_galaxy(maps / "a" / _name("7000-1901"), "7000-1901", seed=1, mangaid="")
    copy = write_galaxy(maps / "b" / _name("7000-1901"), "7000-1901", seed=1, mangaid="")
    write_galaxy(maps / _name("7000-1902"), "7000-1902", seed=2, mangaid="")
    out = tmp_path / "records"
    result = convert_maps([maps], out, small_options(val_fraction=0.3, test_fraction=0.3))
    rows = read_index(out)
    assert sorted(row["id"] for row in rows) == ["7000-1901", "7000-1902"]
    assert all(row["mangaid"] == "" and row["split"] == split_of(row["id"], 0.3, 0.3) for row in rows)
    assert result.duplicates == [{"id": "7000-1901", "mangaid": "", "path": str(copy), "kept": str(first),
                                  "reason": "another copy of plate-IFU 7000-1901"}]


def _galaxies_placed_apart(count):
    """MANGAIDs whose two observations fall in different cluster parts (of 2) and whose split
    differs from that of their kept observation: placing by plate-IFU would split them."""
    found = []
    for number in itertools.count(1):
        mangaid, observations = f"1-{number:06d}", (f"{7000 + number}-3701", f"{7000 + number}-1901")
        if (part_of(observations[0], 2) != part_of(observations[1], 2)
                and split_of(mangaid, 0.3, 0.3) != split_of(observations[0], 0.3, 0.3)
                and part_of(mangaid, 2) == len(found) % 2):  # both parts get galaxies
            found.append((mangaid, observations))
        if len(found) == count:
            return found


def test_repeats_are_placed_by_mangaid_in_one_split_and_one_cluster_part(tmp_path):
    galaxies = _galaxies_placed_apart(3)
    maps = tmp_path / "maps"
    for seed, (mangaid, observations) in enumerate(galaxies):
        for plateifu in observations:
            write_galaxy(maps / _name(plateifu), plateifu, seed=seed, mangaid=mangaid)
    options = dict(val_fraction=0.3, test_fraction=0.3)

    whole = convert_maps([maps], tmp_path / "whole", small_options(**options))
    rows = read_index(tmp_path / "whole")
    assert sorted((row["mangaid"], row["id"]) for row in rows) == [(m, obs[0]) for m, obs in galaxies]
    assert all(row["split"] == split_of(row["mangaid"], 0.3, 0.3) for row in rows)
    assert whole.manifest["split_rule"]["key"].startswith("MANGAID")

    parts = [tmp_path / f"part{index}" for index in range(2)]
    for index, part in enumerate(parts):
        result = convert_maps([maps], part, small_options(num_workers=2, worker_index=index, **options))
        converted = {row["mangaid"] for row in read_index(part)}
        assert converted == {m for m, _ in galaxies if part_of(m, 2) == index}
        assert {d["mangaid"] for d in result.duplicates} == converted  # each repeat stays with its galaxy
    merged = merge_records(parts, tmp_path / "merged")
    assert sorted(row["mangaid"] for row in read_index(tmp_path / "merged")) == [m for m, _ in galaxies]
    assert merged["totals"] == {**merged["totals"], "inputs": 6, "examples": 3, "duplicates": 3}


def test_mixed_releases_are_refused_before_anything_is_written(tmp_path):
    maps = tmp_path / "maps"
    synthetic = [write_galaxy(maps / _name(p), p, seed=i) for i, p in enumerate(("7000-1901", "7001-1901"))]
    dr17 = with_release(write_galaxy(maps / _name("7002-1901"), "7002-1901", seed=2))
    out = tmp_path / "records"
    pattern = (rf"mix 2 DAP releases \(VERSDAP=3\.1\.0 DAPTYPE={DR17_DAPTYPE}: 1 file\(s\), e\.g\. {dr17}; "
               rf"VERSDAP={SYNTH_VERSION} DAPTYPE={SYNTH_DAPTYPE}: 2 file\(s\), e\.g\. {synthetic[0]}, {synthetic[1]}\)"
               r".*--allow-mixed-releases")
    with pytest.raises(ConvertError, match=pattern):
        convert_maps([maps], out, small_options())
    assert not out.exists() or not any(out.iterdir())
    for index in range(2):  # every cluster part refuses, whichever files it would convert
        with pytest.raises(ConvertError, match="mix 2 DAP releases"):
            convert_maps([maps], tmp_path / f"part{index}", small_options(num_workers=2, worker_index=index))

    result = convert_maps([maps], out, small_options(allow_mixed_releases=True))
    assert result.manifest["releases"] == [
        {"versdap": DR17_VERSDAP, "daptype": DR17_DAPTYPE, "galaxies": 1},
        {"versdap": SYNTH_VERSION, "daptype": SYNTH_DAPTYPE, "galaxies": 2},
    ]


def test_resume_refuses_inputs_of_another_release_and_other_candidates(tmp_path):
    maps = tmp_path / "maps"
    files = [write_galaxy(maps / _name(p), p, seed=i) for i, p in enumerate(("7000-1901", "7001-1901", "7002-1901"))]
    out = tmp_path / "records"
    convert_maps([maps], out, small_options())

    copy = maps / "copies" / _name("7000-1901")
    copy.parent.mkdir()
    copy.write_bytes(files[0].read_bytes())  # a new candidate: the same shards, another plan
    with pytest.raises(ConvertError, match="other inputs or options"):
        convert_maps([maps], out, small_options(), resume=True)
    copy.unlink()

    for path in files:
        with_release(path)
    with pytest.raises(ConvertError, match=rf"read DAP release\(s\) VERSDAP={SYNTH_VERSION} .*these inputs are "
                                           rf"VERSDAP={DR17_VERSDAP} .*--overwrite"):
        convert_maps([maps], out, small_options(), resume=True)


def test_patch_versions_of_one_dap_series_are_one_release(tmp_path):
    maps = tmp_path / "maps"
    for index, version in enumerate(("3.1.0", "3.1.2dev")):
        plateifu = f"{7100 + index}-1901"
        with_release(write_galaxy(maps / _name(plateifu), plateifu, seed=index), versdap=version)
    result = convert_maps([maps], tmp_path / "records", small_options())
    assert [(r["versdap"], r["galaxies"]) for r in result.manifest["releases"]] == [("3.1.0", 1), ("3.1.2dev", 1)]


def test_refused_release_mix_leaves_an_existing_output_whole_even_with_overwrite(tmp_path):
    maps, out = tmp_path / "maps", tmp_path / "records"
    write_galaxy(maps / _name("7200-1901"), "7200-1901", seed=0)
    convert_maps([maps], out, small_options())
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    with_release(write_galaxy(maps / _name("7201-1901"), "7201-1901", seed=1))
    with pytest.raises(ConvertError, match="mix 2 DAP releases"):
        convert_maps([maps], out, small_options(), overwrite=True)
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before


def test_partial_downloads_are_not_inputs_and_merge_refuses_a_galaxy_twice(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    good = write_galaxy(first / _name("7300-1901"), "7300-1901", seed=0, mangaid="1-730000")
    # A fetch killed mid-file leaves .NAME.part beside the files: never a MAPS input.
    (first / f".{_name('7300-3701')}.part").write_bytes(good.read_bytes()[:5000])
    result = convert_maps([first], tmp_path / "r1", small_options())
    assert result.converted == 1 and result.failures == []
    # The same galaxy observed again in another batch: merging would count it twice.
    write_galaxy(second / _name("7301-3701"), "7301-3701", seed=1, mangaid="1-730000")
    convert_maps([second], tmp_path / "r2", small_options())
    with pytest.raises(Exception, match="MANGAID 1-730000"):
        merge_records([tmp_path / "r1", tmp_path / "r2"], tmp_path / "merged")
