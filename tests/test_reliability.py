"""Reliability: a corpus of bad inputs, kills, a really full disk, flipped bytes and booby-trapped model files.

Each test states what a user can rely on when things go wrong:

- every bad MAPS file gets a typed error naming the file and the problem, and the
  converter lists it with that reason while converting everything else;
- a conversion killed with SIGKILL at any moment resumes to byte-identical records;
- a full disk gives a clear error and leaves nothing that looks complete but is not;
- a flipped byte in a shard is found and named, and training and scoring refuse it;
- a model file carrying code is refused by export, and the code never runs.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from simulated import (
    MAP_SIZE,
    drop_lines,
    fits_bytes,
    galaxy,
    galaxy_hdulist,
    interior_spaxels,
    rename_channels,
    retyped,
    small_options,
    without_channel_keys,
)
from typer.testing import CliRunner

from ifskeras.cli.app import app
from ifskeras.survey.lines import DEFAULT_LINES, DR15_LINES
from ifskeras.survey.maps import MapsFormatError, MissingExtensionError, MissingLineError, NotFitsError, read_maps
from ifskeras.survey.synth import make_survey
from ifskeras.records import (
    ConvertOptions,
    CorruptRecordsError,
    ShardWriteError,
    convert_maps,
    load_manifest,
    read_examples,
    read_index,
    verify_records,
)

runner = CliRunner()
MAPS_NAME = "manga-{}-MAPS-HYB10-GAU-MILESHC.fits"
NON_ASCII_DIR = Path("galaxiés") / "銀河"


def run_cli(*args):
    """Run the CLI in this process; a traceback in its output is always a failure."""
    result = runner.invoke(app, [str(arg) for arg in args])
    assert "Traceback" not in result.output, result.output
    return result


def record_files(directory: Path) -> dict[str, bytes]:
    """Shards, index and failures by name: what must be byte-identical between two conversions."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())
            if ".tfrecord-" in path.name or path.name in ("index.csv", "failures.csv")}


def manifest_without_time(directory: Path) -> dict:
    data = json.loads((directory / "manifest.json").read_text())
    data.pop("created")
    return data


def assert_same_records(out: Path, reference: Path) -> None:
    """``out`` holds exactly the reference conversion (shards, index, failures, manifest)."""
    assert record_files(out) == record_files(reference)
    assert manifest_without_time(out) == manifest_without_time(reference)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".incomplete") or ".tmp-" in p.name]


def assert_nothing_half_written(out: Path, reference: Path) -> None:
    """After a crash: every file under a shard name is a complete shard; no manifest unless all is done."""
    for path in out.glob("*.tfrecord-*"):
        if not path.name.endswith(".incomplete"):
            assert path.read_bytes() == (reference / path.name).read_bytes(), f"{path.name} looks complete but is not"
    if (out / "manifest.json").exists():
        assert verify_records(out, full=True).ok


# ============================================================================ 1. bad inputs

# Every corpus file is a synthetic galaxy (simulated.galaxy_hdulist, 32 x 32 spaxels) with at
# most one thing broken.


def _flat(hdul):
    hdul["EMLINE_GFLUX"].data = hdul["EMLINE_GFLUX"].data[0]
    return hdul


def _shape_mismatch(hdul):
    hdul["EMLINE_GFLUX_IVAR"].data = hdul["EMLINE_GFLUX_IVAR"].data[:, :5, :5].copy()
    return hdul


def _float_mask(hdul):
    return retyped(hdul, "EMLINE_GFLUX_MASK", np.float32)


def _int16_flux(hdul):
    return retyped(hdul, "EMLINE_GFLUX", np.int16)


def _ivar_channels_reversed(hdul):
    return rename_channels(hdul, "EMLINE_GFLUX_IVAR", reversed(DR15_LINES))


def _without_ha(hdul):
    return drop_lines(hdul, "Ha-6564")


def _all_nan(hdul):
    hdul["EMLINE_GFLUX"].data[:] = np.nan
    return hdul


