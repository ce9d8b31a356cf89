"""Record schema v1 and the ``manifest.json`` beside the shards: file names, features, errors, reading.

A records directory holds TFRecord shards with one ``tf.train.Example`` per galaxy,
and beside them ``manifest.json`` (written last: without it the directory is not a
dataset), ``index.csv``, ``failures.csv``, ``duplicates.csv`` and ``convert-journal.jsonl``.

Features (all required)::

    id     bytes    plate-IFU
    flux   bytes    float32 little-endian [L, S, S], physical flux (file unit)
    ivar   bytes    float32 little-endian [L, S, S]
    valid  bytes    uint8 [L, S, S], 1 = usable pixel
    label  bytes    may be empty
    ra     float    degrees
    dec    float    degrees

Where the rest lives: examples are encoded and decoded by :mod:`ifskeras.records.codec`,
framed in TFRecord files by :mod:`ifskeras.records.tfrecord`, and the manifest is
written by :func:`ifskeras.records.convert.convert_maps` (and
:func:`ifskeras.records.merge.merge_records`). Nothing here needs TensorFlow.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ifskeras.records.naming import SPLITS, parse_shard_filename

__all__ = [
    "SCHEMA_VERSION",
    "MANIFEST_NAME",
    "INDEX_NAME",
    "FAILURES_NAME",
    "DUPLICATES_NAME",
    "JOURNAL_NAME",
    "INDEX_COLUMNS",
    "FAILURES_COLUMNS",
    "DUPLICATES_COLUMNS",
    "FEATURES",
    "RecordsError",
    "ManifestError",
    "SchemaVersionError",
    "MissingShardError",
    "EmptySplitError",
    "ShardInfo",
    "Manifest",
    "load_manifest",
    "manifest_checksum",
    "read_index",
    "release_text",
    "GRID_FIELDS",
    "records_grid",
]

#: The preprocessing fields that decide what a pixel of the grid is: a model trained on
#: records of one grid must not score records of another.
GRID_FIELDS = ("mode", "size", "quantity", "scale", "re_span")

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.csv"
FAILURES_NAME = "failures.csv"
DUPLICATES_NAME = "duplicates.csv"
JOURNAL_NAME = "convert-journal.jsonl"
INDEX_COLUMNS = (
    "id", "mangaid", "split", "shard", "record", "label", "ra", "dec",
    "box_y0", "box_x0", "box_side", "spaxels_per_pixel", "path", "re_arcsec",
)
#: ``replaced_by``: the copy or observation converted instead of this file ('' if none).
FAILURES_COLUMNS = ("path", "reason", "replaced_by")
#: Files not read because another copy or observation of the galaxy was converted (``kept``).
DUPLICATES_COLUMNS = ("id", "mangaid", "path", "kept", "reason")
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

    @property
    def releases(self) -> list[dict]:
        """``{versdap, daptype, galaxies}`` of the inputs; empty for records written before they were recorded."""
        return list(self.data.get("releases", []))

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


def release_series(versdap: str, daptype: str) -> tuple[str, str]:
    """The release a DAP version belongs to, for the no-mixing rule: (major.minor, DAPTYPE).

    Patch versions of one DAP series fit the lines alike (DR15's 2.2.1 and its 2.2.3dev
    reprocessing), while DR15 (2.2) and DR17 (3.1) do not.

    >>> release_series("2.2.3dev", "HYB10-GAU-MILESHC") == release_series("2.2.1", "HYB10-GAU-MILESHC")
    True
    >>> release_series("3.1.0", "HYB10-MILESHC-MASTARSSP")
    ('3.1', 'HYB10-MILESHC-MASTARSSP')
    """
    return ".".join(versdap.split(".")[:2]), daptype


def release_text(versdap: str, daptype: str) -> str:
    """``VERSDAP=3.1.0 DAPTYPE=HYB10-MILESHC-MASTARHC2``, for messages (absent cards say so)."""
    return f"VERSDAP={versdap or '(absent)'} DAPTYPE={daptype or '(absent)'}"


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


def records_grid(preprocessing: Mapping) -> dict:
    """What a records directory's grid is (:data:`GRID_FIELDS`), for models to compare with.

    Records written before ``scale`` existed span the bundle (``scale`` ``bundle``).
    """
    grid = {name: preprocessing.get(name) for name in GRID_FIELDS}
    grid["scale"] = grid["scale"] or "bundle"
    return grid
