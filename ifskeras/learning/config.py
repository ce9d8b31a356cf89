"""Experiment configuration: frozen dataclasses, loadable from TOML or JSON.

One config object describes a run (model, training, augmentation); the CLI overrides
its common fields and writes the resolved config into the run directory before
training starts, so every run can be repeated from its own directory.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ModelConfig",
    "AugmentConfig",
    "TrainConfig",
    "RunConfig",
    "ConfigError",
    "load_config",
    "smoke_config",
]

SCALINGS = ("asinh", "log", "none")
MODEL_KINDS = ("ae", "vae")
STRATEGIES = ("auto", "one", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
SCHEDULES = ("constant", "cosine", "exponential")


class ConfigError(ValueError):
    """A configuration value is out of range or unknown."""


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}. Received: {value!r}")


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}. Received: {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the ConvLSTM autoencoder (``kind='ae'``) or VAE (``kind='vae'``).

    ``filters`` gives one ConvLSTM2D layer per entry in the encoder, each followed by a
    2x spatial downsampling; the decoder mirrors it. ``softening`` is the asinh
    softening in flux units (1e-17 erg/s/cm^2/spaxel): about the per-spaxel noise of
    MaNGA line maps, so noise stays linear and bright cores are compressed.
    """

    kind: str = "ae"
    latent_dim: int = 32
    filters: tuple[int, ...] = (16, 32)
    kernel_size: int = 3
    scaling: str = "asinh"
    softening: float = 0.1
    beta: float = 1.0
    kl_warmup_epochs: int = 5
    ivar_weighting: bool = False
    #: Whether the training loss counts the DAP's tied doublet copies ([OIII]4960, [NII]6549,
    #: [OI]6365: fixed multiples of their partners in real files). The encoder always reads
    #: all lines; false leaves the copies out of the reconstruction loss only.
    tied_lines_in_loss: bool = True

    def __post_init__(self):
        _check_choice("kind", self.kind, MODEL_KINDS)
        _check_choice("scaling", self.scaling, SCALINGS)
        _check_positive("latent_dim", self.latent_dim)
        _check_positive("kernel_size", self.kernel_size)
        _check_positive("softening", self.softening)
        _check_positive("beta", self.beta, allow_zero=True)
        _check_positive("kl_warmup_epochs", self.kl_warmup_epochs, allow_zero=True)
        if not self.filters or any(int(f) <= 0 for f in self.filters):
            raise ConfigError(f"filters must be a non-empty tuple of positive ints. Received: {self.filters!r}")
        object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))


@dataclass(frozen=True)
class AugmentConfig:
    """On-device augmentation, applied in training only, one transform per galaxy."""

    dihedral: bool = True
    max_rotation_degrees: float = 0.0
    max_translation_pixels: float = 0.0
    ivar_noise: bool = False

    def __post_init__(self):
        _check_positive("max_rotation_degrees", self.max_rotation_degrees, allow_zero=True)
        _check_positive("max_translation_pixels", self.max_translation_pixels, allow_zero=True)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, devices and bookkeeping."""

    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    schedule: str = "cosine"
    early_stopping_patience: int = 5
    seed: int = 0
    strategy: str = "auto"
    precision: str = "float32"
    jit_compile: bool = False
    shuffle_buffer: int = 512
    steps_per_epoch: int | None = None
    # Keep the serialized records in memory after their first pass: None decides from
    # their size and the available memory (ifskeras.learning.cache.decide_cache).
    cache: bool | None = None
    # Bit-identical CPU runs for a seed; GPU users may trade this for speed.
    deterministic: bool = True

    def __post_init__(self):
        _check_positive("epochs", self.epochs)
        _check_positive("batch_size", self.batch_size)
        _check_positive("learning_rate", self.learning_rate)
        _check_positive("early_stopping_patience", self.early_stopping_patience, allow_zero=True)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("precision", self.precision, PRECISIONS)
        if self.steps_per_epoch is not None:
            _check_positive("steps_per_epoch", self.steps_per_epoch)
        if not (self.cache is None or isinstance(self.cache, bool)):
            raise ConfigError(f"cache must be true, false or null (decide from memory). Received: {self.cache!r}")


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        unknown = set(data) - {"model", "train", "augment"}
        if unknown:
            raise ConfigError(f"Unknown config sections {sorted(unknown)}; known: model, train, augment")
        return cls(
            model=_build(ModelConfig, data.get("model", {})),
            train=_build(TrainConfig, data.get("train", {})),
            augment=_build(AugmentConfig, data.get("augment", {})),
        )

    def override(self, **sections: dict) -> "RunConfig":
        """A copy with fields replaced, e.g. ``override(train={"epochs": 3})``; None values are ignored."""
        merged = self.to_dict()
        for section, values in sections.items():
            merged[section].update({k: v for k, v in values.items() if v is not None})
        return RunConfig.from_dict(merged)


def _build(kind, values: dict):
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"Unknown {kind.__name__} fields {sorted(unknown)}; known: {sorted(names)}")
    if "filters" in values:
        values = {**values, "filters": tuple(values["filters"])}
    return kind(**values)


def load_config(path: str | Path | None) -> RunConfig:
    """Read a RunConfig from TOML or JSON (by extension); None gives the defaults."""
    if path is None:
        return RunConfig()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config ({error})") from error
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'} ({error})") from error
    return RunConfig.from_dict(data)


def smoke_config(kind: str = "ae") -> RunConfig:
    """A tiny variant that trains in seconds on a laptop: the same code path as a real run."""
    return RunConfig(
        model=ModelConfig(kind=kind, latent_dim=8, filters=(4, 8), kl_warmup_epochs=1),
        train=TrainConfig(epochs=2, batch_size=4, learning_rate=3e-3, shuffle_buffer=16),
    )