#: Seed of the "bad_pixels" galaxy.
BAD_PIXELS_SEED = 3
#: (y, x) pixels spoiled in every line of the "bad_pixels" galaxy, and how: the five nearest
#: the centre that are valid in every line before they are spoiled.
SPOILED = dict(zip(interior_spaxels(galaxy(BAD_PIXELS_SEED).as_galaxy_maps(DR15_LINES), 5),
                   ("nan", "inf", "1e38", "negative ivar", "-inf"), strict=True))
NAN_LINE = "OIII-5008"


def _bad_pixels(hdul):
    flux, ivar = hdul["EMLINE_GFLUX"].data, hdul["EMLINE_GFLUX_IVAR"].data
    spoil = {"nan": np.nan, "inf": np.inf, "1e38": 1e38, "-inf": -np.inf}
    for (y, x), how in SPOILED.items():
        if how == "negative ivar":
            ivar[:, y, x] = -1.0
        else:
            flux[:, y, x] = spoil[how]
    flux[list(DR15_LINES).index(NAN_LINE)] = np.nan  # one whole line unusable
    return hdul


@dataclass(frozen=True)
class Case:
    """One corpus file: how to make it, and what reading it must give."""

    plateifu: str
    make: object  # (plateifu) -> bytes of the file
    error: type | None = None  # None: readable
    problem: str = ""  # regex on the problem (also the converter's reason)
    name: str = ""  # file name, default MAPS_NAME
    subdir: Path = Path()


def _observation(plateifu, **kwargs):
    """A corpus file: a galaxy of its own (MANGAID from the plate-IFU), so no two cases are repeat observations."""
    return galaxy_hdulist(plateifu, mangaid=f"1-{plateifu}", **kwargs)


def _writer(edit=None, **kwargs):
    return lambda plateifu: fits_bytes((edit or (lambda h: h))(_observation(plateifu, **kwargs)))


