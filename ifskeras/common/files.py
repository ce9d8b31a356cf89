"""Crash-safe writes: a file or a whole directory appears complete or not at all.

Files are written under a temporary name, fsynced and renamed (then the directory is
fsynced); directories are filled under ``NAME.partial`` and renamed into place.
Every stage writes its outputs through these functions.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

__all__ = [
    "fsync_path",
    "fsync_dir",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_csv",
    "atomic_directory",
    "sha256_file",
]

_CHUNK = 1 << 20


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a written file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make renames in ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either the old file or the complete new one."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temp, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj, *, default=None) -> None:
    """``obj`` as indented JSON; ``default`` converts what JSON cannot hold (as in ``json.dumps``)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=default) + "\n").encode())


def atomic_write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """A header row and data rows as CSV."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


@contextlib.contextmanager
def atomic_directory(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging directory that replaces ``out_dir`` when the block succeeds.

    The staging directory is ``out_dir`` with ``.partial`` appended, beside it (same file
    system, so the final rename is atomic). If the block raises, the staging directory is
    removed and ``out_dir`` is left as it was: a failed run never leaves a half-written
    directory that looks whole.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "scores"
    >>> with atomic_directory(out) as staging:
    ...     _ = (staging / "scores.csv").write_text("id\\n")
    >>> sorted(p.name for p in out.iterdir())
    ['scores.csv']
    """
    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)
    fsync_dir(out_dir.parent)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
