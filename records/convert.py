"""Convert MAPS files to sharded TFRecords (schema v1) with a manifest.

How a conversion runs:

1. **Inputs** are files, directories (recursive ``*MAPS*.fits*``) or text files listing
   paths; they are made absolute, deduplicated and sorted.
2. **Plan.** Each file's primary header is scanned for ``PLATEIFU`` (a few kilobytes
   read, threads). The plan fixes, before any heavy work: duplicates (the first path in
   sorted order is kept), the cluster part (``part_of``), the split (``split_of``), the
   number of shards per split (from the estimated record size and ``shard_mb``) and
   which galaxies go in which shard (sorted by a stable hash of the plate-IFU, cut into
   equal runs). The same inputs and options always give the same plan.
3. **Convert.** Each galaxy is read, put on the grid and encoded; its shard is written
   (TFRecord framing with CRC32C, no TensorFlow anywhere in a conversion) to
   ``<shard>.incomplete``, fsynced, renamed to its final name, and the main process
   appends the shard's sha256 to ``convert-journal.jsonl``. With ``jobs`` worker
   processes (``forkserver``) each worker writes whole shards when there are enough
   of them, else workers convert galaxies and the main process writes. A killed run
   therefore leaves only complete shards under shard names; ``resume=True`` keeps
   those whose checksum matches the journal and converts the rest, byte-identically.
4. **Finish.** ``failures.csv``, ``index.csv`` and finally ``manifest.json`` are
   written atomically. A directory without ``manifest.json`` is not a dataset.

Bad inputs never stop a run: each is listed with its reason in the manifest and in
``failures.csv``.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import sys
import threading
import time
import types
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ifskeras import __version__
from ifskeras.survey.lines import DEFAULT_LINES, LineSelectionError, select_lines, wavelength_of
from ifskeras.survey.maps import (
    DAP_MASK_BITS,
    DEFAULT_REJECT_BITS,
    MAX_ABS_FLUX,
    MapsReadError,
    NotFitsError,
    read_maps,
)
from ifskeras.survey.preprocess import DEFAULT_MIN_COVERAGE, MODES, PreprocessError, to_grid
from ifskeras.common.files import (
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    fsync_dir,
    sha256_file,
)
from ifskeras.records.naming import (
    SPLITS,
    TEMP_SUFFIX,
    check_dataset_name,
    parse_shard_filename,
    part_of,
    shard_filename,
    split_of,
    stable_fraction,
)
from ifskeras.records.schema import (
    FAILURES_NAME,
    FEATURES,
    INDEX_COLUMNS,
    INDEX_NAME,
    JOURNAL_NAME,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    RecordsError,
    encode_example,
    frame_record,
)

__all__ = [
    "ConvertOptions",
    "ConvertResult",
    "ConvertError",
    "OutputExistsError",
    "ShardWriteError",
    "collect_inputs",
    "convert_maps",
    "convert_galaxy",
    "peek_plateifu",
]

_MAPS_GLOB = "*MAPS*.fits*"
#: Protobuf keys, id, label, ra, dec and TFRecord framing, per example (bytes).
_RECORD_OVERHEAD = 256
_MAX_HEADER_BLOCKS = 64
_PEEK_THREADS = 8
_IN_FLIGHT_PER_JOB = 4
_OWN_FILES = (MANIFEST_NAME, INDEX_NAME, FAILURES_NAME, JOURNAL_NAME)


class ConvertError(RecordsError):
    """The conversion cannot start or cannot go on; the message says why and what to do."""


class OutputExistsError(ConvertError):
    """The output directory holds files and neither resume nor overwrite was asked for."""


class ShardWriteError(ConvertError):
    """Writing a shard or the journal, index or manifest failed (disk full, permissions); completed shards are kept."""


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that decides the records' content and layout (not speed or logging).

    Parameters
    ----------
    size : int
        Grid side S.
    mode : {'fit', 'pad'}
        See :mod:`ifskeras.survey.preprocess`.
    lines : sequence of str
        DAP channel names, stored in wavelength order.
    quantity, reject_bits :
        Passed to :func:`ifskeras.survey.maps.read_maps`.
    min_coverage : float
        ``fit`` mode: valid output pixels need this fraction of valid input area.
    val_fraction, test_fraction : float
        Split fractions, by a stable hash of the plate-IFU.
    shard_mb : float
        Target shard size in MB (1e6 bytes, uncompressed estimate).
    min_shards : int
        At least this many shards per non-empty split (for input-pipeline sharding).
    compression : {None, 'gzip'}
    name : str
        Shard name prefix.
    labels : str, optional
        CSV with column ``plateifu`` and ``label_column``.
    num_workers, worker_index : int
        Convert only part ``worker_index`` of ``num_workers`` (cluster runs), joined
        afterwards with :func:`ifskeras.records.merge_records`.
    """

    size: int = 64
    mode: str = "fit"
    lines: tuple[str, ...] = DEFAULT_LINES
    quantity: str = "GFLUX"
    reject_bits: tuple[str, ...] = DEFAULT_REJECT_BITS
    min_coverage: float = DEFAULT_MIN_COVERAGE
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    shard_mb: float = 100.0
    min_shards: int = 1
    compression: str | None = None
    name: str = "maps"
    labels: str | None = None
    label_column: str = "class"
    num_workers: int = 1
    worker_index: int = 0

    def __post_init__(self):
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ConvertError(f"size must be a positive integer. Received: {self.size!r}")
        if self.mode not in MODES:
            raise ConvertError(f"mode must be one of {MODES}. Received: {self.mode!r}")
        try:
            lines = select_lines(list(self.lines))
        except LineSelectionError as error:
            raise ConvertError(str(error)) from None
        object.__setattr__(self, "lines", lines)
        unknown = [bit for bit in self.reject_bits if bit not in DAP_MASK_BITS]
        if unknown:
            raise ConvertError(f"unknown mask bits {unknown}; known: {sorted(DAP_MASK_BITS)}")
        object.__setattr__(self, "reject_bits", tuple(self.reject_bits))
        if not 0 < self.min_coverage <= 1:
            raise ConvertError(f"min_coverage must be in (0, 1]. Received: {self.min_coverage!r}")
        if not (self.val_fraction >= 0 and self.test_fraction >= 0 and self.val_fraction + self.test_fraction < 1):
            raise ConvertError(
                "need val_fraction >= 0, test_fraction >= 0 and val_fraction + test_fraction < 1. "
                f"Received: {self.val_fraction}, {self.test_fraction}"
            )
        if not self.shard_mb > 0:
            raise ConvertError(f"shard_mb must be > 0. Received: {self.shard_mb!r}")
        if self.min_shards < 1:
            raise ConvertError(f"min_shards must be >= 1. Received: {self.min_shards!r}")
        if self.compression not in (None, "gzip"):
            raise ConvertError(f"compression must be None or 'gzip'. Received: {self.compression!r}")
        try:
            check_dataset_name(self.name)
        except ValueError as error:
            raise ConvertError(str(error)) from None
        if self.num_workers < 1 or not 0 <= self.worker_index < self.num_workers:
            raise ConvertError(
                "need num_workers >= 1 and 0 <= worker_index < num_workers. "
                f"Received: num_workers={self.num_workers}, worker_index={self.worker_index}"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.lines), self.size, self.size)


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


