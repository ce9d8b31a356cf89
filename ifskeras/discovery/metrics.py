"""Score metrics against labels: AUROC, AP, precision/recall/enrichment@k, class recall, baselines.

Every score follows one convention: higher means more anomalous. An evaluation asks how
well a score ranks the *positive* classes (by default Seyfert AGN and blueberry
galaxies) above the *negative* ones (by default every other galaxy, labelled or not),
with percentile-bootstrap 95% confidence intervals.

Bootstrap scheme
----------------
By default the bootstrap is *stratified*: each resample draws ``n_pos`` galaxies with
replacement from the positives and ``n_neg`` from the negatives, so every resample has
both classes and the same base rate (precision@k and enrichment keep their meaning).
``stratified=False`` resamples all evaluated galaxies together; resamples that miss a
class are dropped from the intervals. The same resamples serve every score, so
differences between scores (:func:`ifskeras.discovery.comparison.compare_to_baselines`)
are paired.

Ties
----
Precision@k, recall@k and the per-class recall in the top 1% / 5% are tie-aware: when
the k-th place falls inside a group of equal scores, the group contributes its expected
number of members under random tie-breaking (so results never depend on input order).
AUROC and average precision follow ``sklearn.metrics`` (ties count one half in AUROC,
and one threshold per distinct score in AP); the bootstrap uses an exact vectorised
equivalent of both (:mod:`ifskeras.discovery.bootstrap`), checked against scikit-learn
in the tests.

The label helpers at the end (:func:`class_display_name`, :func:`as_labels`,
:func:`count_classes`) are shared with
:mod:`ifskeras.discovery.retrieval`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ifskeras.discovery.bootstrap import Estimate, json_float, percentile_interval, resample_weights, weighted_metrics

__all__ = [
    "DEFAULT_POSITIVE",
    "DEFAULT_KS",
    "DEFAULT_TOP_FRACTIONS",
    "Estimate",
    "ScoreMetrics",
    "Evaluation",
    "evaluate_scores",
    "class_display_name",
]

#: Classes an anomaly score should find (synthetic class names).
DEFAULT_POSITIVE: tuple[str, ...] = ("Seyfert", "blueberry")
#: Cut-offs for precision@k and recall@k; ``"n_pos"`` means k = number of positives.
DEFAULT_KS: tuple[int | str, ...] = (50, 100, "n_pos")
#: Fractions of the whole sample whose per-class recall is reported.
DEFAULT_TOP_FRACTIONS: tuple[float, ...] = (0.01, 0.05)
_N_POS_KEY = "n_pos"
_UNLABELLED = "unlabelled"


@dataclass(frozen=True)
class ScoreMetrics:
    """Metrics of one score. Keys of the ``*_at_k`` dicts are those of ``Evaluation.k_values``."""

    name: str
    auroc: Estimate
    average_precision: Estimate
    precision_at_k: dict[str, Estimate]
    recall_at_k: dict[str, Estimate]
    enrichment_at_k: dict[str, Estimate]
    #: class label -> top fraction -> recall of that class among the top fraction of all galaxies.
    class_recall: dict[str, dict[float, float]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "name": self.name,
            "auroc": self.auroc.to_dict(),
            "average_precision": self.average_precision.to_dict(),
            "precision_at_k": {k: e.to_dict() for k, e in self.precision_at_k.items()},
            "recall_at_k": {k: e.to_dict() for k, e in self.recall_at_k.items()},
            "enrichment_at_k": {k: e.to_dict() for k, e in self.enrichment_at_k.items()},
            "class_recall": {
                class_display_name(c): {_fraction_key(f): json_float(v) for f, v in d.items()}
                for c, d in self.class_recall.items()
            },
        }


@dataclass(frozen=True)
class Evaluation:
    """Result of :func:`evaluate_scores`: per-score metrics and the bootstrap behind them."""

    positive: tuple[str, ...]
    negative: tuple[str, ...] | None
    #: Number of galaxies of each label in the whole sample ("" = unlabelled).
    class_counts: dict[str, int]
    n_positive: int
    n_negative: int
    #: Name of each cut-off -> k actually used (ints larger than the sample are clipped).
    k_values: dict[str, int]
    top_fractions: tuple[float, ...]
    n_bootstrap: int
    confidence: float
    stratified: bool
    seed: int
    metrics: dict[str, ScoreMetrics]
    #: Bootstrap replicates per score, aligned across scores (same resamples): for paired tests.
    bootstrap_auroc: dict[str, np.ndarray] = field(repr=False, compare=False)
    bootstrap_average_precision: dict[str, np.ndarray] = field(repr=False, compare=False)
    #: The evaluated galaxies: 1 = positive, 0 = negative, and their scores (for curves).
    y_true: np.ndarray = field(repr=False, compare=False)
    score_values: dict[str, np.ndarray] = field(repr=False, compare=False)

    @property
    def base_rate(self) -> float:
        """Fraction of positives among the evaluated galaxies."""
        return self.n_positive / (self.n_positive + self.n_negative)

    def k_label(self, key: str) -> str:
        """Display name of a cut-off: ``'50'`` or ``'n_pos=48'``."""
        return f"{key}={self.k_values[key]}" if key == _N_POS_KEY else key

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no bootstrap replicates; NaN becomes ``None``)."""
        return {
            "positive": list(self.positive),
            "negative": None if self.negative is None else list(self.negative),
            "class_counts": {class_display_name(c): n for c, n in self.class_counts.items()},
            "n_positive": self.n_positive,
            "n_negative": self.n_negative,
            "base_rate": self.base_rate,
            "k_values": dict(self.k_values),
            "top_fractions": list(self.top_fractions),
            "n_bootstrap": self.n_bootstrap,
            "confidence": self.confidence,
            "stratified": self.stratified,
            "seed": self.seed,
            "metrics": {name: m.to_dict() for name, m in self.metrics.items()},
        }


