"""Record schema v1: one ``tf.train.Example`` per galaxy, and the ``manifest.json`` beside the shards.

Features (all required)::

    id     bytes    plate-IFU
    flux   bytes    float32 little-endian [L, S, S], physical flux (file unit)
    ivar   bytes    float32 little-endian [L, S, S]
    valid  bytes    uint8 [L, S, S], 1 = usable pixel
    label  bytes    may be empty
    ra     float    degrees
    dec    float    degrees

Examples are encoded here in pure Python (protobuf wire format, features in sorted key
order, so the bytes are reproducible); ``tf.io.parse_example`` reads them. Reading and
writing the manifest and the TFRecord framing needs no TensorFlow either.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import struct
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np

from ifskeras.records.naming import SPLITS, parse_shard_filename

__all__ = [
    "SCHEMA_VERSION",
    "MANIFEST_NAME",
    "INDEX_NAME",
    "FAILURES_NAME",
    "JOURNAL_NAME",
    "INDEX_COLUMNS",
    "FEATURES",
    "RecordsError",
    "ManifestError",
    "SchemaVersionError",
    "MissingShardError",
    "EmptySplitError",
    "ShardInfo",
    "Manifest",
    "encode_example",
    "decode_example",
    "decode_galaxy",
    "iter_tfrecord",
    "frame_record",
    "masked_crc32c",
    "load_manifest",
    "manifest_checksum",
    "read_index",
]

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.csv"
FAILURES_NAME = "failures.csv"
JOURNAL_NAME = "convert-journal.jsonl"
INDEX_COLUMNS = (
    "id", "split", "shard", "record", "label", "ra", "dec",
    "box_y0", "box_x0", "box_side", "spaxels_per_pixel", "path",
)
FEATURES = {
    "id": "bytes: plate-IFU",
    "flux": "bytes: float32 little-endian [L, S, S]",
    "ivar": "bytes: float32 little-endian [L, S, S]",
    "valid": "bytes: uint8 [L, S, S], 1 = usable",
    "label": "bytes: class label, may be empty",
    "ra": "float: degrees",
    "dec": "float: degrees",
}
_REQUIRED_KEYS = (
    "schema_version", "name", "lines", "wavelengths", "shape", "preprocessing", "compression", "splits",
)


class RecordsError(Exception):
    """Base class of the records layer's errors; the message says what to do."""


class ManifestError(RecordsError):
    """``manifest.json`` is absent, unreadable or inconsistent."""


class SchemaVersionError(ManifestError):
    """The records were written with a schema this version cannot read."""


class MissingShardError(RecordsError):
    """A shard listed in the manifest is not on disk."""


class EmptySplitError(RecordsError):
    """The requested split holds no examples."""


# ----------------------------------------------------------------------------- examples

def encode_example(
    plateifu: str,
    flux: np.ndarray,
    ivar: np.ndarray,
    valid: np.ndarray,
    *,
    label: str = "",
    ra: float = float("nan"),
    dec: float = float("nan"),
) -> bytes:
    """Serialized ``tf.train.Example`` of one galaxy (schema v1), deterministic bytes.

    Examples
    --------
    >>> import numpy as np
    >>> maps = np.zeros((2, 4, 4), np.float32)
    >>> blob = encode_example("7815-3702", maps, maps, maps > 0, ra=1.0, dec=2.0)
    >>> decode_galaxy(blob, (2, 4, 4))["id"]
    '7815-3702'
    """
    flux = np.asarray(flux)
    if not flux.shape == np.shape(ivar) == np.shape(valid):
        raise ValueError(
            f"flux, ivar and valid must have one shape. Received: {flux.shape}, "
            f"{np.shape(ivar)}, {np.shape(valid)}"
        )
    features = {
        "dec": _float_feature(dec),
        "flux": _bytes_feature(np.ascontiguousarray(flux, dtype="<f4").tobytes()),
        "id": _bytes_feature(plateifu.encode()),
        "ivar": _bytes_feature(np.ascontiguousarray(ivar, dtype="<f4").tobytes()),
        "label": _bytes_feature(label.encode()),
        "ra": _float_feature(ra),
        "valid": _bytes_feature(np.ascontiguousarray(valid, dtype=np.uint8).tobytes()),
    }
    entries = b"".join(
        _field(1, _field(1, key.encode()) + _field(2, value)) for key, value in sorted(features.items())
    )
    return _field(1, entries)