@dataclass
class _Shard:
    split: str
    file: str
    items: list[tuple[str, str, str]]  # (path, plateifu, label)


@dataclass
class _Plan:
    shards: list[_Shard]
    failures: list[dict]
    duplicates: list[dict]
    inputs: int
    labelled: int
    fingerprint: str = ""
    extras: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- inputs

def collect_inputs(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[dict]]:
    """Expand files, directories and list files into sorted absolute MAPS paths.

    A path whose name contains ``.fits`` is a MAPS file (kept even if missing, so it is
    reported as a failure); a directory is searched recursively for ``*MAPS*.fits*``;
    any other file is a list of paths, one per line (``#`` comments, blank lines
    skipped; relative paths are relative to the list file). Returns the paths and the
    inputs that could not be used, as ``{'path', 'reason'}``.
    """
    paths: set[Path] = set()
    problems: list[dict] = []

    def add(path: Path, *, listed_in: Path | None = None) -> None:
        if path.is_dir():
            paths.update(Path(os.path.abspath(p)) for p in path.rglob(_MAPS_GLOB) if p.is_file())
        elif ".fits" in path.name.lower():
            paths.add(Path(os.path.abspath(path)))
        elif listed_in is None and path.is_file():
            for entry in _read_list_file(path, problems):
                add(entry if entry.is_absolute() else path.parent / entry, listed_in=path)
        elif not path.exists():
            problems.append({"path": str(path), "reason": "input does not exist"})
        else:
            problems.append({"path": str(path), "reason": "not a FITS file name (*.fits*) or directory"})

    for item in inputs:
        add(Path(item))
    return sorted(paths, key=str), problems


