"""The tf.data input pipeline over the records (the only module of the layer importing TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from ifskeras.records.naming import SPLITS
from ifskeras.records.schema import EmptySplitError, RecordsError, load_manifest

__all__ = ["make_dataset", "parse_example", "parse_batch", "FEATURE_SPEC"]

#: How ``tf.io.parse_example`` reads schema v1.
FEATURE_SPEC = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "flux": tf.io.FixedLenFeature([], tf.string),
    "ivar": tf.io.FixedLenFeature([], tf.string),
    "valid": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "ra": tf.io.FixedLenFeature([], tf.float32),
    "dec": tf.io.FixedLenFeature([], tf.float32),
}
_READ_BUFFER_BYTES = 1 << 20
_MAX_CYCLE_LENGTH = 8


def parse_batch(serialized: tf.Tensor, shape, *, with_ivar: bool = True) -> dict[str, tf.Tensor]:
    """Parse a [B] batch of serialized examples into ``id``, ``flux``, ``ivar``, ``valid``, ``label``.

    ``flux``, ``ivar`` and ``valid`` are [B, L, S, S, 1] float32 (``valid`` is 0 or 1).
    With ``with_ivar=False`` the ivar bytes are skipped and there is no ``ivar`` key.
    """
    spec = FEATURE_SPEC if with_ivar else {k: v for k, v in FEATURE_SPEC.items() if k != "ivar"}
    features = tf.io.parse_example(serialized, spec)
    target = [-1, *(int(n) for n in shape), 1]

    def cube(key: str, dtype) -> tf.Tensor:
        values = tf.io.decode_raw(features[key], dtype, little_endian=True)
        return tf.reshape(tf.cast(values, tf.float32), target)

    parsed = {
        "id": features["id"],
        "flux": cube("flux", tf.float32),
        "valid": cube("valid", tf.uint8),
        "label": features["label"],
    }
    if with_ivar:
        parsed["ivar"] = cube("ivar", tf.float32)
    return parsed


def parse_example(serialized: tf.Tensor, shape) -> dict[str, tf.Tensor]:
    """Parse one serialized example: cubes [L, S, S, 1] float32, ``id`` and ``label`` scalars."""
    batch = parse_batch(tf.reshape(serialized, [1]), shape)
    return {key: value[0] for key, value in batch.items()}


def make_dataset(
    records_dir: str | Path,
    split: str,
    *,
    batch_size: int,
    training: bool,
    shuffle_buffer: int = 256,
    seed: int | None = None,
    repeat: bool | int | None = None,
    cache: bool = False,
    num_input_pipelines: int = 1,
    input_pipeline_id: int = 0,
    drop_remainder: bool | None = None,
    with_ivar: bool = True,
    shard_by: str = "file",
) -> tf.data.Dataset:
    """Batched ``tf.data.Dataset`` of one split.

    Parameters
    ----------
    records_dir : path-like
        Directory with ``manifest.json`` and the shards.
    split : {'train', 'val', 'test'}
    batch_size : int
        Per input pipeline (per worker under multi-worker training).
    training : bool
        Shuffle files and examples, repeat, drop the last partial batch, and read
        shards in parallel without keeping their order (unless ``seed`` is given).
    shuffle_buffer : int
        Examples held for shuffling (memory: about ``shuffle_buffer`` x record size,
        0.7 MB at 19 x 64 x 64).
    seed : int, optional
        Seeds the shuffles and makes the order deterministic.
    repeat : bool or int, optional
        Passes over the data: True or -1 forever, False or 1 once, n > 1 n times;
        None repeats forever when training and reads once otherwise. Use ``repeat=1`` for Keras ``fit`` without ``steps_per_epoch``.
    cache : bool
        Keep the serialized records in memory after the first pass.
    num_input_pipelines, input_pipeline_id : int
        This pipeline's part of the split (from ``tf.distribute.InputContext``): see
        ``shard_by``.
    shard_by : {'file', 'example'}
        How the split is divided between input pipelines. ``'file'`` (training) reads
        every ``num_input_pipelines``-th shard file starting at ``input_pipeline_id``
        and needs at least that many non-empty shards (``ifskeras convert
        --min-shards``). ``'example'`` (validation) reads every shard and keeps every
        ``num_input_pipelines``-th example: the pipelines together see each example
        exactly once, however few shards the split has.
    drop_remainder : bool, optional
        Defaults to ``training``.
    with_ivar : bool
        Decode the inverse variances. False skips parsing and decoding 45% of each
        record's bytes when nothing reads them (training without ivar weighting or
        ivar noise, scoring) and leaves out the ``ivar`` key.

    Returns
    -------
    tf.data.Dataset
        Dicts of ``id`` [B] string, ``flux``, ``ivar`` (unless ``with_ivar=False``),
        ``valid`` [B, L, S, S, 1] float32 and ``label`` [B] string.

    Raises
    ------
    MissingShardError
        A shard listed in the manifest is missing (TF alone would skip it silently).
    EmptySplitError
        The split (or this pipeline's part of it) has no examples.

    Examples
    --------
    >>> train = make_dataset("records/", "train", batch_size=32, training=True, seed=0)  # doctest: +SKIP
    >>> next(iter(train))["flux"].shape  # doctest: +SKIP
    TensorShape([32, 19, 64, 64, 1])
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Received: {split!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Received: {batch_size!r}")
    if num_input_pipelines < 1 or not 0 <= input_pipeline_id < num_input_pipelines:
        raise ValueError(
            "need num_input_pipelines >= 1 and 0 <= input_pipeline_id < num_input_pipelines. "
            f"Received: {num_input_pipelines}, {input_pipeline_id}"
        )
    if shard_by not in ("file", "example"):
        raise ValueError(f"shard_by must be 'file' or 'example'. Received: {shard_by!r}")
    if isinstance(repeat, bool):
        repeat = -1 if repeat else 1
    if repeat is not None and not (repeat == -1 or repeat >= 1):
        raise ValueError(f"repeat must be None, a bool, -1 (forever) or >= 1. Received: {repeat!r}")
    manifest = load_manifest(records_dir)
    shards = [(path, info) for path, info in zip(manifest.shard_paths(split), manifest.shards(split))
              if info.examples > 0]
    if not shards:
        raise EmptySplitError(f"{records_dir}: split {split!r} has no examples")
    examples = sum(info.examples for _, info in shards)
    if num_input_pipelines > 1 and shard_by == "example":
        examples = len(range(input_pipeline_id, examples, num_input_pipelines))
    elif num_input_pipelines > 1:
        if len(shards) < num_input_pipelines:
            raise RecordsError(
                f"{records_dir}: split {split!r} has {len(shards)} non-empty shards, fewer than "
                f"{num_input_pipelines} input pipelines; convert again with --min-shards {num_input_pipelines}"
            )
        shards = shards[input_pipeline_id::num_input_pipelines]
        examples = sum(info.examples for _, info in shards)
    drop_remainder = training if drop_remainder is None else drop_remainder
    if repeat is None:
        repeat = -1 if training else 1
    if repeat == 1 and drop_remainder and examples < batch_size:
        raise EmptySplitError(
            f"{records_dir}: split {split!r} has {examples} examples for this pipeline, fewer than "
            f"batch_size {batch_size} with drop_remainder: no batch would be produced"
        )
    deterministic = (not training) or seed is not None
    files = [str(path) for path, _ in shards]
    compression = "GZIP" if manifest.compression == "gzip" else ""

    dataset = tf.data.Dataset.from_tensor_slices(files)
    if training:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression, _READ_BUFFER_BYTES),
        cycle_length=min(len(files), _MAX_CYCLE_LENGTH),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    if num_input_pipelines > 1 and shard_by == "example":
        dataset = dataset.shard(num_input_pipelines, input_pipeline_id)
    if cache:
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat != 1:
        dataset = dataset.repeat(None if repeat == -1 else repeat)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    shape = manifest.shape
    dataset = dataset.map(lambda serialized: parse_batch(serialized, shape, with_ivar=with_ivar),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return dataset.prefetch(tf.data.AUTOTUNE)