def decode_example(serialized: bytes) -> dict[str, list]:
    """Features of any serialized ``tf.train.Example``: name -> list of bytes, floats or ints."""
    view = memoryview(serialized)
    features: dict[str, list] = {}
    for number, _, example_field in _iter_fields(view):
        if number != 1:
            continue
        for entry_number, _, entry in _iter_fields(example_field):
            if entry_number != 1:
                continue
            key, feature = None, memoryview(b"")
            for part_number, _, part in _iter_fields(entry):
                if part_number == 1:
                    key = bytes(part).decode()
                elif part_number == 2:
                    feature = part
            if key is not None:
                features[key] = _decode_feature(feature)
    return features


def decode_galaxy(serialized: bytes, shape: tuple[int, int, int]) -> dict:
    """One schema-v1 example as numpy: ``flux``, ``ivar`` float32 and ``valid`` bool [L, S, S]."""
    features = decode_example(serialized)
    missing = [key for key in FEATURES if key not in features]
    if missing:
        raise RecordsError(f"record lacks features {missing}; schema v1 needs {list(FEATURES)}")
    n_values = int(np.prod(shape))

    def array(key: str, dtype: str) -> np.ndarray:
        raw = features[key][0]
        values = np.frombuffer(raw, dtype=dtype)
        if values.size != n_values:
            raise RecordsError(
                f"feature {key!r} holds {values.size} values, shape {list(shape)} needs {n_values}"
            )
        return values.reshape(shape)

    return {
        "id": features["id"][0].decode(),
        "flux": array("flux", "<f4").astype(np.float32),
        "ivar": array("ivar", "<f4").astype(np.float32),
        "valid": array("valid", "u1").astype(bool),
        "label": features["label"][0].decode() if features["label"] else "",
        "ra": float(features["ra"][0]),
        "dec": float(features["dec"][0]),
    }


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


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _bytes_feature(value: bytes) -> bytes:
    return _field(1, _field(1, value))


