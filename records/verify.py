"""Check a records directory against its manifest.

Quick check (default, no TensorFlow, a ``stat`` per shard): every listed shard exists
with the recorded size, no stray shard or temp file. Full check (``full=True``): also
recompute every sha256, read every record through TensorFlow's reader (which verifies
the per-record CRCs), decode every example, and compare counts and ids with the
manifest and ``index.csv``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ifskeras.common.files import sha256_file
from ifskeras.records.codec import decode_galaxy
from ifskeras.records.naming import SPLITS, TEMP_SUFFIX, parse_shard_filename
from ifskeras.records.schema import (
    INDEX_NAME,
    RecordsError,
    load_manifest,
    read_index,
)

__all__ = ["Problem", "VerifyReport", "CorruptRecordsError", "verify_records"]


class CorruptRecordsError(RecordsError):
    """Verification found missing, truncated, corrupted or inconsistent files."""


@dataclass(frozen=True)
class Problem:
    """``kind``: missing, truncated, size, checksum, corrupt, count, extra, incomplete or index."""

    kind: str
    file: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.file}: {self.detail}"


@dataclass
class VerifyReport:
    records_dir: Path
    full: bool
    shards: int = 0
    examples: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        what = "full check (sha256, CRCs, decode)" if self.full else "quick check (existence, sizes)"
        head = f"{self.records_dir}: {what} of {self.shards} shards"
        if self.full:
            head += f", {self.examples} examples"
        if self.ok:
            return head + ": OK"
        return "\n".join([head + f": {len(self.problems)} problem(s)", *(f"  {p}" for p in self.problems)])

    def raise_if_failed(self) -> "VerifyReport":
        """Raise :class:`CorruptRecordsError` listing the problems, else return self."""
        if not self.ok:
            raise CorruptRecordsError(self.summary() + "\nrun `ifskeras verify` or convert again")
        return self


def verify_records(records_dir: str | Path, *, full: bool = False, checksums: bool = False) -> VerifyReport:
    """Compare the shards on disk with ``manifest.json``.

    Parameters
    ----------
    records_dir : path-like
    full : bool
        Also recompute checksums and read and decode every record (reads all data).
    checksums : bool
        Recompute every shard's sha256 (reads all data, no TensorFlow): what training
        and scoring do before they start, so a flipped byte is refused, not learned.

    Returns
    -------
    VerifyReport
        ``report.ok``; ``report.raise_if_failed()`` for callers that must refuse
        damaged records (training, scoring).

    Raises
    ------
    ManifestError
        The manifest itself is missing, unreadable or of another schema version.

    Examples
    --------
    >>> verify_records("records/").raise_if_failed()  # doctest: +SKIP
    """
    manifest = load_manifest(records_dir, check_shards=False)
    directory = manifest.directory
    report = VerifyReport(directory, full)
    ids_read: dict[str, list[str]] = {}
    listed = set()
    for split, shard in manifest.all_shards():
        listed.add(shard.file)
        report.shards += 1
        path = directory / shard.file
        if not path.is_file():
            report.problems.append(Problem("missing", shard.file, "listed in the manifest, not on disk"))
            continue
        size = path.stat().st_size
        if size < shard.bytes:
            report.problems.append(Problem("truncated", shard.file, f"{size} bytes, manifest says {shard.bytes}"))
        elif size > shard.bytes:
            report.problems.append(Problem("size", shard.file, f"{size} bytes, manifest says {shard.bytes}"))
        if full:
            ids_read[shard.file] = _check_contents(path, shard, manifest, report)
        elif checksums and size == shard.bytes and sha256_file(path) != shard.sha256:
            report.problems.append(Problem("checksum", shard.file, "sha256 differs from the manifest"))
    for path in sorted(directory.iterdir()):
        parsed = parse_shard_filename(path.name)
        if path.name.endswith(TEMP_SUFFIX):
            report.problems.append(Problem("incomplete", path.name, "a shard whose writing was interrupted"))
        elif parsed is not None and path.name not in listed:
            report.problems.append(Problem("extra", path.name, "shard file not listed in the manifest"))
    if full:
        _check_index(manifest, report, ids_read)
    return report


def _check_contents(path: Path, shard, manifest, report: VerifyReport) -> list[str]:
    """Checksum, CRCs and decoding of one shard; returns the ids read."""
    if sha256_file(path) != shard.sha256:
        report.problems.append(Problem("checksum", shard.file, "sha256 differs from the manifest"))
    count = 0
    ids = []
    try:
        for blob in _tf_records(path, manifest.compression):
            galaxy = decode_galaxy(blob, manifest.shape)
            ids.append(galaxy["id"])
            count += 1
    except _ReadError as error:
        report.problems.append(Problem("corrupt", shard.file, f"after {count} records: {error}"))
    except RecordsError as error:
        report.problems.append(Problem("corrupt", shard.file, f"record {count}: {error}"))
    report.examples += count
    if count != shard.examples:
        report.problems.append(Problem("count", shard.file, f"{count} records read, manifest says {shard.examples}"))
    return ids


_READ_BUFFER_BYTES = 8 << 20


class _ReadError(Exception):
    pass


def _tf_records(path: Path, compression: str | None):
    import tensorflow as tf  # the CRC check lives in TensorFlow's reader

    dataset = tf.data.TFRecordDataset(str(path), "GZIP" if compression == "gzip" else "", _READ_BUFFER_BYTES)
    iterator = iter(dataset)
    while True:
        try:
            record = next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError as error:
            raise _ReadError(error.message.splitlines()[0]) from None
        yield record.numpy()


def _check_index(manifest, report: VerifyReport, ids_read: dict[str, list[str]]) -> None:
    directory = manifest.directory
    recorded = manifest.data.get("index", {}).get("sha256")
    if recorded and (directory / INDEX_NAME).is_file() and sha256_file(directory / INDEX_NAME) != recorded:
        report.problems.append(Problem("index", INDEX_NAME, "sha256 differs from the manifest"))
    try:
        rows = read_index(directory)
    except RecordsError as error:
        report.problems.append(Problem("index", INDEX_NAME, str(error)))
        return
    per_shard: dict[str, list[str]] = {}
    for row in rows:
        per_shard.setdefault(row["shard"], []).append(row["id"])
    for split in SPLITS:
        for shard in manifest.shards(split):
            expected = per_shard.get(shard.file, [])
            if shard.file in ids_read and ids_read[shard.file] != expected[: len(ids_read[shard.file])]:
                report.problems.append(Problem("index", shard.file, "ids in the shard differ from index.csv"))
            elif len(expected) != shard.examples:
                report.problems.append(
                    Problem("index", shard.file, f"index.csv lists {len(expected)} examples, manifest {shard.examples}")
                )
    duplicated = [key for key, n in Counter(row["id"] for row in rows).items() if n > 1]
    if duplicated:
        report.problems.append(Problem("index", INDEX_NAME, f"duplicate ids {duplicated[:5]}"))
