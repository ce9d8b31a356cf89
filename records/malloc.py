"""Keep freed buffers inside the process while tf.data streams records (glibc's malloc only).

tf.data allocates and frees a buffer for every record (0.7 MB at 19 x 64 x 64) and
every batch (several MB), on several threads. By default glibc serves blocks of that
size with ``mmap`` and gives them back with ``munmap`` (or trims its heaps), so each
record costs fresh page faults. On virtual machines that report freed pages to the host
(virtio-balloon free page reporting, as on the reference machine of the benchmarks),
a page fault can also be a host fault.

Measured there (``benchmarks/README.md``) on a long-lived training iterator: 15-25%
more augmented batches per second, for 0 to 300 MB more resident memory.

Raising the mmap threshold to its largest value (32 MB) keeps such blocks in malloc's
heaps, and a 256 MB trim threshold keeps freed heap memory for the next record instead
of returning it to the kernel. Set ``IFSKERAS_MALLOC_TUNING=0`` to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

__all__ = ["retain_freed_memory", "MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES", "OPT_OUT_VARIABLE"]

#: glibc's largest accepted M_MMAP_THRESHOLD on 64-bit (half its 64 MB heap size).
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 256 << 20
OPT_OUT_VARIABLE = "IFSKERAS_MALLOC_TUNING"
# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process, once; True if they are set.

    Does nothing (and returns False) on other C libraries or operating systems, or when
    ``IFSKERAS_MALLOC_TUNING`` is ``0``, ``false``, ``no`` or ``off``. The setting is
    process-wide and lasts until the process ends.
    """
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> bool:
    if os.environ.get(OPT_OUT_VARIABLE, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # mallopt returns 1 on success; both must hold, or the tuning is reported as not applied.
    return (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
            and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1)
