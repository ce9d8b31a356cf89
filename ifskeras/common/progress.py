"""Progress bars for long work (rich, which Typer already brings), silent when disabled."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

__all__ = ["progress_bar"]


@contextlib.contextmanager
def progress_bar(enabled: bool, description: str, total: int, *, unit: str = "galaxies",
                 fields: dict | None = None) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, **fields)``; shows items/s and any extra fields (e.g. loss).

    ``fields`` maps a field name to its number format, e.g. ``{"loss": ".4f"}``.
    """
    if not enabled:
        yield lambda n=1, **_: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    fields = fields or {}
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(f"{name} {{task.fields[{name}]:{spec}}}") for name, spec in fields.items()]
    columns += [TextColumn("{task.fields[rate]:.1f} " + unit + "/s"), TimeElapsedColumn(), TimeRemainingColumn()]
    bar = Progress(*columns)
    started = time.perf_counter()
    done = 0
    with bar:
        task = bar.add_task(description, total=total, rate=0.0, **{name: float("nan") for name in fields})

        def advance(n: int = 1, **values) -> None:
            nonlocal done
            done += n
            rate = done / max(time.perf_counter() - started, 1e-9)
            bar.update(task, advance=n, rate=rate, **values)

        yield advance


@contextlib.contextmanager
def counting_progress(enabled: bool, description: str, *, unit: str = "galaxies") -> Iterator[Callable | None]:
    """Yield a ``progress(done, total, failed)`` callback (the converter's), or None when disabled."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[failed]} failed"), TextColumn("{task.fields[rate]:.1f} " + unit + "/s"),
                   TimeRemainingColumn())
    started = time.perf_counter()
    with bar:
        task = bar.add_task(description, total=None, failed=0, rate=0.0)

        def progress(done: int, total: int, failed: int) -> None:
            rate = done / max(time.perf_counter() - started, 1e-9)
            bar.update(task, completed=done, total=total, failed=failed, rate=rate)

        yield progress
