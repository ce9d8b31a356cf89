"""Scoring throughput: the exported SavedModel against the in-process Keras model; UMAP and k-NN.

Written to ``benchmarks/results/scoring.json``.

1. ``savedmodel_vs_keras`` (target >= 0.9): samples/s of ``tf.saved_model.load(dir).score``
   (the endpoint ``ifskeras score`` uses) against ``tf.function(model.score)`` of the
   in-process Keras model, traced with the same input signature ([None, L, S, S, 1]),
   on the same in-memory batches of the same size; timed alternately, median of the
   per-repeat ratios. The model is the default architecture, untrained (the weights'
   values do not change the work).
2. ``latent_tools`` (information): wall time of UMAP (as ``score_records`` runs it:
   ``random_state`` set, hence single-threaded) and of ``knn_latent_scores`` (k=10,
   80% of galaxies as the reference set) on 1,000 and 10,000 latents of dimension 32
   drawn from a Gaussian mixture. UMAP's first call pays numba compilation; it is timed
   separately on a small warm-up set.

Run: ``python benchmarks/bench_scoring.py [--quick]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

common.quiet_tensorflow()

TARGET_SAVEDMODEL_RATIO = 0.9


def savedmodel_vs_keras(kind: str, *, size: int, num_lines: int, batch: int, batches: int, repeats: int,
                        work: Path) -> dict:
    import numpy as np
    import tensorflow as tf

    from ifskeras.learning.config import ModelConfig
    from ifskeras.learning.export import export_model
    from ifskeras.learning.models import build_model

    model = build_model(ModelConfig(kind=kind), num_lines=num_lines, size=size)
    model(tf.zeros([1, num_lines, size, size, 1]), training=False)
    lines = [f"L{i}" for i in range(num_lines)]
    out_dir = work / f"model-{kind}-{size}"
    shutil.rmtree(out_dir, ignore_errors=True)
    export_seconds, _ = common.timed(lambda: export_model(model, out_dir, lines=lines, size=size))
    load_seconds, loaded = common.timed(lambda: tf.saved_model.load(str(out_dir)))

    spec = tf.TensorSpec([None, num_lines, size, size, 1], tf.float32)
    in_process = tf.function(lambda flux, valid: dict(model.score(flux, valid)), input_signature=[spec, spec])
    rng = np.random.default_rng(0)
    shape = (batch, num_lines, size, size, 1)
    data = [(tf.constant(rng.lognormal(-1.0, 1.0, shape).astype("float32")),
             tf.constant((rng.random(shape) > 0.2).astype("float32"))) for _ in range(batches)]

    def consume(out):
        # What score_records reads back from every batch.
        for key in ("anomaly_score", "line_error", "latent_mean"):
            out[key].numpy()

    def run(fn):
        def go() -> int:
            for flux, valid in data:
                consume(fn(flux, valid))
            return batches * batch
        return go

    rates = common.interleaved_rates({"savedmodel": run(loaded.score), "keras": run(in_process)}, repeats)
    # Same numbers out of both (sanity check of the comparison).
    a, b = loaded.score(*data[0]), in_process(*data[0])
    max_diff = float(np.max(np.abs(a["anomaly_score"].numpy() - b["anomaly_score"].numpy())))
    return {
        **common.ratio_summary(rates["savedmodel"], rates["keras"]),
        "savedmodel_samples_per_s": [round(r, 1) for r in rates["savedmodel"]],
        "keras_samples_per_s": [round(r, 1) for r in rates["keras"]],
        "export_seconds": round(export_seconds, 2),
        "load_seconds": round(load_seconds, 2),
        "max_abs_score_difference": max_diff,
        "what": f"{kind} 19x{size}x{size}, {batches} batches of {batch} per block, {repeats} interleaved blocks",
    }


def _mixture(n: int, dim: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, (8, dim))
    labels = rng.integers(0, 8, n)
    return (centres[labels] + rng.normal(0.0, 1.0, (n, dim))).astype("float32")


def _umap_function():
    try:
        from ifskeras.discovery.score import _umap  # what score_records runs

        return lambda z: _umap(z, seed=0)
    except ImportError:  # pragma: no cover - fall back to the same settings
        import umap

        return lambda z: umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=0, n_jobs=1).fit_transform(z)


def latent_tools(sizes, *, dim: int, umap_repeats: int, knn_repeats: int) -> dict:
    import numpy as np

    from ifskeras.discovery.neighbours import knn_latent_scores

    umap_fn = _umap_function()
    warm_seconds, _ = common.timed(lambda: umap_fn(_mixture(300, dim, seed=1)))
    out = {"umap_first_call_seconds_300_points": round(warm_seconds, 2), "dim": dim, "by_n": {}}
    for n in sizes:
        z = _mixture(n, dim)
        mask = np.random.default_rng(1).random(n) < 0.8
        knn = [common.timed(lambda: knn_latent_scores(z, k=10, fit_mask=mask))[0] for _ in range(knn_repeats)]
        umap_times = [common.timed(lambda: umap_fn(z))[0] for _ in range(umap_repeats)]
        out["by_n"][str(n)] = {
            "knn_seconds": round(common.median(knn), 3),
            "knn_galaxies_per_s": round(n / common.median(knn), 0),
            "umap_seconds": round(common.median(umap_times), 2),
            "umap_galaxies_per_s": round(n / common.median(umap_times), 0),
            "repeats": {"knn": knn_repeats, "umap": umap_repeats},
        }
        common.log(f"  n={n}: knn {out['by_n'][str(n)]['knn_seconds']} s, umap {out['by_n'][str(n)]['umap_seconds']} s")
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+", help="map sizes (default 64 32; quick 32)")
    parser.add_argument("--batch-size", type=int, default=64, help="as score_records")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--latents", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args(argv)
    quick = args.quick
    sizes = args.sizes or ([32] if quick else [64, 32])
    repeats = args.repeats or (5 if quick else 7)
    started = time.perf_counter()
    work = common.WORK_DIR / "scoring"
    work.mkdir(parents=True, exist_ok=True)

    results: dict = {"settings": {"sizes": sizes, "batch_size": args.batch_size, "repeats": repeats,
                                  "latents": args.latents}}
    rows = []
    results["savedmodel_vs_keras"] = {}
    for size in sizes:
        for kind in ("ae", "vae"):
            common.log(f"SavedModel vs Keras score: {kind} {size}x{size}")
            batches = 2 if size >= 64 else 4
            out = savedmodel_vs_keras(kind, size=size, num_lines=19, batch=args.batch_size, batches=batches,
                                      repeats=repeats, work=work)
            results["savedmodel_vs_keras"][f"{kind}_{size}"] = out
            common.log(f"  ratio {out['ratio']} ({out['ratios']})")
            rows.append(common.row(
                f"scoring: SavedModel score / in-process Keras score, {kind.upper()} 19x{size}x{size}", out["ratio"],
                target=f">= {TARGET_SAVEDMODEL_RATIO}", met=out["ratio"] >= TARGET_SAVEDMODEL_RATIO,
                note=f"SavedModel {out['numerator_median']:.0f} vs Keras {out['denominator_median']:.0f} samples/s, "
                     f"batch {args.batch_size} "
                     f"(range {out['ratio_min']}-{out['ratio_max']})"))
    common.log("UMAP and k-NN")
    tools = latent_tools(args.latents, dim=32, umap_repeats=1 if quick else 2, knn_repeats=3)
    results["latent_tools"] = tools
    for n, values in tools["by_n"].items():
        rows.append(common.row(f"scoring: UMAP of {int(n):,} latents (dim 32, seeded = 1 thread)",
                               values["umap_seconds"], unit="s", note="information"))
        rows.append(common.row(f"scoring: k-NN score (k=10) of {int(n):,} latents", values["knn_seconds"], unit="s",
                               note="information"))
    results["rows"] = rows
    path = common.write_result("scoring", results, mode="quick" if quick else "full", started=started)
    common.log(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
