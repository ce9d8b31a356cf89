"""Read records without TensorFlow: the dataset's description and specific galaxies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ifskeras.records.codec import decode_galaxy
from ifskeras.records.naming import SPLITS
from ifskeras.records.schema import (
    RecordsError,
    load_manifest,
    read_index,
)
from ifskeras.records.tfrecord import iter_tfrecord

__all__ = ["DatasetSpec", "dataset_spec", "read_examples"]


@dataclass(frozen=True)
class DatasetSpec:
    """What a model builder needs to know about a records directory."""

    lines: tuple[str, ...]
    wavelengths: tuple[float, ...]
    shape: tuple[int, int, int]
    examples: Mapping[str, int]
    flux_unit: str
    preprocessing: Mapping

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Per-example shape of ``flux``, ``ivar`` and ``valid`` from :func:`make_dataset`: (L, S, S, 1)."""
        return (*self.shape, 1)


def dataset_spec(records_dir: str | Path) -> DatasetSpec:
    """Lines, wavelengths, shape [L, S, S] and example counts of a records directory.

    Examples
    --------
    >>> spec = dataset_spec("records/")  # doctest: +SKIP
    >>> spec.input_shape  # doctest: +SKIP
    (19, 64, 64, 1)
    """
    manifest = load_manifest(records_dir)
    return DatasetSpec(
        lines=manifest.lines,
        wavelengths=manifest.wavelengths,
        shape=manifest.shape,
        examples={split: manifest.examples(split) for split in SPLITS},
        flux_unit=manifest.data.get("flux_unit", ""),
        preprocessing=dict(manifest.preprocessing),
    )


def read_examples(records_dir: str | Path, ids: Iterable[str]) -> dict[str, np.ndarray]:
    """Galaxies by plate-IFU as numpy arrays, in the order asked (for galleries and reports).

    Returns a dict with ``id`` [N] str, ``flux``, ``ivar``, ``valid`` [N, L, S, S, 1]
    float32 (as :func:`make_dataset` gives them), ``label`` [N] str, ``ra``, ``dec`` [N]
    float64. Only the shards holding the ids (found in ``index.csv``) are scanned.

    Raises
    ------
    KeyError
        Some ids are not in the records.
    """
    wanted = list(dict.fromkeys(str(item) for item in ids))
    manifest = load_manifest(records_dir)
    shards = _shards_holding(manifest, wanted)
    found: dict[str, dict] = {}
    for path in shards:
        for blob in iter_tfrecord(path, manifest.compression):
            galaxy = decode_galaxy(blob, manifest.shape)
            if galaxy["id"] in wanted and galaxy["id"] not in found:
                found[galaxy["id"]] = galaxy
    missing = [item for item in wanted if item not in found]
    if missing:
        raise KeyError(f"ids not in {records_dir}: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    chosen = [found[item] for item in wanted]
    shape = (len(chosen), *manifest.shape, 1)

    def stack(key: str) -> np.ndarray:
        if not chosen:
            return np.zeros(shape, np.float32)
        return np.stack([galaxy[key] for galaxy in chosen]).astype(np.float32).reshape(shape)

    return {
        "id": np.array(wanted, dtype=str),
        "flux": stack("flux"),
        "ivar": stack("ivar"),
        "valid": stack("valid"),
        "label": np.array([galaxy["label"] for galaxy in chosen], dtype=str),
        "ra": np.array([galaxy["ra"] for galaxy in chosen], dtype=np.float64),
        "dec": np.array([galaxy["dec"] for galaxy in chosen], dtype=np.float64),
    }


def _shards_holding(manifest, wanted: list[str]) -> list[Path]:
    try:
        rows = read_index(manifest.directory)
    except RecordsError:
        return [path for split in SPLITS for path in manifest.shard_paths(split)]
    names = {row["shard"] for row in rows if row["id"] in set(wanted)}
    ordered = [path for split in SPLITS for path in manifest.shard_paths(split) if path.name in names]
    return ordered