def _float_feature(value: float) -> bytes:
    return _field(2, _field(1, struct.pack("<f", value)))


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(view):
            raise RecordsError("malformed protobuf: truncated varint")
        byte = view[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _iter_fields(view: memoryview):
    pos = 0
    while pos < len(view):
        tag, pos = _read_varint(view, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _read_varint(view, pos)
        elif wire == 1:
            value, pos = view[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _read_varint(view, pos)
            value, pos = view[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = view[pos:pos + 4], pos + 4
        else:
            raise RecordsError(f"malformed protobuf: wire type {wire}")
        if pos > len(view):
            raise RecordsError("malformed protobuf: field runs past the end")
        yield number, wire, value


def _decode_feature(view: memoryview) -> list:
    values: list = []
    for kind, _, payload in _iter_fields(view):
        for number, wire, value in _iter_fields(payload):
            if number != 1:
                continue
            if kind == 1:
                values.append(bytes(value))
            elif kind == 2:
                values.extend(np.frombuffer(bytes(value), "<f4").tolist())
            elif kind == 3:
                if wire == 2:
                    inner, pos = memoryview(bytes(value)), 0
                    while pos < len(inner):
                        number_value, pos = _read_varint(inner, pos)
                        values.append(_signed(number_value))
                else:
                    values.append(_signed(value))
    return values


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# ----------------------------------------------------------------------------- manifest

@dataclass(frozen=True)
class ShardInfo:
    file: str
    examples: int
    bytes: int
    sha256: str


@dataclass(frozen=True, eq=False)
class Manifest(Mapping):
    """A validated ``manifest.json``.

    Reads like the JSON dictionary (``manifest["shape"]``, ``manifest["splits"]``) and
    offers typed accessors (``manifest.shape``, ``manifest.shard_paths("train")``).
    """

    directory: Path
    data: Mapping

    def __getitem__(self, key: str):
        return self.data[key]

    def __iter__(self):
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(self.data["lines"])

    @property
    def wavelengths(self) -> tuple[float, ...]:
        return tuple(self.data["wavelengths"])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data["shape"])

    @property
    def compression(self) -> str | None:
        return self.data["compression"]

    @property
    def preprocessing(self) -> Mapping:
        return self.data["preprocessing"]

    @property
    def failures(self) -> list[dict]:
        return list(self.data.get("failures", []))

    def shards(self, split: str) -> list[ShardInfo]:
        _check_split(split)
        entry = self.data["splits"].get(split, {"shards": []})
        return [ShardInfo(**shard) for shard in entry["shards"]]

    def shard_paths(self, split: str) -> list[Path]:
        return [self.directory / shard.file for shard in self.shards(split)]

    def examples(self, split: str | None = None) -> int:
        """Examples in ``split``, or in all splits."""
        splits = SPLITS if split is None else (_check_split(split),)
        return sum(shard.examples for name in splits for shard in self.shards(name))

    def all_shards(self) -> list[tuple[str, ShardInfo]]:
        return [(split, shard) for split in SPLITS for shard in self.shards(split)]


def load_manifest(records_dir: str | Path, *, check_shards: bool = True) -> Manifest:
    """Read and validate ``manifest.json``; by default check every listed shard exists.

    TensorFlow skips a missing TFRecord file without error, so a missing shard is
    caught here.

    Raises
    ------
    ManifestError
        No manifest (not a records directory, or an unfinished conversion), invalid
        JSON, or missing keys.
    SchemaVersionError
        Written with another schema version.
    MissingShardError
        A listed shard is not on disk.
    """
    directory = Path(records_dir)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise ManifestError(f"{directory}: no such records directory")
    if not path.is_file():
        journal = directory / JOURNAL_NAME
        hint = (
            "the conversion did not finish: rerun the same `ifskeras convert` command with --resume"
            if journal.exists()
            else "not a records directory (create one with `ifskeras convert`)"
        )
        raise ManifestError(f"{directory}: no {MANIFEST_NAME}; {hint}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path}: unreadable manifest ({error})") from error
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: manifest must be a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path}: records use schema version {version!r}, this ifskeras reads version "
            f"{SCHEMA_VERSION}; convert the MAPS files again with this version"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise ManifestError(f"{path}: manifest lacks keys {missing}")
    manifest = Manifest(directory, data)
    _validate(manifest, path)
    if check_shards:
        absent = [
            str(directory / shard.file)
            for _, shard in manifest.all_shards()
            if not (directory / shard.file).is_file()
        ]
        if absent:
            raise MissingShardError(
                f"{len(absent)} shard(s) listed in {path} are missing: {', '.join(absent[:5])}"
                f"{' ...' if len(absent) > 5 else ''}; restore them or convert again"
            )
    return manifest


def manifest_checksum(records_dir: str | Path) -> str:
    """sha256 of ``manifest.json``: names the exact records a model was trained or scored on."""
    path = Path(records_dir) / MANIFEST_NAME
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise ManifestError(f"{path}: cannot read the manifest ({error})") from error


def read_index(records_dir: str | Path) -> list[dict]:
    """Rows of ``index.csv``: one per example, where it is and where it came from."""
    path = Path(records_dir) / INDEX_NAME
    try:
        with open(path, newline="") as stream:
            return list(csv.DictReader(stream))
    except OSError as error:
        raise ManifestError(f"{path}: cannot read the example index ({error})") from error


def _validate(manifest: Manifest, path: Path) -> None:
    data = manifest.data
    shape = data["shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(n, int) and n > 0 for n in shape)):
        raise ManifestError(f"{path}: shape must be [L, S, S] positive integers. Received: {shape!r}")
    if len(data["lines"]) != shape[0] or len(data["wavelengths"]) != shape[0]:
        raise ManifestError(f"{path}: {len(data['lines'])} lines but shape {shape}")
    if data["compression"] not in (None, "gzip"):
        raise ManifestError(f"{path}: unknown compression {data['compression']!r}")
    unknown = set(data["splits"]) - set(SPLITS)
    if unknown:
        raise ManifestError(f"{path}: unknown splits {sorted(unknown)}")
    for split, entry in data["splits"].items():
        try:
            shards = [ShardInfo(**shard) for shard in entry["shards"]]
        except (KeyError, TypeError) as error:
            raise ManifestError(f"{path}: malformed shard list of split {split!r} ({error})") from error
        for shard in shards:
            parsed = parse_shard_filename(shard.file)
            if parsed is None or parsed.split != split or "/" in shard.file:
                raise ManifestError(f"{path}: {shard.file!r} is not a {split} shard name")
        if entry.get("examples", sum(s.examples for s in shards)) != sum(s.examples for s in shards):
            raise ManifestError(f"{path}: split {split!r} example count differs from its shards' sum")


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Received: {split!r}")
    return split


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: store missing coordinates as null."""
    return None if value is None or not math.isfinite(value) else float(value)
