"""The convert, inspect, verify and records merge commands: messages and exit codes, no tracebacks."""

import os
import signal
import subprocess
import sys
import time

import pytest
from pictures import assert_picture
from simulated import bad_inputs, small_options, with_release, write_galaxy
from typer.testing import CliRunner

from ifskeras.cli.app import app
from ifskeras.records import convert_maps, load_manifest
from ifskeras.survey.synth import make_survey

runner = CliRunner()


def _run(*args):
    result = runner.invoke(app, [str(arg) for arg in args])
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("command", [["convert"], ["inspect"], ["verify"], ["records", "merge"]])
def test_help_explains_with_an_example(command):
    result = _run(*command, "--help")
    assert result.exit_code == 0 and "Example: ifskeras" in result.output


def test_convert_summary_and_exit_codes(tmp_path):
    bad_inputs(tmp_path / "maps")
    result = _run("convert", tmp_path / "maps", "--out", tmp_path / "out", "--size", 8, "--shard-mb", 0.05)
    assert result.exit_code == 0, result.output
    assert "converted 1 galaxies" in result.output and "4 input(s) failed" in result.output
    strict = _run("convert", tmp_path / "maps", "--out", tmp_path / "strict", "--size", 8, "--strict")
    assert strict.exit_code == 1 and "--strict" in strict.output
    again = _run("convert", tmp_path / "maps", "--out", tmp_path / "out", "--size", 8)
    assert again.exit_code == 1 and "not empty" in again.output and "--resume" in again.output
    (tmp_path / "only_bad").mkdir()
    (tmp_path / "only_bad" / "manga-1-2-MAPS.fits").write_text("junk")
    nothing = _run("convert", tmp_path / "only_bad", "--out", tmp_path / "none", "--quiet")
    assert nothing.exit_code == 1 and "no galaxy was converted" in nothing.output
    bad_option = _run("convert", tmp_path / "maps", "--out", tmp_path / "x", "--mode", "zoom")
    assert bad_option.exit_code == 1 and "mode must be one of" in bad_option.output
    bad_line = _run("convert", tmp_path / "maps", "--out", tmp_path / "y", "--lines", "Ha-6564,Zz-1")
    assert bad_line.exit_code == 1 and "Unknown emission line" in bad_line.output


def test_convert_refuses_mixed_releases_unless_allowed(tmp_path):
    maps = tmp_path / "maps"
    write_galaxy(maps / "manga-7000-1901-MAPS.fits", "7000-1901", seed=1)
    damaged_copy = maps / "manga-1-1-MAPS-TRUNC.fits"
    damaged_copy.write_bytes((maps / "manga-7000-1901-MAPS.fits").read_bytes()[:-5000])
    with_release(write_galaxy(maps / "manga-7001-1901-MAPS.fits", "7001-1901", seed=2))
    refused = _run("convert", maps, "--out", tmp_path / "refused", "--size", 8)
    assert refused.exit_code == 1 and "mix 2 DAP releases" in refused.output
    assert "--allow-mixed-releases" in refused.output and "manga-7001-1901-MAPS.fits" in refused.output
    allowed = _run("convert", maps, "--out", tmp_path / "allowed", "--size", 8, "--allow-mixed-releases")
    assert allowed.exit_code == 0 and "converted 2 galaxies" in allowed.output
    assert f"{damaged_copy}: " in allowed.output
    assert f"(replaced by {maps / 'manga-7000-1901-MAPS.fits'})" in allowed.output
    summary = _run("inspect", tmp_path / "allowed")
    assert "DAP releases: VERSDAP=3.1.0" in summary.output and "VERSDAP=ifskeras-synth" in summary.output


def test_inspect_verify_and_merge_commands(records_dir, survey_dir, tmp_path):
    summary = _run("inspect", records_dir)
    assert summary.exit_code == 0 and "train" in summary.output and "[19, 8, 8]" in summary.output
    galaxy = "10001-1901"
    picture = _run("inspect", records_dir, "--png", tmp_path / "g.png", "--id", galaxy)
    assert picture.exit_code == 0, picture.output
    assert_picture(tmp_path / "g.png", size=(1440, 1080))  # 5 x 4 panels of 3.2 x 2.9 inches + title, 90 dpi
    unknown = _run("inspect", records_dir, "--png", tmp_path / "h.png", "--id", "1-1")
    assert unknown.exit_code == 1 and "1-1" in unknown.output
    assert _run("inspect", tmp_path / "nowhere").exit_code == 1
    good = _run("verify", records_dir)
    assert good.exit_code == 0 and "OK" in good.output
    for index in range(2):
        convert_maps([survey_dir], tmp_path / f"part{index}", small_options(num_workers=2, worker_index=index))
    merged = _run("records", "merge", tmp_path / "part0", tmp_path / "part1", "--out", tmp_path / "merged")
    assert merged.exit_code == 0 and "12 examples" in merged.output
    partial = _run("records", "merge", tmp_path / "part0", "--out", tmp_path / "partial")
    assert partial.exit_code == 1 and "missing" in partial.output
    shard = next((tmp_path / "merged").glob("maps-train.*"))
    shard.write_bytes(shard.read_bytes()[:-1])
    broken = _run("verify", tmp_path / "merged")
    assert broken.exit_code == 1 and "truncated" in broken.output


def _convert_command(maps_dir, out, *extra):
    return [sys.executable, "-c", "from ifskeras.cli.app import main; main()", "convert", str(maps_dir),
            "--out", str(out), "--size", "8", "--shard-mb", "0.01", "--quiet", *extra]


@pytest.mark.long
def test_killed_conversion_resumes_byte_identically(tmp_path):
    """SIGKILL a real `ifskeras convert` right after its first shard, then resume."""
    maps_dir = tmp_path / "maps"
    make_survey(maps_dir, 40, seed=2)
    reference = tmp_path / "reference"
    convert_maps([maps_dir], reference, small_options(shard_mb=0.01, min_shards=1))
    out = tmp_path / "killed"
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(_convert_command(maps_dir, out), env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if out.is_dir() and any(".tfrecord-" in p.name and not p.name.endswith(".incomplete") for p in out.iterdir()):
                break
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    names = {path.name for path in out.iterdir()}
    assert "manifest.json" not in names, "the run finished before it could be killed"
    assert any(".tfrecord-" in name and not name.endswith(".incomplete") for name in names)
    for name in names:
        if ".tfrecord-" in name and not name.endswith(".incomplete"):
            assert (out / name).read_bytes() == (reference / name).read_bytes()  # complete or absent
    resumed = _run(*_convert_command(maps_dir, out, "--resume")[3:])  # in-process: one TF import less
    assert resumed.exit_code == 0, resumed.output
    shards = sorted(path.name for path in reference.glob("*.tfrecord-*"))
    assert sorted(path.name for path in out.glob("*.tfrecord-*")) == shards
    for name in [*shards, "index.csv", "failures.csv"]:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert load_manifest(out)["splits"] == load_manifest(reference)["splits"]


def test_convert_never_loads_tensorflow(survey_dir, tmp_path):
    """A conversion (parallel too) starts in a fraction of a second: no TensorFlow anywhere."""
    script = (
        "import sys\n"
        "from ifskeras.cli.app import app\n"
        "from typer.testing import CliRunner\n"
        f"result = CliRunner().invoke(app, ['convert', {str(survey_dir)!r}, '--out', {str(tmp_path / 'out')!r},"
        " '--size', '8', '--jobs', '2', '--min-shards', '2', '--quiet'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print('tensorflow' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "False"
    assert load_manifest(tmp_path / "out").examples() == 12
