"""Converting in worker processes: one galaxy (its files in turn), the pool, ordered results.

Workers are ``forkserver`` processes that never import TensorFlow nor the caller's
``__main__``. With at least ``jobs`` shards each worker converts and writes whole
shards (:func:`_shards_in_workers`); otherwise workers convert galaxies and the main
process writes them in order (:func:`_ordered_results`). Which of the two a conversion
uses is decided in :func:`ifskeras.records.convert._convert_shards`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import sys
import threading
import types
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from ifskeras.survey.maps import MapsReadError, read_maps
from ifskeras.survey.preprocess import PreprocessError, radius_box, to_grid
from ifskeras.records.codec import encode_example
from ifskeras.records.options import ConvertError, ConvertOptions
from ifskeras.records.plan import _Candidate, _Galaxy, _Shard
from ifskeras.records.shards import _Outcome, _write_shard

__all__ = ["convert_galaxy"]

_IN_FLIGHT_PER_JOB = 4


def convert_galaxy(path: str, plateifu: str, label: str, options: ConvertOptions,
                   re_arcsec: float = 0.0) -> tuple[bytes, dict]:
    """Read, grid and encode one galaxy from one file; raises MapsReadError or PreprocessError.

    ``re_arcsec``: the galaxy's effective radius, needed by ``options.scale == 're'``.
    """
    maps = read_maps(path, options.lines, quantity=options.quantity, reject_bits=options.reject_bits)
    if maps.plateifu != plateifu:
        raise PreprocessError(f"plate-IFU {maps.plateifu!r} differs from the header scan ({plateifu!r})")
    if not maps.valid.any():
        raise PreprocessError("no valid pixel in any selected line")
    box = _radius_box(maps, re_arcsec, options) if options.scale == "re" else None
    grid = to_grid(maps.flux, maps.ivar, maps.valid, options.size, mode=options.mode,
                   min_coverage=options.min_coverage, box=box)
    blob = encode_example(plateifu, grid.flux, grid.ivar, grid.valid, label=label, ra=maps.ra, dec=maps.dec)
    meta = {
        "id": plateifu,
        "mangaid": maps.mangaid,
        "label": label,
        "ra": maps.ra,
        "dec": maps.dec,
        "box": grid.box,
        "spaxels_per_pixel": grid.spaxels_per_pixel,
        "unit": maps.unit,
        "path": path,
        "re_arcsec": re_arcsec if options.scale == "re" else None,
    }
    return blob, meta


def _radius_box(maps, re_arcsec: float, options: ConvertOptions) -> tuple[float, float, float]:
    """The square of ``options.re_span`` effective radii around the galaxy (scale 're')."""
    if not re_arcsec > 0:
        raise PreprocessError(f"no effective radius for plate-IFU {maps.plateifu} in {options.radii}")
    if not np.isfinite(maps.spaxel_arcsec):
        raise PreprocessError("no celestial WCS or OBJRA/OBJDEC in the file: cannot place the galaxy "
                              "for --scale re")
    centre_y, centre_x = maps.centre
    return radius_box(centre_y, centre_x, re_arcsec / maps.spaxel_arcsec, options.re_span)


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


def _convert_task(galaxy: _Galaxy, options: ConvertOptions | None = None) -> _Outcome:
    """Convert a galaxy from its first candidate that converts; never raises for a bad input.

    Candidates that failed before it are failures replaced by it; those after it were
    not read and are duplicates of it.
    """
    options = options or _WORKER_OPTIONS
    failed = []
    for position, candidate in enumerate(galaxy.candidates):
        # The converted observation's own label when it has one, else the galaxy's (another observation's).
        converted = _convert_file(candidate, candidate.label or galaxy.label, options)
        if isinstance(converted, str):
            failed.append({"path": candidate.path, "reason": converted})
            continue
        blob, meta = converted
        # The galaxy's MANGAID (its split key), even when this copy lacks the card.
        meta.update(mangaid=galaxy.mangaid, versdap=candidate.versdap, daptype=candidate.daptype)
        return _Outcome(
            blob,
            meta,
            [{**failure, "replaced_by": candidate.path} for failure in failed],
            [_duplicate(galaxy, unused, candidate) for unused in galaxy.candidates[position + 1:]],
        )
    return _Outcome(None, None, [{**failure, "replaced_by": ""} for failure in failed], [])


def _convert_file(candidate: _Candidate, label: str, options: ConvertOptions) -> tuple[bytes, dict] | str:
    """``(blob, meta)``, or why the file cannot be converted."""
    try:
        return convert_galaxy(candidate.path, candidate.plateifu, label, options, candidate.re_arcsec)
    except MapsReadError as error:
        return error.problem
    except PreprocessError as error:
        return str(error)
    except MemoryError:
        return "out of memory while reading"
    except Exception as error:  # a malformed file must not stop the survey
        return f"unexpected {type(error).__name__}: {error}"


def _duplicate(galaxy: _Galaxy, unused: _Candidate, kept: _Candidate) -> dict:
    reason = (f"another copy of plate-IFU {kept.plateifu}" if unused.plateifu == kept.plateifu
              else f"repeat observation of MANGAID {galaxy.mangaid}")
    return {"id": unused.plateifu, "mangaid": galaxy.mangaid, "path": unused.path, "kept": kept.path,
            "reason": reason}


def _shard_task(out: str, shard: _Shard) -> dict:
    """In a worker: convert and write a whole shard (no galaxy bytes cross processes)."""
    results = (_convert_task(galaxy) for galaxy in shard.items)
    return _write_shard(Path(out), shard, _WORKER_OPTIONS, results, _WORKER_PROGRESS.put)


def _worker_pool(options: ConvertOptions, jobs: int, progress_queue=None) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("forkserver")
    # The server imports this module (the workers' code: reader, gridding, codec, shard
    # writer) and astropy (FITS, WCS) once; each worker forked from it starts with them loaded.
    context.set_forkserver_preload([__name__, "astropy.io.fits", "astropy.wcs"])
    return ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                               initargs=(options, progress_queue))


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
    the reason not to fork), and a script without an ``if __name__ == "__main__"``
    guard would run its conversion again in each worker, breaking the pool. The
    workers need nothing from ``__main__``: their code is in this module.

    Why no cleaner way exists (checked with CPython 3.11, 3.12 and 3.13): what a worker
    re-imports is decided in this process, when ``Process.start`` calls
    ``multiprocessing.spawn.get_preparation_data``. That data names the main module's
    ``__spec__.name`` (``python -m module``) or ``__file__`` (a script), and the new
    worker runs it as ``__mp_main__`` before anything else, and no parameter leaves it
    out. ``set_forkserver_preload`` only affects the server process; each worker it
    forks still gets the data and re-runs the script (even with ``"__main__"``
    preloaded, as the server is never given the path). ``spawn`` sends the same data.
    ``ProcessPoolExecutor(initializer=...)`` runs after it. ``set_executable`` or a
    ``python -m`` launcher changes the interpreter, not the data. Only a main module
    itself named ``__main__`` (``python -m package``, a directory or zip) is skipped,
    which is the caller's choice, not ours. ``fork`` skips it, but would copy the
    caller's threads and memory (TensorFlow's). So the data is made from a blank
    ``__main__`` while the workers start.

    Callers make their first submits (at least ``jobs`` of them, or all tasks) inside
    this block. ProcessPoolExecutor starts workers on demand in ``submit``: one per
    submit while no worker is idle, up to ``jobs``. A worker is idle only once it has
    finished a task, tens of milliseconds after it was started, while the submits
    follow each other within microseconds; so the block starts every worker, and the
    pool starts none later (it replaces no worker: a dead one breaks it). Other
    threads of this process see the blank ``__main__`` for those milliseconds.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main