def _truncated_gzip(plateifu):
    packed = gzip.compress(fits_bytes(_observation(plateifu)))
    return packed[: len(packed) // 2]


CORPUS = {
    # readable and convertible
    "good": Case("9100-1901", _writer()),
    "good_gzip": Case("9101-1901", lambda p: gzip.compress(fits_bytes(_observation(p, seed=1))),
                      name=MAPS_NAME.format("9101-1901") + ".gz"),
    "good_non_ascii_path": Case("9102-1901", _writer(seed=2), subdir=NON_ASCII_DIR),
    "bad_pixels": Case("9103-1901", _writer(_bad_pixels, seed=BAD_PIXELS_SEED)),
    "duplicate": Case("9100-1901", _writer(seed=4), name=MAPS_NAME.format("9100-1901-copy")),
    # readable, but nothing usable: refused by the converter
    "all_nan": Case("9104-1901", _writer(_all_nan), problem="no valid pixel"),
    # not readable
    "empty": Case("9110-1901", lambda p: b"", NotFitsError, "file is empty",
                  name=MAPS_NAME.format("9110-1901") + ".gz"),
    "random_bytes": Case("9111-1901", lambda p: np.random.default_rng(0).bytes(5000), NotFitsError,
                         "not a FITS file", name=MAPS_NAME.format("9111-1901") + ".gz"),
    "truncated_gzip": Case("9112-1901", _truncated_gzip, NotFitsError, "truncated",
                           name=MAPS_NAME.format("9112-1901") + ".gz"),
    "gzip_of_truncated_fits": Case("9113-1901", lambda p: gzip.compress(fits_bytes(_observation(p))[:-3000]),
                                   NotFitsError, "truncated", name=MAPS_NAME.format("9113-1901") + ".gz"),
    "truncated_fits": Case("9114-1901", lambda p: fits_bytes(_observation(p))[:-1000], NotFitsError, "truncated"),
    "no_emline_extensions": Case(
        "9115-1901",
        lambda p: fits_bytes(fits.HDUList([_observation(p)[0],
                                           fits.ImageHDU(np.zeros((4, 4), np.float32), name="SPX_SNR")])),
        MissingExtensionError, "missing extension EMLINE_GFLUX; extensions present: PRIMARY, SPX_SNR"),
    "no_channel_keys": Case("9116-1901", _writer(without_channel_keys), MapsFormatError,
                            "EMLINE_GFLUX has no channel keys C01..Cnn"),
    "missing_line": Case("9117-1901", _writer(_without_ha),
                         MissingLineError, "line\\(s\\) Ha-6564 not in EMLINE_GFLUX; available: OII-3727"),
    "flat_2d": Case("9118-1901", _writer(_flat), MapsFormatError, "EMLINE_GFLUX has 2 dimensions, expected 3"),
    "flux_ivar_shapes_differ": Case("9119-1901", _writer(_shape_mismatch), MapsFormatError,
                                    rf"shapes differ: EMLINE_GFLUX \(22, {MAP_SIZE}, {MAP_SIZE}\), _IVAR \(22, 5, 5\)"),
    "int16_flux": Case("9120-1901", _writer(_int16_flux), MapsFormatError,
                       "EMLINE_GFLUX holds int16 data, expected floating point"),
    "float_mask": Case("9121-1901", _writer(_float_mask), MapsFormatError, "expected an integer bitmask"),
    "ivar_channels_differ": Case("9122-1901", _writer(_ivar_channels_reversed), MapsFormatError,
                                 "channels of EMLINE_GFLUX_IVAR .* differ from EMLINE_GFLUX"),
    "bad_non_ascii_path": Case("9123-1901", lambda p: b"SIMPLE? no, just text\n", NotFitsError,
                               "not a FITS file", subdir=NON_ASCII_DIR),
    "unreadable": Case("9124-1901", _writer(), NotFitsError, "permission denied"),
}
#: Named in a list file but absent from disk.
MISSING = Case("9130-1901", None, NotFitsError, "file does not exist")
CONVERTED = ("good", "good_gzip", "good_non_ascii_path", "bad_pixels")
DUPLICATES = ("duplicate",)
FAILING = tuple(kind for kind in CORPUS if kind not in CONVERTED + DUPLICATES)


def corpus_path(directory: Path, kind: str) -> Path:
    case = CORPUS[kind] if kind in CORPUS else MISSING
    return directory / case.subdir / (case.name or MAPS_NAME.format(case.plateifu))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Every corpus file in one directory tree (the unreadable one with mode 000)."""
    directory = tmp_path_factory.mktemp("corpus")
    for kind, case in CORPUS.items():
        path = corpus_path(directory, kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(case.make(case.plateifu))
    corpus_path(directory, "unreadable").chmod(0)
    return directory


@pytest.fixture
def unreadable_for_root(corpus, monkeypatch):
    """Root reads a mode-000 file anyway: make the reader's permission check see what a user would."""
    if os.geteuid() == 0:
        unreadable = corpus_path(corpus, "unreadable")
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, *args, **kwargs: (
            False if Path(path) == unreadable else real_access(path, mode, *args, **kwargs)))


@pytest.mark.parametrize("kind", [kind for kind in CORPUS if CORPUS[kind].error] + ["missing"])
def test_each_unreadable_file_raises_a_typed_error_naming_file_and_problem(kind, corpus, unreadable_for_root):
    case = CORPUS.get(kind, MISSING)
    path = corpus_path(corpus, kind)
    with pytest.raises(case.error) as info:
        read_maps(path)
    error = info.value
    assert type(error) is case.error
    assert error.path == str(path) and str(error).startswith(f"{path}: ")
    assert re.search(case.problem, error.problem), error.problem
    # The typed error survives a process boundary (worker pools pickle exceptions).
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is case.error and (copy.path, copy.problem) == (error.path, error.problem)


def test_spoiled_pixels_are_invalid_and_zero(corpus):
    maps = read_maps(corpus_path(corpus, "bad_pixels"))
    clean = galaxy(BAD_PIXELS_SEED).as_galaxy_maps()  # the galaxy before it was spoiled
    expected = clean.valid.copy()
    for y, x in SPOILED:
        assert clean.valid[:, y, x].all()
        assert not maps.valid[:, y, x].any()
        expected[:, y, x] = False
    assert not maps.valid[DEFAULT_LINES.index(NAN_LINE)].any()
    expected[DEFAULT_LINES.index(NAN_LINE)] = False
    assert np.isfinite(maps.flux).all() and not maps.flux[~maps.valid].any() and not maps.ivar[~maps.valid].any()
    np.testing.assert_array_equal(maps.valid, expected)  # the rest stays usable, with its values
    np.testing.assert_array_equal(maps.flux[expected], clean.flux[expected])
    all_nan = read_maps(corpus_path(corpus, "all_nan"))
    assert not all_nan.valid.any() and not all_nan.flux.any()  # read, but empty: the converter refuses it