def _read_list_file(path: Path, problems: list[dict]) -> list[Path]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        problems.append({"path": str(path), "reason": f"not a readable list of paths ({error})"})
        return []
    entries = [line.strip() for line in text.splitlines()]
    return [Path(entry) for entry in entries if entry and not entry.startswith("#")]


def _load_labels(path: str, column: str) -> dict[str, str]:
    try:
        with open(path, newline="") as stream:
            reader = csv.DictReader(stream)
            fields = reader.fieldnames or []
            if "plateifu" not in fields or column not in fields:
                raise ConvertError(
                    f"{path}: labels CSV needs columns 'plateifu' and {column!r}; found {fields}"
                )
            labels: dict[str, str] = {}
            conflicts = []
            for row in reader:
                key = (row["plateifu"] or "").strip()
                value = (row[column] or "").strip()
                if key in labels and labels[key] != value:
                    conflicts.append(key)
                labels.setdefault(key, value)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ConvertError(f"{path}: cannot read labels CSV ({error})") from error
    if conflicts:
        raise ConvertError(f"{path}: conflicting labels for {sorted(set(conflicts))[:10]}")
    return labels


# ----------------------------------------------------------------------------- header scan

def peek_plateifu(path: str | os.PathLike) -> str:
    """The plate-IFU of a MAPS file from its primary header, reading only that header.

    Follows :func:`ifskeras.survey.maps.read_maps`: the ``PLATEIFU`` card, else the file name.
    Raises :class:`ifskeras.survey.maps.NotFitsError` when the header cannot be read.
    """
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            magic = stream.read(2)
        opener = gzip.open if magic == b"\x1f\x8b" else open
        value = ""
        with opener(path, "rb") as stream:
            for block_index in range(_MAX_HEADER_BLOCKS):
                block = stream.read(2880)
                if len(block) < 2880:
                    raise NotFitsError(path, "truncated primary header")
                if block_index == 0 and not block.startswith(b"SIMPLE  ="):
                    raise NotFitsError(path, "not a FITS file (no SIMPLE card at the start)")
                for start in range(0, 2880, 80):
                    card = block[start:start + 80]
                    keyword = card[:8].rstrip()
                    if keyword == b"PLATEIFU" and card[8:10] == b"= ":
                        value = _card_value(card[10:].decode("ascii", "replace"))
                    elif keyword == b"END":
                        return value or _plateifu_from_name(path)
    except MapsReadError:
        raise
    except (OSError, EOFError, zlib.error) as error:
        raise NotFitsError(path, f"unreadable primary header ({error})") from error
    raise NotFitsError(path, "no END card in the primary header")


def _card_value(text: str) -> str:
    text = text.strip()
    if text.startswith("'"):
        out, index = [], 1
        while index < len(text):
            char = text[index]
            if char == "'":
                if text[index + 1:index + 2] == "'":
                    out.append("'")
                    index += 2
                    continue
                break
            out.append(char)
            index += 1
        return "".join(out).strip()
    return text.split("/")[0].strip()


def _plateifu_from_name(path: Path) -> str:
    """As :func:`ifskeras.survey.maps.read_maps` names a file without a PLATEIFU card."""
    parts = path.name.split("-")
    if len(parts) >= 3 and parts[0] == "manga":
        return f"{parts[1]}-{parts[2]}"
    return path.name.split(".")[0]


