"""The report figures' shared style: units, colours, figure creation and saving."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["FLUX_UNIT", "DPI", "DEFAULT_LINEAR_WIDTH", "class_colour"]

#: Unit of MaNGA DAP line fluxes, as written on colourbars.
FLUX_UNIT = "1e-17 erg s$^{-1}$ cm$^{-2}$ spaxel$^{-1}$"
FLUX_UNIT_TWO_LINES = FLUX_UNIT.replace(" cm", "\ncm", 1)
DPI = 100
#: Arcsinh softening of the map colour scales, in flux units.
DEFAULT_LINEAR_WIDTH = 0.1
BAD_COLOUR = "0.85"
_CLASS_COLOURS = {
    "SF": "#1f77b4",
    "composite": "#2ca02c",
    "Seyfert": "#d62728",
    "LINER": "#ff7f0e",
    "retired": "#8c564b",
    "blueberry": "#9467bd",
    "": "#b0b0b0",
}
_EXTRA_COLOURS = ("#17becf", "#bcbd22", "#e377c2", "#7f7f7f", "#393b79", "#637939", "#843c39")


def class_colour(label: str, order: Sequence[str] = ()) -> str:
    """Fixed colour of a synthetic class; other classes take colours by their place in ``order``."""
    if label in _CLASS_COLOURS:
        return _CLASS_COLOURS[label]
    others = [c for c in order if c not in _CLASS_COLOURS]
    position = others.index(label) if label in others else len(others)
    return _EXTRA_COLOURS[position % len(_EXTRA_COLOURS)]


def new_figure(size: tuple[float, float], *, layout: str | None = "constrained"):
    """A figure not tied to any GUI backend; ``layout=None`` for figures placed by hand.

    Constrained layout measures every artist at each save: right for figures of a few
    axes, but most of the time of a report's 60-axes galleries, which place their axes by hand.
    """
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=DPI, layout=layout)


def save_png(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path
