"""A conversion's plan, fixed before any galaxy is converted.

Made from the header scan (:func:`ifskeras.records.inputs.peek_plateifu`, threads), the
plan fixes: duplicates (the first path in sorted order is kept), the cluster part
(``part_of``), the split (``split_of``), the number of shards per split (from the
estimated record size and ``shard_mb``) and which galaxies go in which shard (sorted
by a stable hash of the plate-IFU, cut into equal runs). The same inputs and options
always give the same plan, and its fingerprint (written first in the journal) is how a
resume checks that it continues the same conversion.
"""

from __future__ import annotations

import hashlib
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ifskeras.records.inputs import _identify
from ifskeras.records.naming import SPLITS, part_of, shard_filename, split_of, stable_fraction
from ifskeras.records.options import ConvertOptions
from ifskeras.records.schema import SCHEMA_VERSION

#: Protobuf keys, id, label, ra, dec and TFRecord framing, per example (bytes).
_RECORD_OVERHEAD = 256
_PEEK_THREADS = 8


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
