"""The documentation stays true to the code.

- docs/cli.md is what ``python -m ifskeras.cli.docgen`` generates from the Typer app now;
- every command's ``--help`` ends with an example and loads no TensorFlow;
- the README's quick start is exactly ``make demo`` / ``make test``;
- every ``ifskeras COMMAND`` in the README's code is a real command, and every option
  written after it is one of that command's options;
- relative links in README.md and docs/ point to files and headings that exist;
- the config example of the user guide loads and shows the real defaults.

Nothing here imports TensorFlow: the CLI runs in subprocesses, and importing the Typer
app and the docs generator loads no TensorFlow (checked below).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ifskeras.cli import docgen

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CLI_REFERENCE = DOCS / "cli.md"
#: Written by hand from measured demo runs, not by these docs: may be absent while a run is pending.
MEASURED_RESULTS = DOCS / "results.md"
HELP_TIMEOUT_S = 60

COMMANDS = {path: command for path, command in docgen.iter_commands()}
GROUPS = {path[0] for path in COMMANDS if len(path) > 1}

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
#: ``ifskeras CMD`` as the first word of a shell segment, after optional ``VAR=value`` and a directory.
_COMMAND = re.compile(r"^\s*(?:\w+=\S*\s+)*(?:\S*/)?ifskeras +([A-Za-z][\w-]*)")
_SHELL_SEPARATORS = re.compile(r"&&|\|\||[|;`#]")
_OPTION = re.compile(r"^(--?[A-Za-z][\w-]*)")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _fenced_blocks(text: str) -> list[str]:
    return [block.rstrip("\n") for block in _FENCE.findall(text)]


def _code(text: str) -> list[str]:
    """Fenced code blocks, then inline code spans of the remaining text."""
    blocks = _fenced_blocks(text)
    prose = _FENCE.sub("", text)
    return blocks + [match.group(2) for match in _INLINE_CODE.finditer(prose)]


def _logical_lines(code: str) -> list[str]:
    """Lines with shell continuations (trailing backslash) joined."""
    return code.replace("\\\n", " ").splitlines()


def _invocations(text: str):
    """``(command path, options written after it, source line)`` for every ``ifskeras CMD`` in code."""
    for code in _code(text):
        for line in _logical_lines(code):
            for segment in _SHELL_SEPARATORS.split(line):
                match = _COMMAND.match(segment)
                if match is None:
                    continue
                words = segment[match.end():].split()
                path = (match.group(1),)
                if path[0] in GROUPS and words and not words[0].startswith("-"):
                    path, words = (path[0], words[0]), words[1:]
                options = [m.group(1) for m in map(_OPTION.match, words) if m]
                yield path, options, line.strip()


def _options_of(command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        if param.param_type_name == "option":
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


# --------------------------------------------------------------------------- docs/cli.md


def test_cli_reference_is_current(tmp_path, capsys):
    regenerated = tmp_path / "cli.md"
    assert docgen.main([str(regenerated)]) == 0
    capsys.readouterr()
    assert CLI_REFERENCE.is_file(), "docs/cli.md is missing: run `make docs`"
    assert regenerated.read_text(encoding="utf-8") == CLI_REFERENCE.read_text(encoding="utf-8"), (
        "docs/cli.md is out of date with the command-line app: run `make docs`"
    )


def test_cli_reference_is_deterministic_plain_markdown():
    text = docgen.render_cli_reference()
    assert text == docgen.render_cli_reference()
    assert "\x1b[" not in text, "ANSI escape codes in the generated reference"
    for path in COMMANDS:
        assert f"## ifskeras {' '.join(path)}\n" in text


def test_docgen_does_not_import_tensorflow():
    script = (
        "import sys\n"
        "from ifskeras.cli.docgen import render_cli_reference\n"
        "render_cli_reference()\n"
        "loaded = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "sys.exit('loaded: ' + ', '.join(loaded) if loaded else 0)\n"
    )
    run = subprocess.run([sys.executable, "-W", "error", "-c", script], capture_output=True, text=True,
                         timeout=HELP_TIMEOUT_S, check=False)
    assert run.returncode == 0, run.stderr


# --------------------------------------------------------------------------- --help

_HELP_SCRIPT = """
import sys
from ifskeras.cli.app import app
try:
    app()
except SystemExit as stop:
    code = stop.code
if "tensorflow" in sys.modules:
    sys.exit("--help loaded TensorFlow")
sys.exit(code)
"""


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_command_help_shows_an_example_without_tensorflow(path):
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    run = subprocess.run([sys.executable, "-c", _HELP_SCRIPT, *path, "--help"], capture_output=True, text=True,
                         env=env, timeout=HELP_TIMEOUT_S, check=False)
    assert run.returncode == 0, run.stderr
    assert "Example:" in run.stdout, f"`ifskeras {' '.join(path)} --help` shows no 'Example:' line"


# --------------------------------------------------------------------------- README


def test_readme_quick_start_is_make_demo_then_make_test():
    blocks = _fenced_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no code block"
    assert blocks[0] == "make demo\nmake test"


def test_readme_names_only_real_commands():
    invocations = list(_invocations(README.read_text(encoding="utf-8")))
    assert invocations, "README.md shows no ifskeras command"
    unknown = sorted({(" ".join(path), line) for path, _, line in invocations if path not in COMMANDS})
    known = ", ".join(" ".join(path) for path in COMMANDS)
    assert not unknown, f"README.md names commands the app does not have: {unknown}; commands: {known}"


def test_readme_uses_only_real_options():
    wrong = []
    for path, options, line in _invocations(README.read_text(encoding="utf-8")):
        if path in COMMANDS:
            wrong += [f"{option} in `{line}`" for option in options if option not in _options_of(COMMANDS[path])]
    assert not wrong, f"README.md uses options the commands do not have: {wrong}"


def test_readme_shows_every_step_of_a_real_survey_run():
    shown = {path for path, _, _ in _invocations(README.read_text(encoding="utf-8"))}
    for step in ("convert", "verify", "inspect", "fit", "score", "evaluate", "report", "neighbors"):
        assert (step,) in shown, f"README.md does not show `ifskeras {step}`"
    assert ("records", "merge") in shown


# --------------------------------------------------------------------------- links


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} +(.+?) *$", text, re.MULTILINE)}


@pytest.mark.parametrize("page", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_resolve(page):
    broken = []
    for target in _LINK.findall(_FENCE.sub("", page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if linked == MEASURED_RESULTS.resolve() and not linked.exists():
            continue
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


def test_index_links_every_page():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for name in ("user-guide.md", "cli.md", "records.md", "savedmodel.md", "architecture.md",
                 "differences-from-paper.md", "results.md"):
        assert f"({name})" in index, f"docs/index.md does not link {name}"


# --------------------------------------------------------------------------- user guide


def test_user_guide_config_example_loads_and_shows_the_defaults(tmp_path):
    from ifskeras.learning.config import RunConfig, load_config

    text = (DOCS / "user-guide.md").read_text(encoding="utf-8")
    examples = re.findall(r"^```toml\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert examples, "docs/user-guide.md has no TOML example"
    path = tmp_path / "run.toml"
    path.write_text(examples[0])
    assert load_config(path) == RunConfig(), "the TOML example of docs/user-guide.md no longer shows the defaults"
