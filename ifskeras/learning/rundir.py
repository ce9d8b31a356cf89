"""The run directory of ``fit``: creation, resume, history, provenance and early-stopping state.

A run directory holds config.json (the resolved config), provenance.json (records,
devices, versions), history.json/history.csv (one row per epoch), train_state.json
(best epoch, monitored value, patience counter), checkpoints/, best.weights.h5,
model.keras and the SavedModel model/. Every file is written atomically, so an
interrupted run leaves each one either as it was or complete.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import shutil
from pathlib import Path

from ifskeras import __version__
from ifskeras.common.files import atomic_write_bytes, atomic_write_json
from ifskeras.learning.config import RunConfig
from ifskeras.learning.errors import TrainingError

__all__ = [
    "HISTORY_FIELDS", "RESUME_CHANGEABLE", "resolve_config", "check_same_records", "create_run_dir",
    "read_history", "write_history", "new_state", "read_state", "write_state", "write_provenance", "package_versions",
]

HISTORY_FIELDS = (
    "epoch", "loss", "reconstruction_loss", "kl_loss", "val_loss", "val_reconstruction_loss",
    "val_kl_loss", "val_objective", "val_examples", "learning_rate", "beta", "seconds", "samples_per_second",
)
#: Settings ``fit --resume`` may change: they decide how long and on what devices the
#: run goes on, not what it learns per step. Anything else would silently make the
#: resumed run a different experiment from the one its checkpoint started.
RESUME_CHANGEABLE = {
    "train": ("epochs", "cache", "strategy", "jit_compile", "deterministic", "early_stopping_patience"),
}
_STATE_FILE = "train_state.json"
_CONFIG_FILE = "config.json"


def resolve_config(run_dir: Path, config: RunConfig, *, resume: bool) -> tuple[RunConfig, list[str]]:
    """The run's config and, on resume, the changes ``config`` makes to the stored one.

    On resume, the fields of :data:`RESUME_CHANGEABLE` are taken from ``config`` and
    reported as ``"train.epochs: 3 -> 5"``; a difference in any other field raises
    :class:`TrainingError` listing each such field with its stored and given values.
    """
    if not resume:
        return config, []
    config_path = run_dir / _CONFIG_FILE
    if not config_path.exists():
        raise TrainingError(f"{run_dir}: nothing to resume (no config.json); start without --resume.")
    stored = RunConfig.from_dict(json.loads(config_path.read_text()))
    stored_dict, given_dict = stored.to_dict(), config.to_dict()
    changes, conflicts = [], []
    for section, fields in stored_dict.items():
        for name, stored_value in fields.items():
            given_value = given_dict[section][name]
            if _same(stored_value, given_value):
                continue
            text = f"{section}.{name}: {stored_value!r} -> {given_value!r}"
            (changes if name in RESUME_CHANGEABLE.get(section, ()) else conflicts).append(text)
    if conflicts:
        raise TrainingError(
            f"{run_dir}: --resume continues the stored run, but these settings differ from it "
            f"(stored -> given): {'; '.join(conflicts)}. Drop those options to resume, or start a new run "
            f"(another --out, or --overwrite). Only {_changeable_text()} may change on resume."
        )
    return config, changes


def check_same_records(run_dir: Path, records_dir: Path, records_sha256: str) -> None:
    """Refuse to resume a run on records other than the ones it started with."""
    provenance_path = run_dir / "provenance.json"
    if not provenance_path.exists():
        return
    started_with = json.loads(provenance_path.read_text()).get("records_manifest_sha256")
    if started_with and started_with != records_sha256:
        raise TrainingError(
            f"{records_dir} is not the dataset {run_dir} started with (manifest sha256 "
            f"{records_sha256[:12]}... vs {started_with[:12]}...); resume with the same records or start a new run."
        )


def create_run_dir(run_dir: Path, config: RunConfig, *, resume: bool, overwrite: bool, is_chief: bool) -> None:
    """Create (or, with ``overwrite``, replace) the run directory and write config.json.

    On resume the config is rewritten too, so it always holds the settings the run
    last continued with.
    """
    if not is_chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        return
    if not resume and run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise TrainingError(
                f"{run_dir} is not empty; use --resume to continue that run or --overwrite to replace it."
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / _CONFIG_FILE, config.to_dict())


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    """The per-epoch history of a run directory (empty when none was written)."""
    path = Path(run_dir) / "history.json"
    return json.loads(path.read_text()) if path.exists() else []


def write_history(run_dir: Path, history: list[dict]) -> None:
    """history.json (every key) and history.csv (:data:`HISTORY_FIELDS`, blank where absent)."""
    atomic_write_json(run_dir / "history.json", history)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in HISTORY_FIELDS})
    atomic_write_bytes(run_dir / "history.csv", buffer.getvalue().encode())


def new_state() -> dict:
    """Early-stopping state of a new run: best epoch, its monitored value, epochs without improvement."""
    return {"best_objective": math.inf, "best_epoch": -1, "wait": 0}


def read_state(run_dir: Path) -> dict:
    """The stored early-stopping state of a run (that of a new run when none was written)."""
    state = new_state()
    path = run_dir / _STATE_FILE
    if path.exists():
        stored = json.loads(path.read_text())
        # Runs from before val_objective monitored val_loss under this key.
        stored.setdefault("best_objective", stored.pop("best_val_loss", math.inf))
        state.update(stored)
    return state


def write_state(run_dir: Path, state: dict) -> None:
    atomic_write_json(run_dir / _STATE_FILE, state)


def write_provenance(run_dir: Path, provenance: dict) -> None:
    """provenance.json: ``provenance`` plus the versions of the packages that trained."""
    atomic_write_json(run_dir / "provenance.json", {**provenance, "versions": package_versions()}, default=str)


def package_versions() -> dict:
    import astropy
    import keras
    import numpy as np
    import sklearn
    import tensorflow as tf
    import tensorflow_probability as tfp

    return {
        "ifskeras": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
        "tensorflow_probability": tfp.__version__, "numpy": np.__version__,
        "astropy": astropy.__version__, "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }


def _same(a, b) -> bool:
    # JSON turns tuples into lists: compare them as sequences.
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def _changeable_text() -> str:
    return ", ".join(f"{section}.{name}" for section, names in RESUME_CHANGEABLE.items() for name in names)
