"""The examples in the public API's docstrings run and print what they show.

Every module of ``ifskeras``, ``ifskeras.records`` and ``ifskeras.cli`` (the last two live
in ``records/`` and ``cli/`` and are installed under ``ifskeras``) whose source holds a
``>>>`` example is imported under its installed name and its doctests are run with the
standard library's :mod:`doctest`. Examples that need files or training are marked
``# doctest: +SKIP`` in the docstrings themselves.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

PACKAGES = ("ifskeras", "ifskeras.records", "ifskeras.cli")


def _modules(name: str, path: str):
    yield name
    for info in pkgutil.iter_modules([path]):
        child = f"{name}.{info.name}"
        if info.ispkg:
            yield from _modules(child, str(Path(path) / info.name))
        else:
            yield child


def _modules_with_examples() -> list[str]:
    """Module names whose source file holds a ``>>>`` (found without importing the modules)."""
    found = set()
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        for name in _modules(package, spec.submodule_search_locations[0]):
            origin = importlib.util.find_spec(name).origin
            if ">>>" in Path(origin).read_text(encoding="utf-8"):
                found.add(name)
    return sorted(found)


MODULES = _modules_with_examples()


def test_the_public_api_has_doctests_to_run():
    assert len(MODULES) >= 15, MODULES
    assert any(name.startswith("ifskeras.records.") for name in MODULES), MODULES  # records/ is searched too


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    module = importlib.import_module(name)
    tests = [test for test in doctest.DocTestFinder().find(module, name) if test.examples]
    assert tests, f"{name} holds '>>>' but no doctest was found in its docstrings"
    report = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
