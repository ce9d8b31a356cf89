"""The converter: inputs, failures, duplicates, labels, parallel workers, resume and write errors."""

import csv
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from simulated import REAL_FILES, bad_inputs, small_options, write_galaxy

from ifskeras.survey.maps import read_maps
from ifskeras.survey.preprocess import to_grid
from ifskeras.survey.synth import make_survey
from ifskeras.records import (
    ConvertError,
    ConvertOptions,
    OutputExistsError,
    ShardWriteError,
    collect_inputs,
    convert_maps,
    load_manifest,
    read_examples,
    read_index,
)
from ifskeras.records import convert as convert_module


def _files(directory):
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())
            if path.name not in ("manifest.json", "convert-journal.jsonl")}


def _manifest_without_time(directory):
    data = json.loads((directory / "manifest.json").read_text())
    data.pop("created")
    return data


def test_records_hold_the_preprocessed_maps(records_dir, survey_dir):
    rows = read_index(records_dir)
    row = rows[0]
    galaxy = read_examples(records_dir, [row["id"]])
    maps = read_maps(row["path"])
    grid = to_grid(maps.flux, maps.ivar, maps.valid, 8, mode="fit")
    np.testing.assert_array_equal(galaxy["flux"][0, ..., 0], grid.flux)
    np.testing.assert_array_equal(galaxy["ivar"][0, ..., 0], grid.ivar)
    np.testing.assert_array_equal(galaxy["valid"][0, ..., 0], grid.valid)
    assert galaxy["ra"][0] == pytest.approx(maps.ra) and float(row["box_side"]) == grid.box[2]
    assert sorted(r["id"] for r in rows) == sorted({r["id"] for r in rows}) and len(rows) == 12


def test_collect_inputs_expands_directories_and_list_files(survey_dir, tmp_path):
    listing = tmp_path / "inputs.txt"
    first = sorted(survey_dir.glob("manga-*.fits.gz"))[0]
    listing.write_text(f"# survey subset\n{first}\n\nmanga-1-1-MAPS-absent.fits\n")
    paths, problems = collect_inputs([listing, survey_dir, tmp_path / "nothing-here"])
    assert len(paths) == 13 and paths == sorted(paths)
    assert tmp_path / "manga-1-1-MAPS-absent.fits" in paths  # kept: reported when read
    assert problems == [{"path": str(tmp_path / "nothing-here"), "reason": "input does not exist"}]


