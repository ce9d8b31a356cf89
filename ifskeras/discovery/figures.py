"""Figures of the report: each function draws one PNG, writes it and returns its path.

Figures are built as ``matplotlib.figure.Figure`` objects and saved with the Agg
canvas, never through ``pyplot``: no global state, no open-figure registry, no GUI
backend, safe in worker processes and tests.

Emission-line maps are shown with an arcsinh stretch (``matplotlib.colors.AsinhNorm``)
that is linear below ``linear_width`` (in flux units, about the per-spaxel noise) and
logarithmic above, so faint and bright lines share one colour scale and one colourbar.
Invalid pixels are grey. Maps are drawn with ``origin="lower"``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ifskeras.survey.bpt import kauffmann03, kewley01_nii
from ifskeras.survey.lines import pretty_line_name

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

#: Unit of MaNGA DAP line fluxes, as written on colourbars.
FLUX_UNIT = "1e-17 erg s$^{-1}$ cm$^{-2}$ spaxel$^{-1}$"
_FLUX_UNIT_TWO_LINES = FLUX_UNIT.replace(" cm", "\ncm", 1)
DPI = 100
#: Arcsinh softening of the map colour scales, in flux units.
DEFAULT_LINEAR_WIDTH = 0.1
_BAD_COLOUR = "0.85"
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
_NEIGHBOUR_LINES = ("Ha-6564", "OIII-5008", "NII-6585")
_MIN_TICK_SEPARATION = 0.12  # of the colourbar length, in arcsinh space
_BPT_X_RANGE = (-2.0, 1.0)
_BPT_Y_RANGE = (-1.5, 1.5)


def class_colour(label: str, order: Sequence[str] = ()) -> str:
    """Fixed colour of a synthetic class; other classes take colours by their place in ``order``."""
    if label in _CLASS_COLOURS:
        return _CLASS_COLOURS[label]
    others = [c for c in order if c not in _CLASS_COLOURS]
    position = others.index(label) if label in others else len(others)
    return _EXTRA_COLOURS[position % len(_EXTRA_COLOURS)]


def plot_loss_curves(history: Mapping[str, Sequence[float]] | str | os.PathLike, path: str | os.PathLike) -> Path:
    """Training and validation loss per epoch; a second panel for the VAE's loss terms.

    Parameters
    ----------
    history : mapping or path
        Keras ``History.history``-like dict, or a CSV (``keras.callbacks.CSVLogger``)
        with columns ``epoch, loss, val_loss`` and optionally ``reconstruction_loss``,
        ``kl_loss`` and their ``val_`` twins.
    path : path of the PNG.
    """
    columns = _read_history(history)
    if "loss" not in columns:
        raise ValueError(f"history needs a 'loss' column. Received columns: {sorted(columns)}")
    n_epochs = len(columns["loss"])
    epochs = np.asarray(columns.get("epoch", np.arange(n_epochs)), dtype=float)
    terms = [name for name in ("reconstruction_loss", "kl_loss") if name in columns]
    fig = _figure((10 if terms else 6, 4))
    axes = fig.subplots(1, 2 if terms else 1, squeeze=False)[0]
    _draw_curves(axes[0], epochs, columns, ("loss", "val_loss"), "total loss")
    if terms:
        names = [n for t in terms for n in (t, f"val_{t}")]
        _draw_curves(axes[1], epochs, columns, names, "loss terms")
    return _save(fig, path)


def plot_score_histogram(
    scores: np.ndarray,
    path: str | os.PathLike,
    *,
    score_name: str = "anomaly score",
    percentiles: Sequence[float] = (95, 99),
    labels: np.ndarray | None = None,
) -> Path:
    """Histogram of a score (log counts) with its percentiles marked; labelled classes as outlines."""
    scores = np.asarray(scores, dtype=float)
    finite = np.isfinite(scores)
    values = scores[finite]
    if values.size == 0:
        raise ValueError("scores has no finite values to plot.")
    fig = _figure((7, 4))
    ax = fig.subplots()
    bins = np.histogram_bin_edges(values, bins=min(60, max(10, values.size // 10)))
    ax.hist(values, bins=bins, color="0.75", label=f"all ({values.size})")
    if labels is not None:
        labels = np.asarray(labels, dtype=str)[finite]
        classes = _classes_by_count(labels)
        for label in classes:
            if label:
                member = labels == label
                ax.hist(values[member], bins=bins, histtype="step", lw=1.5,
                        color=class_colour(label, classes), label=f"{label} ({int(member.sum())})")
    for q, style in zip(percentiles, ("--", ":", "-.", "-"), strict=False):
        level = float(np.percentile(values, q))
        ax.axvline(level, color="k", ls=style, lw=1, label=f"{q:g}th percentile = {level:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel(score_name)
    ax.set_ylabel("number of galaxies")
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, path)


def plot_umap_by_score(
    umap_x: np.ndarray,
    umap_y: np.ndarray,
    scores: np.ndarray,
    path: str | os.PathLike,
    *,
    score_name: str = "anomaly score",
) -> Path:
    """UMAP embedding coloured by a score (1st to 99th percentile), highest scores on top."""
    x, y, s = (np.asarray(a, dtype=float) for a in (umap_x, umap_y, scores))
    order = np.argsort(np.where(np.isfinite(s), s, -np.inf), kind="stable")
    lo, hi = np.nanpercentile(s, [1, 99]) if np.isfinite(s).any() else (0.0, 1.0)
    fig = _figure((6.5, 5.5))
    ax = fig.subplots()
    points = ax.scatter(x[order], y[order], c=s[order], s=6, cmap="viridis", vmin=lo, vmax=hi, lw=0,
                        plotnonfinite=True)
    fig.colorbar(points, ax=ax, label=score_name, extend="both")
    _umap_axes(ax)
    return _save(fig, path)


def plot_umap_by_label(umap_x: np.ndarray, umap_y: np.ndarray, labels: np.ndarray, path: str | os.PathLike) -> Path:
    """UMAP embedding coloured by class; unlabelled galaxies grey underneath, rare classes on top."""
    x, y = np.asarray(umap_x, dtype=float), np.asarray(umap_y, dtype=float)
    labels = np.asarray(labels, dtype=str)
    classes = _classes_by_count(labels)
    fig = _figure((6.5, 5.5))
    ax = fig.subplots()
    for label in sorted(classes, key=lambda c: (c != "", classes.index(c))):
        member = labels == label
        ax.scatter(x[member], y[member], s=4 if label == "" else 8, lw=0, color=class_colour(label, classes),
                   label=f"{label or 'unlabelled'} ({int(member.sum())})")
    ax.legend(fontsize=8, markerscale=2, frameon=False, loc="best")
    _umap_axes(ax)
    return _save(fig, path)


def plot_bpt(
    log_nii_ha: np.ndarray,
    log_oiii_hb: np.ndarray,
    path: str | os.PathLike,
    *,
    scores: np.ndarray | None = None,
    score_name: str = "anomaly score",
) -> Path:
    """[NII] BPT diagram of central apertures coloured by score, with the Kauffmann 2003 and Kewley 2001 lines.

    Galaxies with a NaN ratio (S/N below threshold) are left out; the legend counts them.
    """
    x, y = np.asarray(log_nii_ha, dtype=float), np.asarray(log_oiii_hb, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"log_nii_ha and log_oiii_hb must have the same shape. Received: {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    fig = _figure((6.5, 5.5))
    ax = fig.subplots()
    if scores is not None:
        s = np.asarray(scores, dtype=float)[keep]
        order = np.argsort(s, kind="stable")
        lo, hi = np.percentile(s, [1, 99]) if s.size else (0.0, 1.0)
        points = ax.scatter(x[keep][order], y[keep][order], c=s[order], s=10, lw=0, cmap="viridis", vmin=lo, vmax=hi)
        fig.colorbar(points, ax=ax, label=score_name, extend="both")
    else:
        ax.scatter(x[keep], y[keep], s=10, lw=0, color="0.3")
    xs = np.linspace(_BPT_X_RANGE[0], 0.04, 200)
    ax.plot(xs, kauffmann03(xs), "k--", lw=1.2, label="Kauffmann et al. 2003")
    xs = np.linspace(_BPT_X_RANGE[0], 0.46, 200)
    ax.plot(xs, kewley01_nii(xs), "k-", lw=1.2, label="Kewley et al. 2001")
    ax.text(-1.2, -0.9, "star-forming", fontsize=9)
    ax.text(-0.15, -1.2, "composite", fontsize=9)
    ax.text(0.2, 1.1, "AGN", fontsize=9)
    ax.set_xlim(*_BPT_X_RANGE)
    ax.set_ylim(*_BPT_Y_RANGE)
    ax.set_xlabel("log([NII] 6585 / H\u03b1)")
    ax.set_ylabel("log([OIII] 5008 / H\u03b2)")
    ax.set_title(f"central apertures: {int(keep.sum())} shown, {int((~keep).sum())} without S/N \u2265 3", fontsize=9)
    ax.legend(fontsize=8, frameon=False, loc="lower left")
    return _save(fig, path)


def plot_gallery(
    flux: np.ndarray,
    reconstruction: np.ndarray,
    valid: np.ndarray,
    lines: Sequence[str],
    line_error: np.ndarray,
    path: str | os.PathLike,
    *,
    title: str = "",
    linear_width: float = DEFAULT_LINEAR_WIDTH,
    error_label: str = "per-line reconstruction error",
) -> Path:
    """One galaxy: input, reconstruction and residual maps of every line, and the per-line error.

    Parameters
    ----------
    flux, reconstruction : arrays, shape (L, S, S)
        Input and reconstructed line fluxes, in 1e-17 erg/s/cm^2/spaxel.
    valid : array, shape (L, S, S)
        1 = usable pixel; others are grey.
    lines : sequence of str
        DAP names of the ``L`` lines, titled as astronomers write them.
    line_error : array, shape (L,)
    path : path of the PNG.
    title : str
    linear_width : float
        Arcsinh softening of the colour scales, flux units.
    error_label : str
        Y-axis label of the bar chart.
    """
    flux, recon, valid = (np.asarray(a) for a in (flux, reconstruction, valid))
    line_error = np.asarray(line_error, dtype=float)
    n_lines = len(lines)
    if not (flux.shape == recon.shape == valid.shape) or flux.ndim != 3 or flux.shape[0] != n_lines:
        raise ValueError(
            f"flux, reconstruction and valid must share shape ({n_lines}, S, S). "
            f"Received: {flux.shape}, {recon.shape}, {valid.shape}"
        )
    if line_error.shape != (n_lines,):
        raise ValueError(f"line_error must have shape ({n_lines},). Received: {line_error.shape}")
    from matplotlib.colors import AsinhNorm

    good = valid.astype(bool) & np.isfinite(flux) & np.isfinite(recon)
    residual = np.where(good, flux - recon, np.nan)
    flux_norm = AsinhNorm(linear_width=linear_width, **_flux_limits(flux[good], recon[good]))
    r_max = float(np.nanpercentile(np.abs(residual), 99.5)) if good.any() else 1.0
    r_max = r_max if r_max > 0 else 1.0
    residual_norm = AsinhNorm(linear_width=linear_width, vmin=-r_max, vmax=r_max)
    names = [pretty_line_name(name) for name in lines]

    fig = _figure((1.25 * n_lines + 2.0, 6.8))
    top, bottom = fig.subfigures(2, 1, height_ratios=(3.0, 1.4))
    axes = top.subplots(3, n_lines, squeeze=False)
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
    for image, row_axes, aspect in ((images[0], axes[:2], 20), (images[2], axes[2], 10)):
        colourbar = top.colorbar(image, ax=list(np.ravel(row_axes)), fraction=0.02, pad=0.01, aspect=aspect)
        _asinh_colourbar(colourbar, image.norm, linear_width, _FLUX_UNIT_TWO_LINES)
    if title:
        top.suptitle(title, fontsize=10)
    ax = bottom.subplots()
    ax.bar(np.arange(n_lines), np.nan_to_num(line_error), color="#4c72b0")
    ax.set_xticks(np.arange(n_lines), names, rotation=45, ha="right", fontsize=8)
    ax.set_xlim(-0.6, n_lines - 0.4)
    ax.set_ylabel(error_label, fontsize=8)
    return _save(fig, path)


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

    fig = _figure((1.45 * n_gal + 1.6, 6.6))
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
    return _save(fig, path)


def plot_roc_pr(
    y_true: np.ndarray,
    scores: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    highlight: str | None = None,
) -> Path:
    """ROC and precision-recall curves of several scores on the same galaxies (1 = positive)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    y = np.asarray(y_true).astype(int)
    if not 0 < y.sum() < y.size:
        raise ValueError("y_true must contain both positives (1) and negatives (0).")
    fig = _figure((11, 4.8))
    roc_ax, pr_ax = fig.subplots(1, 2)
    for i, (name, s) in enumerate(scores.items()):
        s = np.asarray(s, dtype=float)
        chosen = name == highlight
        style = {"lw": 2.4 if chosen else 1.3, "color": f"C{i % 10}", "zorder": 3 if chosen else 2}
        fpr, tpr, _ = roc_curve(y, s)
        roc_ax.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(y, s):.3f})", **style)
        precision, recall, _ = precision_recall_curve(y, s)
        pr_ax.plot(recall, precision, drawstyle="steps-post", label=f"{name} (AP {average_precision_score(y, s):.3f})",
                   **style)
    roc_ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1, label="chance")
    pr_ax.axhline(y.mean(), color="0.6", ls=":", lw=1, label=f"chance (base rate {y.mean():.3f})")
    roc_ax.set_xlabel("false positive rate")
    roc_ax.set_ylabel("true positive rate")
    pr_ax.set_xlabel("recall")
    pr_ax.set_ylabel("precision")
    for ax in (roc_ax, pr_ax):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7, frameon=False)
    return _save(fig, path)


