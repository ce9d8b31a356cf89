"""The report's plots: training curves, score histogram, UMAP maps, BPT diagram, ROC and PR curves."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ifskeras.discovery.figures.style import class_colour, new_figure, save_png
from ifskeras.survey.bpt import kauffmann03, kewley01_nii

__all__ = ["plot_loss_curves", "plot_score_histogram", "plot_umap_by_score", "plot_umap_by_label", "plot_bpt", "plot_roc_pr"]

_BPT_X_RANGE = (-2.0, 1.0)
_BPT_Y_RANGE = (-1.5, 1.5)


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
    fig = new_figure((10 if terms else 6, 4))
    axes = fig.subplots(1, 2 if terms else 1, squeeze=False)[0]
    _draw_curves(axes[0], epochs, columns, ("loss", "val_loss"), "total loss")
    if terms:
        names = [n for t in terms for n in (t, f"val_{t}")]
        _draw_curves(axes[1], epochs, columns, names, "loss terms")
    return save_png(fig, path)


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
    fig = new_figure((7, 4))
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
    return save_png(fig, path)


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
    fig = new_figure((6.5, 5.5))
    ax = fig.subplots()
    points = ax.scatter(x[order], y[order], c=s[order], s=6, cmap="viridis", vmin=lo, vmax=hi, lw=0,
                        plotnonfinite=True)
    fig.colorbar(points, ax=ax, label=score_name, extend="both")
    _umap_axes(ax)
    return save_png(fig, path)


def plot_umap_by_label(umap_x: np.ndarray, umap_y: np.ndarray, labels: np.ndarray, path: str | os.PathLike) -> Path:
    """UMAP embedding coloured by class; unlabelled galaxies grey underneath, rare classes on top."""
    x, y = np.asarray(umap_x, dtype=float), np.asarray(umap_y, dtype=float)
    labels = np.asarray(labels, dtype=str)
    classes = _classes_by_count(labels)
    fig = new_figure((6.5, 5.5))
    ax = fig.subplots()
    for label in sorted(classes, key=lambda c: (c != "", classes.index(c))):
        member = labels == label
        ax.scatter(x[member], y[member], s=4 if label == "" else 8, lw=0, color=class_colour(label, classes),
                   label=f"{label or 'unlabelled'} ({int(member.sum())})")
    ax.legend(fontsize=8, markerscale=2, frameon=False, loc="best")
    _umap_axes(ax)
    return save_png(fig, path)


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
    fig = new_figure((6.5, 5.5))
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
    return save_png(fig, path)


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
    fig = new_figure((11, 4.8))
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
    return save_png(fig, path)


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