def test_mixed_inputs_convert_the_good_ones_and_list_each_bad_one(tmp_path):
    bad = bad_inputs(tmp_path / "maps")
    out = tmp_path / "records"
    result = convert_maps([tmp_path / "maps"], out, small_options())
    assert result.manifest["totals"]["examples"] == 1 and result.converted == 1
    reasons = {failure["path"]: failure["reason"] for failure in result.failures}
    assert set(reasons) == {str(bad[kind]) for kind in ("truncated", "text", "missing_line", "all_invalid")}
    assert "gzip" in reasons[str(bad["truncated"])] or "truncated" in reasons[str(bad["truncated"])]
    assert "not a FITS file" in reasons[str(bad["text"])]
    assert "Ha-6564" in reasons[str(bad["missing_line"])]
    assert "no valid pixel" in reasons[str(bad["all_invalid"])]
    with open(out / "failures.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert {row["path"]: row["reason"] for row in rows} == reasons
    assert result.manifest["failures"] == result.failures


def test_readable_copies_of_a_plateifu_keep_the_first_in_sorted_order(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_galaxy(tmp_path / "a" / "manga-7000-1901-MAPS.fits", "7000-1901", seed=1, mangaid="1-007000")
    write_galaxy(tmp_path / "b" / "manga-7000-1901-MAPS.fits", "7000-1901", seed=2, mangaid="1-007000")
    write_galaxy(tmp_path / "b" / "manga-7001-1901-MAPS.fits", "7001-1901", seed=3, mangaid="1-007001")
    result = convert_maps([tmp_path / "b", tmp_path / "a"], tmp_path / "out", small_options())
    assert result.manifest["totals"]["examples"] == 2
    assert result.duplicates == [{
        "id": "7000-1901",
        "mangaid": "1-007000",
        "path": str(tmp_path / "b" / "manga-7000-1901-MAPS.fits"),
        "kept": str(tmp_path / "a" / "manga-7000-1901-MAPS.fits"),
        "reason": "another copy of plate-IFU 7000-1901",
    }]
    kept = {row["id"]: row["path"] for row in read_index(tmp_path / "out")}
    assert kept["7000-1901"].startswith(str(tmp_path / "a"))
    with open(tmp_path / "out" / "duplicates.csv", newline="") as stream:
        assert list(csv.DictReader(stream)) == result.duplicates


def test_labels_are_joined_by_plateifu(survey_dir, tmp_path):
    ids = [path.name.split("-MAPS")[0].removeprefix("manga-") for path in sorted(survey_dir.glob("manga-*.fits.gz"))]
    labels = tmp_path / "labels.csv"
    labels.write_text("plateifu,kind\n" + f"{ids[0]},AGN\n{ids[1]},SF\n9999-1,unused\n")
    result = convert_maps([survey_dir], tmp_path / "out", small_options(labels=str(labels), label_column="kind"))
    got = read_examples(tmp_path / "out", ids[:3])
    assert list(got["label"]) == ["AGN", "SF", ""]
    assert result.manifest["labels"]["labelled"] == 2 and result.manifest["labels"]["unmatched"] == 1
    with pytest.raises(ConvertError, match="needs columns 'plateifu' and 'class'"):
        convert_maps([survey_dir], tmp_path / "out2", small_options(labels=str(labels)))


def test_refuses_non_empty_output_and_overwrite_replaces(survey_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not empty.*--resume.*--overwrite"):
        convert_maps([survey_dir], out, small_options())
    convert_maps([survey_dir], out, small_options(), overwrite=True)
    first = _files(out)
    convert_maps([survey_dir], out, small_options(size=4), overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"  # not ours: left alone
    assert load_manifest(out).shape == (19, 4, 4) and _files(out) != first


def test_options_are_validated():
    with pytest.raises(ConvertError, match="mode"):
        ConvertOptions(mode="zoom")
    with pytest.raises(ConvertError, match="Unknown emission line"):
        ConvertOptions(lines=("Ha-6564", "Xx-1234"))
    with pytest.raises(ConvertError, match="val_fraction"):
        ConvertOptions(val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ConvertError, match="worker_index"):
        ConvertOptions(num_workers=2, worker_index=2)
    assert ConvertOptions(lines=("ha-6564", "Hb-4862")).lines == ("Hb-4862", "Ha-6564")


def test_no_inputs_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConvertError, match="no MAPS files"):
        convert_maps([tmp_path / "empty"], tmp_path / "out", small_options())


def test_shards_respect_size_and_minimum(survey_dir, tmp_path):
    one = convert_maps([survey_dir], tmp_path / "one", small_options(shard_mb=100, min_shards=1, val_fraction=0, test_fraction=0))
    assert [len(one.manifest["splits"][s]["shards"]) for s in ("train", "val", "test")] == [1, 0, 0]
    many = convert_maps([survey_dir], tmp_path / "many", small_options(shard_mb=100, min_shards=5, val_fraction=0, test_fraction=0))
    assert [s["examples"] for s in many.manifest["splits"]["train"]["shards"]] == [2, 2, 3, 2, 3]
    gzip = convert_maps([survey_dir], tmp_path / "gzip", small_options(compression="gzip", shard_mb=100, min_shards=1, val_fraction=0, test_fraction=0))
    assert gzip.manifest["totals"]["bytes"] < one.manifest["totals"]["bytes"]
    assert set(read_examples(tmp_path / "gzip", ["10001-1901"])["id"]) == {"10001-1901"}


@pytest.mark.parametrize("shards", ["many", "one"])
def test_parallel_workers_write_identical_records(survey_dir, tmp_path, monkeypatch, shards):
    """Workers writing whole shards (enough shards) or sending galaxies to this process (one shard)."""
    options = (small_options(val_fraction=0.2, test_fraction=0.2) if shards == "many"
               else small_options(val_fraction=0, test_fraction=0, min_shards=1, shard_mb=100))
    reference = convert_maps([survey_dir], tmp_path / "serial", options, jobs=1)
    in_workers = []
    original = convert_module._shards_in_workers
    monkeypatch.setattr(convert_module, "_shards_in_workers",
                        lambda *args: in_workers.append(True) or original(*args))
    seen = []
    convert_maps([survey_dir], tmp_path / "parallel", options, jobs=2,
                 progress=lambda done, total, failed: seen.append((done, total, failed)))
    assert bool(in_workers) == (shards == "many")
    assert _files(tmp_path / "parallel") == _files(tmp_path / "serial")
    assert seen[0] == (0, 12, 0) and seen[-1] == (12, 12, 0)
    assert [done for done, _, _ in seen] == list(range(13))
    assert reference.converted == 12


@pytest.mark.long
def test_a_worker_killed_mid_run_is_a_clear_error_and_resume_finishes(survey_dir, tmp_path):
    import multiprocessing
    import signal

    options = small_options(val_fraction=0.2, test_fraction=0.2)
    reference = tmp_path / "serial"
    convert_maps([survey_dir], reference, options)

    def kill_a_worker(done, total, failed):
        if done == 2:
            os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)

    out = tmp_path / "out"
    with pytest.raises(ConvertError, match="worker process died.*--resume"):
        convert_maps([survey_dir], out, options, jobs=2, progress=kill_a_worker)
    assert not (out / "manifest.json").exists()
    convert_maps([survey_dir], out, options, jobs=2, resume=True)
    assert _files(out) == _files(reference)


def test_interrupted_run_resumes_byte_identically(survey_dir, records_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    writes = {"n": 0}
    original = convert_module._ShardWriter.write

    def write_then_stop(self, blob):
        writes["n"] += 1
        if writes["n"] == 5:  # mid-way through a shard
            raise KeyboardInterrupt
        original(self, blob)

    monkeypatch.setattr(convert_module._ShardWriter, "write", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        convert_maps([survey_dir], out, small_options(val_fraction=0.2, test_fraction=0.2))
    monkeypatch.setattr(convert_module._ShardWriter, "write", original)
    names = {path.name for path in out.iterdir()}
    assert "manifest.json" not in names and not any(name.endswith(".incomplete") for name in names)
    complete = {name for name in names if ".tfrecord-" in name}
    assert complete and all((out / n).read_bytes() == (records_dir / n).read_bytes() for n in complete)
    with pytest.raises(OutputExistsError):
        convert_maps([survey_dir], out, small_options(val_fraction=0.2, test_fraction=0.2))
    with pytest.raises(ConvertError, match="other inputs or options"):
        convert_maps([survey_dir], out, small_options(size=4), resume=True)
    result = convert_maps([survey_dir], out, small_options(val_fraction=0.2, test_fraction=0.2), resume=True)
    assert result.resumed_shards == len(complete)
    assert _files(out) == _files(records_dir)
    assert _manifest_without_time(out) == _manifest_without_time(records_dir)


def test_resume_redoes_a_damaged_completed_shard(survey_dir, records_dir, tmp_path):
    out = tmp_path / "out"
    options = small_options(val_fraction=0.2, test_fraction=0.2)
    convert_maps([survey_dir], out, options)
    victim = sorted(out.glob("maps-train.*"))[0]
    victim.write_bytes(victim.read_bytes()[:-10])
    result = convert_maps([survey_dir], out, options, resume=True)
    assert result.resumed_shards == len(list(out.glob("*.tfrecord-*"))) - 1
    assert _files(out) == _files(records_dir)


class _FillingDisk:
    """Stands in for a shard's file: fails like a full disk once ``budget`` bytes are written."""

    def __init__(self, inner, state):
        self.inner, self.state = inner, state

    def write(self, data):
        self.state["written"] += len(data)
        if self.state["written"] > self.state["budget"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.inner.write(data)

    def __getattr__(self, name):  # flush, fileno, close
        return getattr(self.inner, name)


def test_disk_full_leaves_no_shard_that_looks_complete(survey_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    state = {"written": 0, "budget": 40_000}  # a first shard (2-3 records of ~11 kB), not a second
    original_init = convert_module._ShardWriter.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._stream = _FillingDisk(self._stream, state)

    monkeypatch.setattr(convert_module._ShardWriter, "__init__", init)
    with pytest.raises(ShardWriteError, match="disk may be full.*--resume"):
        convert_maps([survey_dir], out, small_options())
    names = sorted(path.name for path in out.iterdir())
    assert not any(name.endswith(".incomplete") for name in names) and "manifest.json" not in names
    journal = [json.loads(line) for line in (out / "convert-journal.jsonl").read_text().splitlines()]
    completed = sorted(entry["shard"]["file"] for entry in journal[1:])
    assert completed and completed == [name for name in names if ".tfrecord-" in name]
    monkeypatch.setattr(convert_module._ShardWriter, "__init__", original_init)
    result = convert_maps([survey_dir], out, small_options(), resume=True)
    assert result.resumed_shards == len(completed) and result.manifest["totals"]["examples"] == 12


def test_cluster_parts_are_disjoint_and_cover_the_survey(survey_dir, tmp_path):
    ids = set()
    total = 0
    for index in range(3):
        result = convert_maps([survey_dir], tmp_path / f"part{index}", small_options(num_workers=3, worker_index=index))
        part_ids = {row["id"] for row in read_index(tmp_path / f"part{index}")}
        assert not ids & part_ids
        ids |= part_ids
        total += result.manifest["totals"]["examples"]
        assert result.manifest["partition"] == {"num_workers": 3, "worker_index": index}
    assert total == len(ids) == 12


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_FILES, reason="real MaNGA files not in ../shared/data")
def test_pad_mode_records_hold_the_fits_values(tmp_path):
    files = REAL_FILES
    out = tmp_path / "real"
    options = dict(size=48, mode="pad", shard_mb=100, val_fraction=0, test_fraction=0)
    # The two reference files come from two patch versions of DR15's DAP (VERSDAP 2.2.1 and
    # 2.2.3dev): one release series, so no --allow-mixed-releases is needed; both are recorded.
    result = convert_maps(files, out, ConvertOptions(**options))
    assert [(r["versdap"], r["galaxies"]) for r in result.manifest["releases"]] == [("2.2.1", 1), ("2.2.3dev", 1)]
    galaxies = read_examples(out, ["7815-3702", "8143-3701"])
    for index, path in enumerate(files):
        maps = read_maps(path)
        height = maps.flux.shape[1]
        offset = (48 - height) // 2
        window = (slice(None), slice(offset, offset + height), slice(offset, offset + height))
        np.testing.assert_array_equal(galaxies["flux"][index, ..., 0][window], maps.flux)
        np.testing.assert_array_equal(galaxies["ivar"][index, ..., 0][window], maps.ivar)
        np.testing.assert_array_equal(galaxies["valid"][index, ..., 0][window] > 0, maps.valid)
        assert galaxies["ra"][index] == pytest.approx(maps.ra)


def test_peek_matches_the_reader_on_odd_headers(tmp_path):
    path = write_galaxy(tmp_path / "manga-7-8-MAPS.fits", "  O'Brien-1 ")
    assert convert_module.peek_plateifu(path) == read_maps(path).plateifu == "O'Brien-1"
    unnamed = tmp_path / "manga-12-34-MAPS.fits"
    write_galaxy(unnamed, "")
    assert convert_module.peek_plateifu(unnamed) == read_maps(unnamed).plateifu == "12-34"
    assert os.path.getsize(unnamed) > 0


def test_workers_do_not_rerun_the_calling_script(tmp_path):
    """A user's script converting with jobs=2: its top level runs once, not once per worker.

    Spawned and forkserver workers re-import ``__main__`` from its file unless the
    converter hides it while the pool starts (``records.workers._main_module_hidden``).
    """
    survey = tmp_path / "maps"
    make_survey(survey, 4, seed=1)
    marker = tmp_path / "top-level-runs.txt"
    script = tmp_path / "convert_script.py"
    script.write_text(
        "from pathlib import Path\n"
        f"with open({str(marker)!r}, 'a') as stream:\n"
        "    stream.write('ran\\n')\n"
        "from ifskeras.records import ConvertOptions, convert_maps\n"
        "if __name__ == '__main__':\n"
        f"    result = convert_maps([{str(survey)!r}], {str(tmp_path / 'records')!r},\n"
        "                          ConvertOptions(size=16, val_fraction=0.25), jobs=2)\n"
        "    assert result.converted == 4, result\n"
    )
    completed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert marker.read_text() == "ran\n"
