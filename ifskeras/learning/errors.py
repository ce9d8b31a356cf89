"""Errors of the learning stage: what went wrong and what to do."""

from __future__ import annotations

__all__ = ["TrainingError", "TrainingDivergedError"]


class TrainingError(RuntimeError):
    """Training cannot start or continue; the message says why and what to do."""


class TrainingDivergedError(TrainingError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
