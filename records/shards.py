"""Writing one shard file: TFRecord framing, ``<shard>.incomplete`` renamed when complete, index rows.

The same code writes a shard in the main process (from galaxies converted by workers
or in-process) and in a worker (:func:`ifskeras.records.workers._shard_task`), so a
shard's bytes do not depend on ``jobs``. Write errors become :class:`ShardWriteError`
with a message that says to ``--resume``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from ifskeras.common.files import fsync_dir
from ifskeras.records.naming import TEMP_SUFFIX
from ifskeras.records.options import ConvertOptions, ShardWriteError
from ifskeras.records.plan import _Shard
from ifskeras.records.tfrecord import frame_record


class _Outcome(NamedTuple):
    """What converting one galaxy gave: its record (``blob`` None if every candidate failed) and its files' fates."""

    blob: bytes | None
    meta: dict | None
    failures: list[dict]  # {path, reason, replaced_by}
    duplicates: list[dict]  # {id, mangaid, path, kept, reason}


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


def _write_shard(out: Path, shard: _Shard, options: ConvertOptions, results: Iterator[_Outcome],
                 on_galaxy: Callable[[bool], None]) -> dict:
    """Write one shard from its galaxies' ``_convert_task`` outcomes; returns its journal entry."""
    writer = _ShardWriter(out, shard.file, options.compression)
    rows, failures, duplicates = [], [], []
    try:
        for _ in shard.items:
            outcome = next(results)
            if outcome.blob is not None:
                writer.write(outcome.blob)
                rows.append(_index_row(outcome.meta, shard, len(rows)))
            failures.extend(outcome.failures)
            duplicates.extend(outcome.duplicates)
            on_galaxy(outcome.blob is not None)
        info = writer.commit()
    except BaseException:
        writer.abort()
        raise
    return {"split": shard.split, "shard": info, "rows": rows, "failures": failures, "duplicates": duplicates}


def _index_row(meta: dict, shard: _Shard, record: int) -> dict:
    y0, x0, side = meta["box"]
    return {
        "id": meta["id"],
        "mangaid": meta["mangaid"],
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
        "re_arcsec": meta.get("re_arcsec"),
        "unit": meta["unit"],
        "versdap": meta["versdap"],
        "daptype": meta["daptype"],
    }


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


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
