"""``ifskeras survey fetch``: downloads from a loopback archive that fails on purpose.

Each fault of :mod:`archive_server` is injected on one file while the others are served
normally: a file either arrives whole and checked under its final name, or is listed as a
failure with its reason and leaves nothing behind. Reruns are counted in requests served.
"""

from __future__ import annotations

import csv
import gzip
import json

import pytest
from archive_server import Fault, sas_server, sas_tree, write_drpall  # noqa: F401 - fixtures, found by name
from typer.testing import CliRunner

from ifskeras.cli.app import app
from ifskeras.survey.archive import select_sample, write_sample_csv
from ifskeras.survey.fetch import (
    FAILURES_FILE,
    MANIFEST_FILE,
    FetchError,
    FetchOptions,
    check_existing_file,
    fetch_files,
    fetch_sample,
    plan_downloads,
    read_sample_paths,
)
from ifskeras.survey.maps import read_maps

#: Small backoff and timeouts: the faults are local, so retries need not wait.
_BACKOFF_S = 0.01
_TIMEOUT_S = 2.0


def _options(server, **overrides) -> FetchOptions:
    settings = {"base_url": server.base_url, "jobs": 3, "retries": 2, "timeout": _TIMEOUT_S,
                "backoff": _BACKOFF_S, "chunk_bytes": 8192}
    return FetchOptions(**{**settings, **overrides})


def _paths(tree) -> list[str]:
    return [galaxy.path for galaxy in tree.galaxies]


def _target(out, galaxy):
    return out / galaxy.file.name


def _leftovers(out) -> list[str]:
    return sorted(path.name for path in out.iterdir() if path.name.startswith("."))


def _failures_csv(out) -> list[dict]:
    with open(out / FAILURES_FILE, newline="") as stream:
        return list(csv.DictReader(stream))


# ----------------------------------------------------------------------------- a clean run


def test_every_file_arrives_whole_with_its_record(sas_server, sas_tree, tmp_path):
    out = tmp_path / "maps"
    progress_calls = []
    result = fetch_files(_paths(sas_tree), out, _options(sas_server),
                         progress=lambda done, total, failed: progress_calls.append((done, total, failed)))
    assert len(result.fetched) == len(sas_tree.galaxies) and not result.failures
    for galaxy in sas_tree.galaxies:
        assert _target(out, galaxy).read_bytes() == galaxy.file.read_bytes()
    assert read_maps(_target(out, sas_tree.galaxies[0])).plateifu == sas_tree.galaxies[0].plateifu
    assert sas_server.total_requests == len(sas_tree.galaxies)
    assert progress_calls[-1] == (len(sas_tree.galaxies), len(sas_tree.galaxies), 0)
    assert _leftovers(out) == []

    record = json.loads((out / MANIFEST_FILE).read_text())
    entry = record["files"][sas_tree.galaxies[0].file.name]
    assert entry["path"] == sas_tree.galaxies[0].path
    assert entry["bytes"] == sas_tree.galaxies[0].file.stat().st_size and len(entry["sha256"]) == 64
    assert entry["url"] == sas_server.url_of(sas_tree.galaxies[0].path) and entry["fetched_at"]
    assert record["last_run"]["fetched"] == len(sas_tree.galaxies) and record["last_run"]["failed"] == 0
    assert _failures_csv(out) == []


def test_the_served_galaxies_drpall_selects_their_paths_and_they_fetch(sas_server, sas_tree, tmp_path):
    """The contract other tests rely on: write_drpall(galaxies) -> select -> fetch gives the served files."""
    selection = select_sample(write_drpall(tmp_path / "drpall.fits", sas_tree.galaxies))
    assert [row["path"] for row in selection.rows] == _paths(sas_tree)
    sample = write_sample_csv(tmp_path / "sample.csv", selection.rows)
    result = fetch_sample(sample, tmp_path / "maps", _options(sas_server))
    assert len(result.fetched) == len(sas_tree.galaxies)
    assert {read_maps(o.item.target).mangaid for o in result.fetched} == {g.mangaid for g in sas_tree.galaxies}


# ----------------------------------------------------------------------------- faults