def test_converting_the_corpus_lists_every_bad_file_and_converts_the_rest(corpus, unreadable_for_root, tmp_path):
    listing = tmp_path / "more-inputs.txt"
    listing.write_text(f"# listed, never written\n{corpus_path(corpus, 'missing')}\n")
    out = tmp_path / "records"
    options = ConvertOptions(size=MAP_SIZE, mode="pad", val_fraction=0.25, test_fraction=0.25)
    result = convert_maps([corpus, listing], out, options)

    manifest = load_manifest(out)
    totals = manifest["totals"]
    n_inputs = len(CORPUS) + 1
    assert totals == {**totals, "inputs": n_inputs, "examples": len(CONVERTED), "failures": len(FAILING) + 1,
                      "duplicates": len(DUPLICATES)}
    assert totals["examples"] + totals["failures"] + totals["duplicates"] == totals["inputs"]
    assert result.converted == len(CONVERTED)

    reasons = {failure["path"]: failure["reason"] for failure in result.failures}
    expected = {str(corpus_path(corpus, kind)): (CORPUS.get(kind, MISSING)).problem for kind in (*FAILING, "missing")}
    assert set(reasons) == set(expected)
    for path, pattern in expected.items():
        assert re.search(pattern, reasons[path]), (path, reasons[path])
        assert not reasons[path].startswith("unexpected"), reasons[path]
    with open(out / "failures.csv", newline="", encoding="utf-8") as stream:
        assert {row["path"]: row["reason"] for row in csv.DictReader(stream)} == reasons
    assert manifest["failures"] == result.failures

    kept = corpus_path(corpus, "good")
    assert manifest["duplicates"] == [{"id": CORPUS["good"].plateifu, "mangaid": f"1-{CORPUS['good'].plateifu}",
                                       "path": str(corpus_path(corpus, "duplicate")), "kept": str(kept),
                                       "reason": f"another copy of plate-IFU {CORPUS['good'].plateifu}"}]
    rows = {row["id"]: row for row in read_index(out)}
    assert set(rows) == {CORPUS[kind].plateifu for kind in CONVERTED}
    assert rows[CORPUS["good_non_ascii_path"].plateifu]["path"] == str(corpus_path(corpus, "good_non_ascii_path"))
    assert verify_records(out, full=True).ok

    # The spoiled pixels arrive invalid (pad mode at the maps' size: pixel for pixel), the rest exactly as in the file.
    plateifu = CORPUS["bad_pixels"].plateifu
    galaxy = {key: value[0, ..., 0] if key in ("flux", "ivar", "valid") else value
              for key, value in read_examples(out, [plateifu]).items()}
    maps = read_maps(corpus_path(corpus, "bad_pixels"))
    valid = galaxy["valid"].astype(bool)
    np.testing.assert_array_equal(valid, maps.valid)
    for y, x in SPOILED:
        assert not valid[:, y, x].any() and not galaxy["flux"][:, y, x].any()
    assert not valid[DEFAULT_LINES.index(NAN_LINE)].any()
    np.testing.assert_array_equal(galaxy["flux"][valid], maps.flux[maps.valid])


@pytest.mark.long
def test_parallel_workers_report_the_corpus_identically(corpus, tmp_path):
    """Worker processes meet the same bad files: same records, same reasons (no pickling surprises)."""
    if os.geteuid() == 0:
        corpus_path(corpus, "unreadable").chmod(0o644)  # root reads it anyway, in every process alike
    try:
        options = ConvertOptions(size=8, mode="pad")
        one = convert_maps([corpus], tmp_path / "one", options)
        two = convert_maps([corpus], tmp_path / "two", options, jobs=2)
    finally:
        corpus_path(corpus, "unreadable").chmod(0)
    assert record_files(tmp_path / "one") == record_files(tmp_path / "two")
    assert one.failures == two.failures and one.duplicates == two.duplicates


