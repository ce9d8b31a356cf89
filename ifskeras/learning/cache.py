"""Whether ``fit`` keeps the serialized records in memory after their first pass."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_MEMORY_FRACTION", "decide_cache", "available_memory_bytes"]

#: Share of the memory available at the start that ``cache=None`` lets the records fill.
CACHE_MEMORY_FRACTION = 0.25


def decide_cache(manifest, requested: bool | None, *, num_workers: int, examples_read: int,
                 available_bytes: int | None) -> tuple[bool, str]:
    """Whether ``fit`` keeps the serialized records in memory after their first pass, and why.

    ``requested`` True or False decides. None (the default) caches when the records
    are read more than once (so a first pass completes and later reads come from
    memory) and the bytes one worker holds (its share of the train shards, plus the
    whole val split, which every worker reads) fit in :data:`CACHE_MEMORY_FRACTION`
    of ``available_bytes``. Caching changes what later epochs cost (no file reads, no
    record checksums), not what they contain: the examples are still shuffled every
    epoch, in a buffer of ``shuffle_buffer`` records; only the order of the shard
    files stays the one of the first pass.
    """
    if requested is not None:
        return bool(requested), "--cache" if requested else "--no-cache"
    n_train = manifest.examples("train")
    if examples_read <= n_train:
        return False, "the train split is read at most once"
    train_bytes = sum(info.bytes for info in manifest.shards("train")) / max(1, num_workers)
    held = int(train_bytes + sum(info.bytes for info in manifest.shards("val")))
    if available_bytes is None:
        return False, "the available memory is unknown"
    budget = int(CACHE_MEMORY_FRACTION * available_bytes)
    if held > budget:
        return False, (f"{held / 1e6:.0f} MB of records exceed {CACHE_MEMORY_FRACTION:.0%} of the "
                       f"{available_bytes / 1e9:.1f} GB available")
    return True, (f"{held / 1e6:.0f} MB of records fit in {CACHE_MEMORY_FRACTION:.0%} of the "
                  f"{available_bytes / 1e9:.1f} GB available")


def available_memory_bytes() -> int | None:
    """MemAvailable on Linux (free plus reclaimable cache), else free physical pages; None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