def evaluate_scores(
    scores: Mapping[str, np.ndarray],
    labels: np.ndarray | Sequence[str],
    *,
    positive: Sequence[str] | str = DEFAULT_POSITIVE,
    negative: Sequence[str] | str | None = None,
    ks: Sequence[int | str] = DEFAULT_KS,
    top_fractions: Sequence[float] = DEFAULT_TOP_FRACTIONS,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    stratified: bool = True,
    seed: int = 0,
) -> Evaluation:
    """Rank-based metrics of anomaly scores against class labels, with bootstrap CIs.

    Parameters
    ----------
    scores : mapping of str to array of shape (N,)
        Score name -> one finite value per galaxy; higher = more anomalous.
    labels : array of str, shape (N,)
        Class of each galaxy; ``""`` for unlabelled (bytes are decoded).
    positive : sequence of str
        Classes counted as positives.
    negative : sequence of str, optional
        Classes counted as negatives. ``None``: every galaxy that is not positive,
        unlabelled ones included. Galaxies in neither set are left out of AUROC, AP
        and precision/recall@k, but still count in the per-class recall.
    ks : sequence of int or "n_pos"
        Cut-offs of precision@k, recall@k and enrichment@k (precision@k / base rate).
        Integers above the number of evaluated galaxies are clipped to it.
    top_fractions : sequence of float
        For every class present, the fraction of its galaxies among the top
        ``ceil(f * N)`` of the *whole* sample.
    n_bootstrap : int
        Bootstrap resamples (0: no intervals).
    confidence : float
        Coverage of the percentile intervals.
    stratified : bool
        Resample positives and negatives separately (see the module docstring).
    seed : int
        Seed of the resamples; identical for every score.

    Returns
    -------
    Evaluation

    Raises
    ------
    ValueError
        Mismatched lengths, non-finite scores, overlapping class sets, or no positive
        or no negative galaxy (the message lists the classes present).

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array(["SF", "SF", "SF", "Seyfert"])
    >>> ev = evaluate_scores({"s": np.array([0.1, 0.2, 0.3, 0.9])}, labels, ks=(1,), n_bootstrap=0)
    >>> ev.metrics["s"].auroc.value, ev.metrics["s"].precision_at_k["1"].value
    (1.0, 1.0)
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = as_labels(labels)
    n_total = labels.shape[0]
    positive = _as_classes("positive", positive)
    negative = None if negative is None else _as_classes("negative", negative)
    values = _check_scores(scores, n_total)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1). Received: {confidence!r}")
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0. Received: {n_bootstrap!r}")
    fractions = tuple(float(f) for f in top_fractions)
    if any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"top_fractions must lie in (0, 1]. Received: {tuple(top_fractions)!r}")

    class_counts = count_classes(labels)
    is_pos = np.isin(labels, positive)
    if negative is None:
        is_neg = ~is_pos
    else:
        overlap = sorted(set(positive) & set(negative))
        if overlap:
            raise ValueError(f"Classes cannot be both positive and negative. Received: {overlap}")
        is_neg = np.isin(labels, negative)
    present = ", ".join(f"{class_display_name(c)!r} ({n})" for c, n in class_counts.items())
    if not is_pos.any():
        raise ValueError(f"No positive galaxies: none labelled {list(positive)}. Classes present: {present}")
    if not is_neg.any():
        wanted = "not positive" if negative is None else f"labelled {list(negative)}"
        raise ValueError(f"No negative galaxies ({wanted}). Classes present: {present}")

    selected = is_pos | is_neg
    y = is_pos[selected].astype(np.int8)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    k_values = _resolve_ks(ks, n_pos, n_pos + n_neg)
    tail = (1 - confidence) / 2 * 100

    rng = np.random.default_rng(seed)
    resamples = resample_weights(rng, y, n_bootstrap, stratified)
    subset_scores = {name: v[selected] for name, v in values.items()}
    metrics: dict[str, ScoreMetrics] = {}
    boot_auroc: dict[str, np.ndarray] = {}
    boot_ap: dict[str, np.ndarray] = {}
    for name, s in subset_scores.items():
        point = weighted_metrics(s, y, np.ones((1, y.size)), k_values)
        boot = weighted_metrics(s, y, resamples, k_values)
        boot_auroc[name], boot_ap[name] = boot["auroc"], boot["average_precision"]
        precision, recall, enrichment = {}, {}, {}
        for key in k_values:
            precision[key] = percentile_interval(point[f"p@{key}"][0], boot[f"p@{key}"], tail)
            recall[key] = percentile_interval(point[f"r@{key}"][0], boot[f"r@{key}"], tail)
            enrichment[key] = percentile_interval(point[f"e@{key}"][0], boot[f"e@{key}"], tail)
        metrics[name] = ScoreMetrics(
            name=name,
            auroc=percentile_interval(roc_auc_score(y, s), boot["auroc"], tail),
            average_precision=percentile_interval(average_precision_score(y, s), boot["average_precision"], tail),
            precision_at_k=precision,
            recall_at_k=recall,
            enrichment_at_k=enrichment,
            class_recall=_class_recall(values[name], labels, class_counts, fractions),
        )
    return Evaluation(
        positive=positive,
        negative=negative,
        class_counts=class_counts,
        n_positive=n_pos,
        n_negative=n_neg,
        k_values=k_values,
        top_fractions=fractions,
        n_bootstrap=int(n_bootstrap),
        confidence=float(confidence),
        stratified=bool(stratified),
        seed=int(seed),
        metrics=metrics,
        bootstrap_auroc=boot_auroc,
        bootstrap_average_precision=boot_ap,
        y_true=y,
        score_values=subset_scores,
    )


# --------------------------------------------------------------------------- helpers


def _fraction_key(fraction: float) -> str:
    return f"{fraction * 100:g}pct"


def _as_classes(name: str, classes: Sequence[str] | str) -> tuple[str, ...]:
    result = (classes,) if isinstance(classes, str) else tuple(str(c) for c in classes)
    if not result:
        raise ValueError(f"{name} must name at least one class. Received: {classes!r}")
    return result


def _check_scores(scores: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    if not scores:
        raise ValueError("scores must contain at least one score. Received: an empty mapping")
    values = {}
    for name, s in scores.items():
        s = np.asarray(s, dtype=np.float64).ravel()
        if s.shape[0] != n:
            raise ValueError(f"Score {name!r} has {s.shape[0]} values but there are {n} labels.")
        bad = int((~np.isfinite(s)).sum())
        if bad:
            raise ValueError(f"Score {name!r} has {bad} non-finite values; drop or fill them first.")
        values[str(name)] = s
    return values


def _resolve_ks(ks: Sequence[int | str], n_pos: int, n_eval: int) -> dict[str, int]:
    k_values: dict[str, int] = {}
    for k in ks:
        if k == _N_POS_KEY:
            k_values[_N_POS_KEY] = n_pos
            continue
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"ks must hold positive ints or {_N_POS_KEY!r}. Received: {k!r}")
        k = min(int(k), n_eval)
        k_values.setdefault(str(k), k)
    if not k_values:
        raise ValueError(f"ks must not be empty. Received: {ks!r}")
    return k_values


def _expected_in_top(score: np.ndarray, member: np.ndarray, n_top: int) -> float:
    """Expected number of members among the ``n_top`` highest scores, ties broken at random."""
    threshold = np.sort(score)[::-1][n_top - 1]
    above = score > threshold
    tied = score == threshold
    remaining = n_top - int(above.sum())
    return float(member[above].sum() + remaining * member[tied].sum() / tied.sum())


def _class_recall(
    score: np.ndarray, labels: np.ndarray, class_counts: Mapping[str, int], fractions: Sequence[float]
) -> dict[str, dict[float, float]]:
    n = score.size
    result: dict[str, dict[float, float]] = {}
    for label, count in class_counts.items():
        member = labels == label
        result[label] = {
            f: _expected_in_top(score, member, max(1, math.ceil(f * n))) / count for f in fractions
        }
    return result


# --------------------------------------------------------------------------- shared with retrieval


def class_display_name(label: str) -> str:
    """Label as shown in tables: the empty label reads ``'unlabelled'``."""
    return label if label else _UNLABELLED


def as_labels(labels: Any) -> np.ndarray:
    """Labels as a 1-D array of str; bytes decoded, masked or None entries become ''."""
    if hasattr(labels, "filled"):
        labels = labels.filled("")
    out = []
    for item in np.asarray(labels, dtype=object).ravel():
        if item is None:
            out.append("")
        elif isinstance(item, bytes | np.bytes_):
            out.append(item.decode("utf-8"))
        else:
            out.append(str(item))
    return np.asarray(out, dtype=str) if out else np.zeros(0, dtype=str)


def count_classes(labels: np.ndarray) -> dict[str, int]:
    """Number of galaxies of each label, most frequent first (ties by name)."""
    names, counts = np.unique(labels, return_counts=True)
    order = np.lexsort((names, -counts))
    return {str(names[i]): int(counts[i]) for i in order}
