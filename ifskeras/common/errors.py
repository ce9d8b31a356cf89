"""The error of a file that cannot be used: its path and the problem, as ``PATH: problem``."""

from __future__ import annotations

import os

__all__ = ["FileProblemError"]


class FileProblemError(ValueError):
    """A file cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        # Rebuilt from (path, problem), so the typed error survives pickling across processes.
        return type(self), (self.path, self.problem)