def _identify(path: Path, options: ConvertOptions) -> tuple[str | None, str | None]:
    """(plateifu, None) or (None, reason)."""
    try:
        return peek_plateifu(path), None
    except MapsReadError:
        pass
    # The header scan failed: let the full reader say precisely why.
    try:
        maps = read_maps(path, options.lines, quantity=options.quantity, reject_bits=options.reject_bits)
    except MapsReadError as error:
        return None, error.problem
    return maps.plateifu, None


# ----------------------------------------------------------------------------- plan

def _make_plan(paths: list[Path], input_problems: list[dict], options: ConvertOptions,
               labels: dict[str, str]) -> _Plan:
    with ThreadPoolExecutor(_PEEK_THREADS) as pool:
        identities = list(pool.map(lambda path: _identify(path, options), paths))
    mine = (lambda key: part_of(key, options.num_workers) == options.worker_index)
    failures = [problem for problem in input_problems if mine(Path(problem["path"]).name)]
    duplicates, first_path, members = [], {}, {split: [] for split in SPLITS}
    for path, (plateifu, reason) in zip(paths, identities):
        if plateifu is None:
            if mine(path.name):
                failures.append({"path": str(path), "reason": reason})
            continue
        if not mine(plateifu):
            continue
        if plateifu in first_path:
            duplicates.append({"id": plateifu, "path": str(path), "kept": first_path[plateifu]})
            continue
        first_path[plateifu] = str(path)
        split = split_of(plateifu, options.val_fraction, options.test_fraction)
        members[split].append((str(path), plateifu, labels.get(plateifu, "")))

    record_bytes = math.prod(options.shape) * 9 + _RECORD_OVERHEAD
    shard_bytes = options.shard_mb * 1e6
    shards = []
    for split in SPLITS:
        items = sorted(members[split], key=lambda item: (stable_fraction(item[1], "shard"), item[1]))
        count = len(items)
        if count == 0:
            continue
        n_shards = min(count, max(options.min_shards, math.ceil(count * record_bytes / shard_bytes)))
        for index in range(n_shards):
            chunk = items[index * count // n_shards:(index + 1) * count // n_shards]
            shards.append(_Shard(split, shard_filename(options.name, split, index, n_shards), chunk))
    plan = _Plan(
        shards=shards,
        failures=failures,
        duplicates=duplicates,
        inputs=sum(len(shard.items) for shard in shards) + len(failures) + len(duplicates),
        labelled=sum(1 for shard in shards for item in shard.items if item[2]),
    )
    plan.fingerprint = hashlib.sha256(
        json.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "options": _options_record(options),
                "shards": [[shard.file, shard.items] for shard in shards],
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    return plan


def _options_record(options: ConvertOptions) -> dict:
    record = asdict(options)
    record["lines"] = list(options.lines)
    record["reject_bits"] = list(options.reject_bits)
    return record


# ----------------------------------------------------------------------------- per galaxy

def convert_galaxy(path: str, plateifu: str, label: str, options: ConvertOptions) -> tuple[bytes, dict]:
    """Read, grid and encode one galaxy; raises MapsReadError or PreprocessError."""
    maps = read_maps(path, options.lines, quantity=options.quantity, reject_bits=options.reject_bits)
    if maps.plateifu != plateifu:
        raise PreprocessError(f"plate-IFU {maps.plateifu!r} differs from the header scan ({plateifu!r})")
    if not maps.valid.any():
        raise PreprocessError("no valid pixel in any selected line")
    grid = to_grid(maps.flux, maps.ivar, maps.valid, options.size, mode=options.mode,
                   min_coverage=options.min_coverage)
    blob = encode_example(plateifu, grid.flux, grid.ivar, grid.valid, label=label, ra=maps.ra, dec=maps.dec)
    meta = {
        "id": plateifu,
        "label": label,
        "ra": maps.ra,
        "dec": maps.dec,
        "box": grid.box,
        "spaxels_per_pixel": grid.spaxels_per_pixel,
        "unit": maps.unit,
        "path": path,
    }
    return blob, meta


_WORKER_OPTIONS: ConvertOptions | None = None
_WORKER_PROGRESS = None  # multiprocessing queue: one item per galaxy a worker finishes


def _init_worker(options: ConvertOptions, progress_queue=None) -> None:
    global _WORKER_OPTIONS, _WORKER_PROGRESS
    _WORKER_OPTIONS = options
    _WORKER_PROGRESS = progress_queue
    _die_with_parent()


def _die_with_parent() -> None:
    """Exit this worker as soon as the main process is gone (e.g. killed with SIGKILL).

    Forkserver workers would otherwise outlive it (each holds the forkserver's "alive"
    pipe open, so neither the server nor the workers see the end), and could finish a
    shard behind the back of the ``--resume`` that follows. The parent's sentinel is a
    pipe only the main process holds open: it becomes readable when that process dies.
    """
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _convert_task(task: tuple[str, str, str], options: ConvertOptions | None = None):
    """(True, blob, meta) or (False, path, reason); never raises for a bad input."""
    options = options or _WORKER_OPTIONS
    path = task[0]
    try:
        blob, meta = convert_galaxy(*task, options)
    except MapsReadError as error:
        return False, path, error.problem
    except PreprocessError as error:
        return False, path, str(error)
    except MemoryError:
        return False, path, "out of memory while reading"
    except Exception as error:  # a malformed file must not stop the survey
        return False, path, f"unexpected {type(error).__name__}: {error}"
    return True, blob, meta


def _write_shard(out: Path, shard: _Shard, options: ConvertOptions, results: Iterator,
                 on_galaxy: Callable[[bool], None]) -> dict:
    """Write one shard from its galaxies' ``_convert_task`` results; returns its journal entry."""
    writer = _ShardWriter(out, shard.file, options.compression)
    rows, failures = [], []
    try:
        for _ in shard.items:
            ok, first, second = next(results)
            if ok:
                writer.write(first)
                rows.append(_index_row(second, shard, len(rows)))
            else:
                failures.append({"path": first, "reason": second})
            on_galaxy(ok)
        info = writer.commit()
    except BaseException:
        writer.abort()
        raise
    return {"split": shard.split, "shard": info, "rows": rows, "failures": failures}


def _shard_task(out: str, shard: _Shard) -> dict:
    """In a worker: convert and write a whole shard (no galaxy bytes cross processes)."""
    results = (_convert_task(item) for item in shard.items)
    return _write_shard(Path(out), shard, _WORKER_OPTIONS, results, _WORKER_PROGRESS.put)


def _worker_pool(options: ConvertOptions, jobs: int, progress_queue=None) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["ifskeras.records.convert", "astropy.io.fits"])
    return ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                               initargs=(options, progress_queue))


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


