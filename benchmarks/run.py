"""Run the ifskeras benchmark suite and refresh the results table in benchmarks/README.md.

    python benchmarks/run.py              # full suite (about an hour on 2 cores)
    python benchmarks/run.py --quick      # small sizes (minutes per benchmark)
    python benchmarks/run.py --only training --only scoring
    python benchmarks/run.py --readme     # only rebuild the README table from results/*.json

Each benchmark runs in its own process and writes ``benchmarks/results/<name>.json``;
the README table between the ``results:start`` / ``results:end`` markers is then
rebuilt from every JSON file present (so a partial run keeps the other rows).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

#: name -> (script, extra arguments in quick mode, extra arguments in full mode)
BENCHMARKS = {
    # bench_records.py's own defaults in both modes: fewer galaxies make its ratios meaningless
    # (worker start-up dominates --jobs 2 below ~100 galaxies).
    "records": ("bench_records.py", [], []),
    "training": ("bench_training.py", ["--quick"], []),
    "scoring": ("bench_scoring.py", ["--quick"], []),
    "scale": ("bench_scale.py", ["--quick"], []),
    # AUROC of the default ranking on survey variants it was not tuned on (about 75 minutes).
    "discovery": ("bench_discovery.py", ["--quick"], []),
}
README = common.BENCH_DIR / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"

def _format_value(row: dict) -> str:
    value = row.get("value")
    if value is None:
        return "-"
    unit = row.get("unit") or ""
    if unit == "x":
        return f"{value:g}x" if isinstance(value, (int, float)) else str(value)
    return f"{value:g} {unit}".strip() if isinstance(value, (int, float)) else f"{value} {unit}".strip()


def _status(row: dict) -> str:
    met = row.get("met")
    return "" if met is None else ("yes" if met else "**no**")


#: Results shown in the table besides those of BENCHMARKS: runs `make bench` does not start
#: (``bench_discovery.py --heldout [2]``, 75 minutes more each).
EXTRA_RESULTS = ("discovery-heldout", "discovery-heldout2")


def render_table() -> str:
    results = {}
    for name in (*BENCHMARKS, *EXTRA_RESULTS):
        path = common.RESULTS_DIR / f"{name}.json"
        if path.exists():
            results[name] = json.loads(path.read_text())
    lines = []
    machine = next((r["machine"] for r in results.values() if "cpu_model" in r.get("machine", {})), None)
    if machine is None:
        machine = common.machine_info()
    versions = machine.get("versions", {})
    lines += [
        "Machine: " + f"{machine.get('cpu_model')}, {machine.get('usable_cpus')} usable of "
        f"{machine.get('logical_cpus')} logical CPUs ({', '.join(machine.get('cpu_flags', [])) or 'flags unknown'}), "
        f"{machine.get('memory_gb')} GB RAM, {machine.get('platform')}; Python {machine.get('python')}, "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".",
        "",
        "| Benchmark | Result | Target | Met | Notes |",
        "|---|---|---|---|---|",
    ]
    for name, data in results.items():
        for row in data.get("rows", []):
            note = (row.get("note") or "").replace("|", "/")
            lines.append(f"| {row['name']} | {_format_value(row)} | {row.get('target') or ''} | {_status(row)} | {note} |")
    lines += ["", "| Results file | Mode | Date (UTC) | Duration | Load average (at the end; records: before, after) |",
              "|---|---|---|---|---|"]
    for name, data in results.items():
        machine = data.get("machine", {})
        load = machine.get("load_average") or machine.get("load_average_before_after")
        path = common.RESULTS_DIR / f"{name}.json"
        date = data.get("date_utc") or time.strftime("%Y-%m-%dT%H:%M:%SZ (file time)", time.gmtime(path.stat().st_mtime))
        seconds = f"{data['seconds']} s" if "seconds" in data else "-"
        lines.append(f"| results/{name}.json | {data.get('mode', '-')} | {date} | {seconds} | {load} |")
    return "\n".join(lines)


def update_readme() -> None:
    table = render_table()
    text = README.read_text() if README.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip() + f"\n\n## Results\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{table}\n{END}{tail}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: each benchmark takes minutes")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help=f"run only these ({', '.join(BENCHMARKS)}); repeat or comma-separate")
    parser.add_argument("--readme", action="store_true", help="only rebuild the README table")
    args = parser.parse_args(argv)
    selected = [name for item in args.only for name in item.split(",") if name] or list(BENCHMARKS)
    unknown = [name for name in selected if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    failed = []
    if not args.readme:
        for name in selected:
            script, quick_args, full_args = BENCHMARKS[name]
            path = common.BENCH_DIR / script
            if not path.exists():
                common.log(f"{name}: {script} not found, skipped")
                continue
            common.log(f"=== {name} ({'quick' if args.quick else 'full'})")
            started = time.perf_counter()
            process = subprocess.run([sys.executable, str(path), *(quick_args if args.quick else full_args)],
                                     cwd=str(common.REPO), env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            seconds = time.perf_counter() - started
            if process.returncode:
                failed.append(name)
                common.log(f"=== {name} FAILED (exit {process.returncode}) after {seconds:.0f} s")
            else:
                common.log(f"=== {name} done in {seconds:.0f} s")
    update_readme()
    common.log(f"updated {README}")
    if failed:
        common.log(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
