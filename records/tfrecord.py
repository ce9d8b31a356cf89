"""TFRecord framing in pure Python: what ``tf.io.TFRecordWriter`` writes, checked on reading.

Each record is ``uint64 length``, the masked CRC-32C of those 8 bytes, the data, and
the masked CRC-32C of the data (little-endian). Conversion workers frame their shards
with :func:`frame_record` (CRC32C from ``google-crc32c``), so a conversion never loads
TensorFlow; :func:`iter_tfrecord` reads a shard back and checks both checksums.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from pathlib import Path

import google_crc32c

from ifskeras.records.schema import RecordsError

__all__ = ["masked_crc32c", "frame_record", "iter_tfrecord"]


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated right by 15 bits, plus a constant."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> tuple[bytes, bytes]:
    """TFRecord framing of one record: (header, footer) to write around ``data``.

    header = uint64 length + masked CRC of those 8 bytes; footer = masked CRC of data
    (all little-endian), exactly what ``tf.io.TFRecordWriter`` writes.
    """
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)), struct.pack("<I", masked_crc32c(data))


def iter_tfrecord(path: str | Path, compression: str | None = None) -> Iterator[bytes]:
    """Records of a TFRecord file, read in pure Python with their CRCs checked.

    Raises
    ------
    RecordsError
        A truncated record or a checksum that does not match (the file and record
        number are named).
    """
    opener = gzip.open if compression == "gzip" else open
    with opener(path, "rb") as stream:
        number = 0
        while True:
            header = stream.read(12)
            if not header:
                return
            if len(header) < 12:
                raise RecordsError(f"{path}: truncated record header (record {number})")
            if struct.unpack("<I", header[8:])[0] != masked_crc32c(header[:8]):
                raise RecordsError(f"{path}: record {number}: length checksum mismatch (corrupted file)")
            (length,) = struct.unpack("<Q", header[:8])
            data = stream.read(length)
            footer = stream.read(4)
            if len(data) < length or len(footer) < 4:
                raise RecordsError(f"{path}: truncated record (record {number})")
            if struct.unpack("<I", footer)[0] != masked_crc32c(data):
                raise RecordsError(f"{path}: record {number}: data checksum mismatch (corrupted file)")
            number += 1
            yield data
