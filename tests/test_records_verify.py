"""verify_records finds damage; merge_records joins cluster parts consistently."""

import json
import shutil

import pytest
from simulated import DR17_VERSDAP, small_options, with_release, write_galaxy

from ifskeras.records import (
    CorruptRecordsError,
    MergeError,
    convert_maps,
    load_manifest,
    merge_records,
    read_examples,
    read_index,
    verify_records,
)


@pytest.fixture
def damaged(records_dir, tmp_path):
    """A fresh copy of the records to break."""
    copy = tmp_path / "copy"
    shutil.copytree(records_dir, copy)
    return copy


def _kinds(report):
    return sorted(problem.kind for problem in report.problems)


def test_intact_records_pass_both_checks(records_dir):
    quick = verify_records(records_dir)
    full = verify_records(records_dir, full=True)
    assert quick.ok and full.ok and full.examples == 12
    assert full.shards == quick.shards == len(load_manifest(records_dir).all_shards())
    assert quick.raise_if_failed() is quick


def test_flipped_byte_is_found(damaged):
    shard = sorted(damaged.glob("maps-train.*"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    assert verify_records(damaged).ok  # same size: only the full check can see it
    report = verify_records(damaged, full=True)
    assert "checksum" in _kinds(report) and "corrupt" in _kinds(report)
    assert shard.name in report.summary()


def test_missing_truncated_and_extra_files_are_found(damaged):
    shards = sorted(damaged.glob("maps-train.*"))
    shards[0].unlink()
    shards[1].write_bytes(shards[1].read_bytes()[:-100])
    (damaged / "maps-train.tfrecord-00009-of-00010").write_bytes(b"")
    (damaged / "maps-val.tfrecord-00000-of-00001.incomplete").write_bytes(b"x")
    report = verify_records(damaged)
    assert _kinds(report) == ["extra", "incomplete", "missing", "truncated"]
    with pytest.raises(CorruptRecordsError, match="missing"):
        report.raise_if_failed()
    assert {"corrupt", "count"} <= set(_kinds(verify_records(damaged, full=True)))


def test_count_mismatch_is_found(damaged):
    manifest_path = damaged / "manifest.json"
    data = json.loads(manifest_path.read_text())
    data["splits"]["train"]["shards"][0]["examples"] += 1
    data["splits"]["train"]["examples"] += 1
    manifest_path.write_text(json.dumps(data))
    assert "count" in _kinds(verify_records(damaged, full=True))


def test_merge_of_cluster_parts_equals_one_conversion(survey_dir, records_dir, tmp_path):
    options = dict(val_fraction=0.2, test_fraction=0.2)
    parts = [tmp_path / f"part{i}" for i in range(3)]
    for index, part in enumerate(parts):
        convert_maps([survey_dir], part, small_options(num_workers=3, worker_index=index, **options))
    with pytest.raises(MergeError, match=r"parts \[2\] of 3 are missing"):
        merge_records(parts[:2], tmp_path / "partial")
    merged = merge_records(list(reversed(parts)), tmp_path / "merged", transfer="copy")
    assert verify_records(tmp_path / "merged", full=True).ok
    whole = load_manifest(records_dir)
    for split in ("train", "val", "test"):
        assert merged["splits"][split]["examples"] == whole.examples(split)
    assert merged["totals"]["examples"] == 12 and merged["totals"]["inputs"] == 12
    assert sorted(r["id"] for r in read_index(tmp_path / "merged")) == sorted(r["id"] for r in read_index(records_dir))
    some = [read_index(records_dir)[i]["id"] for i in (0, 5)]
    assert (read_examples(tmp_path / "merged", some)["flux"] == read_examples(records_dir, some)["flux"]).all()
    with pytest.raises(MergeError, match="not empty"):
        merge_records(parts, tmp_path / "merged")


def test_merge_refuses_incompatible_or_overlapping_parts(survey_dir, records_dir, tmp_path):
    convert_maps([survey_dir], tmp_path / "small", small_options(size=4))
    with pytest.raises(MergeError, match="differs.*shape"):
        merge_records([records_dir, tmp_path / "small"], tmp_path / "out")
    convert_maps([survey_dir], tmp_path / "again", small_options(val_fraction=0.2, test_fraction=0.2))
    with pytest.raises(MergeError, match="more than one part"):
        merge_records([records_dir, tmp_path / "again"], tmp_path / "out")


def test_merge_refuses_parts_of_different_releases_unless_allowed(tmp_path):
    for part, first_plate in (("dr15", 7000), ("dr17", 8000)):
        for seed in range(2):
            plateifu = f"{first_plate + seed}-1901"
            path = write_galaxy(tmp_path / part / f"manga-{plateifu}-MAPS.fits", plateifu, seed=seed,
                                mangaid=f"1-{first_plate + seed:06d}")
            if part == "dr17":
                with_release(path)
        convert_maps([tmp_path / part], tmp_path / f"{part}-records", small_options())
    parts = [tmp_path / "dr15-records", tmp_path / "dr17-records"]
    refusal = rf"2 DAP releases .*VERSDAP={DR17_VERSDAP} .*dr17-records.*allow_mixed_releases"
    with pytest.raises(MergeError, match=refusal):
        merge_records(parts, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    merged = merge_records(parts, tmp_path / "merged", allow_mixed_releases=True)
    assert [(r["versdap"], r["galaxies"]) for r in merged["releases"]] == [(DR17_VERSDAP, 2), ("ifskeras-synth", 2)]
    assert sorted(row["mangaid"] for row in read_index(tmp_path / "merged")) == [
        "1-007000", "1-007001", "1-008000", "1-008001"]
    assert verify_records(tmp_path / "merged").ok
