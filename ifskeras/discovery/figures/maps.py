"""The report's emission-line map figures: galleries of anomalies and latent neighbours.

Maps use an arcsinh stretch (``matplotlib.colors.AsinhNorm``), linear below
``linear_width`` (flux units, about the per-spaxel noise) and logarithmic above, so faint
and bright lines share one colour scale; invalid pixels are grey; ``origin="lower"``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ifskeras.discovery.figures.style import (
    BAD_COLOUR,
    DEFAULT_LINEAR_WIDTH,
    FLUX_UNIT,
    FLUX_UNIT_TWO_LINES,
    new_figure,
    save_png,
)
from ifskeras.survey.lines import pretty_line_name

__all__ = ["HIGHLIGHT_COLOUR", "plot_gallery", "plot_neighbours"]

#: Colour of the highlighted bars of a gallery (the lines a score averages); the others are blue.
HIGHLIGHT_COLOUR = "#dd8452"
_BAR_COLOUR = "#4c72b0"

_NEIGHBOUR_LINES = ("Ha-6564", "OIII-5008", "NII-6585")
_MIN_TICK_SEPARATION = 0.12  # of the colourbar length, in arcsinh space


def plot_gallery(
    flux: np.ndarray,
    reconstruction: np.ndarray,
    valid: np.ndarray,
    lines: Sequence[str],
    line_values: np.ndarray,
    path: str | os.PathLike,
    *,
    title: str = "",
    linear_width: float = DEFAULT_LINEAR_WIDTH,
    values_label: str = "per-line reconstruction error",
    highlight: int = 0,
) -> Path:
    """One galaxy: input, reconstruction and residual maps of every line, and a bar per line below.

    Parameters
    ----------
    flux, reconstruction : arrays, shape (L, S, S)
        Input and reconstructed line fluxes, in 1e-17 erg/s/cm^2/spaxel.
    valid : array, shape (L, S, S)
        1 = usable pixel; others are grey.
    lines : sequence of str
        DAP names of the ``L`` lines, titled as astronomers write them.
    line_values : array, shape (L,)
        One number per line for the bar chart (a per-line error, or the z-scores a ranking
        averages).
    path : path of the PNG.
    title : str
    linear_width : float
        Arcsinh softening of the colour scales, flux units.
    values_label : str
        Y-axis label of the bar chart.
    highlight : int
        Colour the bars of this many highest values apart (the lines a score averages).
        A NaN value (a line the score leaves out) gets no bar.
    """
    flux, recon, valid = (np.asarray(a) for a in (flux, reconstruction, valid))
    line_values = np.asarray(line_values, dtype=float)
    n_lines = len(lines)
    if not (flux.shape == recon.shape == valid.shape) or flux.ndim != 3 or flux.shape[0] != n_lines:
        raise ValueError(
            f"flux, reconstruction and valid must share shape ({n_lines}, S, S). "
            f"Received: {flux.shape}, {recon.shape}, {valid.shape}"
        )
    if line_values.shape != (n_lines,):
        raise ValueError(f"line_values must have shape ({n_lines},). Received: {line_values.shape}")
    from matplotlib.colors import AsinhNorm

    good = valid.astype(bool) & np.isfinite(flux) & np.isfinite(recon)
    residual = np.where(good, flux - recon, np.nan)
    flux_norm = AsinhNorm(linear_width=linear_width, **_flux_limits(flux[good], recon[good]))
    r_max = float(np.nanpercentile(np.abs(residual), 99.5)) if good.any() else 1.0
    r_max = r_max if r_max > 0 else 1.0
    residual_norm = AsinhNorm(linear_width=linear_width, vmin=-r_max, vmax=r_max)
    names = [pretty_line_name(name) for name in lines]

    width, height = 1.25 * n_lines + 2.0, 6.8
    fig = new_figure((width, height), layout=None)
    axes = _gallery_map_axes(fig, n_lines, width, height)
    rows = (("input", flux, flux_norm, "magma"), ("reconstruction", recon, flux_norm, "magma"),
            ("input \u2212 reconstruction", residual, residual_norm, "RdBu_r"))
    images = []
    for row, (row_name, data, norm, cmap) in enumerate(rows):
        for col in range(n_lines):
            ax = axes[row, col]
            image = _show_map(ax, data[col], good[col], norm, cmap)
            if row == 0:
                ax.set_title(names[col], fontsize=8)
            if col == 0:
                ax.set_ylabel(row_name, fontsize=8)
        images.append(image)
    # Input and reconstruction share one colour scale, hence one colourbar across both rows.
    for image, (first, last) in ((images[0], (0, 1)), (images[2], (2, 2))):
        colourbar = fig.colorbar(image, cax=_colourbar_axes(fig, axes[first, -1], axes[last, -1], width))
        _asinh_colourbar(colourbar, image.norm, linear_width, FLUX_UNIT_TWO_LINES)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    ax = fig.add_axes((_GALLERY_LEFT / width, _GALLERY_BAR_BOTTOM / height,
                       1 - (_GALLERY_LEFT + _GALLERY_RIGHT) / width, _GALLERY_BAR_HEIGHT / height))
    colours = np.full(n_lines, _BAR_COLOUR, dtype=object)
    if highlight:
        finite = np.flatnonzero(np.isfinite(line_values))
        colours[finite[np.argsort(line_values[finite])[::-1][:highlight]]] = HIGHLIGHT_COLOUR
    ax.bar(np.arange(n_lines), np.where(np.isfinite(line_values), line_values, 0.0), color=list(colours))
    ax.axhline(0.0, color="0.3", linewidth=0.6)
    ax.set_xticks(np.arange(n_lines), names, rotation=45, ha="right", fontsize=8)
    ax.set_xlim(-0.6, n_lines - 0.4)
    ax.set_ylabel(values_label, fontsize=8)
    return save_png(fig, path)


def plot_neighbours(
    flux: np.ndarray,
    valid: np.ndarray,
    lines: Sequence[str],
    path: str | os.PathLike,
    *,
    ids: Sequence[str],
    labels: Sequence[str] | None = None,
    distances: Sequence[float] | None = None,
    linear_width: float = DEFAULT_LINEAR_WIDTH,
) -> Path:
    """A query galaxy (first column) and its latent neighbours: Ha, [OIII] 5008, [NII] 6585, log [NII]/Ha.

    Parameters
    ----------
    flux, valid : arrays, shape (1 + k, L, S, S)
        Maps of the query followed by its ``k`` neighbours.
    lines : sequence of str
        DAP names of the ``L`` lines; must include Ha-6564, OIII-5008 and NII-6585.
    ids : sequence of str, length 1 + k
    labels : sequence of str, optional
    distances : sequence of float, optional
        Latent distance of each neighbour to the query (length k or 1 + k).
    """
    flux, valid = np.asarray(flux, dtype=float), np.asarray(valid).astype(bool)
    if flux.ndim != 4 or flux.shape != valid.shape or flux.shape[1] != len(lines):
        raise ValueError(
            f"flux and valid must share shape (1 + k, {len(lines)}, S, S). Received: {flux.shape} and {valid.shape}"
        )
    n_gal = flux.shape[0]
    if len(ids) != n_gal:
        raise ValueError(f"ids must have {n_gal} entries (query first). Received: {len(ids)}")
    index = _line_indices(lines, _NEIGHBOUR_LINES)
    if distances is not None and len(distances) == n_gal - 1:
        distances = [math.nan, *distances]
    good = valid & np.isfinite(flux)
    maps = [np.where(good[:, i], flux[:, i], np.nan) for i in index]
    ha, nii = maps[0], maps[2]
    ratio_ok = good[:, index[0]] & good[:, index[2]] & (np.nan_to_num(ha) > 0) & (np.nan_to_num(nii) > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.where(ratio_ok, np.log10(np.where(ratio_ok, nii / np.where(ratio_ok, ha, 1), 1)), np.nan)

    from matplotlib.colors import AsinhNorm, Normalize

    fig = new_figure((1.45 * n_gal + 1.6, 6.6))
    axes = fig.subplots(4, n_gal, squeeze=False)
    row_names = [pretty_line_name(_NEIGHBOUR_LINES[i]) for i in range(3)] + ["log [NII] 6585/H\u03b1"]
    for row in range(4):
        if row < 3:
            norm = AsinhNorm(linear_width=linear_width, **_flux_limits(maps[row][np.isfinite(maps[row])]))
            data, ok, cmap, unit = maps[row], good[:, index[row]], "magma", FLUX_UNIT
        else:
            norm, data, ok, cmap, unit = Normalize(-1.0, 0.5), log_ratio, ratio_ok, "coolwarm", "dex"
        image = None
        for col in range(n_gal):
            ax = axes[row, col]
            image = _show_map(ax, data[col], ok[col], norm, cmap)
            if col == 0:
                ax.set_ylabel(row_names[row], fontsize=8)
            if row == 0:
                ax.set_title(_neighbour_title(col, ids, labels, distances), fontsize=7)
        colourbar = fig.colorbar(image, ax=list(axes[row]), fraction=0.02, pad=0.01, aspect=8)
        if row < 3:
            _asinh_colourbar(colourbar, norm, linear_width, unit)
        else:
            colourbar.set_label(unit, fontsize=7)
    return save_png(fig, path)


# The gallery's layout, in inches: margins for the row labels and bar-chart axis (left), the
# colourbars and their labels (right), the title and line names (top), the rotated line names
# under the bar chart (bottom).
_GALLERY_LEFT, _GALLERY_RIGHT, _GALLERY_TOP = 0.75, 1.25, 0.6
_GALLERY_GAP = 0.08  # between maps
_GALLERY_BAR_BOTTOM, _GALLERY_BAR_HEIGHT = 0.95, 1.15


def _gallery_map_axes(fig, n_lines: int, width: float, height: float) -> np.ndarray:
    """A 3 x ``n_lines`` grid of square map axes under the title, placed by hand (no layout engine)."""
    cell = (width - _GALLERY_LEFT - _GALLERY_RIGHT - (n_lines - 1) * _GALLERY_GAP) / n_lines
    row_gap = 2.5 * _GALLERY_GAP
    maps_height = 3 * cell + 2 * row_gap
    grid = fig.add_gridspec(
        3, n_lines, left=_GALLERY_LEFT / width, right=1 - _GALLERY_RIGHT / width,
        top=1 - _GALLERY_TOP / height, bottom=1 - (_GALLERY_TOP + maps_height) / height,
        wspace=_GALLERY_GAP / cell, hspace=row_gap / cell,
    )
    return grid.subplots(squeeze=False)


def _colourbar_axes(fig, top_axes, bottom_axes, width: float):
    """A thin axes right of the map rows from ``top_axes`` down to ``bottom_axes`` (last column)."""
    upper, lower = top_axes.get_position(), bottom_axes.get_position()
    return fig.add_axes((upper.x1 + 0.12 / width, lower.y0, 0.15 / width, upper.y1 - lower.y0))


def _flux_limits(*samples: np.ndarray) -> dict[str, float]:
    data = np.concatenate([np.ravel(s) for s in samples]) if samples else np.zeros(0)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return {"vmin": 0.0, "vmax": 1.0}
    lo, hi = np.percentile(data, [0.5, 99.5])
    lo = min(float(lo), 0.0)
    hi = float(hi) if hi > lo else lo + 1.0
    return {"vmin": lo, "vmax": hi}


def _show_map(ax, data: np.ndarray, ok: np.ndarray, norm, cmap_name: str):
    import matplotlib

    cmap = matplotlib.colormaps[cmap_name].with_extremes(bad=BAD_COLOUR)
    masked = np.ma.masked_array(np.nan_to_num(data), mask=~ok.astype(bool))
    image = ax.imshow(masked, origin="lower", norm=norm, cmap=cmap, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def _asinh_colourbar(colourbar, norm, linear_width: float, label: str) -> None:
    """Readable ticks on an arcsinh colourbar: 0 and 1-2-5 steps, spread along the bar."""
    def position(t: float) -> float:
        return float(np.arcsinh(t / linear_width))

    span = position(norm.vmax) - position(norm.vmin)
    candidates = [0.0] + [sign * m * 10.0**e for e in range(6, -4, -1) for m in (5, 2, 1) for sign in (1, -1)]
    kept: list[float] = []
    for tick in candidates:  # 0 first, then the largest magnitudes
        if norm.vmin <= tick <= norm.vmax and all(
            abs(position(tick) - position(k)) >= _MIN_TICK_SEPARATION * span for k in kept
        ):
            kept.append(tick)
    kept.sort()
    colourbar.set_ticks(kept, labels=[f"{t:g}" for t in kept])
    colourbar.minorticks_off()
    colourbar.ax.tick_params(labelsize=7)
    colourbar.set_label(label, fontsize=7)


def _line_indices(lines: Sequence[str], wanted: Sequence[str]) -> list[int]:
    lookup = {name.lower(): i for i, name in enumerate(lines)}
    missing = [w for w in wanted if w.lower() not in lookup]
    if missing:
        raise ValueError(f"lines must include {list(wanted)}; missing {missing}. Received: {list(lines)}")
    return [lookup[w.lower()] for w in wanted]


def _neighbour_title(col: int, ids: Sequence[str], labels: Sequence[str] | None, distances) -> str:
    head = "query" if col == 0 else f"neighbour {col}"
    parts = [head, str(ids[col])]
    if labels is not None:
        parts.append(str(labels[col]) or "unlabelled")
    if distances is not None and col > 0 and np.isfinite(distances[col]):
        parts.append(f"d = {float(distances[col]):.3g}")
    return "\n".join(parts)
