"""Speed of the records layer against plain astropy, written to benchmarks/results/records.json.

Measures, on a synthetic survey (``ifskeras.survey.synth.make_survey``, gzipped DR15-like files):

1. ``ifskeras convert --jobs 1`` against only reading the same three HDUs
   (EMLINE_GFLUX, _IVAR, _MASK) with astropy: target convert <= 1.3 x read time;
2. ``--jobs 2`` against ``--jobs 1``: target >= 1.7 x faster;
3. the tf.data reader against loading the same galaxies from their MAPS files every
   epoch, as a research script does (astropy opens each ``.fits.gz``, 19 channels by
   name, mask, the same grid): target >= 20 x more samples/s for the training view
   (``make_dataset`` as ``fit`` calls it, with ``fit``'s cache decision, and
   ``GalaxyAugment`` on each [B, 19, 64, 64, 1] batch as ``fit``'s step runs it).
   Like ``fit``, each view is one long-lived iterator; windows of batches alternate
   with research-script epochs, and each ratio is the median over repeats of the
   ratio within a repeat. Also: the same view read from disk every epoch (no cache),
   all features without augmentation, ``ifskeras.survey.maps.read_maps`` (which decompresses
   in memory, about 2x faster than astropy's streamed gzip) as a stricter baseline;
4. worker start-up of each multiprocessing start method, with TensorFlow loaded.

Conversion timings are the best of ``--repeats`` runs (the machine may be shared). Run:
``python benchmarks/bench_records.py`` (160 galaxies).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "records.json"
TARGETS = {"convert_over_read": 1.3, "jobs2_speedup": 1.7, "reader_speedup": 20.0}


def _trivial(value: int) -> int:
    return value


def _best(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def _make_survey(directory: Path, n: int) -> list[Path]:
    from ifskeras.survey.synth import make_survey

    return sorted(make_survey(directory, n, seed=7).paths)


def _read_three_hdus(paths) -> None:
    from astropy.io import fits

    for path in paths:
        with fits.open(path, memmap=False) as hdul:
            for name in ("EMLINE_GFLUX", "EMLINE_GFLUX_IVAR", "EMLINE_GFLUX_MASK"):
                _ = hdul[name].data


def _research_script_epoch(paths, size: int) -> None:
    """One epoch of what a research script does: astropy on each file, channels by name, mask, grid."""
    import numpy as np
    from astropy.io import fits

    from ifskeras.survey.lines import DEFAULT_LINES
    from ifskeras.survey.maps import DAP_MASK_BITS, channel_names
    from ifskeras.survey.preprocess import to_grid

    reject = (1 << DAP_MASK_BITS["NOCOV"]) | (1 << DAP_MASK_BITS["DONOTUSE"])
    for path in paths:
        with fits.open(path) as hdul:
            names = channel_names(hdul["EMLINE_GFLUX"].header)
            channels = [names.index(line) for line in DEFAULT_LINES]
            flux = hdul["EMLINE_GFLUX"].data[channels].astype(np.float32)
            ivar = hdul["EMLINE_GFLUX_IVAR"].data[channels].astype(np.float32)
            mask = hdul["EMLINE_GFLUX_MASK"].data[channels]
        valid = ((mask & reject) == 0) & (ivar > 0) & np.isfinite(flux) & np.isfinite(ivar)
        to_grid(np.where(valid, flux, 0), np.where(valid, ivar, 0), valid, size)


def _load_from_maps(paths, size: int) -> None:
    from ifskeras.survey.maps import read_maps
    from ifskeras.survey.preprocess import to_grid

    for path in paths:
        maps = read_maps(path)
        to_grid(maps.flux, maps.ivar, maps.valid, size)


#: Batches discarded at the start of each window: prefetched while something else ran.
_SKIPPED_BATCHES = 4


def _measure_reader(records: Path, paths: list[Path], *, size: int, batch_size: int, repeats: int,
                    window_passes: int) -> dict:
    """The reader's views against the research script, alternating, in this process.

    Views, each one long-lived iterator as ``fit`` keeps: ``fit_view`` (``fit``'s cache
    decision, no ivar, ``GalaxyAugment`` in a ``tf.function`` as in ``fit``'s step),
    ``fit_view_uncached`` (the same, read from disk every pass) and ``all_features``
    (flux, ivar and valid from disk, no augmentation).
    """
    import tensorflow as tf

    from ifskeras.learning.augment import GalaxyAugment
    from ifskeras.learning.config import TrainConfig
    from ifskeras.records import load_manifest, make_dataset
    from ifskeras.learning.cache import available_memory_bytes, decide_cache

    manifest = load_manifest(records)
    n = manifest.examples("train")
    # The decision fit takes for these records with its default epoch count.
    cache, cache_reason = decide_cache(manifest, None, num_workers=1, examples_read=TrainConfig().epochs * n,
                                       available_bytes=available_memory_bytes())
    augment = GalaxyAugment(dihedral=True)  # the default training augmentation

    @tf.function
    def augmented(batch, step):
        flux, _, valid = augment(batch["flux"], None, batch["valid"], training=True,
                                 seed=tf.stack([tf.constant(0), step]))
        return tf.reduce_sum(flux) + tf.reduce_sum(valid)

    @tf.function
    def touched(batch, step):
        return tf.reduce_sum(batch["flux"]) + tf.reduce_sum(batch["ivar"]) + tf.reduce_sum(batch["valid"])

    def view(with_ivar: bool, view_cache: bool):
        return iter(make_dataset(records, "train", batch_size=batch_size, training=True, repeat=True, seed=0,
                                 with_ivar=with_ivar, cache=view_cache))

    views = {
        "fit_view": (view(False, cache), augmented),
        "fit_view_uncached": (view(False, False), augmented),
        "all_features": (view(True, False), touched),
    }
    steps = iter(range(10**9))

    def window(name: str, batches: int) -> float:
        iterator, consume = views[name]
        for _ in range(_SKIPPED_BATCHES):
            consume(next(iterator), tf.constant(next(steps))).numpy()
        started = time.perf_counter()
        for _ in range(batches):
            consume(next(iterator), tf.constant(next(steps))).numpy()
        return batches * batch_size / (time.perf_counter() - started)

    for name in views:  # traces, and fills the cache: the first pass reads the disk
        window(name, n // batch_size + 1)
    batches = max(8, window_passes * n // batch_size)
    per_repeat = []
    for _ in range(repeats):
        row = {}
        started = time.perf_counter()
        _research_script_epoch(paths, size)
        row["research_script"] = len(paths) / (time.perf_counter() - started)
        started = time.perf_counter()
        _load_from_maps(paths, size)
        row["read_maps"] = len(paths) / (time.perf_counter() - started)
        for name in views:
            row[name] = window(name, batches)
        per_repeat.append({k: round(v, 1) for k, v in row.items()})
    return {
        "cache": cache,
        "cache_reason": cache_reason,
        "batches_per_window": batches,
        "per_repeat": per_repeat,
        "peak_rss_mb": round(common.peak_rss_mb()),
    }


def _ratios(per_repeat: list[dict], numerator: str, denominator: str) -> dict:
    """common.ratio_summary of two series of the per-repeat rows."""
    return common.ratio_summary([row[numerator] for row in per_repeat], [row[denominator] for row in per_repeat],
                                digits=1)


@contextlib.contextmanager
def _gzip_in_memory():
    """What-if: astropy reads gzipped files from one in-memory decompression.

    astropy streams ``.fits.gz`` through ``gzip.GzipFile`` and seeks back and forth;
    decompressing once with zlib and parsing from memory is about 3x faster. This
    patches ``astropy.io.fits.open`` for the duration only, in this process (jobs=1).
    """
    from astropy.io import fits

    original = fits.open

    def open_from_memory(name, *args, **kwargs):
        if isinstance(name, (str, os.PathLike)) and str(name).endswith(".gz"):
            name = io.BytesIO(gzip.decompress(Path(name).read_bytes()))
        return original(name, *args, **kwargs)

    fits.open = open_from_memory
    try:
        yield
    finally:
        fits.open = original


def _worker_start_seconds(method: str) -> float:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    started = time.perf_counter()
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method)) as pool:
        list(pool.map(_trivial, range(2)))
    return time.perf_counter() - started


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galaxies", type=int, default=160)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--passes", type=int, default=10, help="passes over the records per reader window")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-records-"))
    try:
        paths = _make_survey(work / "maps", args.galaxies)
        import tensorflow as tf  # loaded once, outside every timing (conversion itself never imports it)

        from ifskeras.records import ConvertOptions, convert_maps

        options = ConvertOptions(size=args.size, val_fraction=0.0, test_fraction=0.0)
        _read_three_hdus(paths)  # warm the page cache for everybody
        read = _best(args.repeats, lambda: _read_three_hdus(paths))

        def convert(jobs: int):
            out = work / f"records-{jobs}"
            shutil.rmtree(out, ignore_errors=True)
            return convert_maps(paths, out, options, jobs=jobs)

        convert_1 = _best(args.repeats, lambda: convert(1))
        convert_2 = _best(args.repeats, lambda: convert(2))
        phase_2 = convert(2).convert_seconds
        with _gzip_in_memory():
            convert_1_fast_gzip = _best(args.repeats, lambda: convert(1))
        starts = {method: round(_worker_start_seconds(method), 3) for method in ("forkserver", "spawn", "fork")}

        records = work / "records-1"
        convert(1)
        reader = _measure_reader(records, paths, size=args.size, batch_size=args.batch_size,
                                 repeats=args.repeats, window_passes=args.passes)

        n = len(paths)
        per_repeat = reader["per_repeat"]
        results = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "tensorflow": tf.__version__, "platform": platform.platform(),
                        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                        "note": "load average above ~1 means other processes shared the CPUs"},
            "survey": {"galaxies": n, "files": "ifskeras.survey.synth gzipped DR15 MAPS",
                       "mean_file_bytes": int(sum(p.stat().st_size for p in paths) / n)},
            "size": args.size,
            "batch_size": args.batch_size,
            "read_three_hdus": {"seconds": round(read, 3), "galaxies_per_s": round(n / read, 1)},
            "convert_jobs1": {"seconds": round(convert_1, 3), "galaxies_per_s": round(n / convert_1, 1)},
            "convert_jobs2": {"seconds": round(convert_2, 3), "galaxies_per_s": round(n / convert_2, 1),
                              "seconds_without_planning": round(phase_2, 3)},
            "convert_over_read": round(convert_1 / read, 2),
            "what_if_read_maps_decompressed_gzip_in_memory": {
                "convert_jobs1_seconds": round(convert_1_fast_gzip, 3),
                "convert_over_read": round(convert_1_fast_gzip / read, 2),
            },
            "jobs2_speedup": round(convert_1 / convert_2, 2),
            "reader": {
                "what": (f"samples/s, one long-lived iterator per view, windows of {args.passes} passes alternating "
                         "with research-script epochs; fit_view: make_dataset as fit calls it (fit's cache "
                         "decision, no ivar) + GalaxyAugment (dihedral) in a tf.function; fit_view_uncached: the "
                         "same read from disk every pass; all_features: flux, ivar, valid from disk, no "
                         "augmentation; research_script: astropy fits.open(.fits.gz), 19 channels by name, mask, "
                         "ifskeras.survey.preprocess.to_grid, per galaxy; read_maps: ifskeras.survey.maps.read_maps + to_grid"),
                "median_samples_per_s": {key: round(common.median([row[key] for row in per_repeat]), 1)
                                         for key in per_repeat[0]},
                **reader,
            },
            "reader_speedup": _ratios(per_repeat, "fit_view", "research_script"),
            "reader_speedup_uncached": _ratios(per_repeat, "fit_view_uncached", "research_script"),
            "reader_speedup_all_features": _ratios(per_repeat, "all_features", "research_script"),
            "reader_speedup_over_read_maps": _ratios(per_repeat, "fit_view", "read_maps"),
            "worker_start_seconds": starts,
            "targets": TARGETS,
        }
        met = {
            "convert_over_read": results["convert_over_read"] <= TARGETS["convert_over_read"],
            "jobs2_speedup": results["jobs2_speedup"] >= TARGETS["jobs2_speedup"],
            "reader_speedup": results["reader_speedup"]["ratio"] >= TARGETS["reader_speedup"],
        }
        results["meets_targets"] = met
        medians = results["reader"]["median_samples_per_s"]

        def spread(key: str) -> str:
            return f"range {results[key]['ratio_min']}-{results[key]['ratio_max']} over {args.repeats} repeats"

        cached = "records cached in memory after the first pass" if reader["cache"] else "records read from disk"
        results["rows"] = [
            common.row("records: convert --jobs 1 / reading the 3 HDUs with astropy (time)",
                       results["convert_over_read"], target=f"<= {TARGETS['convert_over_read']}",
                       met=met["convert_over_read"],
                       note=f"{results['convert_jobs1']['galaxies_per_s']:.0f} vs "
                            f"{results['read_three_hdus']['galaxies_per_s']:.0f} galaxies/s"),
            common.row("records: convert --jobs 2 speed-up over --jobs 1", results["jobs2_speedup"],
                       target=f">= {TARGETS['jobs2_speedup']}", met=met["jobs2_speedup"],
                       note=f"{results['convert_jobs2']['galaxies_per_s']:.0f} vs "
                            f"{results['convert_jobs1']['galaxies_per_s']:.0f} galaxies/s, {n} galaxies"),
            common.row("records: augmented training batches as fit makes them / research script reading the MAPS "
                       "files each epoch",
                       results["reader_speedup"]["ratio"], target=f">= {TARGETS['reader_speedup']}",
                       met=met["reader_speedup"],
                       note=f"{medians['fit_view']:.0f} vs {medians['research_script']:.0f} samples/s; {cached} "
                            f"(fit's default: {reader['cache_reason']}); {spread('reader_speedup')}"),
            common.row("records: the same, read from disk every epoch (--no-cache) / research script",
                       results["reader_speedup_uncached"]["ratio"],
                       note=f"information; {medians['fit_view_uncached']:.0f} samples/s; "
                            f"{spread('reader_speedup_uncached')}"),
            common.row("records: all features from disk, no augmentation / research script",
                       results["reader_speedup_all_features"]["ratio"],
                       note=f"information; {medians['all_features']:.0f} samples/s"),
            common.row("records: augmented training batches as fit makes them / ifskeras read_maps + grid each epoch",
                       results["reader_speedup_over_read_maps"]["ratio"],
                       note=f"information, a stricter baseline; read_maps {medians['read_maps']:.0f} samples/s"),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
