"""Resuming a conversion: ``convert-journal.jsonl``, the output directory, the shards a resume keeps.

The main process appends each completed shard's sha256 to the journal, after the
plan's fingerprint and DAP releases. ``resume=True`` keeps the shards whose size and
checksum match the journal and converts the rest; a journal of another plan is refused,
with a message of its own when the inputs are of another DAP release.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ifskeras import __version__
from ifskeras.common.files import atomic_write_bytes, sha256_file
from ifskeras.records.naming import TEMP_SUFFIX, parse_shard_filename
from ifskeras.records.options import ConvertError, ConvertOptions, OutputExistsError
from ifskeras.records.plan import _Plan
from ifskeras.records.schema import (
    DUPLICATES_NAME,
    FAILURES_NAME,
    INDEX_NAME,
    JOURNAL_NAME,
    MANIFEST_NAME,
    release_text,
)

_OWN_FILES = (MANIFEST_NAME, INDEX_NAME, FAILURES_NAME, DUPLICATES_NAME, JOURNAL_NAME)


class _Journal:
    """``convert-journal.jsonl``: the plan fingerprint and releases, then one line per completed shard."""

    def __init__(self, directory: Path):
        self.path = directory / JOURNAL_NAME

    def read(self, plan: _Plan) -> dict[str, dict] | None:
        """Completed shard entries by file name; None when there is no usable journal."""
        try:
            lines = self.path.read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            return None
        entries = []
        for line in lines:
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is untrusted
        if not entries or "plan" not in entries[0]:
            return None
        before = [tuple(release) for release in entries[0].get("releases", plan.releases)]
        if before != plan.releases:
            raise ConvertError(
                f"{self.path.parent}: the interrupted conversion read DAP release(s) "
                f"{'; '.join(release_text(*r) for r in before) or '(none)'}, these inputs are "
                f"{'; '.join(release_text(*r) for r in plan.releases) or '(none)'}; --resume never combines "
                "releases: rerun it with the same inputs, or use --overwrite to start again"
            )
        if entries[0]["plan"] != plan.fingerprint:
            raise ConvertError(
                f"{self.path.parent}: the interrupted conversion used other inputs or options; "
                "rerun it with the same arguments, or use --overwrite to start again"
            )
        return {entry["shard"]["file"]: entry for entry in entries[1:] if "shard" in entry}

    def start(self, plan: _Plan, kept: list[dict]) -> None:
        """Replace the journal (atomically) by the plan and the shards kept from before."""
        first = {"plan": plan.fingerprint, "releases": [list(release) for release in plan.releases],
                 "ifskeras_version": __version__}
        lines = [first, *kept]
        atomic_write_bytes(self.path, "".join(json.dumps(line) + "\n" for line in lines).encode())

    def append(self, entry: dict) -> None:
        with open(self.path, "a") as stream:
            stream.write(json.dumps(entry) + "\n")
            stream.flush()
            os.fsync(stream.fileno())


def _is_own_file(name: str, dataset_name: str) -> bool:
    parsed = parse_shard_filename(name.removesuffix(TEMP_SUFFIX))
    return (
        name in _OWN_FILES
        or (parsed is not None and parsed.name == dataset_name)
        or (name.startswith(".") and ".tmp-" in name)
    )


def _prepare_out_dir(out: Path, options: ConvertOptions, *, resume: bool, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConvertError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    present = sorted(path.name for path in out.iterdir())
    if present and not (resume or overwrite):
        raise OutputExistsError(
            f"{out} is not empty ({len(present)} entries, e.g. {present[0]!r}); use --resume to "
            "finish an interrupted conversion or --overwrite to replace its records"
        )
    if overwrite:
        for name in present:
            if _is_own_file(name, options.name):
                (out / name).unlink()
    # A temp file is a shard whose writing was interrupted: never reuse it.
    for name in present:
        if name.endswith(TEMP_SUFFIX) or (name.startswith(".") and ".tmp-" in name):
            (out / name).unlink(missing_ok=True)


def _reusable_shards(out: Path, plan: _Plan, journal: _Journal) -> dict[str, dict]:
    completed = journal.read(plan) or {}
    planned = {shard.file for shard in plan.shards}
    kept = {}
    for name, entry in completed.items():
        shard = entry["shard"]
        path = out / name
        if (
            name in planned
            and path.is_file()
            and path.stat().st_size == shard["bytes"]
            and sha256_file(path) == shard["sha256"]
        ):
            kept[name] = entry
    return kept
