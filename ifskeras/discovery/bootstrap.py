"""Bootstrap resamples as weights, and rank metrics of many weighted resamples at once.

:mod:`ifskeras.discovery.metrics` draws its resamples with :func:`resample_weights`
(one row of multiplicities per resample) and scores every row with
:func:`weighted_metrics`; a single row of ones gives the point estimate. Galaxies are
sorted once per score and tied scores merged into blocks, so each resample costs a few
cumulative sums instead of a sort, and the metrics of ``_BOOTSTRAP_CHUNK`` resamples
are computed together to bound memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Estimate", "json_float", "percentile_interval", "resample_weights", "weighted_metrics"]

_BOOTSTRAP_CHUNK = 128


@dataclass(frozen=True)
class Estimate:
    """A point estimate with the bounds of its bootstrap confidence interval (NaN if none)."""

    value: float
    low: float = math.nan
    high: float = math.nan

    def to_dict(self) -> dict[str, float | None]:
        """JSON-able dict; NaN becomes ``None``."""
        return {"value": json_float(self.value), "low": json_float(self.low), "high": json_float(self.high)}


def percentile_interval(point: float, replicates: np.ndarray, tail: float) -> Estimate:
    """Point estimate with the percentile interval of its finite bootstrap replicates."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return Estimate(float(point))
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Estimate(float(point), float(low), float(high))


def json_float(x: float) -> float | None:
    """``float(x)``, or ``None`` for NaN and infinities (JSON has neither)."""
    x = float(x)
    return x if math.isfinite(x) else None


def resample_weights(rng: np.random.Generator, y: np.ndarray, n_bootstrap: int, stratified: bool) -> np.ndarray:
    """Bootstrap multiplicities, shape (n_bootstrap, n): how often each galaxy is drawn.

    ``y`` holds 1 for positives and 0 for negatives. Stratified: each row draws as many
    positives and negatives as there are, each class with replacement; otherwise each
    row draws ``n`` galaxies from all of them.
    """
    n = y.size
    weights = np.zeros((n_bootstrap, n))
    if n_bootstrap == 0:
        return weights
    if stratified:
        for group in (np.flatnonzero(y == 1), np.flatnonzero(y == 0)):
            m = group.size
            weights[:, group] = rng.multinomial(m, np.full(m, 1.0 / m), size=n_bootstrap)
    else:
        weights[:] = rng.multinomial(n, np.full(n, 1.0 / n), size=n_bootstrap)
    return weights


def weighted_metrics(
    score: np.ndarray, y: np.ndarray, weights: np.ndarray, k_values: Mapping[str, int]
) -> dict[str, np.ndarray]:
    """AUROC, AP and tie-aware precision/recall/enrichment@k for rows of sample weights.

    Equivalent to scikit-learn's ``roc_auc_score`` and ``average_precision_score`` with
    ``sample_weight=weights[b]``; rows missing a class give NaN. Returns one array of
    ``weights.shape[0]`` values per metric: ``"auroc"``, ``"average_precision"`` and
    ``"p@key"``, ``"r@key"``, ``"e@key"`` for each key of ``k_values``.
    """
    order = np.argsort(-score, kind="stable")
    sorted_score = score[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_score)) + 1]
    y_sorted = y[order].astype(np.float64)
    names = ["auroc", "average_precision"] + [f"{m}@{key}" for key in k_values for m in ("p", "r", "e")]
    out: dict[str, list[np.ndarray]] = {name: [np.zeros(0)] for name in names}
    for begin in range(0, weights.shape[0], _BOOTSTRAP_CHUNK):
        w = weights[begin : begin + _BOOTSTRAP_CHUNK][:, order]
        w_block = np.add.reduceat(w, starts, axis=1)
        pos_block = np.add.reduceat(w * y_sorted, starts, axis=1)
        neg_block = w_block - pos_block
        cum_w = np.cumsum(w_block, axis=1)
        cum_pos = np.cumsum(pos_block, axis=1)
        cum_neg = cum_w - cum_pos
        n_pos = cum_pos[:, -1]
        n_neg = cum_neg[:, -1]
        n_all = cum_w[:, -1]
        with np.errstate(divide="ignore", invalid="ignore"):
            below = n_neg[:, None] - cum_neg + 0.5 * neg_block
            auroc = (pos_block * below).sum(axis=1) / (n_pos * n_neg)
            precision_curve = np.where(cum_w > 0, cum_pos / np.where(cum_w > 0, cum_w, 1), 0.0)
            ap = (pos_block * precision_curve).sum(axis=1) / n_pos
            valid = (n_pos > 0) & (n_neg > 0)
            _append(out, "auroc", np.where(valid, auroc, np.nan))
            _append(out, "average_precision", np.where(valid, ap, np.nan))
            rows = np.arange(w.shape[0])
            for key, k in k_values.items():
                block = np.minimum((cum_w < k).sum(axis=1), cum_w.shape[1] - 1)
                w_before = np.where(block > 0, cum_w[rows, block - 1], 0.0)
                pos_before = np.where(block > 0, cum_pos[rows, block - 1], 0.0)
                tied = w_block[rows, block]
                share = np.where(tied > 0, pos_block[rows, block] / np.where(tied > 0, tied, 1), 0.0)
                hits = pos_before + (k - w_before) * share
                precision = hits / k
                _append(out, f"p@{key}", np.where(valid, precision, np.nan))
                _append(out, f"r@{key}", np.where(valid, hits / n_pos, np.nan))
                _append(out, f"e@{key}", np.where(valid, precision / (n_pos / n_all), np.nan))
    return {name: np.concatenate(parts) for name, parts in out.items()}


def _append(out: dict[str, list[np.ndarray]], name: str, values: np.ndarray) -> None:
    out[name].append(values)