def _shards_in_workers(out: Path, todo: list[_Shard], options: ConvertOptions, jobs: int,
                       on_galaxy: Callable[[bool], None]) -> Iterator[dict]:
    context = multiprocessing.get_context("forkserver")
    progress_queue = context.SimpleQueue()
    executor = _worker_pool(options, jobs, progress_queue)

    def drain() -> None:
        while not progress_queue.empty():
            on_galaxy(progress_queue.get())

    first_error = None
    try:
        with _main_module_hidden():  # the first submits start the workers
            pending = {executor.submit(_shard_task, str(out), shard)
                       for shard in sorted(todo, key=lambda shard: -len(shard.items))}
        while pending:
            done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            drain()
            for future in done:
                if future.cancelled():
                    continue
                try:
                    entry = _worker_result(future)
                except Exception as error:  # e.g. a worker's ShardWriteError (disk full)
                    # Start no more shards, but journal those still being written, so
                    # that --resume keeps them.
                    first_error = first_error or error
                    for waiting in pending:
                        waiting.cancel()
                    continue
                yield entry
        drain()
        if first_error is not None:
            raise first_error
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        progress_queue.close()


def _ordered_results(tasks: Sequence, options: ConvertOptions, jobs: int) -> Iterator:
    """Results of ``_convert_task`` in task order, at most ``jobs * 4`` in flight."""
    if jobs <= 1:
        for task in tasks:
            yield _convert_task(task, options)
        return
    executor = _worker_pool(options, jobs)
    try:
        pending: deque = deque()
        remaining = iter(tasks)
        with _main_module_hidden():  # the first submits start the workers
            for task in remaining:
                pending.append(executor.submit(_convert_task, task))
                if len(pending) >= jobs * _IN_FLIGHT_PER_JOB:
                    break
        while pending:
            result = _worker_result(pending.popleft())
            following = next(remaining, None)
            if following is not None:
                pending.append(executor.submit(_convert_task, following))
            yield result
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _worker_result(future):
    try:
        return future.result()
    except BrokenProcessPool as error:
        raise ConvertError(
            "a worker process died (killed, or out of memory: try fewer --jobs); completed shards are "
            "kept: rerun the same command with --resume"
        ) from error


