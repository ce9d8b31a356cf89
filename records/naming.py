"""Shard file names, split names and the stable hashes that place a galaxy.

Shards are named ``{name}-{split}.tfrecord-{i:05d}-of-{n:05d}`` (as in
tensorflow_datasets) and parse back with :data:`SHARD_PATTERN`. Every placement
(split, shard order, cluster part) is a function of the galaxy's key (its MANGAID,
else its plate-IFU: see :mod:`ifskeras.records.plan`) through sha256, never Python's
salted ``hash``, so it is the same on every machine and every run.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

__all__ = [
    "SPLITS",
    "SHARD_PATTERN",
    "TEMP_SUFFIX",
    "ShardName",
    "shard_filename",
    "parse_shard_filename",
    "check_dataset_name",
    "stable_fraction",
    "split_of",
    "part_of",
]

SPLITS = ("train", "val", "test")
SHARD_PATTERN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.]*)-(?P<split>train|val|test)"
    r"\.tfrecord-(?P<index>\d{5})-of-(?P<count>\d{5})$"
)
#: Suffix of a shard still being written; never matches SHARD_PATTERN.
TEMP_SUFFIX = ".incomplete"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")


class ShardName(NamedTuple):
    name: str
    split: str
    index: int
    count: int


def shard_filename(name: str, split: str, index: int, count: int) -> str:
    """``maps-train.tfrecord-00003-of-00010`` for ``('maps', 'train', 3, 10)``."""
    check_dataset_name(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Received: {split!r}")
    if not 0 <= index < count <= 99999:
        raise ValueError(f"need 0 <= index < count <= 99999. Received: index={index}, count={count}")
    return f"{name}-{split}.tfrecord-{index:05d}-of-{count:05d}"


def parse_shard_filename(filename: str) -> ShardName | None:
    """The parts of a shard file name, or None if it is not one."""
    match = SHARD_PATTERN.match(filename)
    if match is None:
        return None
    return ShardName(match["name"], match["split"], int(match["index"]), int(match["count"]))


def check_dataset_name(name: str) -> str:
    """Dataset names are letters, digits, ``_`` and ``.`` (no ``-`` or ``/``)."""
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ValueError(
            f"dataset name must be letters, digits, '_' or '.', starting with a letter or digit. "
            f"Received: {name!r}"
        )
    return name


def stable_fraction(key: str, purpose: str) -> float:
    """A number in [0, 1) fixed by ``key`` and ``purpose`` (sha256; same everywhere)."""
    digest = hashlib.sha256(f"ifskeras:{purpose}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(key: str, val_fraction: float, test_fraction: float) -> str:
    """The split of the galaxy with this key: ``'test'`` below ``test_fraction``, then ``'val'``, else ``'train'``.

    Raising ``val_fraction`` moves galaxies only from train to val; the test set does
    not depend on ``val_fraction``.
    """
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(
            "need val_fraction >= 0, test_fraction >= 0 and their sum < 1. "
            f"Received: val_fraction={val_fraction}, test_fraction={test_fraction}"
        )
    u = stable_fraction(key, "split")
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def part_of(key: str, num_parts: int) -> int:
    """Which of ``num_parts`` cluster workers converts ``key``."""
    return int(stable_fraction(key, "part") * num_parts)
