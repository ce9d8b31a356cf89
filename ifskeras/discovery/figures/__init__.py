"""Figures of the report: each function draws one PNG, writes it and returns its path.

Figures are built as ``matplotlib.figure.Figure`` objects and saved with the Agg
canvas, never through ``pyplot``: no global state, no open-figure registry, no GUI
backend, safe in worker processes and tests.

Emission-line maps are shown with an arcsinh stretch (``matplotlib.colors.AsinhNorm``)
that is linear below ``linear_width`` (in flux units, about the per-spaxel noise) and
logarithmic above, so faint and bright lines share one colour scale and one colourbar.
Invalid pixels are grey. Maps are drawn with ``origin="lower"``.

- :mod:`~ifskeras.discovery.figures.plots`: loss curves, score histogram, UMAP, BPT, ROC/PR;
- :mod:`~ifskeras.discovery.figures.maps`: galleries of anomalies and latent neighbours;
- :mod:`~ifskeras.discovery.figures.style`: units, class colours, figure creation and saving.
"""

from __future__ import annotations

from ifskeras.discovery.figures.maps import plot_gallery, plot_neighbours
from ifskeras.discovery.figures.plots import (
    plot_bpt,
    plot_loss_curves,
    plot_roc_pr,
    plot_score_histogram,
    plot_umap_by_label,
    plot_umap_by_score,
)
from ifskeras.discovery.figures.style import FLUX_UNIT, class_colour

__all__ = [
    "FLUX_UNIT",
    "plot_loss_curves",
    "plot_score_histogram",
    "plot_umap_by_score",
    "plot_umap_by_label",
    "plot_bpt",
    "plot_gallery",
    "plot_neighbours",
    "plot_roc_pr",
    "class_colour",
]
