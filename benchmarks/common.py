"""Shared helpers of the benchmark suite: timing, interleaved ratios, memory, machine, results.

The machine the suite runs on is shared (2 cores, other jobs), so absolute times
drift by tens of percent between runs. Every figure the suite reports as a result is
therefore a *ratio of two things measured side by side in the same process*, with
the two timed alternately (A B B A ...) and the median taken over repeats. Absolute
samples/s are recorded too, for orientation only.

Peak memory is the RSS high-water mark (``VmHWM`` in ``/proc/self/status``) of a
process that ran one stage only; worker processes are covered by
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the largest child that finished).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
#: Scratch space for surveys, records, run directories (git-ignored).
WORK_DIR = BENCH_DIR / "work"


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up chatter (call before importing it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


# ----------------------------------------------------------------------------- timing

def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of one call."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def interleaved_rates(runs: dict[str, Callable[[], int]], repeats: int, *, warmup: bool = True) -> dict[str, list[float]]:
    """Items/s of each named callable, timed alternately ``repeats`` times.

    Each callable does a fixed amount of work and returns how many items (samples,
    galaxies) it processed. The order is reversed on every other repeat
    (A B, B A, A B, ...), so a slow drift of the machine's load hits all alike.
    With ``warmup`` every callable runs once first, untimed (tracing, caches).
    """
    names = list(runs)
    if warmup:
        for name in names:
            runs[name]()
    rates: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        order = names if repeat % 2 == 0 else names[::-1]
        for name in order:
            seconds, items = timed(runs[name])
            rates[name].append(items / seconds)
    return rates


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Repeat-by-repeat ratios of two interleaved series."""
    return [a / b for a, b in zip(numerator, denominator)]


def ratio_summary(numerator: Sequence[float], denominator: Sequence[float], *, digits: int = 3) -> dict:
    """Median of paired ratios with their spread, and the medians of both series."""
    ratios = paired_ratios(numerator, denominator)
    return {
        "ratio": round(median(ratios), digits),
        "ratio_min": round(min(ratios), digits) if ratios else None,
        "ratio_max": round(max(ratios), digits) if ratios else None,
        "ratios": [round(r, digits) for r in ratios],
        "numerator_median": round(median(numerator), 2),
        "denominator_median": round(median(denominator), 2),
    }


# ----------------------------------------------------------------------------- memory

def peak_rss_mb() -> float:
    """This process's RSS high-water mark (VmHWM), in MB (1e6 bytes)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # Linux: KiB


def children_peak_rss_mb() -> float:
    """Largest RSS high-water mark of any finished (waited-for) child process, in MB."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e6


def _tree_rss_bytes(root: int) -> int:
    """Sum of VmRSS over ``root`` and all its descendants (shared pages counted per process)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        pid = int(entry.name)
        for line in status.splitlines():
            if line.startswith("PPid:"):
                parents[pid] = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss[pid] = int(line.split()[1]) * 1024
    tree, frontier = {root}, [root]
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(rss.get(pid, 0) for pid in tree)


def run_child(args: Sequence[str], *, env: dict | None = None, timeout: float | None = None,
              sample_seconds: float = 0.25) -> dict:
    """Run ``python args...`` in a fresh process; its last stdout line must be a JSON object.

    Returns that object plus ``child_wall_seconds`` (start-up and imports included) and
    ``tree_peak_rss_mb``: the largest sum of RSS over the child and its descendants
    (worker processes included), sampled every ``sample_seconds``.
    """
    import threading

    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})}, cwd=str(REPO),
    )
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                peak[0] = max(peak[0], _tree_rss_bytes(process.pid))
            except Exception:  # noqa: BLE001 - a process vanished mid-scan
                pass
            done.wait(sample_seconds)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        done.set()
        sampler.join()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({process.returncode}):\n{stderr[-4000:]}")
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(args)} printed no JSON:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    result = json.loads(lines[-1])
    result["child_wall_seconds"] = round(wall, 2)
    result["tree_peak_rss_mb"] = round(peak[0] / 1e6, 1)
    return result


# ----------------------------------------------------------------------------- machine

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")
                return [flag for flag in wanted if flag in flags]
    except OSError:
        pass
    return []


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) * 1024 / 1e9, 1)
    except OSError:
        pass
    return None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - not installed
        return None


def machine_info() -> dict:
    """CPU model and flags, cores, memory, load and package versions (no TensorFlow import)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gb": _memory_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in (
            "ifskeras", "tensorflow", "keras", "tensorflow-probability", "numpy", "scikit-learn",
            "umap-learn", "numba", "astropy")},
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


# ----------------------------------------------------------------------------- results

def row(name: str, value: float | None, *, unit: str = "x", target: str | None = None,
        met: bool | None = None, note: str = "") -> dict:
    """One line of the README table."""
    return {"name": name, "value": value, "unit": unit, "target": target, "met": met, "note": note}


def write_result(name: str, data: dict, *, mode: str, started: float) -> Path:
    """Write ``results/<name>.json`` with the machine, mode, date and duration added."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "mode": mode,
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine_info(),
        **data,
    }
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
