"""Choosing a tf.distribute strategy: one device, several GPUs, or several machines.

Multi-worker training reads the cluster from ``TF_CONFIG`` (the way batch schedulers
and Kubernetes run TensorFlow). Keras 3 ``Model.fit`` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585), so ifskeras trains with its own
loop, the same one for every strategy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import tensorflow as tf

__all__ = ["StrategyInfo", "make_strategy", "cluster_from_env"]


@dataclass(frozen=True)
class StrategyInfo:
    strategy: tf.distribute.Strategy
    kind: str
    num_replicas: int
    num_workers: int
    worker_index: int

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0


def cluster_from_env() -> tuple[int, int]:
    """(number of workers, this worker's index) from TF_CONFIG; (1, 0) when unset."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 1, 0
    try:
        config = json.loads(raw)
        workers = config["cluster"].get("worker", []) + config["cluster"].get("chief", [])
        task = config["task"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"TF_CONFIG is not a valid cluster description ({error}). Received: {raw!r}") from None
    index = int(task.get("index", 0))
    if task.get("type") == "worker" and "chief" in config["cluster"]:
        index += len(config["cluster"]["chief"])
    return max(1, len(workers)), index


def make_strategy(name: str = "auto") -> StrategyInfo:
    """Build the strategy named by ``--strategy``.

    ``auto``: MultiWorkerMirroredStrategy when TF_CONFIG lists several workers,
    MirroredStrategy when more than one GPU is visible, else one device.
    ``mirrored`` without GPUs mirrors over the logical CPU devices (how it is tested).
    """
    num_workers, worker_index = cluster_from_env()
    if name == "auto" and num_workers > 1:
        name = "multiworker"
    if name == "multiworker":
        # Must be created before anything initialises TensorFlow's context (even listing
        # devices does), or TF refuses: "Collective ops must be configured at program startup".
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "--strategy multiworker needs TF_CONFIG describing the cluster, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
            )
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
        )
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        return StrategyInfo(strategy, "multiworker", strategy.num_replicas_in_sync, num_workers, worker_index)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one"
    if name == "one":
        device = gpus[0].name if gpus else "/cpu:0"
        strategy = tf.distribute.OneDeviceStrategy(device)
        return StrategyInfo(strategy, "one", 1, 1, 0)
    if name == "mirrored":
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        return StrategyInfo(strategy, "mirrored", strategy.num_replicas_in_sync, 1, 0)
    raise ValueError(f"strategy must be one of auto, one, mirrored, multiworker. Received: {name!r}")