@pytest.mark.parametrize("fault, status", [(Fault.not_found(), "404"), (Fault.forbidden(), "403")])
def test_refused_file_is_listed_once_tried_and_the_others_arrive(sas_server, sas_tree, tmp_path, fault, status):
    refused = sas_tree.galaxies[1]
    sas_server.inject(refused.path, fault)
    out = tmp_path / "maps"
    result = fetch_files(_paths(sas_tree), out, _options(sas_server))
    assert [failure.item.path for failure in result.failures] == [refused.path]
    assert result.failures[0].reason.startswith(f"HTTP {status}")
    assert sas_server.requests_for(refused.path) == 1  # never retried
    assert len(result.fetched) == len(sas_tree.galaxies) - 1
    assert not _target(out, refused).exists() and _leftovers(out) == []
    assert _failures_csv(out) == [{"path": refused.path, "url": sas_server.url_of(refused.path),
                                   "reason": result.failures[0].reason}]


def test_server_errors_are_retried_until_the_file_comes(sas_server, sas_tree, tmp_path):
    flaky = sas_tree.galaxies[2]
    sas_server.inject(flaky.path, Fault.server_error(times=2, status=503))
    result = fetch_files(_paths(sas_tree), tmp_path, _options(sas_server, retries=2))
    assert not result.failures
    assert sas_server.requests_for(flaky.path) == 3
    outcome = next(o for o in result.fetched if o.item.path == flaky.path)
    assert outcome.attempts == 3
    assert _target(tmp_path, flaky).read_bytes() == flaky.file.read_bytes()


def test_a_server_that_keeps_failing_is_given_up_with_the_reason(sas_server, sas_tree, tmp_path):
    broken = sas_tree.galaxies[0]
    sas_server.inject(broken.path, Fault.server_error())
    result = fetch_files([broken.path], tmp_path, _options(sas_server, retries=2))
    (failure,) = result.failures
    assert failure.reason == "HTTP 500 Internal Server Error (gave up after 3 attempts)"
    assert sas_server.requests_for(broken.path) == 3


def test_a_cut_connection_is_retried_and_the_file_arrives(sas_server, sas_tree, tmp_path):
    cut = sas_tree.galaxies[3]
    sas_server.inject(cut.path, Fault.cut(times=1))
    result = fetch_files(_paths(sas_tree), tmp_path, _options(sas_server))
    assert not result.failures
    assert sas_server.requests_for(cut.path) == 2
    assert _target(tmp_path, cut).read_bytes() == cut.file.read_bytes()


def test_a_connection_cut_every_time_fails_with_the_reason_and_leaves_nothing(sas_server, sas_tree, tmp_path):
    cut = sas_tree.galaxies[3]
    sas_server.inject(cut.path, Fault.cut(fraction=0.4))
    result = fetch_files([cut.path], tmp_path, _options(sas_server, retries=1))
    (failure,) = result.failures
    assert "after 2 attempts" in failure.reason
    assert failure.reason.startswith("connection cut after") and "Connection reset" in failure.reason
    assert not _target(tmp_path, cut).exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("content_length", [True, False], ids=["announced-length", "no-length"])
def test_a_short_body_is_never_renamed_into_place(sas_server, sas_tree, tmp_path, content_length):
    short = sas_tree.galaxies[4]
    sas_server.inject(short.path, Fault.short(fraction=0.6, content_length=content_length))
    result = fetch_files([short.path], tmp_path, _options(sas_server, retries=1))
    (failure,) = result.failures
    if content_length:  # the announced length gives it away
        assert failure.reason.startswith("short body:")
        assert "bytes (the server closed the connection early)" in failure.reason
    else:  # only the gzip stream can tell
        assert failure.reason.startswith("damaged content: gzip stream ends early")
    assert sas_server.requests_for(short.path) == 2
    assert not _target(tmp_path, short).exists() and _leftovers(tmp_path) == []


def test_a_short_body_once_is_retried_and_the_file_arrives_whole(sas_server, sas_tree, tmp_path):
    short = sas_tree.galaxies[4]
    sas_server.inject(short.path, Fault.short(times=1, content_length=False))
    result = fetch_files([short.path], tmp_path, _options(sas_server))
    assert not result.failures and result.fetched[0].attempts == 2
    assert _target(tmp_path, short).read_bytes() == short.file.read_bytes()


def test_a_slow_response_times_out_then_is_retried(sas_server, sas_tree, tmp_path):
    slow = sas_tree.galaxies[5]
    sas_server.inject(slow.path, Fault.slow(delay=0.6, times=1))
    result = fetch_files([slow.path], tmp_path, _options(sas_server, timeout=0.2))
    assert not result.failures and result.fetched[0].attempts == 2
    assert _target(tmp_path, slow).read_bytes() == slow.file.read_bytes()