def test_non_ascii_output_directory(corpus, tmp_path):
    out = tmp_path / "sortie" / "記録"
    result = convert_maps([corpus_path(corpus, "good"), corpus_path(corpus, "good_non_ascii_path")], out,
                          ConvertOptions(size=8))
    assert result.converted == 2 and verify_records(out, full=True).ok
    assert len(read_examples(out, [CORPUS["good_non_ascii_path"].plateifu])["id"]) == 1


# ============================================================================ 2. kill -9 during convert

def _convert_args(maps_dir: Path, out: Path, *extra) -> list[str]:
    return ["convert", str(maps_dir), "--out", str(out), "--size", "8", "--shard-mb", "0.01", "--quiet", *extra]


@pytest.fixture(scope="module")
def kill_survey(tmp_path_factory):
    """40 galaxies and their clean conversion: one galaxy per shard, 40 shards."""
    maps_dir = tmp_path_factory.mktemp("kill-maps")
    make_survey(maps_dir, 40, seed=4)
    reference = tmp_path_factory.mktemp("kill-reference") / "records"
    assert run_cli(*_convert_args(maps_dir, reference)).exit_code == 0
    return maps_dir, reference


def _complete_shards(out: Path) -> int:
    try:
        return sum(1 for p in out.iterdir() if ".tfrecord-" in p.name and not p.name.endswith(".incomplete"))
    except FileNotFoundError:
        return 0


