"""The train and validation steps of ``fit``, for every tf.distribute strategy.

``fit`` and ``benchmarks/bench_training.py`` build their steps here, so the benchmark
measures the product's step, not a copy of it.

- :func:`replica_train_step`: the per-replica body (augmentation with stateless seeds,
  forward and backward pass, optimizer update); runs under ``strategy.run`` or, with no
  strategy, as is.
- :func:`distributed_train_step`: ``strategy.run`` of that body over a distributed
  iterator, losses summed over replicas (each replica averages over the global batch,
  so the sum is the mean over the global batch).
- :func:`make_evaluator`: one pass over a finite distributed dataset, every example
  once: per-replica loss sums and example counts are summed over replicas and divided
  at the end, so partial and empty final batches weigh exactly what they hold.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

__all__ = ["loss_names", "replica_train_step", "distributed_train_step", "make_evaluator", "validation_objective"]


def loss_names(model) -> tuple[str, ...]:
    """The per-example losses the model reports: loss, reconstruction_loss and, for the VAE, kl_loss."""
    return ("loss", "reconstruction_loss") + (("kl_loss",) if model.kind == "vae" else ())


def validation_objective(row: dict, *, kind: str, beta: float) -> float:
    """The quantity early stopping and the best checkpoint follow.

    ``val_reconstruction_loss + beta * val_kl_loss`` with the *target* beta of the
    config, not the warm-up value of the epoch: while beta warms up, ``val_loss``
    weighs the KL term less in early epochs and so favours them. For the AE it is
    ``val_loss``. Without a val split the train losses stand in (same formula).
    """
    prefix = "val_" if "val_loss" in row else ""
    value = row[f"{prefix}reconstruction_loss"]
    if kind == "vae":
        value += beta * row[f"{prefix}kl_loss"]
    return float(value)


def replica_train_step(model, optimizer, augment, *, global_batch: int, run_seed: int, num_replicas: int = 1,
                       jit_compile: bool = False, augment_inputs: bool = True) -> Callable:
    """The per-replica train step ``step_fn(batch, step) -> {loss name: scalar}``.

    ``batch`` is a dict with ``flux``, ``valid`` and, when the loss or augmentation
    reads it, ``ivar``; ``step`` is the global step (int64 scalar). The augmentation
    and the VAE's sampling take the stateless seed (run seed, step x replicas +
    replica id), so replicas never draw the same numbers and a fixed seed repeats on
    CPU. With ``jit_compile`` only the forward and backward pass is XLA-compiled: the
    rotation ops of the augmentation and the optimizer's cross-replica update are not
    XLA-compatible, and the model is where the time goes. The returned losses are
    averaged over ``global_batch`` (``tf.nn.compute_average_loss``), so summing them
    over replicas gives the global-batch mean.
    """
    names = loss_names(model)

    def replica_seed(step):
        context = tf.distribute.get_replica_context()
        replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
        stream = tf.cast(step, tf.int32) * num_replicas + replica
        return tf.stack([tf.constant(run_seed, tf.int32), stream])

    def losses_and_gradients(flux, ivar, valid, seed):
        with tf.GradientTape() as tape:
            losses = model.per_example_losses(flux, ivar, valid, training=True, seed=seed)
            loss = tf.nn.compute_average_loss(losses["loss"], global_batch_size=global_batch)
            scaled_loss = optimizer.scale_loss(loss)
        return losses, tape.gradient(scaled_loss, model.trainable_variables)

    if jit_compile:
        losses_and_gradients = tf.function(losses_and_gradients, jit_compile=True)

    def step_fn(batch, step):
        seed = replica_seed(step)
        flux, ivar, valid = batch["flux"], batch.get("ivar"), batch["valid"]
        if augment_inputs:
            flux, ivar, valid = augment(flux, ivar, valid, training=True, seed=seed)
        losses, gradients = losses_and_gradients(flux, ivar, valid, seed[::-1])
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return {name: tf.nn.compute_average_loss(losses[name], global_batch_size=global_batch) for name in names}

    return step_fn


def distributed_train_step(strategy: tf.distribute.Strategy, step_fn: Callable) -> Callable:
    """``train_step(iterator, step) -> {loss name: global-batch mean}`` as one tf.function."""

    @tf.function
    def train_step(iterator, step):
        per_replica = strategy.run(step_fn, args=(next(iterator), step))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    return train_step


def make_evaluator(strategy: tf.distribute.Strategy, model) -> Callable:
    """``evaluate(distributed_dataset) -> ({loss name: mean over examples}, examples)``.

    The dataset must be finite (one pass) and may end in a partial batch; under
    several replicas the last replicas may receive empty batches, which add nothing.
    The means are weighted by real example counts, so each example counts once
    whatever the batch layout.
    """
    names = loss_names(model)

    def replica_sums(batch):
        examples = tf.shape(batch["flux"])[0]

        def sums():
            losses = model.per_example_losses(batch["flux"], batch.get("ivar"), batch["valid"], training=False)
            return {name: tf.reduce_sum(tf.cast(losses[name], tf.float64)) for name in names}

        def nothing():
            return {name: tf.constant(0.0, tf.float64) for name in names}

        # An empty batch (a replica past the end of the split) never enters the model:
        # the strided ConvLSTM fails on zero-size inputs.
        totals = tf.cond(examples > 0, sums, nothing)
        totals["examples"] = tf.cast(examples, tf.float64)
        return totals

    # reduce_retracing: the final partial batch has another batch size, traced once more.
    @tf.function(reduce_retracing=True)
    def batch_sums(batch):
        per_replica = strategy.run(replica_sums, args=(batch,))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    def evaluate(dataset) -> tuple[dict[str, float], int]:
        totals = dict.fromkeys(names, 0.0)
        examples = 0.0
        for batch in dataset:
            sums = batch_sums(batch)
            examples += float(sums["examples"])
            for name in names:
                totals[name] += float(sums[name])
        if not examples:
            return {name: float("nan") for name in names}, 0
        return {name: totals[name] / examples for name in names}, int(examples)

    return evaluate