def test_a_response_that_stays_slow_fails_clearly(sas_server, sas_tree, tmp_path):
    slow = sas_tree.galaxies[5]
    sas_server.inject(slow.path, Fault.slow(delay=0.6))
    result = fetch_files([slow.path], tmp_path, _options(sas_server, timeout=0.2, retries=1))
    (failure,) = result.failures
    assert failure.reason.startswith("timed out after") and failure.reason.endswith("(gave up after 2 attempts)")
    assert not _target(tmp_path, slow).exists() and _leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- reruns


def test_a_rerun_fetches_only_what_is_missing_or_damaged(sas_server, sas_tree, tmp_path):
    out = tmp_path / "maps"
    first = fetch_files(_paths(sas_tree), out, _options(sas_server))
    assert len(first.fetched) == len(sas_tree.galaxies)

    sas_server.reset_counts()
    again = fetch_files(_paths(sas_tree), out, _options(sas_server))
    assert sas_server.total_requests == 0
    assert len(again.present) == len(sas_tree.galaxies) and not again.fetched

    missing, truncated, overwritten = sas_tree.galaxies[0], sas_tree.galaxies[1], sas_tree.galaxies[2]
    _target(out, missing).unlink()
    data = truncated.file.read_bytes()
    _target(out, truncated).write_bytes(data[: len(data) // 2])
    _target(out, overwritten).write_bytes(b"<html>502 Bad Gateway</html>\n")
    (out / f".{missing.file.name}.part").write_bytes(b"left by a killed run")
    sas_server.reset_counts()
    repaired = fetch_files(_paths(sas_tree), out, _options(sas_server))
    assert sas_server.total_requests == 3
    assert {o.item.path for o in repaired.fetched} == {missing.path, truncated.path, overwritten.path}
    assert {o.item.path for o in repaired.replaced} == {truncated.path, overwritten.path}
    reasons = {o.item.path: o.replaced_damaged for o in repaired.replaced}
    assert all("recorded in fetch.json" in reason for reason in reasons.values())  # the size gives them away
    for galaxy in sas_tree.galaxies:
        assert _target(out, galaxy).read_bytes() == galaxy.file.read_bytes()
    assert _leftovers(out) == []


def test_a_damaged_file_without_a_record_is_found_and_replaced(sas_server, sas_tree, tmp_path):
    galaxy = sas_tree.galaxies[0]
    data = galaxy.file.read_bytes()
    _target(tmp_path, galaxy).write_bytes(data[: len(data) - 100])  # copied in by hand, cut short
    result = fetch_files([galaxy.path], tmp_path, _options(sas_server))
    (outcome,) = result.replaced
    assert "gzip trailer" in outcome.replaced_damaged
    assert _target(tmp_path, galaxy).read_bytes() == data


def test_a_damaged_file_stays_away_when_its_download_fails(sas_server, sas_tree, tmp_path):
    galaxy = sas_tree.galaxies[0]
    _target(tmp_path, galaxy).write_bytes(b"not a gzip file")
    sas_server.inject(galaxy.path, Fault.not_found())
    result = fetch_files([galaxy.path], tmp_path, _options(sas_server))
    assert result.failures[0].replaced_damaged.startswith("not a FITS file")
    assert not _target(tmp_path, galaxy).exists()


def test_an_interrupt_stops_downloads_in_flight_and_keeps_the_record(sas_server, sas_tree, tmp_path):
    fast, *slow = sas_tree.galaxies[:3]
    for galaxy in slow:  # about 8 chunks of 4 kB at 0.3 s each: 2.4 s if left to finish
        sas_server.inject(galaxy.path, Fault.slow(delay=0.3))

    def interrupt(done, total, failed):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch_files([fast.path, *(g.path for g in slow)], tmp_path,
                    _options(sas_server, jobs=2, chunk_bytes=4096), progress=interrupt)
    record = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert record["last_run"]["interrupted"] is True
    assert list(record["files"]) == [fast.file.name]
    assert _target(tmp_path, fast).exists()
    assert not any(_target(tmp_path, galaxy).exists() for galaxy in slow)
    assert _leftovers(tmp_path) == []


def test_a_target_that_cannot_be_replaced_fails_alone(sas_server, sas_tree, tmp_path):
    blocked, other = sas_tree.galaxies[:2]
    _target(tmp_path, blocked).mkdir()  # in the way, and not removable as a file
    result = fetch_files([blocked.path, other.path], tmp_path, _options(sas_server))
    (failure,) = result.failures
    assert failure.item.path == blocked.path and failure.reason.startswith("cannot replace")
    assert [o.item.path for o in result.fetched] == [other.path]


def test_quick_check_reads_the_ends_and_full_check_decompresses_everything(sas_tree, tmp_path):
    good = sas_tree.galaxies[0].file
    assert check_existing_file(good) == "" and check_existing_file(good, full=True) == ""
    assert "differs from the 10 bytes recorded" in check_existing_file(good, expected_bytes=10)
    # A byte flipped inside the deflate stream: the ends still look right, only the CRC knows.
    flipped = bytearray(good.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF
    damaged = tmp_path / good.name
    damaged.write_bytes(bytes(flipped))
    assert check_existing_file(damaged, full=True) != ""
    plain = tmp_path / "plain.fits"
    plain.write_bytes(gzip.decompress(good.read_bytes()))
    assert check_existing_file(plain) == "" and check_existing_file(plain, full=True) == ""
    plain.write_bytes(plain.read_bytes()[:-1000])
    assert "not a whole number of 2880-byte FITS blocks" in check_existing_file(plain)


# ----------------------------------------------------------------------------- inputs and command line


def test_unusable_samples_are_refused_before_any_request(tmp_path):
    no_path = tmp_path / "sample.csv"
    no_path.write_text("plateifu,file\n8000-1901,a.fits.gz\n")
    with pytest.raises(FetchError, match=r"sample.csv: no 'path' column \(columns: plateifu, file\)"):
        read_sample_paths(no_path)
    climbing = tmp_path / "climb.csv"
    climbing.write_text("path\ndr17/a.fits.gz\n../../etc/passwd\n")
    with pytest.raises(FetchError, match=r"climb.csv: line 3: path '../../etc/passwd' must not contain '..'"):
        read_sample_paths(climbing)
    with pytest.raises(FetchError, match="two sample paths share the file name m.fits.gz"):
        plan_downloads(["dr17/a/m.fits.gz", "dr15/b/m.fits.gz"], tmp_path, "https://data.sdss.org/sas/")
    with pytest.raises(ValueError, match="base_url must start with http"):
        FetchOptions(base_url="data.sdss.org/sas")


def test_cli_fetch_lists_failures_exits_1_and_a_rerun_finishes(sas_server, sas_tree, tmp_path):
    sample = tmp_path / "sample.csv"
    rows = [{"plateifu": g.plateifu, "path": g.path} for g in sas_tree.galaxies[:3]]
    rows.append(rows[0])  # a repeated path is fetched once
    with open(sample, "w", newline="") as stream:
        writer = csv.DictWriter(stream, ["plateifu", "path"])
        writer.writeheader()
        writer.writerows(rows)
    missing = sas_tree.galaxies[2]
    sas_server.inject(missing.path, Fault.not_found())
    out = tmp_path / "maps"
    command = ["survey", "fetch", str(sample), "--out", str(out), "--base-url", sas_server.base_url,
               "--jobs", "2", "--retries", "1", "--backoff", "0.01", "--timeout", "2", "--quiet"]
    run = CliRunner().invoke(app, command)
    assert run.exit_code == 1
    assert f"1 file(s) failed (all listed in {out / FAILURES_FILE})" in run.output
    assert f"{missing.path}: HTTP 404 Not Found" in run.output
    assert [row["path"] for row in _failures_csv(out)] == [missing.path]

    sas_server.inject(missing.path, None)
    sas_server.reset_counts()
    rerun = CliRunner().invoke(app, [arg for arg in command if arg != "--quiet"])
    assert rerun.exit_code == 0, rerun.output
    assert sas_server.total_requests == 1
    assert "fetched 1 files" in rerun.output and "2 already there" in rerun.output
    assert _failures_csv(out) == []


def test_a_second_fetch_into_the_same_directory_is_refused(sas_server, sas_tree, tmp_path):
    import fcntl

    out = tmp_path / "maps"
    out.mkdir()
    with open(out / ".fetch.lock", "a") as held:  # another run holds the directory
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(FetchError, match="another `ifskeras survey fetch`"):
            fetch_files(_paths(sas_tree), out, _options(sas_server))
    assert sas_server.total_requests == 0


def test_a_damaged_file_is_kept_aside_when_its_download_fails(sas_server, sas_tree, tmp_path):
    out = tmp_path / "maps"
    galaxy = sas_tree.galaxies[0]
    target = _target(out, galaxy)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not a gzip stream")
    sas_server.inject(galaxy.path, Fault.not_found())
    result = fetch_files([galaxy.path], out, _options(sas_server))
    assert [outcome.status for outcome in result.outcomes] == ["failed"]
    assert not target.exists()  # never passes for a good file ...
    assert (out / f".{target.name}.damaged").read_bytes() == b"not a gzip stream"  # ... nor is it lost
