"""Progress bars for long work (rich, which Typer already brings), silent when disabled.

One context manager serves every stage: synthesis, conversion, training and scoring.

Examples
--------
>>> with progress_bar(False, "scoring", 3) as bar:
...     for _ in range(3):
...         bar.advance()
>>> bar.done
3
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping

__all__ = ["Progress", "progress_bar", "counting_progress"]


class Progress:
    """What ``progress_bar`` yields: counts work done and, when shown, draws it.

    ``advance(n, **fields)`` adds ``n`` items; ``update(done, total=None, **fields)`` sets
    the count (and the total, when it becomes known). ``fields`` are the extra numbers
    declared in :func:`progress_bar` (e.g. the loss).
    """

    def __init__(self, bar=None, task=None):
        self._bar = bar
        self._task = task
        self._started = time.perf_counter()
        self.done = 0

    def advance(self, n: int = 1, **fields) -> None:
        self.update(self.done + n, **fields)

    def update(self, done: int, total: int | None = None, **fields) -> None:
        self.done = done
        if self._bar is None:
            return
        rate = done / max(time.perf_counter() - self._started, 1e-9)
        if total is not None:
            fields["total"] = total
        self._bar.update(self._task, completed=done, rate=rate, **fields)


@contextlib.contextmanager
def progress_bar(enabled: bool, description: str, total: int | None = None, *, unit: str = "galaxies",
                 fields: Mapping[str, str] | None = None) -> Iterator[Progress]:
    """Yield a :class:`Progress`; with ``enabled`` a bar shows items/s, time left and ``fields``.

    ``fields`` maps a field name to its number format, e.g. ``{"loss": ".4f"}``;
    ``total=None`` draws a bar without an end until ``update(done, total)`` gives one.
    """
    if not enabled:
        yield Progress()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.progress import Progress as RichProgress

    fields = dict(fields or {})
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(f"{name} {{task.fields[{name}]:{spec}}}") for name, spec in fields.items()]
    columns += [TextColumn("{task.fields[rate]:.1f} " + unit + "/s"), TimeElapsedColumn(), TimeRemainingColumn()]
    # On stderr, so output piped to a file stays clean; drawn only on a terminal, so
    # batch-job logs do not fill with redrawn bars.
    console = Console(stderr=True)
    bar = RichProgress(*columns, console=console, disable=not console.is_terminal)
    with bar:
        initial = {name: 0 if spec.endswith("d") else float("nan") for name, spec in fields.items()}
        task = bar.add_task(description, total=total, rate=0.0, **initial)
        yield Progress(bar, task)


@contextlib.contextmanager
def counting_progress(enabled: bool, description: str, *,
                      unit: str = "galaxies") -> Iterator[Callable[[int, int, int], None] | None]:
    """Yield the converter's ``progress(done, total, failed)`` callback, or None when disabled."""
    if not enabled:
        yield None
        return
    with progress_bar(True, description, unit=unit, fields={"failed": "d"}) as bar:
        yield lambda done, total, failed: bar.update(done, total, failed=failed)