@contextlib.contextmanager
def _main_module_hidden():
    """Start workers without them importing the caller's ``__main__`` script.

    A spawned or forkserver worker normally re-imports the main script; a script that
    imports TensorFlow at its top would load it into every worker (seconds each, and
    the reason not to fork). The workers need nothing from ``__main__``.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


# ----------------------------------------------------------------------------- shard files

class _ShardWriter:
    """Writes a TFRecord file to ``<file>.incomplete``; ``commit`` fsyncs and renames it to ``<file>``.

    The framing is TFRecord's own (:func:`frame_record`, byte-identical to
    ``tf.io.TFRecordWriter``), written without TensorFlow so that workers can write
    shards; gzip is a standard stream (``TFRecordDataset(compression_type="GZIP")``
    reads it). The sha256 is computed from the bytes as they are written.
    """

    def __init__(self, directory: Path, filename: str, compression: str | None):
        self.final = directory / filename
        self.temp = directory / (filename + TEMP_SUFFIX)
        self.examples = 0
        self._bytes = 0
        self._digest = hashlib.sha256()
        # zlib's gzip header carries no name and a zero time: the same bytes every run.
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS) if compression == "gzip" else None
        try:
            self._stream = open(self.temp, "wb")
        except OSError as error:
            raise ShardWriteError(f"cannot create {self.temp}: {_error_text(error)}") from error

    def _emit(self, data: bytes) -> None:
        if self._deflate is not None:
            data = self._deflate.compress(data)
        self._stream.write(data)
        self._digest.update(data)
        self._bytes += len(data)

    def write(self, blob: bytes) -> None:
        header, footer = frame_record(blob)
        try:
            for part in (header, blob, footer):
                self._emit(part)
        except OSError as error:
            self.abort()
            raise ShardWriteError(_write_failure(self.temp, error)) from error
        self.examples += 1

    def commit(self) -> dict:
        try:
            if self._deflate is not None:
                tail = self._deflate.flush()
                self._deflate = None
                self._emit(tail)
            self._stream.flush()
            os.fsync(self._stream.fileno())
            self._stream.close()
            os.replace(self.temp, self.final)
            fsync_dir(self.final.parent)
        except OSError as error:
            self.abort()
            raise ShardWriteError(_write_failure(self.temp, error)) from error
        return {
            "file": self.final.name,
            "examples": self.examples,
            "bytes": self._bytes,
            "sha256": self._digest.hexdigest(),
        }

    def abort(self) -> None:
        try:
            self._stream.close()
        except OSError:  # closing a file whose disk is full flushes and can fail again
            pass
        self.temp.unlink(missing_ok=True)


def _error_text(error: BaseException) -> str:
    return getattr(error, "message", None) or str(error)


def _write_failure(path: Path, error: BaseException, *, shard: bool = True) -> str:
    text = _error_text(error)
    hint = "the disk may be full; " if "space" in text.lower() or getattr(error, "errno", None) == 28 else ""
    removed = "the incomplete shard was removed and " if shard else ""
    return (
        f"writing {path} failed ({text}); {hint}{removed}completed "
        f"shards are kept: fix the problem and rerun the same command with --resume"
    )


@contextlib.contextmanager
def _bookkeeping_errors(path: Path):
    """Journal, index, failures and manifest writes fail like shard writes: clearly, resumably."""
    try:
        yield
    except OSError as error:
        raise ShardWriteError(_write_failure(Path(error.filename or path), error, shard=False)) from error


class _Journal:
    """``convert-journal.jsonl``: the plan fingerprint, then one line per completed shard."""

    def __init__(self, directory: Path):
        self.path = directory / JOURNAL_NAME

    def read(self, fingerprint: str) -> dict[str, dict] | None:
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
        if entries[0]["plan"] != fingerprint:
            raise ConvertError(
                f"{self.path.parent}: the interrupted conversion used other inputs or options; "
                "rerun it with the same arguments, or use --overwrite to start again"
            )
        return {entry["shard"]["file"]: entry for entry in entries[1:] if "shard" in entry}

    def start(self, fingerprint: str, kept: list[dict]) -> None:
        """Replace the journal (atomically) by the plan and the shards kept from before."""
        lines = [{"plan": fingerprint, "ifskeras_version": __version__}, *kept]
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
    completed = journal.read(plan.fingerprint) or {}
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
        No inputs, output directory not empty, labels unreadable, resume with other
        options, or a shard could not be written (:class:`ShardWriteError`).

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
    labels = _load_labels(options.labels, options.label_column) if options.labels else {}
    _prepare_out_dir(out, options, resume=resume, overwrite=overwrite)
    plan = _make_plan(paths, input_problems, options, labels)

    journal = _Journal(out)
    reused = _reusable_shards(out, plan, journal) if resume else {}
    if resume:
        for path in out.iterdir():
            parsed = parse_shard_filename(path.name)
            if parsed and parsed.name == options.name and path.name not in reused:
                path.unlink()
    with _bookkeeping_errors(journal.path):
        journal.start(plan.fingerprint, [reused[name] for name in sorted(reused)])

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


def _index_row(meta: dict, shard: _Shard, record: int) -> dict:
    y0, x0, side = meta["box"]
    return {
        "id": meta["id"],
        "split": shard.split,
        "shard": shard.file,
        "record": record,
        "label": meta["label"],
        "ra": _finite(meta["ra"]),
        "dec": _finite(meta["dec"]),
        "box_y0": y0,
        "box_x0": x0,
        "box_side": side,
        "spaxels_per_pixel": meta["spaxels_per_pixel"],
        "path": meta["path"],
        "unit": meta["unit"],
    }


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _finish(out: Path, plan: _Plan, options: ConvertOptions, entries: dict[str, dict],
            labels: dict[str, str], *, converted: int, resumed: int, seconds: float,
            convert_seconds: float) -> ConvertResult:
    ordered = [entries[shard.file] for shard in plan.shards]
    failures = sorted(plan.failures + [f for entry in ordered for f in entry["failures"]],
                      key=lambda failure: failure["path"])
    rows = [row for entry in ordered for row in entry["rows"]]
    units = [row.get("unit") for row in rows if row.get("unit")]
    splits = {}
    for split in SPLITS:
        shards = [entry["shard"] for entry in ordered if entry["split"] == split]
        splits[split] = {"examples": sum(s["examples"] for s in shards), "shards": shards}

    atomic_write_csv(out / FAILURES_NAME, ("path", "reason"),
                     ([failure["path"], failure["reason"]] for failure in failures))
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
            "module": "ifskeras.survey.preprocess",
        },
        "compression": options.compression,
        "split_rule": {
            "hash": "sha256('ifskeras:split:' + plateifu), first 8 bytes / 2**64",
            "val_fraction": options.val_fraction,
            "test_fraction": options.test_fraction,
        },
        "sharding": {"shard_mb": options.shard_mb, "min_shards": options.min_shards},
        "partition": {"num_workers": options.num_workers, "worker_index": options.worker_index},
        "labels": (
            {"file": str(options.labels), "column": options.label_column, "labelled": plan.labelled,
             "unmatched": len(set(labels) - {row["id"] for row in rows})}
            if options.labels else None
        ),
        "splits": splits,
        "totals": {
            "inputs": plan.inputs,
            "examples": sum(entry["examples"] for entry in splits.values()),
            "failures": len(failures),
            "duplicates": len(plan.duplicates),
            "bytes": sum(shard["bytes"] for entry in splits.values() for shard in entry["shards"]),
        },
        "failures": failures,
        "duplicates": plan.duplicates,
        "index": {"file": INDEX_NAME, "sha256": sha256_file(out / INDEX_NAME)},
        "plan": plan.fingerprint,
    }
    atomic_write_json(out / MANIFEST_NAME, manifest)
    return ConvertResult(out, manifest, converted, resumed, failures, plan.duplicates, seconds, convert_seconds)


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)