def _kill_convert_at_random_moment(maps_dir: Path, out: Path, seed: int, n_shards: int, *extra) -> int:
    """Start `ifskeras convert` in a subprocess; SIGKILL it after a random number of shards plus a random delay.

    Afterwards no process of that run may remain (its worker processes exit with it).
    """
    rng = random.Random(seed)
    target = rng.randint(0, n_shards)  # n_shards: during (or after) the final bookkeeping
    delay = rng.uniform(0.0, 0.05)
    marker = f"{os.getpid()}-{seed}-{out.name}"
    command = [sys.executable, "-c", "from ifskeras.cli.app import main; main()", *_convert_args(maps_dir, out), *extra]
    process = subprocess.Popen(command, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "IFSKERAS_TEST_RUN": marker},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if (out / "convert-journal.jsonl").exists() and _complete_shards(out) >= target:
                time.sleep(delay)
                break
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    deadline = time.monotonic() + 10
    while _processes_with_marker(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _processes_with_marker(marker), "processes of the killed conversion are still running"
    return process.returncode


def _processes_with_marker(marker: str) -> list[int]:
    """Pids whose environment holds IFSKERAS_TEST_RUN=marker (the run and everything it started)."""
    needle = f"IFSKERAS_TEST_RUN={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environment = (entry / "environ").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if needle in environment.split(b"\0") and state != "Z":
                pids.append(int(entry.name))
    return pids


def _kill_then_resume(kill_survey, tmp_path, seed, *extra):
    maps_dir, reference = kill_survey
    n_shards = len(list(reference.glob("*.tfrecord-*")))
    out = tmp_path / f"killed-{seed}"
    returncode = _kill_convert_at_random_moment(maps_dir, out, seed, n_shards, *extra)
    assert returncode in (-signal.SIGKILL, 0)
    if out.exists():
        assert_nothing_half_written(out, reference)
    resumed = run_cli(*_convert_args(maps_dir, out, "--resume", *extra))
    assert resumed.exit_code == 0, resumed.output
    assert_same_records(out, reference)
    verify = run_cli("verify", out)
    assert verify.exit_code == 0 and "OK" in verify.output, verify.output


@pytest.mark.long
def test_convert_killed_at_a_random_moment_resumes_byte_identically(kill_survey, tmp_path):
    _kill_then_resume(kill_survey, tmp_path, seed=0)


@pytest.mark.long
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find leftover processes")
def test_parallel_convert_killed_leaves_no_worker_and_resumes_byte_identically(kill_survey, tmp_path):
    """With --jobs 2 the workers write whole shards: they must die with the main process."""
    _kill_then_resume(kill_survey, tmp_path, 3, "--jobs", "2")


@pytest.mark.long
@pytest.mark.parametrize("seed", range(1, 7))
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_convert_killed_at_random_moments_resumes_byte_identically(kill_survey, tmp_path, seed, jobs):
    _kill_then_resume(kill_survey, tmp_path, seed, "--jobs", jobs)


# ============================================================================ 3. a really full disk

PAGE = 4096


@contextlib.contextmanager
def tmpfs(mount_point: Path, size: int):
    """A real tmpfs of ``size`` bytes at ``mount_point``; yields ``resize(bytes)``; skips where mounting fails."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if not shutil.which("mount") or not shutil.which("umount"):
        pytest.skip("mount/umount not installed")
    mount_point.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")

    def resize(new_size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new_size}", str(mount_point)], check=True, capture_output=True)

    try:
        yield resize
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def _pages(directory: Path) -> int:
    return sum(-(-path.stat().st_size // PAGE) for path in directory.iterdir())


def _fill_disk_then_resume(survey: Path, reference: Path, out: Path, resize, size: int, options, jobs=1) -> bool:
    """Convert onto a disk of ``size`` bytes; if it fills, check the damage, enlarge, resume. True if it filled."""
    resize(size)
    try:
        convert_maps([survey], out, options, jobs=jobs)
    except ShardWriteError as error:
        message = str(error)
        assert "No space left on device" in message and "disk may be full" in message, message
        assert "--resume" in message and str(out) in message, message
    else:
        assert_same_records(out, reference)
        return False
    assert not (out / "manifest.json").exists()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".incomplete") or ".tmp-" in p.name]
    assert_nothing_half_written(out, reference)
    resize(64 * PAGE * 16)
    convert_maps([survey], out, options, resume=True, jobs=jobs)
    assert_same_records(out, reference)
    return True


@pytest.mark.long
@pytest.mark.parametrize("jobs", [1, 2])
def test_full_disk_is_a_clear_error_and_resume_finishes(survey_dir, records_dir, tmp_path, jobs):
    """jobs=2: the workers write the shards, and their error reaches the user the same way."""
    options = small_options(val_fraction=0.2, test_fraction=0.2)  # as records_dir
    half = _pages(records_dir) // 2 * PAGE
    with tmpfs(tmp_path / "disk", half) as resize:
        out = tmp_path / "disk" / "records"
        assert _fill_disk_then_resume(survey_dir, records_dir, out, resize, half, options, jobs)
        assert verify_records(out, full=True).ok
        # The command says the same, in one line and without a traceback.
        shutil.rmtree(out)
        resize(half)
        result = run_cli("convert", survey_dir, "--out", out, "--size", 8, "--shard-mb", 0.03, "--min-shards", 2,
                         "--val-fraction", 0.2, "--test-fraction", 0.2, "--quiet", "--jobs", jobs)
        assert result.exit_code == 1 and "No space left on device" in result.output and "--resume" in result.output


@pytest.mark.long
@pytest.mark.parametrize("jobs", [1, 2])
def test_disk_full_at_every_point_of_a_conversion(survey_dir, records_dir, tmp_path, jobs):
    """Every disk size from 1 page to enough: shards, journal, index, failures and manifest each fill it once."""
    options = small_options(val_fraction=0.2, test_fraction=0.2)
    enough = (_pages(records_dir) + 4) * PAGE
    filled = []
    with tmpfs(tmp_path / "disk", enough) as resize:
        out = tmp_path / "disk" / "records"
        for size in range(PAGE, enough + 1, PAGE):
            if out.exists():
                shutil.rmtree(out)
            filled.append(_fill_disk_then_resume(survey_dir, records_dir, out, resize, size, options, jobs))
    # Small disks fill, large ones do not, and nothing in between behaves otherwise.
    assert filled[0] and not filled[-1] and filled == sorted(filled, reverse=True), filled


# ============================================================================ 4. a flipped byte

@pytest.fixture
def flipped(tiny_records, tmp_path):
    """A copy of the tiny records with one byte flipped in the middle of a training shard (size unchanged)."""
    copy = tmp_path / "records"
    shutil.copytree(tiny_records, copy)
    shard = sorted(copy.glob("*-train.tfrecord-*"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    return copy, shard.name


def test_flipped_byte_is_named_by_verify_and_refused_by_fit(flipped, tmp_path):
    from ifskeras.learning.config import smoke_config
    from ifskeras.records import RecordsError
    from ifskeras.learning.train import fit

    records, shard = flipped
    report = verify_records(records, full=True)
    assert not report.ok and {p.file for p in report.problems} == {shard}
    assert {"checksum", "corrupt"} <= {p.kind for p in report.problems}
    assert not verify_records(records, checksums=True).ok  # the check fit and score run first
    verify = run_cli("verify", records)
    assert verify.exit_code == 1 and shard in verify.output and "checksum" in verify.output

    with pytest.raises(CorruptRecordsError, match=shard) as info:
        fit(records, tmp_path / "run", smoke_config("ae"), progress=False)
    assert isinstance(info.value, RecordsError)
    assert not (tmp_path / "run").exists()  # refused before anything was written
    command = run_cli("fit", records, "--out", tmp_path / "run-cli", "--epochs", 1, "--quiet")
    assert command.exit_code == 1 and "error:" in command.output and shard in command.output
    assert not (tmp_path / "run-cli").exists()


def test_flipped_byte_is_refused_by_score(flipped, trained_ae, tmp_path):
    from ifskeras.discovery.score import score_records

    records, shard = flipped
    with pytest.raises(CorruptRecordsError, match=shard):
        score_records(trained_ae.export_path, records, tmp_path / "scores", progress=False)
    assert not (tmp_path / "scores").exists()
    command = run_cli("score", trained_ae.export_path, records, "--out", tmp_path / "scores-cli",
                      "--quiet", "--no-umap")
    assert command.exit_code == 1 and "error:" in command.output and shard in command.output
    assert not (tmp_path / "scores-cli").exists()


# ============================================================================ 5. model files carrying code

def _run_dir(directory: Path) -> Path:
    directory.mkdir()
    (directory / "provenance.json").write_text(json.dumps({"lines": list(DEFAULT_LINES), "shape": [19, 16, 16]}))
    return directory


def _save_lambda_model(path: Path, marker: Path) -> None:
    """A model whose Lambda layer creates ``marker`` whenever it runs (building the model from config runs it)."""
    import keras

    payload = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]")  # noqa: S307
    inputs = keras.Input((19, 16, 16, 1))
    keras.Model(inputs, keras.layers.Lambda(payload)(inputs)).save(path)
    marker.unlink()  # building it ran the payload once


def _save_foreign_module_model(path: Path, marker: Path) -> None:
    """A model.keras whose config.json asks for ``subprocess.call`` (edited inside the zip)."""
    import keras

    inputs = keras.Input((4,))
    plain = path.with_name("plain.keras")
    keras.Model(inputs, keras.layers.Dense(4)(inputs)).save(plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.namelist():
            data = source.read(item)
            if item == "config.json":
                config = json.loads(data)
                config.update(module="subprocess", class_name="call", config={"args": ["touch", str(marker)]})
                data = json.dumps(config).encode()
            target.writestr(item, data)
    plain.unlink()


@pytest.mark.parametrize(
    "make, reason",
    [(_save_lambda_model, "Lambda"), (_save_foreign_module_model, "Could not locate class 'call'")],
    ids=["lambda-layer", "foreign-module"],
)
def test_export_refuses_a_model_file_carrying_code_without_running_it(make, reason, tmp_path):
    from ifskeras.learning.export import ExportError, export_run

    run_dir = _run_dir(tmp_path / "run")
    marker = tmp_path / "payload-ran"
    make(run_dir / "model.keras", marker)
    with pytest.raises(ExportError, match=reason) as info:
        export_run(run_dir, tmp_path / "model")
    assert str(run_dir / "model.keras") in str(info.value)
    command = run_cli("export", run_dir, "--out", tmp_path / "model-cli")
    assert command.exit_code == 1 and "error:" in command.output and "model.keras" in command.output
    assert not marker.exists(), "the model file's code ran"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("model")]


def test_the_lambda_payload_is_live_when_safety_is_off(tmp_path):
    """Control: the refused file really carries code that loading would run."""
    import keras

    marker = tmp_path / "payload-ran"
    _save_lambda_model(tmp_path / "model.keras", marker)
    keras.saving.load_model(str(tmp_path / "model.keras"), safe_mode=False)
    assert marker.exists()
