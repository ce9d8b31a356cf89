"""Training: ``fit``, one custom loop for every tf.distribute strategy, with checkpoints and resume.

The loop is ``strategy.run`` over a distributed dataset with
``tf.nn.compute_average_loss(..., global_batch_size=...)``, the pattern that works on
one device, MirroredStrategy and MultiWorkerMirroredStrategy alike (Keras 3 ``fit``
does not run multi-worker). Its steps live in :mod:`ifskeras.learning.steps`, the run
directory in :mod:`ifskeras.learning.rundir`, the cache decision in
:mod:`ifskeras.learning.cache`.

Each epoch ends with one pass over the whole val split, every galaxy once (sharded by
example across workers, partial batches weighted by their real size). Early stopping
and the best checkpoint follow ``val_objective`` (see
:func:`~ifskeras.learning.steps.validation_objective`), which does not move with the
VAE's KL warm-up.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import keras
import tensorflow as tf

from ifskeras.common.progress import progress_bar
from ifskeras.learning import rundir
from ifskeras.learning.cache import available_memory_bytes, decide_cache
from ifskeras.learning.config import RunConfig
from ifskeras.learning.errors import TrainingDivergedError, TrainingError
from ifskeras.learning.rundir import read_history

__all__ = ["FitResult", "TrainingError", "TrainingDivergedError", "fit", "read_history"]


@dataclass
class FitResult:
    run_dir: Path
    epochs_completed: int
    best_epoch: int
    #: ``val_objective`` of the best epoch (the train objective without a val split).
    best_objective: float
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    model_path: Path | None = None
    export_path: Path | None = None
    #: Whether the records were kept in memory after the first pass, and why.
    records_cached: bool = False
    cache_reason: str = ""
    #: On resume, the settings changed from the stored run ("train.epochs: 3 -> 5").
    resume_changes: list[str] = field(default_factory=list)


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
        Continue an interrupted or finished run from its last checkpoint, with its
        optimizer state, on the records it started with. ``config`` must equal the
        stored config except in the fields of
        :data:`~ifskeras.learning.rundir.RESUME_CHANGEABLE` (epochs, cache, strategy,
        jit_compile, deterministic, early_stopping_patience), which are applied and
        listed in ``FitResult.resume_changes``; any other difference is refused.
    overwrite : bool
        Delete an existing run directory first.

    The serialized records are kept in memory after their first pass when
    ``config.train.cache`` is True or, when it is None, when they fit in a quarter of
    the available memory (:func:`~ifskeras.learning.cache.decide_cache`);
    ``FitResult.records_cached`` and provenance.json record the decision and its reason.

    ``config.train.deterministic`` (the default) calls
    ``tf.config.experimental.enable_op_determinism()``, which holds for the rest of
    the process and cannot be undone: later TensorFlow work in the same process runs
    deterministically too.
    """
    from ifskeras.learning.augment import GalaxyAugment
    from ifskeras.learning.distribute import make_strategy
    from ifskeras.learning.models import build_model
    from ifskeras.learning.models.layers import check_architecture
    from ifskeras.learning.steps import distributed_train_step, loss_names, make_evaluator, replica_train_step
    from ifskeras.learning.steps import validation_objective
    from ifskeras.records import load_manifest, make_dataset, manifest_checksum, records_grid, verify_records

    records_dir = Path(records_dir)
    run_dir = Path(run_dir)
    manifest = load_manifest(records_dir)
    # Every shard's sha256 against the manifest: a corrupted shard is refused, not learned.
    verify_records(records_dir, checksums=True).raise_if_failed()
    records_sha256 = manifest_checksum(records_dir)
    if resume:
        rundir.check_same_records(run_dir, records_dir, records_sha256)
    config, resume_changes = rundir.resolve_config(run_dir, config, resume=resume)
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
    cache, cache_reason = decide_cache(
        manifest, train_cfg.cache, num_workers=info.num_workers,
        examples_read=train_cfg.epochs * steps_per_epoch * global_batch,
        available_bytes=available_memory_bytes(),
    )
    # Only now, with every check passed, does the run directory change.
    rundir.create_run_dir(run_dir, config, resume=resume, overwrite=overwrite, is_chief=info.is_chief)
    if info.is_chief:
        rundir.write_provenance(run_dir, {
            "records_dir": str(records_dir.resolve()),
            "records_manifest_sha256": records_sha256,
            "lines": list(manifest.lines),
            "shape": list(manifest.shape),
            "grid": records_grid(manifest.preprocessing),
            "strategy": info.kind,
            "num_replicas": info.num_replicas,
            "num_workers": info.num_workers,
            "records_cached": cache,
            "cache_reason": cache_reason,
            "resume_changes": resume_changes,
        })

    keras.utils.set_random_seed(train_cfg.seed)
    if train_cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    previous_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(train_cfg.precision)
    try:
        with info.strategy.scope():
            model = build_model(model_cfg, num_lines=num_lines, size=size, lines=list(manifest.lines))
            model(tf.zeros([1, num_lines, size, size, 1]), training=False)
            augment = GalaxyAugment.from_augment_config(config.augment)
            optimizer = keras.optimizers.Adam(learning_rate=_learning_rate_schedule(train_cfg, steps_per_epoch))
            if train_cfg.precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(model.trainable_variables)
            epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")

        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)
        checkpoint_dir = run_dir / "checkpoints"
        if not info.is_chief:  # every worker must save (collectives), only the chief keeps it
            checkpoint_dir = run_dir / "workers" / f"worker-{info.worker_index}" / "checkpoints"
        manager = tf.train.CheckpointManager(checkpoint, str(checkpoint_dir), max_to_keep=2)
        state = rundir.read_state(run_dir) if resume else rundir.new_state()
        history: list[dict] = []
        if resume and manager.latest_checkpoint:
            checkpoint.restore(manager.latest_checkpoint).expect_partial()
            history = read_history(run_dir)[: int(epoch_var.numpy())]
        start_epoch = int(epoch_var.numpy())

        # Inverse variances are 45% of a record's bytes: parse, decode and augment them
        # only when the loss or the augmentation reads them.
        reads_ivar = model_cfg.ivar_weighting or config.augment.ivar_noise

        def train_dataset(context: tf.distribute.InputContext):
            # Each worker reads its own shard files, forever; epochs are counted in steps.
            return make_dataset(
                records_dir, "train", batch_size=context.get_per_replica_batch_size(global_batch),
                training=True, repeat=True, drop_remainder=True, shuffle_buffer=train_cfg.shuffle_buffer,
                seed=train_cfg.seed, num_input_pipelines=context.num_input_pipelines,
                input_pipeline_id=context.input_pipeline_id, with_ivar=reads_ivar, cache=cache,
            )

        def val_dataset(context: tf.distribute.InputContext):
            # One pass, partial last batch kept, split by example between workers: every
            # val galaxy is scored exactly once per epoch, however few shards the split has.
            return make_dataset(
                records_dir, "val", batch_size=context.get_per_replica_batch_size(global_batch),
                training=False, repeat=1, drop_remainder=False,
                num_input_pipelines=context.num_input_pipelines, input_pipeline_id=context.input_pipeline_id,
                shard_by="example", with_ivar=model_cfg.ivar_weighting, cache=cache,
            )

        train_iterator = iter(info.strategy.distribute_datasets_from_function(train_dataset))
        val_batches = info.strategy.distribute_datasets_from_function(val_dataset) if n_val else None
        names = loss_names(model)
        train_step = distributed_train_step(info.strategy, replica_train_step(
            model, optimizer, augment, global_batch=global_batch, run_seed=train_cfg.seed,
            num_replicas=info.num_replicas, jit_compile=train_cfg.jit_compile,
        ))
        evaluate = make_evaluator(info.strategy, model)

        writer = tf.summary.create_file_writer(str(run_dir / "tensorboard")) if info.is_chief else None
        stopped_early = False
        for epoch in range(start_epoch, train_cfg.epochs):
            beta = model_cfg.beta * min(1.0, (epoch + 1) / max(1, model_cfg.kl_warmup_epochs))
            model.beta.assign(beta)
            started = time.perf_counter()
            sums = dict.fromkeys(names, 0.0)
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
                    for k in names:
                        sums[k] += values[k]
                    bar.advance(global_batch, loss=values["loss"])
            seconds = time.perf_counter() - started
            row = {k: sums[k] / steps_per_epoch for k in names}
            if val_batches is not None:
                val_means, val_examples = evaluate(val_batches)
                row.update({f"val_{k}": v for k, v in val_means.items()})
                row["val_examples"] = val_examples
            objective = validation_objective(row, kind=model_cfg.kind, beta=model_cfg.beta)
            row.update({
                "epoch": epoch + 1,
                "val_objective": objective,
                "learning_rate": float(keras.ops.convert_to_numpy(_current_lr(optimizer))),
                "beta": beta,
                "seconds": seconds,
                "samples_per_second": steps_per_epoch * global_batch / seconds,
            })
            history.append(row)
            if objective < state["best_objective"]:
                state.update(best_objective=objective, best_epoch=epoch + 1, wait=0)
                if info.is_chief:
                    model.save_weights(str(run_dir / "best.weights.h5"))
            else:
                state["wait"] += 1
            if info.is_chief:
                rundir.write_state(run_dir, state)
                rundir.write_history(run_dir, history)
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

        result = FitResult(run_dir, int(epoch_var.numpy()), state["best_epoch"], state["best_objective"], history,
                           stopped_early, records_cached=cache, cache_reason=cache_reason,
                           resume_changes=resume_changes)
        if info.is_chief:
            if (run_dir / "best.weights.h5").exists():
                model.load_weights(str(run_dir / "best.weights.h5"))
            result.model_path = run_dir / "model.keras"
            model.save(str(result.model_path))
            if export:
                from ifskeras.learning.export import export_model
                result.export_path = export_model(
                    model, run_dir / "model", lines=manifest.lines, size=size,
                    extra={"records_manifest_sha256": records_sha256, "run_config": config.to_dict(),
                           "records_grid": records_grid(manifest.preprocessing)},
                )
        return result
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


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
