"""Training: one custom loop for every tf.distribute strategy, with checkpoints and resume.

The loop is ``strategy.run`` over a distributed dataset with
``tf.nn.compute_average_loss(..., global_batch_size=...)``, the pattern that works on
one device, MirroredStrategy and MultiWorkerMirroredStrategy alike (Keras 3 ``fit``
does not run multi-worker). Augmentation and VAE sampling take stateless seeds built
from (run seed, step, global replica id), so replicas never draw the same numbers and
a CPU run with a fixed seed is bit-for-bit repeatable.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from ifskeras import __version__
from ifskeras.learning.config import RunConfig
from ifskeras.common.progress import progress_bar

__all__ = [
    "FitResult", "TrainingError", "TrainingDivergedError", "fit", "read_history",
    "decide_cache", "available_memory_bytes", "CACHE_MEMORY_FRACTION",
]

HISTORY_FIELDS = (
    "epoch", "loss", "reconstruction_loss", "kl_loss", "val_loss", "val_reconstruction_loss",
    "val_kl_loss", "learning_rate", "beta", "seconds", "samples_per_second",
)
_STATE_FILE = "train_state.json"
#: Share of the memory available at the start that ``cache=None`` lets the records fill.
CACHE_MEMORY_FRACTION = 0.25


class TrainingError(RuntimeError):
    """Training cannot start or continue; the message says why and what to do."""


class TrainingDivergedError(TrainingError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class FitResult:
    run_dir: Path
    epochs_completed: int
    best_epoch: int
    best_val_loss: float
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    model_path: Path | None = None
    export_path: Path | None = None
    #: Whether the records were kept in memory after the first pass, and why.
    records_cached: bool = False
    cache_reason: str = ""


def fit(
    records_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    config: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    export: bool = True,
    on_epoch_end: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> FitResult:
    """Train the model described by ``config`` on a records directory.

    Parameters
    ----------
    records_dir : path
        Output of ``ifskeras convert``: shards plus manifest.json.
    run_dir : path
        Receives config.json, provenance.json, checkpoints/, history.csv/json,
        tensorboard/, model.keras (best weights) and, with ``export``, the SavedModel model/.
    config : RunConfig
        Model, training and augmentation settings.
    resume : bool
        Continue an interrupted run from its last checkpoint (same epoch count, same
        optimizer state). The run's stored config is used; only ``config.train.epochs``
        is taken from the argument, so a finished run can be extended. The records must
        be the ones the run started with.
    overwrite : bool
        Delete an existing run directory first.

    The serialized records are kept in memory after their first pass when
    ``config.train.cache`` is True or, when it is None, when they fit in a quarter of
    the available memory (:func:`decide_cache`); ``FitResult.records_cached`` and
    provenance.json record the decision and its reason.
    """
    from ifskeras.learning.augment import GalaxyAugment
    from ifskeras.learning.distribute import make_strategy
    from ifskeras.learning.models import build_model
    from ifskeras.learning.models.layers import check_architecture
    from ifskeras.records import load_manifest, make_dataset, manifest_checksum, verify_records

    records_dir = Path(records_dir)
    run_dir = Path(run_dir)
    manifest = load_manifest(records_dir)
    # Every shard's sha256 against the manifest: a corrupted shard is refused, not learned.
    verify_records(records_dir, checksums=True).raise_if_failed()
    records_sha256 = manifest_checksum(records_dir)
    config = _resolve_config(run_dir, config, resume=resume)
    if resume:
        _check_same_records(run_dir, records_dir, records_sha256)
    info = make_strategy(config.train.strategy)
    train_cfg, model_cfg = config.train, config.model
    num_lines, size = int(manifest.shape[0]), int(manifest.shape[1])
    n_train = manifest.examples("train")
    n_val = manifest.examples("val")
    global_batch = train_cfg.batch_size
    if n_train < global_batch:
        raise TrainingError(
            f"{records_dir}: the train split has {n_train} galaxies, fewer than one batch of "
            f"{global_batch}; lower --batch-size or convert more galaxies."
        )
    if global_batch % info.num_replicas:
        raise TrainingError(
            f"--batch-size {global_batch} is not divisible by the {info.num_replicas} replicas of the "
            f"{info.kind} strategy; use a multiple of {info.num_replicas}."
        )
    try:
        check_architecture(filters=model_cfg.filters, kernel_size=model_cfg.kernel_size, size=size, num_lines=num_lines)
    except ValueError as error:
        raise TrainingError(f"{records_dir} holds {size}x{size} maps that this model cannot take: {error}") from None
    steps_per_epoch = train_cfg.steps_per_epoch or n_train // global_batch
    val_steps = math.ceil(n_val / global_batch) if n_val else 0
    cache, cache_reason = decide_cache(
        manifest, train_cfg.cache, num_workers=info.num_workers,
        examples_read=train_cfg.epochs * steps_per_epoch * global_batch,
        available_bytes=available_memory_bytes(),
    )
    # Only now, with every check passed, does the run directory change.
    _create_run_dir(run_dir, config, resume=resume, overwrite=overwrite, is_chief=info.is_chief)

    if info.is_chief:
        _write_json(run_dir / "provenance.json", {
            "records_dir": str(records_dir.resolve()),
            "records_manifest_sha256": records_sha256,
            "lines": list(manifest.lines),
            "shape": list(manifest.shape),
            "strategy": info.kind,
            "num_replicas": info.num_replicas,
            "num_workers": info.num_workers,
            "records_cached": cache,
            "cache_reason": cache_reason,
            "versions": package_versions(),
        })

    keras.utils.set_random_seed(train_cfg.seed)
    if train_cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    previous_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(train_cfg.precision)
    try:
        with info.strategy.scope():
            model = build_model(model_cfg, num_lines=num_lines, size=size)
            model(tf.zeros([1, num_lines, size, size, 1]), training=False)
            augment = GalaxyAugment(
                dihedral=config.augment.dihedral,
                max_rotation_degrees=config.augment.max_rotation_degrees,
                max_translation_pixels=config.augment.max_translation_pixels,
                ivar_noise=config.augment.ivar_noise,
            )
            schedule = _learning_rate_schedule(train_cfg, steps_per_epoch)
            optimizer = keras.optimizers.Adam(learning_rate=schedule)
            if train_cfg.precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(model.trainable_variables)
            epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")

        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)
        checkpoint_dir = run_dir / "checkpoints"
        if not info.is_chief:  # every worker must save (collectives), only the chief keeps it
            checkpoint_dir = run_dir / "workers" / f"worker-{info.worker_index}" / "checkpoints"
        manager = tf.train.CheckpointManager(checkpoint, str(checkpoint_dir), max_to_keep=2)
        state = {"best_val_loss": math.inf, "best_epoch": -1, "wait": 0}
        history: list[dict] = []
        if resume and manager.latest_checkpoint:
            checkpoint.restore(manager.latest_checkpoint).expect_partial()
            state = json.loads((run_dir / _STATE_FILE).read_text()) if (run_dir / _STATE_FILE).exists() else state
            history = read_history(run_dir)[: int(epoch_var.numpy())]
        start_epoch = int(epoch_var.numpy())

        # Inverse variances are 45% of a record's bytes: parse, decode and augment them
        # only when the loss or the augmentation reads them.
        reads_ivar = model_cfg.ivar_weighting or config.augment.ivar_noise

        def dataset_fn(split: str, training: bool):
            # Training shards files across workers; validation is read whole by every
            # worker, so small val splits need no minimum shard count.
            def make(context: tf.distribute.InputContext):
                return make_dataset(
                    records_dir, split,
                    batch_size=context.get_per_replica_batch_size(global_batch),
                    training=training, repeat=True, drop_remainder=True,
                    shuffle_buffer=train_cfg.shuffle_buffer, seed=train_cfg.seed,
                    num_input_pipelines=context.num_input_pipelines if training else 1,
                    input_pipeline_id=context.input_pipeline_id if training else 0,
                    with_ivar=reads_ivar, cache=cache,
                )
            return info.strategy.distribute_datasets_from_function(make)

        train_iterator = iter(dataset_fn("train", True))
        val_iterator = iter(dataset_fn("val", False)) if val_steps else None
        loss_names = ("loss", "reconstruction_loss") + (("kl_loss",) if model_cfg.kind == "vae" else ())

        def replica_seed(step):
            context = tf.distribute.get_replica_context()
            replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
            stream = tf.cast(step, tf.int32) * info.num_replicas + replica
            return tf.stack([tf.constant(train_cfg.seed, tf.int32), stream])

        def losses_and_gradients(flux, ivar, valid, seed):
            with tf.GradientTape() as tape:
                losses = model.per_example_losses(flux, ivar, valid, training=True, seed=seed)
                loss = tf.nn.compute_average_loss(losses["loss"], global_batch_size=global_batch)
                scaled_loss = optimizer.scale_loss(loss)
            return losses, tape.gradient(scaled_loss, model.trainable_variables)

        if train_cfg.jit_compile:
            # XLA compiles the model's forward and backward pass only: the input iterator,
            # the rotation ops of the augmentation and the optimizer's cross-replica update
            # are not XLA-compatible, and the model is where the time goes.
            losses_and_gradients = tf.function(losses_and_gradients, jit_compile=True)

        def train_step_fn(batch, step):
            seed = replica_seed(step)
            flux, ivar, valid = augment(batch["flux"], batch.get("ivar"), batch["valid"], training=True, seed=seed)
            losses, gradients = losses_and_gradients(flux, ivar, valid, seed[::-1])
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return {name: tf.nn.compute_average_loss(losses[name], global_batch_size=global_batch) for name in loss_names}

        def val_step_fn(batch):
            losses = model.per_example_losses(batch["flux"], batch.get("ivar"), batch["valid"], training=False)
            return {name: tf.nn.compute_average_loss(losses[name], global_batch_size=global_batch) for name in loss_names}

        def reduce(per_replica):
            return {k: info.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

        @tf.function
        def train_step(iterator, step):
            return reduce(info.strategy.run(train_step_fn, args=(next(iterator), step)))

        @tf.function
        def val_step(iterator):
            return reduce(info.strategy.run(val_step_fn, args=(next(iterator),)))

        writer = tf.summary.create_file_writer(str(run_dir / "tensorboard")) if info.is_chief else None
        stopped_early = False
        for epoch in range(start_epoch, train_cfg.epochs):
            beta = model_cfg.beta * min(1.0, (epoch + 1) / max(1, model_cfg.kl_warmup_epochs))
            model.beta.assign(beta)
            started = time.perf_counter()
            sums = dict.fromkeys(loss_names, 0.0)
            description = f"epoch {epoch + 1}/{train_cfg.epochs}"
            with progress_bar(progress and info.is_chief, description, steps_per_epoch * global_batch,
                              unit="samples", fields={"loss": ".4f"}) as bar:
                for step_in_epoch in range(steps_per_epoch):
                    global_step = epoch * steps_per_epoch + step_in_epoch
                    values = train_step(train_iterator, tf.constant(global_step, tf.int64))
                    values = {k: float(v) for k, v in values.items()}
                    if not math.isfinite(values["loss"]):
                        raise TrainingDivergedError(
                            f"loss became {values['loss']} at epoch {epoch + 1}, step {step_in_epoch + 1}; "
                            f"the last good checkpoint (epoch {epoch}) is kept in {checkpoint_dir}. "
                            "Lower --learning-rate, check the records with `ifskeras verify`, or use float32."
                        )
                    for k in loss_names:
                        sums[k] += values[k]
                    bar.advance(global_batch, loss=values["loss"])
            seconds = time.perf_counter() - started
            row = {k: sums[k] / steps_per_epoch for k in loss_names}
            if val_iterator is not None:
                val_sums = dict.fromkeys(loss_names, 0.0)
                for _ in range(val_steps):
                    for k, v in val_step(val_iterator).items():
                        val_sums[k] += float(v)
                row.update({f"val_{k}": val_sums[k] / val_steps for k in loss_names})
            monitored = row.get("val_loss", row["loss"])
            row.update({
                "epoch": epoch + 1,
                "learning_rate": float(keras.ops.convert_to_numpy(_current_lr(optimizer))),
                "beta": beta,
                "seconds": seconds,
                "samples_per_second": steps_per_epoch * global_batch / seconds,
            })
            history.append(row)
            if monitored < state["best_val_loss"]:
                state.update(best_val_loss=monitored, best_epoch=epoch + 1, wait=0)
                if info.is_chief:
                    model.save_weights(str(run_dir / "best.weights.h5"))
            else:
                state["wait"] += 1
            if info.is_chief:
                _write_json(run_dir / _STATE_FILE, state)
                _write_history(run_dir, history)
                _write_scalars(writer, epoch + 1, row)
            # The checkpoint is written last: it is what makes an epoch count as done, and a
            # resumed run cuts the history back to the checkpoint's epoch.
            epoch_var.assign(epoch + 1)
            manager.save(checkpoint_number=epoch + 1)
            if on_epoch_end is not None:
                on_epoch_end(row)
            if train_cfg.early_stopping_patience and state["wait"] >= train_cfg.early_stopping_patience:
                stopped_early = True
                break

        result = FitResult(run_dir, int(epoch_var.numpy()), state["best_epoch"], state["best_val_loss"], history,
                           stopped_early, records_cached=cache, cache_reason=cache_reason)
        if info.is_chief:
            if (run_dir / "best.weights.h5").exists():
                model.load_weights(str(run_dir / "best.weights.h5"))
            result.model_path = run_dir / "model.keras"
            model.save(str(result.model_path))
            if export:
                from ifskeras.learning.export import export_model
                result.export_path = export_model(
                    model, run_dir / "model", lines=manifest.lines, size=size,
                    extra={"records_manifest_sha256": records_sha256, "run_config": config.to_dict()},
                )
        return result
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


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


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    """The per-epoch history of a run directory (empty when none was written)."""
    path = Path(run_dir) / "history.json"
    return json.loads(path.read_text()) if path.exists() else []


def package_versions() -> dict:
    import astropy
    import sklearn
    import tensorflow_probability as tfp

    return {
        "ifskeras": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
        "tensorflow_probability": tfp.__version__, "numpy": np.__version__,
        "astropy": astropy.__version__, "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }


def _resolve_config(run_dir: Path, config: RunConfig, *, resume: bool) -> RunConfig:
    """The config of the run: on resume the stored one, with only the epoch budget taken from ``config``."""
    if not resume:
        return config
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise TrainingError(f"{run_dir}: nothing to resume (no config.json); start without --resume.")
    stored = RunConfig.from_dict(json.loads(config_path.read_text()))
    return stored.override(train={"epochs": config.train.epochs})


def _check_same_records(run_dir: Path, records_dir: Path, records_sha256: str) -> None:
    provenance_path = run_dir / "provenance.json"
    if not provenance_path.exists():
        return
    started_with = json.loads(provenance_path.read_text()).get("records_manifest_sha256")
    if started_with and started_with != records_sha256:
        raise TrainingError(
            f"{records_dir} is not the dataset {run_dir} started with (manifest sha256 "
            f"{records_sha256[:12]}... vs {started_with[:12]}...); resume with the same records or start a new run."
        )


def _create_run_dir(run_dir: Path, config: RunConfig, *, resume: bool, overwrite: bool, is_chief: bool) -> None:
    if resume or not is_chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise TrainingError(
                f"{run_dir} is not empty; use --resume to continue that run or --overwrite to replace it."
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / "config.json", config.to_dict())


def _learning_rate_schedule(train_cfg, steps_per_epoch: int):
    total = max(1, train_cfg.epochs * steps_per_epoch)
    if train_cfg.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(train_cfg.learning_rate, decay_steps=total, alpha=0.05)
    if train_cfg.schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            train_cfg.learning_rate, decay_steps=max(1, steps_per_epoch), decay_rate=0.9
        )
    return train_cfg.learning_rate


def _current_lr(optimizer):
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = inner.learning_rate
    return lr(inner.iterations) if callable(lr) else lr


def _write_scalars(writer, step: int, row: dict) -> None:
    """TensorBoard scalars through the low-level summary op: no tensorboard package needed."""
    metadata = tf.compat.v1.SummaryMetadata(
        plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars")
    )
    with writer.as_default(step=step):
        for key, value in row.items():
            if key != "epoch":
                tf.summary.write(key, tf.constant(float(value), tf.float32), metadata=metadata)
    writer.flush()


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _write_history(run_dir: Path, history: list[dict]) -> None:
    _write_json(run_dir / "history.json", history)
    tmp = run_dir / "history.csv.tmp"
    with open(tmp, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k, "") for k in HISTORY_FIELDS})
    os.replace(tmp, run_dir / "history.csv")
