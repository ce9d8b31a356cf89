"""README section 2, run as written: from a DRPall on a (loopback) archive to a report.

The commands are read from the README's code block, so the test fails when the README
shows a command or option that does not work. Only sizes shrink (maps, epochs, batch),
the archive is a local server (``--base-url``) that fails some requests on purpose,
and the catalogue file names point to tables this test writes with the real columns.
"""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from archive_server import ArchiveServer, Fault, build_sas_tree, dapall_row, drpall_row, write_dapall, write_drpall
from astropy.table import Table
from typer.testing import CliRunner

from ifskeras.cli.app import app

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "### From the archive to a report"
#: Twenty galaxies, with AGN (Seyferts) to find among star-forming and other galaxies.
CLASSES = ("SF", "Seyfert", "SF", "retired", "SF", "LINER", "SF", "Seyfert", "SF", "blueberry")
N_GALAXIES = 20
#: The README's sizes, shrunk for a 2-core test machine.
SMALL_VALUES = {"--size": "16", "--jobs": "2", "--epochs": "1", "--batch-size": "4", "-k": "5"}
README_GALAXY = "8143-3701"


def readme_commands() -> list[list[str]]:
    """The argument lists of the section's first code block, one per ``ifskeras`` line."""
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README lost its section {SECTION!r}"
    block = text.split(SECTION, 1)[1].split("```", 2)[1]
    commands = [shlex.split(line) for line in block.strip().splitlines() if line.startswith("ifskeras ")]
    assert len(commands) >= 10
    return [command[1:] for command in commands]


def adapt(argv: list[str], replacements: dict[str, str], base_url: str) -> list[str]:
    """The README's command with small sizes, the test's files and the loopback archive."""
    out = []
    for index, arg in enumerate(argv):
        previous = argv[index - 1] if index else ""
        out.append(SMALL_VALUES.get(previous, replacements.get(arg, arg)) if previous in SMALL_VALUES
                   else replacements.get(arg, arg))
    if argv[:2] == ["survey", "fetch"]:
        out += ["--base-url", base_url, "--backoff", "0.01", "--timeout", "5"]
    return out


@pytest.fixture()
def archive(tmp_path):
    tree = build_sas_tree(tmp_path / "sas", N_GALAXIES, seed=11, classes=CLASSES)
    with ArchiveServer(tree.root) as server:
        yield tree, server


def test_readme_section_2_runs_as_written(archive, tmp_path, monkeypatch):
    tree, server = archive
    galaxies = tree.galaxies
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    # The catalogues: every served galaxy, plus a second, smaller cube of one of them that
    # `survey select` must drop (one cube per MANGAID), and a published-catalogue stand-in.
    observed_twice = next(g for g in galaxies if g.ifu_fibres > 19)
    repeat = drpall_row("10002-1901", observed_twice.mangaid, ifudesignsize=19)
    write_drpall(tmp_path / "drpall.fits", [g.drpall_row() for g in galaxies] + [repeat])
    write_dapall(tmp_path / "dapall.fits", [dapall_row(g.plateifu, g.mangaid) for g in galaxies]
                 + [dapall_row("10002-1901", observed_twice.mangaid)])
    agn = [g for g in galaxies if g.kind == "Seyfert"]
    Table({"MANGAID": [g.mangaid for g in galaxies],
           "AGN_CLASS": ["AGN" if g.kind == "Seyfert" else "" for g in galaxies]}).write(tmp_path / "agn_catalogue.fits")
    query = galaxies[1].plateifu
    replacements = {
        "drpall-v3_1_1.fits": str(tmp_path / "drpall.fits"),
        "dapall-v3_1_1-3.1.0.fits": str(tmp_path / "dapall.fits"),
        "agn_catalogue.fits": str(tmp_path / "agn_catalogue.fits"),
        README_GALAXY: query,
    }
    # Faults the download must survive: a server error, a connection cut mid-file, a slow body.
    server.inject(galaxies[2].path, Fault.server_error(times=1))
    server.inject(galaxies[3].path, Fault.cut(times=1))
    server.inject(galaxies[4].path, Fault.slow(0.01, times=1))

    outputs = []
    for argv in readme_commands():
        argv = adapt(argv, replacements, server.base_url)
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 0, f"ifskeras {shlex.join(argv)}\n{result.output}\n{result.exception!r}"
        outputs.append((argv, result.output))
        check_step(argv, result.output, galaxies, agn, server)

    ran = [_command(argv) for argv, _ in outputs]
    assert {"survey select", "survey fetch", "label bpt", "label match", "convert", "fit", "score", "evaluate",
            "report"} <= set(ran), ran
    assert Path("report/vae1/index.html").exists()


