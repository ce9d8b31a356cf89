"""The import rules between stages (setup.cfg [importlinter]), checked by import-linter.

import-linter (grimp) finds modules by walking a package's directory, but the installed
``ifskeras.records`` and ``ifskeras.cli`` come from the top-level ``records/`` and
``cli/`` folders (setup.cfg package_dir). The test assembles that installed layout in a
temporary directory, as a wheel would, and lints it with the repository's contracts.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _installed_layout(target: Path) -> Path:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    package_dir = dict(
        line.split("=", 1) for line in config["options"]["package_dir"].strip().splitlines()
    )
    package_dir = {name.strip(): folder.strip() for name, folder in package_dir.items()}
    root = target / "ifskeras"
    shutil.copytree(REPO / package_dir["ifskeras"], root, ignore=shutil.ignore_patterns("__pycache__"))
    for name, folder in package_dir.items():
        if name != "ifskeras":
            shutil.copytree(REPO / folder, target / name.replace(".", "/"),
                            ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _lint(layout: Path, config: Path) -> subprocess.CompletedProcess:
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if command is None:
        pytest.fail("lint-imports is missing: install the test extra (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": str(layout)}
    return subprocess.run([command, "--config", str(config), "--no-cache"], capture_output=True, text=True,
                          cwd=layout, env=env, timeout=300)


def test_stage_import_contracts_hold(tmp_path):
    _installed_layout(tmp_path)
    completed = _lint(tmp_path, REPO / "setup.cfg")
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    assert "4 kept, 0 broken" in completed.stdout, completed.stdout[-2000:]


def test_a_forbidden_import_breaks_the_contracts(tmp_path):
    """The check can fail: survey importing records, or discovery importing a model class, is reported."""
    root = _installed_layout(tmp_path)
    with open(root / "survey" / "lines.py", "a") as stream:
        stream.write("\nfrom ifskeras.records import naming  # noqa: E402,F401\n")
    with open(root / "discovery" / "score.py", "a") as stream:
        stream.write("\nfrom ifskeras.learning.models import scaling  # noqa: E402,F401\n")
    completed = _lint(tmp_path, REPO / "setup.cfg")
    assert completed.returncode != 0
    assert "ifskeras.survey.lines -> ifskeras.records" in completed.stdout, completed.stdout[-3000:]
    assert "ifskeras.discovery.score -> ifskeras.learning" in completed.stdout, completed.stdout[-3000:]