# --------------------------------------------------------------------------- helpers


def _figure(size: tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=DPI, layout="constrained")


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _read_history(history: Mapping[str, Sequence[float]] | str | os.PathLike) -> dict[str, np.ndarray]:
    if isinstance(history, Mapping):
        return {str(k): np.asarray(v, dtype=float) for k, v in history.items()}
    with open(history, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"History file {os.fspath(history)!r} has no rows.")
    return {name: np.array([float(r[name]) if r[name] not in ("", None) else math.nan for r in rows])
            for name in rows[0]}


def _draw_curves(ax, epochs: np.ndarray, columns: Mapping[str, np.ndarray], names: Sequence[str], ylabel: str) -> None:
    values = []
    for name in names:
        if name in columns:
            v = columns[name]
            ax.plot(epochs[: v.size], v, marker="o", ms=3, lw=1.4, ls="--" if name.startswith("val_") else "-",
                    label=name.replace("_", " "))
            values.append(v[np.isfinite(v)])
    data = np.concatenate(values) if values else np.zeros(0)
    if data.size and (data > 0).all() and data.max() / data.min() > 20:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, frameon=False)


def _classes_by_count(labels: np.ndarray) -> list[str]:
    names, counts = np.unique(labels, return_counts=True)
    return [str(names[i]) for i in np.lexsort((names, -counts))]


def _umap_axes(ax) -> None:
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_aspect("equal", adjustable="datalim")


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

    cmap = matplotlib.colormaps[cmap_name].with_extremes(bad=_BAD_COLOUR)
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
