"""Survey scale: synthesise, convert and score 10,000 galaxies (1,000 with --quick) in one run.

Written to ``benchmarks/results/scale.json``. Each stage runs in its own fresh
process, so its peak memory is its own:

1. ``synth``: ``ifskeras.survey.synth.make_survey`` (DR15-like gzipped MAPS files, serial);
2. ``convert``: ``ifskeras.records.convert_maps`` at 32 x 32, 19 lines, ``jobs=2``,
   default 80/10/10 split;
3. ``export``: the default AE architecture (filters 16, 32; latent 32) at 32 x 32,
   **untrained** (random initial weights: scoring does the same work whatever the
   weights), written with ``ifskeras.learning.export.export_model``;
4. ``score``: ``ifskeras.discovery.score.score_records`` (SavedModel ``score`` endpoint in
   batches of 64, k-NN latent score, seeded UMAP, CSV + FITS), every split.

Per stage: wall time inside the stage (TensorFlow's import excluded and reported
apart) and of the whole process,
galaxies/s, the main process's RSS high-water mark (VmHWM) and the peak summed RSS of
the process tree (workers included, sampled every 0.25 s). The convert and score
stages are repeated on the first tenth of the survey, so the memory ratio
(full / tenth, same run) shows whether memory grows with the survey.

Run: ``python benchmarks/bench_scale.py [--quick] [--galaxies N]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

common.quiet_tensorflow()

SIZE = 32


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- stages (child process)

def stage(name: str, work: Path, n: int, tag: str) -> dict:
    maps = work / "maps"
    records = work / f"records-{tag}"
    model = work / "model"
    scores = work / f"scores-{tag}"
    out: dict = {"stage": name}
    if name in ("export", "score"):
        # TensorFlow's import (seconds) is timed apart from the stage itself (a conversion
        # does not load TensorFlow at all).
        import_seconds, _ = common.timed(lambda: __import__("tensorflow"))
        out["tensorflow_import_seconds"] = round(import_seconds, 2)
    started = time.perf_counter()
    if name == "synth":
        from ifskeras.survey.synth import make_survey

        shutil.rmtree(maps, ignore_errors=True)
        summary = make_survey(maps, n, seed=2024)
        out["galaxies"] = len(summary.paths)
        out["bytes"] = _dir_bytes(maps)
    elif name == "convert":
        from ifskeras.records import ConvertOptions, convert_maps

        shutil.rmtree(records, ignore_errors=True)
        files = sorted(maps.glob("*MAPS*.fits*"))[:n]
        listing = work / f"inputs-{tag}.txt"
        listing.write_text("\n".join(str(p) for p in files) + "\n")
        result = convert_maps([listing], records, ConvertOptions(size=SIZE), jobs=2)
        out["galaxies"] = result.converted
        out["failures"] = len(result.failures)
        out["examples"] = result.examples
        out["convert_seconds"] = round(result.convert_seconds, 2)
        out["bytes"] = _dir_bytes(records)
    elif name == "export":
        import tensorflow as tf

        from ifskeras.learning.config import ModelConfig
        from ifskeras.learning.export import export_model
        from ifskeras.learning.models import build_model
        from ifskeras.records import load_manifest

        manifest = load_manifest(records)
        shutil.rmtree(model, ignore_errors=True)
        built = build_model(ModelConfig(), num_lines=len(manifest.lines), size=SIZE)
        built(tf.zeros([1, len(manifest.lines), SIZE, SIZE, 1]), training=False)
        export_model(built, model, lines=manifest.lines, size=SIZE, extra={"benchmark": "untrained"})
        out["parameters"] = int(built.count_params())
        out["galaxies"] = 0
    elif name == "score":
        from ifskeras.discovery.score import score_records

        shutil.rmtree(scores, ignore_errors=True)
        result = score_records(model, records, scores, batch_size=64, umap=True, seed=0, progress=False)
        out["galaxies"] = result.n_galaxies
        out["streaming_seconds"] = round(result.seconds, 2)
        out["bytes"] = _dir_bytes(scores)
    else:
        raise SystemExit(f"unknown stage {name!r}")
    out["seconds"] = round(time.perf_counter() - started, 2)
    out["peak_rss_mb"] = round(common.peak_rss_mb(), 1)
    return out


# ----------------------------------------------------------------------------- driver

def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 galaxies")
    parser.add_argument("--galaxies", type=int, help="default 10000; quick 1000")
    parser.add_argument("--work", type=Path, default=common.WORK_DIR / "scale")
    parser.add_argument("--keep", action="store_true", help="keep the survey, records and scores")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="full", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:  # child process: one stage, JSON on stdout
        print(json.dumps(stage(args.stage, args.work, args.n, args.tag)))
        return {}

    n = args.galaxies or (1000 if args.quick else 10000)
    tenth = max(50, n // 10)
    started = time.perf_counter()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    me = str(Path(__file__).resolve())
    plan = [("synth", n, "full"), ("convert", n, "full"), ("export", n, "full"), ("score", n, "full"),
            ("convert", tenth, "tenth"), ("score", tenth, "tenth")]
    stages: dict = {}
    try:
        for name, count, tag in plan:
            common.log(f"{name} {count} galaxies ({tag})")
            result = common.run_child([me, "--stage", name, "--work", str(work), "--n", str(count), "--tag", tag])
            if result.get("galaxies"):
                result["galaxies_per_s"] = round(result["galaxies"] / result["seconds"], 1)
            stages[f"{name}" if tag == "full" else f"{name}_{tag}"] = result
            common.log(f"  {result['seconds']} s in stage ({result['child_wall_seconds']} s process), "
                       f"peak RSS {result['peak_rss_mb']} MB main, {result['tree_peak_rss_mb']} MB tree")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    memory_growth = {
        name: round(stages[name]["tree_peak_rss_mb"] / stages[f"{name}_tenth"]["tree_peak_rss_mb"], 2)
        for name in ("convert", "score")
    }
    total = sum(stages[name]["child_wall_seconds"] for name in ("synth", "convert", "export", "score"))
    results = {
        "settings": {"galaxies": n, "tenth": tenth, "size": SIZE, "lines": 19, "convert_jobs": 2,
                     "model": "default AE (filters 16,32; latent 32), untrained, exported SavedModel",
                     "score": "score_records: batch 64, k=10, UMAP seed 0 (1 thread), CSV+FITS"},
        "stages": stages,
        "end_to_end_seconds": round(total, 1),
        "tree_peak_rss_full_over_tenth": memory_growth,
    }
    rows = []
    for name in ("synth", "convert", "export", "score"):
        s = stages[name]
        rate = f", {s['galaxies_per_s']:.0f} galaxies/s" if s.get("galaxies_per_s") else ""
        extra = ""
        if name == "convert":
            extra = (f"; of which reading, gridding and writing {s['convert_seconds']} s "
                     "(the rest: planning, i.e. reading every header, and writer start-up)")
        if name == "score":
            extra = (f"; of which batches through the endpoint {s['streaming_seconds']} s, the rest SavedModel "
                     "load, k-NN, UMAP (incl. numba compilation) and files")
        what = (f"untrained default AE, {s['parameters']:,} parameters, 19x{SIZE}x{SIZE}" if name == "export"
                else f"{n:,} galaxies, 19x{SIZE}x{SIZE}")
        rows.append(common.row(
            f"scale: {name} ({what})", s["seconds"], unit="s",
            note=f"peak RSS {s['peak_rss_mb']:.0f} MB (tree {s['tree_peak_rss_mb']:.0f} MB){rate}{extra}"))
    rows.append(common.row(f"scale: end to end, {n:,} galaxies (4 processes, start-up included)", round(total, 1),
                           unit="s", note="information (absolute, shared machine)"))
    for name, ratio in memory_growth.items():
        rows.append(common.row(f"scale: {name} peak memory, {n:,} / {tenth:,} galaxies", ratio,
                               note="~1 = memory does not grow with the survey"))
    results["rows"] = rows
    path = common.write_result("scale", results, mode="quick" if args.quick else "full", started=started)
    common.log(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