def _command(argv: list[str]) -> str:
    return " ".join(argv[:2]) if argv[0] in ("survey", "label") else argv[0]


def _rows(path: str) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def check_step(argv: list[str], output: str, galaxies, agn, server) -> None:
    """What each README step must have written."""
    command = _command(argv)
    served = {g.plateifu for g in galaxies}
    if command == "survey select":
        sample = _rows("sample.csv")
        assert {row["plateifu"] for row in sample} == served  # the smaller repeat cube is dropped
        assert all(row["path"].startswith("dr17/manga/spectro/analysis/v3_1_1/3.1.0/") for row in sample)
    elif command == "survey fetch":
        assert sorted(p.name for p in Path("maps").glob("*.fits.gz")) == sorted(g.file.name for g in galaxies)
        for galaxy, tries in ((galaxies[2], 2), (galaxies[3], 2)):
            assert server.requests_for(galaxy.path) == tries
        assert _rows("maps/fetch_failures.csv") == []
    elif command == "label bpt":
        rows = {row["plateifu"]: row for row in _rows("bpt.csv")}
        assert set(rows) == served
        kinds = {g.plateifu: g.kind for g in galaxies}
        star_forming = [rows[p]["class"] for p, kind in kinds.items() if kind == "SF"]
        assert star_forming.count("SF") >= len(star_forming) - 1
        assert any(rows[g.plateifu]["class"] == "Seyfert" for g in agn)
    elif command == "label match":
        rows = {row["plateifu"]: row["AGN_CLASS"] for row in _rows("agn.csv")}
        assert {p for p, value in rows.items() if value == "AGN"} == {g.plateifu for g in agn}
    elif command == "convert":
        manifest = json.loads(Path("records/manifest.json").read_text())
        index = _rows("records/index.csv")
        assert len(index) == len(galaxies)
        assert sum(row["label"] == "AGN" for row in index) == len(agn)
        assert manifest["releases"] and {r["daptype"] for r in manifest["releases"]} == {"HYB10-GAU-MILESHC"}
    elif command == "inspect":
        assert Path("g.png").stat().st_size > 1000
    elif command == "fit":
        assert Path("runs/vae1/model/saved_model.pb").exists()
    elif command == "score":
        scores = _rows("scores/vae1/scores.csv")
        assert len(scores) == len(galaxies)
        assert all(np.isfinite(float(row["anomaly_score"])) for row in scores)
    elif command == "evaluate":
        payload = json.loads(Path("scores/vae1/evaluation.json").read_text())
        if "--labels" in argv:
            assert payload["positive"] == ["Seyfert"] and payload["evaluation"]["n_positive"] >= 1
        else:
            assert payload["positive"] == ["AGN"] and payload["evaluation"]["n_positive"] == len(agn)
    elif command == "report":
        page = Path("report/vae1/index.html").read_text(encoding="utf-8")
        assert "AGN" in page and "Not evaluated" not in page
        assert Path("report/vae1/evaluation.json").exists()
    elif command == "neighbors":
        assert Path("nb.png").exists()
        listed = [line.split()[1] for line in output.splitlines()[1:] if line.strip()[:1].isdigit()]
        assert len(listed) == 5 and argv[2] not in listed
