"""Sharded TFRecord data layer: conversion, manifest, verification and the tf.data reader.

Names load on first use, so ``import ifskeras.records`` stays light: only
:func:`make_dataset` and the TF parse functions (``ifskeras.records.dataset``) import
TensorFlow; conversion workers, ``verify_records(full=False)``, ``read_examples`` and
the CLI's ``--help`` never do.

Typical use by training and scoring::

    from ifskeras.records import dataset_spec, make_dataset, verify_records

    verify_records("records/").raise_if_failed()      # cheap: existence and sizes
    spec = dataset_spec("records/")                    # lines, shape [L, S, S]
    train = make_dataset("records/", "train", batch_size=32, training=True, repeat=1)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    # conversion
    "ConvertOptions": "options",
    "ConvertResult": "convert",
    "ConvertError": "options",
    "OutputExistsError": "options",
    "ShardWriteError": "options",
    "collect_inputs": "inputs",
    "peek_identity": "inputs",
    "convert_maps": "convert",
    # schema and manifest
    "SCHEMA_VERSION": "schema",
    "RecordsError": "schema",
    "ManifestError": "schema",
    "SchemaVersionError": "schema",
    "MissingShardError": "schema",
    "EmptySplitError": "schema",
    "Manifest": "schema",
    "ShardInfo": "schema",
    "load_manifest": "schema",
    "manifest_checksum": "schema",
    "read_index": "schema",
    "records_grid": "schema",
    # examples
    "encode_example": "codec",
    "decode_galaxy": "codec",
    # names
    "SPLITS": "naming",
    "shard_filename": "naming",
    "parse_shard_filename": "naming",
    "split_of": "naming",
    # reading without TensorFlow
    "DatasetSpec": "reader",
    "dataset_spec": "reader",
    "read_examples": "reader",
    # tf.data
    "make_dataset": "dataset",
    "parse_example": "dataset",
    "parse_batch": "dataset",
    # checks and maintenance
    "VerifyReport": "verify",
    "CorruptRecordsError": "verify",
    "verify_records": "verify",
    "MergeError": "merge",
    "merge_records": "merge",
    "summarize_records": "inspect",
    "render_galaxy": "inspect",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ifskeras.records' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ifskeras.records.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
