"""Training throughput: the ifskeras ``fit`` path against plain Keras ``model.fit``, and its parts.

Written to ``benchmarks/results/training.json``. All results are ratios of two
things timed alternately in one process (see ``common.py``):

1. ``fit_vs_plain`` (target >= 0.95): ``ifskeras.learning.train.fit`` (records -> tf.data ->
   on-device augmentation -> custom tf.distribute loop) against the same model
   (``build_model``, same loss maths via ``per_example_losses``) trained with plain
   Keras ``model.fit`` on in-memory numpy arrays, no augmentation, ``jit_compile=False``.
   Interleaved by epoch: a plain epoch runs inside ``fit``'s ``on_epoch_end`` hook, so
   the sequence is P0 F0 P1' P1 F1 P2 ... Fn P(n+1); the first epoch of each (tracing)
   and P1' (a retrace: ``fit`` calls ``keras.utils.set_random_seed``, and the global
   seed is part of every tf.function's cache key) are dropped, and F_k is compared
   with the mean of its neighbours P_k and P(k+1).
   Both run with op determinism on (the ``fit`` default), set before either starts.
2. ``pipeline_vs_model`` (target >= 10, i.e. the input pipeline is never the
   bottleneck): records -> ``make_dataset`` -> ``GalaxyAugment`` batches/s against
   the model's train step alone on a fixed in-memory batch (with and without the
   augmentation inside the step).
3. ``variants`` (information): model train step alone, AE vs VAE, float32 vs
   mixed_bfloat16, interleaved.
4. ``jit`` (information): the augmented train step with and without XLA at 16, 32
   (and 64) pixels, interleaved; ``fit`` with ``jit_compile=True`` is also tried at
   the smallest size (each fit normalised by interleaved plain-Keras epochs).
5. ``determinism`` (decides ``TrainConfig.deterministic``'s default): ``fit`` with and
   without ``enable_op_determinism``. The switch is process-wide and irreversible, so
   each side runs in fresh processes, alternated on, off, on, off...; each process
   reports the median samples/s of its epochs after the first (tracing).

Run: ``python benchmarks/bench_training.py [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

common.quiet_tensorflow()

TARGET_FIT_RATIO = 0.95
TARGET_PIPELINE_RATIO = 10.0


# ----------------------------------------------------------------------------- data

def prepare_records(work: Path, galaxies: int, sizes) -> dict[int, Path]:
    """A synthetic survey converted at each size (train split only); reused when present."""
    from ifskeras.records import ConvertOptions, convert_maps, load_manifest
    from ifskeras.survey.synth import make_survey

    maps = work / f"maps-{galaxies}"
    if not (maps / "catalog.csv").exists():
        common.log(f"synthesising {galaxies} galaxies")
        shutil.rmtree(maps, ignore_errors=True)
        make_survey(maps, galaxies, seed=11)
    out = {}
    for size in sizes:
        records = work / f"records-{galaxies}-{size}"
        try:
            ok = load_manifest(records).examples("train") == galaxies
        except Exception:  # noqa: BLE001 - missing or stale
            ok = False
        if not ok:
            common.log(f"converting to {size}x{size}")
            shutil.rmtree(records, ignore_errors=True)
            convert_maps([maps], records, ConvertOptions(size=size, val_fraction=0.0, test_fraction=0.0), jobs=2)
        out[size] = records
    return out


def load_arrays(records: Path, n: int) -> dict:
    """``n`` galaxies of the train split as numpy arrays (repeating the split as needed)."""
    import numpy as np

    from ifskeras.records import make_dataset

    parts = {"flux": [], "ivar": [], "valid": []}
    for batch in make_dataset(records, "train", batch_size=64, training=False):
        for key in parts:
            parts[key].append(batch[key].numpy())
    arrays = {key: np.concatenate(value) for key, value in parts.items()}
    reps = -(-n // len(arrays["flux"]))
    return {key: np.ascontiguousarray(np.concatenate([value] * reps)[:n]) for key, value in arrays.items()}


# ----------------------------------------------------------------------------- plain Keras

def make_plain_model(inner):
    """The ifskeras model wrapped for plain ``model.fit``: same loss maths, no augmentation."""
    import keras
    import tensorflow as tf

    class PlainFit(keras.Model):
        def __init__(self, model, **kwargs):
            super().__init__(**kwargs)
            self.inner = model
            self.loss_tracker = keras.metrics.Mean(name="plain_loss")
            self.built = True

        def call(self, inputs, training=False):
            return self.inner(inputs["flux"], training=training)

        def train_step(self, data):
            x = data[0] if isinstance(data, tuple) else data
            with tf.GradientTape() as tape:
                losses = self.inner.per_example_losses(x["flux"], x["ivar"], x["valid"], training=True)
                loss = tf.reduce_mean(losses["loss"])  # == compute_average_loss(..., global_batch) on one device
                scaled = self.optimizer.scale_loss(loss)
            variables = self.inner.trainable_variables
            gradients = tape.gradient(scaled, variables)
            self.optimizer.apply_gradients(zip(gradients, variables))
            self.loss_tracker.update_state(loss)
            return {"plain_loss": self.loss_tracker.result()}

        @property
        def metrics(self):
            return [self.loss_tracker]

    return PlainFit(inner)


class _EpochClock:
    def __init__(self):
        import keras

        class Clock(keras.callbacks.Callback):
            def on_epoch_begin(inner, epoch, logs=None):  # noqa: N805
                self.started = time.perf_counter()

            def on_epoch_end(inner, epoch, logs=None):  # noqa: N805
                self.seconds = time.perf_counter() - self.started

        self.callback = Clock()
        self.started = self.seconds = 0.0


def plain_runner(config, *, num_lines, size, arrays, steps, total_epochs, jit=False):
    """A callable running one plain ``model.fit`` epoch and returning its samples/s."""
    import keras

    from ifskeras.learning.models import build_model

    batch = config.train.batch_size
    model = make_plain_model(build_model(config.model, num_lines=num_lines, size=size))
    schedule = keras.optimizers.schedules.CosineDecay(
        config.train.learning_rate, decay_steps=max(1, total_epochs * steps), alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), jit_compile=jit)
    clock = _EpochClock()

    def epoch() -> float:
        model.fit(arrays, batch_size=batch, epochs=1, shuffle=True, verbose=0, callbacks=[clock.callback])
        return steps * batch / clock.seconds

    return epoch


# ----------------------------------------------------------------------------- 1. fit vs plain fit

def fit_vs_plain(records: Path, config, *, steps: int, pairs: int, run_dir: Path, reference_config=None) -> dict:
    """``ifskeras.learning.train.fit`` samples/s over plain ``model.fit`` samples/s, interleaved by epoch."""
    import keras
    import tensorflow as tf

    from ifskeras.records import load_manifest
    from ifskeras.learning.train import fit

    manifest = load_manifest(records)
    num_lines, size = int(manifest.shape[0]), int(manifest.shape[1])
    batch = config.train.batch_size
    reference_config = reference_config or config
    arrays = load_arrays(records, steps * batch)
    # The fit default (deterministic=True) turns op determinism on for the process: do it
    # before the first plain epoch so both sides always run under the same setting.
    keras.utils.set_random_seed(config.train.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    plain_epoch = plain_runner(reference_config, num_lines=num_lines, size=size, arrays=arrays,
                               steps=steps, total_epochs=pairs + 2)
    plain_rates = [plain_epoch()]  # P0: tracing, dropped
    fit_rates: list[float] = []

    def on_epoch_end(row):
        fit_rates.append(row["samples_per_second"])
        if len(fit_rates) == 1:
            # fit() called keras.utils.set_random_seed, which makes every tf.function
            # retrace (the global seed is part of its cache key): one more untimed epoch.
            plain_epoch()
        plain_rates.append(plain_epoch())

    run_config = config.override(train={"epochs": pairs + 1, "steps_per_epoch": steps, "early_stopping_patience": 0})
    started = time.perf_counter()
    fit(records, run_dir, run_config, overwrite=True, export=False, on_epoch_end=on_epoch_end, progress=False)
    seconds = time.perf_counter() - started
    neighbours = [(plain_rates[k] + plain_rates[k + 1]) / 2 for k in range(1, pairs + 1)]
    summary = common.ratio_summary(fit_rates[1:], neighbours)
    return {
        **summary,
        "fit_samples_per_s": [round(r, 2) for r in fit_rates],
        "plain_samples_per_s": [round(r, 2) for r in plain_rates],
        "what": f"{pairs} measured epochs of {steps} steps x batch {batch} each side; epoch 0 of each dropped",
        "wall_seconds": round(seconds, 1),
    }


# ----------------------------------------------------------------------------- 2. pipeline vs model step

def _train_step_functions(model, augment, optimizer, batch_size, *, jit=False):
    """``fit``'s own per-replica train step (``ifskeras.learning.steps``) without a strategy,
    as ``step(flux, ivar, valid, seed) -> loss``: without and with augmentation.

    With ``jit``, as ``fit(jit_compile=True)`` does, only the forward and backward pass
    (losses and gradients) is XLA-compiled; augmentation and the optimizer update are not.
    """
    import tensorflow as tf

    from ifskeras.learning.steps import replica_train_step

    def build(augment_inputs: bool):
        body = replica_train_step(model, optimizer, augment, global_batch=batch_size, run_seed=0,
                                  jit_compile=jit, augment_inputs=augment_inputs)

        @tf.function
        def step(flux, ivar, valid, seed):
            return body({"flux": flux, "ivar": ivar, "valid": valid}, seed[1])["loss"]

        return step

    return build(False), build(True)


def _build_for_step(model_config, *, num_lines, size, precision="float32"):
    import keras
    import tensorflow as tf

    from ifskeras.learning.models import build_model

    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = build_model(model_config, num_lines=num_lines, size=size)
        model(tf.zeros([1, num_lines, size, size, 1]), training=False)
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(model.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return model, optimizer


def pipeline_vs_model(records: Path, config, *, repeats: int, batches_per_block: int, steps_per_block: int) -> dict:
    """Input pipeline alone (records -> augmented batches) against the model step alone."""
    import tensorflow as tf

    from ifskeras.learning.augment import GalaxyAugment
    from ifskeras.records import load_manifest, make_dataset

    manifest = load_manifest(records)
    num_lines, size = int(manifest.shape[0]), int(manifest.shape[1])
    batch = config.train.batch_size
    augment = GalaxyAugment.from_augment_config(config.augment)
    reads_ivar = config.model.ivar_weighting or config.augment.ivar_noise  # as fit decides
    dataset = make_dataset(records, "train", batch_size=batch, training=True, repeat=True, drop_remainder=True,
                           shuffle_buffer=config.train.shuffle_buffer, seed=config.train.seed, with_ivar=reads_ivar)
    iterator = iter(dataset)
    counter = tf.Variable(0, dtype=tf.int32)

    def touch(*tensors):
        # Reduce every output so nothing is pruned from the graph.
        return tf.add_n([tf.reduce_sum(t) for t in tensors if t is not None])

    @tf.function
    def pipeline_batch(iterator):
        data = next(iterator)
        counter.assign_add(1)
        return touch(*augment(data["flux"], data.get("ivar"), data["valid"], training=True,
                              seed=tf.stack([tf.constant(0, tf.int32), counter])))

    plain_iterator = iter(make_dataset(records, "train", batch_size=batch, training=True, repeat=True,
                                       drop_remainder=True, shuffle_buffer=config.train.shuffle_buffer,
                                       seed=config.train.seed, with_ivar=reads_ivar))

    @tf.function
    def tfdata_batch(iterator):
        data = next(iterator)
        return touch(data["flux"], data.get("ivar"), data["valid"])

    model, optimizer = _build_for_step(config.model, num_lines=num_lines, size=size)
    step, step_augmented = _train_step_functions(model, augment, optimizer, batch)
    fixed = next(iter(make_dataset(records, "train", batch_size=batch, training=False, with_ivar=reads_ivar)))
    flux, ivar, valid = fixed["flux"], fixed.get("ivar"), fixed["valid"]
    seed = tf.constant([0, 1], tf.int32)

    def run_pipeline() -> int:
        for _ in range(batches_per_block):
            pipeline_batch(iterator).numpy()
        return batches_per_block * batch

    def run_tfdata() -> int:
        for _ in range(batches_per_block):
            tfdata_batch(plain_iterator).numpy()
        return batches_per_block * batch

    def run_step() -> int:
        for _ in range(steps_per_block):
            step(flux, ivar, valid, seed).numpy()
        return steps_per_block * batch

    def run_step_augmented() -> int:
        for _ in range(steps_per_block):
            step_augmented(flux, ivar, valid, seed).numpy()
        return steps_per_block * batch

    rates = common.interleaved_rates(
        {"pipeline": run_pipeline, "tfdata": run_tfdata, "step": run_step, "step_augmented": run_step_augmented},
        repeats)
    pipeline = common.median(rates["pipeline"])
    tfdata = common.median(rates["tfdata"])
    step_rate = common.median(rates["step_augmented"])
    return {
        "pipeline_over_step": common.ratio_summary(rates["pipeline"], rates["step_augmented"], digits=1),
        "tfdata_over_step": common.ratio_summary(rates["tfdata"], rates["step_augmented"], digits=1),
        # Sharing the same cores, the step loses about the CPU time the input work takes:
        "expected_fit_slowdown_from_input_work": {
            "tfdata": round(step_rate / tfdata, 4),
            "augmentation": round(step_rate * (1 / pipeline - 1 / tfdata), 4),
            "what": "fraction of step time: samples/s of the step divided by samples/s of the input work alone",
        },
        "augmentation_cost": {
            **common.ratio_summary(rates["step_augmented"], rates["step"]),
            "what": "train step with GalaxyAugment inside / without (1.0 = free)",
        },
        "samples_per_s_median": {name: round(common.median(values), 1) for name, values in rates.items()},
        "what": (f"pipeline: make_dataset(training=True) + GalaxyAugment, {batches_per_block} batches per block "
                 "(tfdata: without GalaxyAugment); "
                 f"step: per_example_losses + gradients + Adam on one fixed batch of {batch}, "
                 f"{steps_per_block} steps per block; {repeats} interleaved blocks"),
    }


# ----------------------------------------------------------------------------- 2b. where fit's time goes

def loop_attribution(records: Path, config, *, steps: int, repeats: int) -> dict:
    """Diagnosis of ``fit_vs_plain``: the loop of ``ifskeras.learning.train`` rebuilt step by step, fed
    three ways, against the plain Keras ``train_function``; interleaved blocks of ``steps`` steps.

    - ``keras``: ``model.train_function`` of the plain wrapper over in-memory batches;
    - ``loop_records``: as ``fit`` (OneDeviceStrategy, ``distribute_datasets_from_function``
      over ``make_dataset``, ``GalaxyAugment`` with stateless seeds, losses reduced and read
      back every step);
    - ``loop_memory``: the same loop over the same galaxies from in-memory tensors;
    - ``loop_records_cached``: the same loop over ``make_dataset`` batches parsed once and cached.
    """
    import keras
    import tensorflow as tf

    from ifskeras.learning.augment import GalaxyAugment
    from ifskeras.learning.models import build_model
    from ifskeras.learning.steps import distributed_train_step, replica_train_step
    from ifskeras.records import load_manifest, make_dataset

    manifest = load_manifest(records)
    num_lines, size = int(manifest.shape[0]), int(manifest.shape[1])
    batch = config.train.batch_size
    n_train = manifest.examples("train")
    keras.utils.set_random_seed(config.train.seed)
    tf.config.experimental.enable_op_determinism()
    arrays = load_arrays(records, max(n_train, batch))

    def memory_dataset():
        return tf.data.Dataset.from_tensor_slices(arrays).repeat().batch(batch, drop_remainder=True).prefetch(2)

    def records_dataset():
        return make_dataset(records, "train", batch_size=batch, training=True, repeat=True, drop_remainder=True,
                            shuffle_buffer=config.train.shuffle_buffer, seed=config.train.seed)

    plain = make_plain_model(build_model(config.model, num_lines=num_lines, size=size))
    plain.compile(optimizer=keras.optimizers.Adam(config.train.learning_rate), jit_compile=False)
    plain.make_train_function()
    keras_iterator = iter(memory_dataset())

    def keras_run() -> int:
        for _ in range(steps):
            logs = plain.train_function(keras_iterator)
        float(logs["plain_loss"])
        return steps * batch

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")

    def ifskeras_loop(make):
        with strategy.scope():
            model = build_model(config.model, num_lines=num_lines, size=size)
            model(tf.zeros([1, num_lines, size, size, 1]), training=False)
            optimizer = keras.optimizers.Adam(config.train.learning_rate)
            optimizer.build(model.trainable_variables)
        augment = GalaxyAugment.from_augment_config(config.augment)
        iterator = iter(strategy.distribute_datasets_from_function(lambda context: make()))
        train_step = distributed_train_step(strategy, replica_train_step(
            model, optimizer, augment, global_batch=batch, run_seed=config.train.seed))

        counter = [0]

        def run() -> int:
            for _ in range(steps):
                values = train_step(iterator, tf.constant(counter[0], tf.int64))
                counter[0] += 1
                {k: float(v) for k, v in values.items()}
            return steps * batch

        return run

    cached_batches = max(1, n_train // batch)
    runs = {
        "keras": keras_run,
        "loop_records": ifskeras_loop(records_dataset),
        "loop_memory": ifskeras_loop(memory_dataset),
        "loop_records_cached": ifskeras_loop(lambda: records_dataset().take(cached_batches).cache().repeat()),
    }
    rates = common.interleaved_rates(runs, repeats)
    return {
        **{f"{name}_over_keras": common.ratio_summary(rates[name], rates["keras"])
           for name in ("loop_records", "loop_memory", "loop_records_cached")},
        "samples_per_s_median": {name: round(common.median(values), 1) for name, values in rates.items()},
        "what": f"{config.model.kind} 19x{size}x{size}, batch {batch}, {steps} steps per block, {repeats} interleaved blocks",
    }


# ----------------------------------------------------------------------------- 3. variants

def _fixed_step_inputs(config, *, num_lines: int, size: int):
    """One fixed random batch (flux, ivar, valid, seed) and the configured augmentation."""
    import numpy as np
    import tensorflow as tf

    from ifskeras.learning.augment import GalaxyAugment

    rng = np.random.default_rng(0)
    shape = (config.train.batch_size, num_lines, size, size, 1)
    inputs = (
        tf.constant(rng.lognormal(-1.0, 1.0, shape).astype("float32")),
        tf.constant(np.full(shape, 100.0, "float32")),
        tf.constant((rng.random(shape) > 0.1).astype("float32")),
        tf.constant([0, 1], tf.int32),
    )
    return inputs, GalaxyAugment.from_augment_config(config.augment)


def _repeated_step(step, inputs, steps: int, batch: int):
    """A timing block for ``common.interleaved_rates``: ``steps`` calls, returns samples done."""
    def run() -> int:
        for _ in range(steps):
            step(*inputs).numpy()
        return steps * batch

    return run


def step_variants(config, *, size: int, num_lines: int, repeats: int, steps_per_block: int) -> dict:
    """Model train step alone: AE vs VAE, float32 vs mixed_bfloat16 (interleaved)."""
    batch = config.train.batch_size
    inputs, augment = _fixed_step_inputs(config, num_lines=num_lines, size=size)
    runs = {}
    for kind in ("ae", "vae"):
        for precision in ("float32", "mixed_bfloat16"):
            model_config = config.override(model={"kind": kind}).model
            model, optimizer = _build_for_step(model_config, num_lines=num_lines, size=size, precision=precision)
            _, step = _train_step_functions(model, augment, optimizer, batch)
            runs[f"{kind}_{precision}"] = _repeated_step(step, inputs, steps_per_block, batch)
    rates = common.interleaved_rates(runs, repeats)
    return {
        "vae_over_ae_float32": common.ratio_summary(rates["vae_float32"], rates["ae_float32"]),
        "bf16_over_f32_ae": common.ratio_summary(rates["ae_mixed_bfloat16"], rates["ae_float32"]),
        "bf16_over_f32_vae": common.ratio_summary(rates["vae_mixed_bfloat16"], rates["vae_float32"]),
        "samples_per_s_median": {name: round(common.median(values), 1) for name, values in rates.items()},
        "what": f"augmented train step on a fixed batch of {batch} at {num_lines}x{size}x{size}, "
                f"{steps_per_block} steps per block, {repeats} interleaved blocks",
    }


# ----------------------------------------------------------------------------- 4. jit

def fit_jit_attempt(records: Path, config, *, steps: int, pairs: int, run_dir: Path) -> dict:
    """``fit(jit_compile=True)`` vs ``fit()``, each normalised by interleaved plain-Keras (no XLA) epochs."""
    started = time.perf_counter()
    try:
        jit = fit_vs_plain(records, config.override(train={"jit_compile": True}), steps=steps, pairs=pairs,
                           run_dir=run_dir / "jit", reference_config=config)
    except Exception as error:  # noqa: BLE001 - reported, not fatal: the step comparison still runs
        message = str(error).strip().splitlines()[0][:400]
        common.log(f"  fit(jit_compile=True) failed: {message[:200]}")
        return {"error": f"{type(error).__name__}: {message}"}
    plain = fit_vs_plain(records, config, steps=steps, pairs=pairs, run_dir=run_dir / "nojit")
    batch = config.train.batch_size
    return {
        "jit_over_nojit": round(jit["ratio"] / plain["ratio"], 3),
        "nojit_over_plain_keras": plain["ratio"],
        "jit_over_plain_keras": jit["ratio"],
        "jit_first_epoch_seconds_incl_compile": round(steps * batch / jit["fit_samples_per_s"][0], 1),
        "nojit_first_epoch_seconds_incl_trace": round(steps * batch / plain["fit_samples_per_s"][0], 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def step_jit(config, *, size: int, num_lines: int, steps: int, repeats: int) -> dict:
    """The augmented train step (the body ``fit`` runs) with and without XLA, interleaved."""
    batch = config.train.batch_size
    inputs, augment = _fixed_step_inputs(config, num_lines=num_lines, size=size)
    runs, first_call = {}, {}
    for name, jit_flag in (("nojit", False), ("jit", True)):
        model, optimizer = _build_for_step(config.model, num_lines=num_lines, size=size)
        _, step = _train_step_functions(model, augment, optimizer, batch, jit=jit_flag)
        first_call[name], _ = common.timed(lambda step=step: step(*inputs).numpy())
        runs[name] = _repeated_step(step, inputs, steps, batch)
    rates = common.interleaved_rates(runs, repeats, warmup=False)
    return {
        **common.ratio_summary(rates["jit"], rates["nojit"]),
        "first_call_seconds": {k: round(v, 1) for k, v in first_call.items()},
        "samples_per_s_median": {name: round(common.median(values), 1) for name, values in rates.items()},
        "what": f"{config.model.kind} 19x{size}x{size}, batch {batch}, {steps} steps per block, {repeats} "
                "interleaved blocks; < 1 means XLA is slower",
    }


# ----------------------------------------------------------------------------- 5. determinism

_DETERMINISM_CHILD = """
import json, statistics, sys
from ifskeras.learning.config import RunConfig
from ifskeras.learning.train import fit
config = RunConfig.from_dict(json.loads(sys.argv[3]))
result = fit(sys.argv[1], sys.argv[2], config, overwrite=True, export=False, progress=False)
rates = [row["samples_per_second"] for row in result.history[1:]]
print(json.dumps({"samples_per_s": statistics.median(rates)}))
"""


def determinism_cost(records: Path, config, *, steps: int, epochs: int, rounds: int, run_dir: Path) -> dict:
    """``fit`` samples/s with op determinism over without, fresh processes alternated."""
    import json

    rates: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(rounds):
        for name, flag in (("on", True), ("off", False)):
            run_config = config.override(train={"deterministic": flag, "epochs": epochs + 1, "steps_per_epoch": steps,
                                                "early_stopping_patience": 0})
            out = common.run_child(["-c", _DETERMINISM_CHILD, str(records), str(run_dir / name),
                                    json.dumps(run_config.to_dict())])
            rates[name].append(out["samples_per_s"])
    return {
        **common.ratio_summary(rates["on"], rates["off"]),
        "samples_per_s": {name: [round(r, 2) for r in values] for name, values in rates.items()},
        "what": f"{config.model.kind}, batch {config.train.batch_size}, {steps} steps x {epochs} measured epochs per "
                f"process, {rounds} alternated process pairs; < 1 means determinism costs speed (CPU only)",
    }


# ----------------------------------------------------------------------------- main

#: --skip option -> the results section it leaves out.
_SECTIONS = {"fit": "fit_vs_plain", "pipeline": "pipeline_vs_model", "attribution": "loop_attribution",
             "variants": "variants", "jit": "jit", "determinism": "determinism"}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="size 32 only, short runs (minutes)")
    parser.add_argument("--sizes", type=int, nargs="+", help="map sizes (default 64 32; quick 32)")
    parser.add_argument("--batch-size", type=int, help="default 32; quick 16")
    parser.add_argument("--steps", type=int, help="train steps per measured epoch")
    parser.add_argument("--pairs", type=int, help="measured epochs per side")
    parser.add_argument("--repeats", type=int, help="interleaved blocks in the step benchmarks")
    parser.add_argument("--galaxies", type=int, help="synthetic galaxies in the records")
    parser.add_argument("--jit-sizes", type=int, nargs="+", help="default 16 32 64; quick 16")
    parser.add_argument("--merge", action="store_true",
                        help="update only the sections run here in an existing results/training.json")
    parser.add_argument("--skip", nargs="*", default=[], choices=list(_SECTIONS))
    args = parser.parse_args(argv)
    quick = args.quick
    sizes = args.sizes or ([32] if quick else [64, 32])
    batch = args.batch_size or (16 if quick else 32)
    steps = args.steps or 6
    pairs = args.pairs or (6 if quick else 8)
    jit_sizes = args.jit_sizes or ([16] if quick else [16, 32, 64])
    repeats = args.repeats or (3 if quick else 5)
    galaxies = args.galaxies or (48 if quick else 128)
    started = time.perf_counter()

    from ifskeras.learning.config import RunConfig

    work = common.WORK_DIR / "training"
    work.mkdir(parents=True, exist_ok=True)
    records = prepare_records(work, galaxies, sorted(set(sizes) | {min(jit_sizes)}))
    base = RunConfig().override(train={"batch_size": batch})
    results: dict = {"settings": {"sizes": sizes, "batch_size": batch, "steps_per_epoch": steps, "pairs": pairs,
                                  "repeats": repeats, "galaxies": galaxies, "num_lines": 19,
                                  "model": dataclasses.asdict(base.model),
                                  "augment": dataclasses.asdict(base.augment)}}
    rows = []
    if "fit" not in args.skip:
        results["fit_vs_plain"] = {}
        for size in sizes:
            for kind in ("ae", "vae"):
                common.log(f"fit vs plain Keras fit: {kind} {size}x{size}")
                config = base.override(model={"kind": kind})
                # Short epochs at 64 px (about 10 s each), more of them: finer interleaving
                # against the machine's load changes, the same total time.
                size_steps, size_pairs = (steps, pairs) if size < 64 or args.steps else (max(2, steps // 2), pairs + 4)
                out = fit_vs_plain(records[size], config, steps=size_steps, pairs=size_pairs,
                                   run_dir=work / f"run-{kind}-{size}")
                results["fit_vs_plain"][f"{kind}_{size}"] = out
                common.log(f"  ratio {out['ratio']} ({out['ratios']})")
                rows.append(common.row(
                    f"training: ifskeras fit / plain Keras fit, {kind.upper()} 19x{size}x{size}", out["ratio"],
                    target=f">= {TARGET_FIT_RATIO}", met=out["ratio"] >= TARGET_FIT_RATIO,
                    note=f"fit {common.median(out['fit_samples_per_s'][1:]):.1f} vs plain "
                         f"{common.median(out['plain_samples_per_s'][1:]):.1f} samples/s (range {out['ratio_min']}-{out['ratio_max']})"))
    if "pipeline" not in args.skip:
        results["pipeline_vs_model"] = {}
        for size in sizes:
            common.log(f"pipeline vs model step: {size}x{size}")
            out = pipeline_vs_model(records[size], base, repeats=repeats, batches_per_block=20,
                                    steps_per_block=2 if size >= 64 else 3)
            results["pipeline_vs_model"][str(size)] = out
            ratio = out["pipeline_over_step"]["ratio"]
            common.log(f"  pipeline/step {ratio}, augmentation cost {out['augmentation_cost']['ratio']}")
            rows.append(common.row(
                f"training: input pipeline / model step (AE, 19x{size}x{size})", ratio,
                target=f">= {TARGET_PIPELINE_RATIO:g}", met=ratio >= TARGET_PIPELINE_RATIO,
                note=f"pipeline {out['samples_per_s_median']['pipeline']:.0f} vs step "
                     f"{out['samples_per_s_median']['step_augmented']:.1f} samples/s"))
            expected = out["expected_fit_slowdown_from_input_work"]
            rows.append(common.row(
                f"training: step with augmentation / without (AE, 19x{size}x{size})", out["augmentation_cost"]["ratio"],
                note=f"information; from the rates alone, input work costs the step about "
                     f"{100 * expected['tfdata']:.1f}% (tf.data) + {100 * expected['augmentation']:.1f}% (augmentation) "
                     f"of CPU time"))
    if "attribution" not in args.skip:
        size = min(sizes)
        results["loop_attribution"] = {}
        for kind in ("ae",):
            common.log(f"where fit's time goes: {kind} {size}x{size}")
            out = loop_attribution(records[size], base.override(model={"kind": kind}), steps=steps,
                                   repeats=repeats + (3 if quick else 5))
            results["loop_attribution"][f"{kind}_{size}"] = out
            ratios = {k: v["ratio"] for k, v in out.items() if k.endswith("_over_keras")}
            common.log(f"  {ratios}")
            rows.append(common.row(
                f"training (diagnosis): fit's loop / Keras train_function, {kind.upper()} 19x{size}x{size}",
                ratios["loop_records_over_keras"],
                note=f"same loop fed from memory {ratios['loop_memory_over_keras']}x, from records parsed once and "
                     f"cached {ratios['loop_records_cached_over_keras']}x"))
    if "variants" not in args.skip:
        size = min(sizes)
        common.log(f"step variants at {size}x{size}")
        out = step_variants(base, size=size, num_lines=19, repeats=repeats, steps_per_block=2)
        results["variants"] = {str(size): out}
        common.log(f"  vae/ae {out['vae_over_ae_float32']['ratio']}, bf16/f32 ae {out['bf16_over_f32_ae']['ratio']}")
        rows.append(common.row(f"training: VAE / AE step (19x{size}x{size}, float32)", out["vae_over_ae_float32"]["ratio"],
                               note="information"))
        rows.append(common.row(f"training: mixed_bfloat16 / float32 step, AE (19x{size}x{size})",
                               out["bf16_over_f32_ae"]["ratio"], note="information (CPU)"))
        rows.append(common.row(f"training: mixed_bfloat16 / float32 step, VAE (19x{size}x{size})",
                               out["bf16_over_f32_vae"]["ratio"], note="information (CPU)"))
    if "jit" not in args.skip:
        jit_config = base.override(train={"batch_size": 8})
        small = min(jit_sizes)
        common.log(f"fit(jit_compile=True) at {small}x{small}")
        attempt = fit_jit_attempt(records[small], jit_config, steps=3, pairs=2, run_dir=work / f"run-jit-{small}")
        results["jit"] = {"fit": {str(small): attempt}, "step": {}}
        if "error" in attempt:
            rows.append(common.row(f"training: fit --jit (AE, 19x{small}x{small})", None, unit="",
                                   note="FAILS: " + attempt["error"][:150]))
        else:
            rows.append(common.row(f"training: fit --jit / no jit (AE, 19x{small}x{small}, batch 8)",
                                   attempt["jit_over_nojit"], note="information"))
        for size in jit_sizes:
            common.log(f"XLA vs no XLA train step at {size}x{size}")
            out = step_jit(jit_config, size=size, num_lines=19, steps=3, repeats=max(3, repeats - 2))
            results["jit"]["step"][str(size)] = out
            common.log(f"  jit/nojit {out['ratio']} ({out['ratios']})")
            first = out["first_call_seconds"]
            rows.append(common.row(f"training: XLA / no XLA train step (AE, 19x{size}x{size}, batch 8)", out["ratio"],
                                   note=f"information; first call (trace/compile) {first['jit']} s with XLA vs "
                                        f"{first['nojit']} s without"))
    if "determinism" not in args.skip:
        size = min(sizes)
        common.log(f"op determinism on / off, fresh processes: AE {size}x{size}")
        out = determinism_cost(records[size], base, steps=steps, epochs=2 if quick else 3,
                               rounds=2 if quick else 5, run_dir=work / "determinism")
        results["determinism"] = {f"ae_{size}": out}
        common.log(f"  on/off {out['ratio']} ({out['ratios']})")
        rows.append(common.row(f"training: fit with op determinism / without (AE, 19x{size}x{size})", out["ratio"],
                               note=f"decides the default; range {out['ratio_min']}-{out['ratio_max']}, CPU"))
    mode = "quick" if quick else "full"
    previous = common.RESULTS_DIR / "training.json"
    if args.merge and previous.exists():
        # Keep the sections and rows this run did not redo.
        import json

        old = json.loads(previous.read_text())
        names = {row["name"] for row in rows}
        for section, value in old.items():
            if section in _SECTIONS.values():
                results[section] = {**value, **results.get(section, {})}
        rows = [row for row in old.get("rows", []) if row["name"] not in names] + rows
        order = ["fit / plain", "pipeline / model", "with augmentation", "diagnosis", "VAE / AE", "bfloat16", "jit", "XLA",
                 "determinism"]
        rows.sort(key=lambda row: next((i for i, key in enumerate(order) if key in row["name"]), len(order)))
        # Each section kept from an earlier run keeps the date of the run that measured it.
        kept = dict(old.get("section_dates", {}))
        for option, section in _SECTIONS.items():
            if option not in args.skip:
                kept.pop(section, None)
            elif section in old:
                kept.setdefault(section, old.get("date_utc"))
        results["section_dates"] = kept
        if kept:
            mode += "; " + ", ".join(f"{section} from {date}" for section, date in sorted(kept.items()))
    results["rows"] = rows
    path = common.write_result("training", results, mode=mode, started=started)
    common.log(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
