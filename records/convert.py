"""Convert MAPS files to sharded TFRecords (schema v1) with a manifest.

How a conversion runs:

1. **Inputs** are files, directories (recursive ``*MAPS*.fits*``) or text files listing
   paths; they are made absolute, deduplicated and sorted.
2. **Plan.** Each file's primary header is scanned for ``PLATEIFU``, ``MANGAID``,
   ``IFUDSGN``, ``VERSDAP`` and ``DAPTYPE`` (a few kilobytes read, threads). The plan
   fixes, before any heavy work: that the inputs are of one DAP release (unless
   ``allow_mixed_releases``), the galaxies (files sharing a plate-IFU or a MANGAID) with
   their files in order of preference (largest IFU bundle, then plate-IFU, then path),
   each galaxy's key (MANGAID, else plate-IFU), and from that key the cluster part
   (``part_of``), the split (``split_of``) and the order within the split; then the
   number of shards per split (from the estimated record size and ``shard_mb``), cut
   into equal runs. The same inputs and options always give the same plan.
3. **Convert.** Each galaxy is read from its first file that converts (later files
   are fallbacks: a damaged copy never displaces a readable one), put on the grid and
   encoded; its shard is written
   (TFRecord framing with CRC32C, no TensorFlow anywhere in a conversion) to
   ``<shard>.incomplete``, fsynced, renamed to its final name, and the main process
   appends the shard's sha256 to ``convert-journal.jsonl``. With ``jobs`` worker
   processes (``forkserver``) each worker writes whole shards when there are enough
   of them, else workers convert galaxies and the main process writes. A killed run
   therefore leaves only complete shards under shard names; ``resume=True`` keeps
   those whose checksum matches the journal and converts the rest, byte-identically.
4. **Finish.** ``failures.csv``, ``duplicates.csv``, ``index.csv`` and finally
   ``manifest.json`` are written atomically. A directory without ``manifest.json`` is
   not a dataset.

Bad inputs never stop a run: each is listed with its reason (and the file that replaced
it, if any) in the manifest and in ``failures.csv``; files not read because another
copy or observation of the galaxy was converted are listed in ``duplicates.csv``.

Where each part lives:

- this module: :func:`convert_maps` (the steps above, in order), :class:`ConvertResult`,
  the choice between the two ways of converting in workers, and the finish
  (``failures.csv``, ``index.csv``, ``manifest.json``);
- :mod:`ifskeras.records.options`: :class:`ConvertOptions` and the errors;
- :mod:`ifskeras.records.inputs`: input files, labels, the header scan (step 1);
- :mod:`ifskeras.records.plan`: the plan (releases, galaxies, placement) and its fingerprint (step 2);
- :mod:`ifskeras.records.workers`: one galaxy, and the worker processes (step 3);
- :mod:`ifskeras.records.shards`: writing one shard file, and write errors (step 3);
- :mod:`ifskeras.records.journal`: the journal, the output directory, resume;
- :mod:`ifskeras.records.schema`: the manifest's reader, file names and features;
  :mod:`ifskeras.records.codec` and :mod:`ifskeras.records.tfrecord`: the bytes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ifskeras import __version__
from ifskeras.survey.lines import wavelength_of
from ifskeras.survey.maps import MAX_ABS_FLUX
from ifskeras.common.files import atomic_write_csv, atomic_write_json, sha256_file
from ifskeras.records.inputs import _MAPS_GLOB, load_labels, load_radii, collect_inputs, peek_identity, peek_plateifu
from ifskeras.records.journal import _Journal, _prepare_out_dir, _reusable_shards
from ifskeras.records.naming import SPLITS, parse_shard_filename
from ifskeras.records.options import ConvertError, ConvertOptions, OutputExistsError, ShardWriteError
from ifskeras.records.plan import _Plan, _Shard, _make_plan
from ifskeras.records.schema import (
    DUPLICATES_COLUMNS,
    DUPLICATES_NAME,
    FAILURES_COLUMNS,
    FAILURES_NAME,
    FEATURES,
    INDEX_COLUMNS,
    INDEX_NAME,
    MANIFEST_NAME,
    SCHEMA_VERSION,
)
# _ShardWriter is not used here: the tests patch it through this module.
from ifskeras.records.shards import _ShardWriter, _bookkeeping_errors, _write_shard  # noqa: F401
from ifskeras.records.workers import _ordered_results, _shards_in_workers, convert_galaxy

__all__ = [
    "ConvertOptions",
    "ConvertResult",
    "ConvertError",
    "OutputExistsError",
    "ShardWriteError",
    "collect_inputs",
    "convert_maps",
    "convert_galaxy",
    "peek_identity",
    "peek_plateifu",
]


@dataclass
class ConvertResult:
    """What a conversion did; ``manifest`` is the dictionary written to ``manifest.json``.

    ``seconds`` is the whole call; ``convert_seconds`` the part after planning and
    loading TensorFlow (reading, gridding, writing).
    """

    out_dir: Path
    manifest: dict
    converted: int
    resumed_shards: int
    failures: list[dict]
    duplicates: list[dict]
    seconds: float
    convert_seconds: float

    @property
    def examples(self) -> dict[str, int]:
        return {split: self.manifest["splits"][split]["examples"] for split in SPLITS}

    @property
    def galaxies_per_second(self) -> float:
        """Galaxies read, gridded and written per second, after planning and TF start-up."""
        return self.converted / self.convert_seconds if self.convert_seconds > 0 else float("nan")


# ----------------------------------------------------------------------------- main entry

def convert_maps(
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    options: ConvertOptions | None = None,
    *,
    jobs: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
) -> ConvertResult:
    """Convert MAPS files into sharded TFRecords with a manifest.

    Parameters
    ----------
    inputs : iterable of path-like
        MAPS files, directories (searched recursively for ``*MAPS*.fits*``) or text
        files listing paths.
    out_dir : path-like
        Output directory; must be empty unless ``resume`` or ``overwrite``.
    options : ConvertOptions, optional
        Content and layout of the records (defaults: 19 lines, 64 x 64, fit).
    jobs : int
        Worker processes (1: all in this process). With at least ``jobs`` shards to
        write, each worker converts and writes whole shards; otherwise workers convert
        galaxies and this process writes. The output is the same for any ``jobs``.
    resume : bool
        Keep shards completed by an interrupted run with the same inputs and options
        (checksums verified) and convert the rest.
    overwrite : bool
        Delete this dataset's files in ``out_dir`` first.
    progress : callable, optional
        Called as ``progress(done, total, failed)`` after each galaxy.

    Returns
    -------
    ConvertResult

    Raises
    ------
    ConvertError
        No inputs, output directory not empty, labels unreadable, inputs of several DAP
        releases (without ``options.allow_mixed_releases``), resume with other inputs,
        options or releases, or a shard could not be written (:class:`ShardWriteError`).

    Examples
    --------
    >>> result = convert_maps(["maps/"], "records/", ConvertOptions(size=32), jobs=2)  # doctest: +SKIP
    >>> result.examples  # doctest: +SKIP
    {'train': 80, 'val': 10, 'test': 10}
    """
    started = time.perf_counter()
    options = options or ConvertOptions()
    if jobs < 1:
        raise ConvertError(f"jobs must be >= 1. Received: {jobs!r}")
    if resume and overwrite:
        raise ConvertError("choose either resume or overwrite, not both")
    out = Path(out_dir)
    paths, input_problems = collect_inputs(inputs)
    if not paths:
        details = "; ".join(f"{p['path']}: {p['reason']}" for p in input_problems[:5])
        raise ConvertError(f"no MAPS files ({_MAPS_GLOB}) found in the inputs" + (f" ({details})" if details else ""))
    labels = load_labels(options.labels, options.label_column) if options.labels else {}
    radii = load_radii(options.radii) if options.scale == "re" else {}
    # The plan first: its refusals (mixed releases) must leave an existing output untouched,
    # even with overwrite.
    plan = _make_plan(paths, input_problems, options, labels, radii)
    _prepare_out_dir(out, options, resume=resume, overwrite=overwrite)

    journal = _Journal(out)
    reused = _reusable_shards(out, plan, journal) if resume else {}
    if resume:
        for path in out.iterdir():
            parsed = parse_shard_filename(path.name)
            if parsed and parsed.name == options.name and path.name not in reused:
                path.unlink()
    with _bookkeeping_errors(journal.path):
        journal.start(plan, [reused[name] for name in sorted(reused)])

    todo = [shard for shard in plan.shards if shard.file not in reused]
    total = sum(len(shard.items) for shard in todo)
    counts = {"done": 0, "failed": 0}
    if progress:
        progress(0, total, 0)

    def on_galaxy(ok: bool) -> None:
        counts["done"] += 1
        counts["failed"] += not ok
        if progress:
            progress(counts["done"], total, counts["failed"])

    entries = dict(reused)
    converting = time.perf_counter()
    completed = _convert_shards(out, todo, options, jobs, on_galaxy)
    try:
        for entry in completed:
            with _bookkeeping_errors(journal.path):
                journal.append(entry)
            entries[entry["shard"]["file"]] = entry
    finally:
        completed.close()

    with _bookkeeping_errors(out):
        return _finish(out, plan, options, entries, labels, converted=counts["done"] - counts["failed"],
                       resumed=len(reused),
                       seconds=time.perf_counter() - started, convert_seconds=time.perf_counter() - converting)


# ----------------------------------------------------------------------------- in this process or in workers

def _convert_shards(out: Path, todo: list[_Shard], options: ConvertOptions, jobs: int,
                    on_galaxy: Callable[[bool], None]) -> Iterator[dict]:
    """Journal entries of the shards in ``todo`` as they are completed.

    With ``jobs`` workers and at least as many shards, each worker converts and writes
    whole shards (largest first), so the main process only follows progress: this is
    what lets ``--jobs 2`` nearly halve the time on 2 cores. With fewer shards than
    workers, the workers convert galaxies and this process writes the shards in order.
    Either way a shard's bytes are the same.
    """
    if jobs > 1 and len(todo) >= jobs:
        yield from _shards_in_workers(out, todo, options, jobs, on_galaxy)
        return
    results = _ordered_results([item for shard in todo for item in shard.items], options, jobs)
    try:
        for shard in todo:
            yield _write_shard(out, shard, options, results, on_galaxy)
    finally:
        results.close()


# ----------------------------------------------------------------------------- finish

def _finish(out: Path, plan: _Plan, options: ConvertOptions, entries: dict[str, dict],
            labels: dict[str, str], *, converted: int, resumed: int, seconds: float,
            convert_seconds: float) -> ConvertResult:
    ordered = [entries[shard.file] for shard in plan.shards]
    failures = sorted(plan.failures + [f for entry in ordered for f in entry["failures"]],
                      key=lambda failure: failure["path"])
    duplicates = sorted((d for entry in ordered for d in entry["duplicates"]), key=lambda duplicate: duplicate["path"])
    rows = [row for entry in ordered for row in entry["rows"]]
    units = [row.get("unit") for row in rows if row.get("unit")]
    splits = {}
    for split in SPLITS:
        shards = [entry["shard"] for entry in ordered if entry["split"] == split]
        splits[split] = {"examples": sum(s["examples"] for s in shards), "shards": shards}

    atomic_write_csv(out / FAILURES_NAME, FAILURES_COLUMNS,
                     ([failure[column] for column in FAILURES_COLUMNS] for failure in failures))
    atomic_write_csv(out / DUPLICATES_NAME, DUPLICATES_COLUMNS,
                     ([duplicate[column] for column in DUPLICATES_COLUMNS] for duplicate in duplicates))
    atomic_write_csv(out / INDEX_NAME, INDEX_COLUMNS,
                     ([_csv_value(row[column]) for column in INDEX_COLUMNS] for row in rows))
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "ifskeras_version": __version__,
        "name": options.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "lines": list(options.lines),
        "wavelengths": [wavelength_of(line) for line in options.lines],
        "shape": list(options.shape),
        "features": FEATURES,
        "flux_unit": units[0] if units else "",
        "preprocessing": {
            "mode": options.mode,
            "size": options.size,
            "quantity": options.quantity,
            "reject_bits": list(options.reject_bits),
            "max_abs_flux": MAX_ABS_FLUX,
            "min_coverage": options.min_coverage if options.mode == "fit" else None,
            # What the grid spans: the bundle, or re_span effective radii from the radii catalogue.
            "scale": options.scale,
            "re_span": options.re_span if options.scale == "re" else None,
            "radii": ({"file": Path(options.radii).name, "sha256": sha256_file(options.radii)}
                      if options.scale == "re" else None),
            "module": "ifskeras.survey.preprocess",
        },
        "compression": options.compression,
        "releases": [
            {"versdap": versdap, "daptype": daptype,
             "galaxies": sum(1 for row in rows if (row["versdap"], row["daptype"]) == (versdap, daptype))}
            for versdap, daptype in plan.releases
        ],
        "split_rule": {
            "key": "MANGAID, else plate-IFU (index.csv: mangaid, else id)",
            "hash": "sha256('ifskeras:split:' + key), first 8 bytes / 2**64",
            "val_fraction": options.val_fraction,
            "test_fraction": options.test_fraction,
        },
        "sharding": {"shard_mb": options.shard_mb, "min_shards": options.min_shards},
        "partition": {"num_workers": options.num_workers, "worker_index": options.worker_index},
        "labels": (
            {"file": str(options.labels), "column": options.label_column,
             "labelled": sum(1 for row in rows if row["label"]),
             "unmatched": len(set(labels) - _converted_plateifus(plan, rows))}
            if options.labels else None
        ),
        "splits": splits,
        "totals": {
            "inputs": plan.inputs,
            "examples": sum(entry["examples"] for entry in splits.values()),
            "failures": len(failures),
            "duplicates": len(duplicates),
            "bytes": sum(shard["bytes"] for entry in splits.values() for shard in entry["shards"]),
        },
        "failures": failures,
        "duplicates": duplicates,
        "index": {"file": INDEX_NAME, "sha256": sha256_file(out / INDEX_NAME)},
        "plan": plan.fingerprint,
    }
    atomic_write_json(out / MANIFEST_NAME, manifest)
    return ConvertResult(out, manifest, converted, resumed, failures, duplicates, seconds, convert_seconds)


def _converted_plateifus(plan: _Plan, rows: list[dict]) -> set[str]:
    """Plate-IFUs of every file of the converted galaxies: a label on any of them was used."""
    converted = {row["id"] for row in rows}
    return {
        candidate.plateifu
        for shard in plan.shards
        for galaxy in shard.items
        if any(candidate.plateifu in converted for candidate in galaxy.candidates)
        for candidate in galaxy.candidates
    }


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)
