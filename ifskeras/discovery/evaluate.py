"""Evaluate anomaly scores against labels, compare them with baselines, test latent retrieval.

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
differences between scores (:func:`compare_to_baselines`) are paired.

Ties
----
Precision@k, recall@k and the per-class recall in the top 1% / 5% are tie-aware: when
the k-th place falls inside a group of equal scores, the group contributes its expected
number of members under random tie-breaking (so results never depend on input order).
AUROC and average precision follow ``sklearn.metrics`` (ties count one half in AUROC,
and one threshold per distinct score in AP); the bootstrap uses an exact vectorised
equivalent of both, checked against scikit-learn in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_POSITIVE",
    "DEFAULT_KS",
    "DEFAULT_TOP_FRACTIONS",
    "RATIO_NAMES",
    "Estimate",
    "ScoreMetrics",
    "Evaluation",
    "Comparison",
    "ClassRetrieval",
    "RatioRetrieval",
    "Retrieval",
    "evaluate_scores",
    "compare_to_baselines",
    "neighbour_retrieval",
    "class_display_name",
]

#: Classes an anomaly score should find (synthetic class names).
DEFAULT_POSITIVE: tuple[str, ...] = ("Seyfert", "blueberry")
#: Cut-offs for precision@k and recall@k; ``"n_pos"`` means k = number of positives.
DEFAULT_KS: tuple[int | str, ...] = (50, 100, "n_pos")
#: Fractions of the whole sample whose per-class recall is reported.
DEFAULT_TOP_FRACTIONS: tuple[float, ...] = (0.01, 0.05)
#: Central-aperture line ratios used by :func:`neighbour_retrieval`, in column order.
RATIO_NAMES: tuple[str, ...] = (
    "log [NII] 6585/H\u03b1",
    "log [OIII] 5008/H\u03b2",
    "log [SII] 6718+6732/H\u03b1",
)
_N_POS_KEY = "n_pos"
_UNLABELLED = "unlabelled"
_BOOTSTRAP_CHUNK = 128
_DEFAULT_RANDOM_PAIRS = 100_000


def class_display_name(label: str) -> str:
    """Label as shown in tables: the empty label reads ``'unlabelled'``."""
    return label if label else _UNLABELLED


@dataclass(frozen=True)
class Estimate:
    """A point estimate with the bounds of its bootstrap confidence interval (NaN if none)."""

    value: float
    low: float = math.nan
    high: float = math.nan

    def contains(self, x: float) -> bool:
        """Whether ``low <= x <= high``."""
        return bool(self.low <= x <= self.high)

    def to_dict(self) -> dict[str, float | None]:
        """JSON-able dict; NaN becomes ``None``."""
        return {"value": _json_float(self.value), "low": _json_float(self.low), "high": _json_float(self.high)}


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
                class_display_name(c): {_fraction_key(f): _json_float(v) for f, v in d.items()}
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
    def score_names(self) -> tuple[str, ...]:
        """Names of the evaluated scores, in input order."""
        return tuple(self.metrics)

    @property
    def base_rate(self) -> float:
        """Fraction of positives among the evaluated galaxies."""
        return self.n_positive / (self.n_positive + self.n_negative)

    def k_label(self, key: str) -> str:
        """Display name of a cut-off: ``'50'`` or ``'n_pos=48'``."""
        return f"{key}={self.k_values[key]}" if key == _N_POS_KEY else key

    def to_rows(self) -> list[dict[str, Any]]:
        """One flat row per score (CSV-ready): value, ``_low`` and ``_high`` of each metric."""
        rows = []
        for name, m in self.metrics.items():
            row: dict[str, Any] = {
                "score": name,
                "n_positive": self.n_positive,
                "n_negative": self.n_negative,
                "base_rate": self.base_rate,
            }
            _flatten(row, "auroc", m.auroc)
            _flatten(row, "average_precision", m.average_precision)
            for key in self.k_values:
                _flatten(row, f"precision_at_{key}", m.precision_at_k[key])
                _flatten(row, f"recall_at_{key}", m.recall_at_k[key])
                _flatten(row, f"enrichment_at_{key}", m.enrichment_at_k[key])
            for label, by_fraction in m.class_recall.items():
                for fraction, value in by_fraction.items():
                    row[f"recall_top{_fraction_key(fraction)}_{class_display_name(label)}"] = value
            rows.append(row)
        return rows

    def to_table(self):
        """The rows of :meth:`to_rows` as an ``astropy.table.Table``."""
        from astropy.table import Table

        rows = self.to_rows()
        return Table(rows=[list(r.values()) for r in rows], names=list(rows[0]))

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


@dataclass(frozen=True)
class Comparison:
    """Paired-bootstrap comparison of the model score with one baseline (model minus baseline)."""

    model: str
    baseline: str
    model_auroc: float
    baseline_auroc: float
    delta_auroc: Estimate
    delta_average_precision: Estimate
    #: ``"better"``, ``"worse"`` or ``"indistinguishable"`` (the AUROC-difference CI includes 0).
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "model": self.model,
            "baseline": self.baseline,
            "model_auroc": _json_float(self.model_auroc),
            "baseline_auroc": _json_float(self.baseline_auroc),
            "delta_auroc": self.delta_auroc.to_dict(),
            "delta_average_precision": self.delta_average_precision.to_dict(),
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class ClassRetrieval:
    """Same-class fraction among the k nearest latent neighbours of the galaxies of one class."""

    label: str
    n_queries: int
    same_class_fraction: float
    #: Expected fraction for neighbours drawn at random: (n_class - 1) / (N - 1).
    chance: float

    @property
    def lift(self) -> float:
        """``same_class_fraction / chance`` (NaN when chance is 0)."""
        return self.same_class_fraction / self.chance if self.chance > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "label": class_display_name(self.label),
            "n_queries": self.n_queries,
            "same_class_fraction": _json_float(self.same_class_fraction),
            "chance": _json_float(self.chance),
            "lift": _json_float(self.lift),
        }


@dataclass(frozen=True)
class RatioRetrieval:
    """Median |difference| of one line ratio between neighbours and between random pairs."""

    name: str
    n_neighbour_pairs: int
    n_random_pairs: int
    neighbour_median: float
    random_median: float

    @property
    def ratio(self) -> float:
        """``neighbour_median / random_median``: below 1, neighbours have similar line ratios."""
        return self.neighbour_median / self.random_median if self.random_median > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "name": self.name,
            "n_neighbour_pairs": self.n_neighbour_pairs,
            "n_random_pairs": self.n_random_pairs,
            "neighbour_median": _json_float(self.neighbour_median),
            "random_median": _json_float(self.random_median),
            "ratio": _json_float(self.ratio),
        }


@dataclass(frozen=True)
class Retrieval:
    """Result of :func:`neighbour_retrieval`."""

    k: int
    n_galaxies: int
    #: Labelled galaxies used as queries (unlabelled ones still count as neighbours).
    n_queries: int
    same_class_fraction: float
    chance: float
    per_class: dict[str, ClassRetrieval]
    ratios: dict[str, RatioRetrieval]

    @property
    def lift(self) -> float:
        """``same_class_fraction / chance`` over all labelled queries."""
        return self.same_class_fraction / self.chance if self.chance > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "k": self.k,
            "n_galaxies": self.n_galaxies,
            "n_queries": self.n_queries,
            "same_class_fraction": _json_float(self.same_class_fraction),
            "chance": _json_float(self.chance),
            "lift": _json_float(self.lift),
            "per_class": {class_display_name(c): r.to_dict() for c, r in self.per_class.items()},
            "ratios": {name: r.to_dict() for name, r in self.ratios.items()},
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

    labels = _as_labels(labels)
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

    class_counts = _class_counts(labels)
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
    resamples = _resample_weights(rng, y, n_bootstrap, stratified)
    subset_scores = {name: v[selected] for name, v in values.items()}
    metrics: dict[str, ScoreMetrics] = {}
    boot_auroc: dict[str, np.ndarray] = {}
    boot_ap: dict[str, np.ndarray] = {}
    for name, s in subset_scores.items():
        point = _weighted_metrics(s, y, np.ones((1, y.size)), k_values)
        boot = _weighted_metrics(s, y, resamples, k_values)
        boot_auroc[name], boot_ap[name] = boot["auroc"], boot["average_precision"]

        def estimate(value: float, replicates: np.ndarray) -> Estimate:
            finite = replicates[np.isfinite(replicates)]
            if finite.size == 0:
                return Estimate(float(value))
            low, high = np.percentile(finite, [tail, 100 - tail])
            return Estimate(float(value), float(low), float(high))

        precision, recall, enrichment = {}, {}, {}
        for key in k_values:
            precision[key] = estimate(point[f"p@{key}"][0], boot[f"p@{key}"])
            recall[key] = estimate(point[f"r@{key}"][0], boot[f"r@{key}"])
            enrichment[key] = estimate(point[f"e@{key}"][0], boot[f"e@{key}"])
        metrics[name] = ScoreMetrics(
            name=name,
            auroc=estimate(roc_auc_score(y, s), boot["auroc"]),
            average_precision=estimate(average_precision_score(y, s), boot["average_precision"]),
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


def compare_to_baselines(
    evaluation: Evaluation,
    model_score: str = "anomaly_score",
    *,
    baselines: Sequence[str] | None = None,
) -> list[Comparison]:
    """Does the model score beat each baseline? Paired bootstrap of the AUROC difference.

    The difference model minus baseline is computed on each of the evaluation's
    bootstrap resamples (the same galaxies for both scores); its percentile interval
    gives the verdict: ``"better"`` (interval above 0), ``"worse"`` (below 0) or
    ``"indistinguishable"`` (includes 0, or no bootstrap was run).

    Parameters
    ----------
    evaluation : Evaluation
    model_score : str
        Name of the model's score in ``evaluation.metrics``.
    baselines : sequence of str, optional
        Scores to compare with; default every other evaluated score.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> labels = np.array(["SF"] * 80 + ["Seyfert"] * 20)
    >>> good = np.r_[rng.normal(0, 1, 80), rng.normal(3, 1, 20)]
    >>> ev = evaluate_scores({"model": good, "random": rng.random(100)}, labels, ks=(10,), n_bootstrap=200)
    >>> compare_to_baselines(ev, "model")[0].verdict
    'better'
    """
    if model_score not in evaluation.metrics:
        raise ValueError(
            f"model_score must be one of the evaluated scores {list(evaluation.metrics)}. Received: {model_score!r}"
        )
    names = [n for n in evaluation.metrics if n != model_score] if baselines is None else list(baselines)
    unknown = [n for n in names if n not in evaluation.metrics]
    if unknown:
        raise ValueError(f"Unknown baselines {unknown}; evaluated scores: {list(evaluation.metrics)}")
    tail = (1 - evaluation.confidence) / 2 * 100
    model = evaluation.metrics[model_score]
    comparisons = []
    for name in names:
        base = evaluation.metrics[name]
        delta_auroc = _paired_interval(
            model.auroc.value - base.auroc.value,
            evaluation.bootstrap_auroc[model_score] - evaluation.bootstrap_auroc[name],
            tail,
        )
        delta_ap = _paired_interval(
            model.average_precision.value - base.average_precision.value,
            evaluation.bootstrap_average_precision[model_score] - evaluation.bootstrap_average_precision[name],
            tail,
        )
        if delta_auroc.low > 0:
            verdict = "better"
        elif delta_auroc.high < 0:
            verdict = "worse"
        else:
            verdict = "indistinguishable"
        comparisons.append(
            Comparison(
                model=model_score,
                baseline=name,
                model_auroc=model.auroc.value,
                baseline_auroc=base.auroc.value,
                delta_auroc=delta_auroc,
                delta_average_precision=delta_ap,
                verdict=verdict,
            )
        )
    return comparisons


def neighbour_retrieval(
    latents: np.ndarray,
    labels: np.ndarray | Sequence[str] | None,
    *,
    k: int = 10,
    line_ratios: np.ndarray | None = None,
    ratio_names: Sequence[str] = RATIO_NAMES,
    n_random_pairs: int = _DEFAULT_RANDOM_PAIRS,
    seed: int = 0,
) -> Retrieval:
    """How alike are galaxies and their nearest neighbours in latent space?

    Class agreement: for each labelled galaxy, the fraction of its ``k`` nearest
    neighbours (Euclidean, itself excluded, all galaxies as candidates) with the same
    label, averaged per class and over all labelled galaxies, against the chance rate
    ``(n_class - 1) / (N - 1)`` of neighbours drawn at random.

    Line ratios: for every galaxy and each column of ``line_ratios`` (log [NII]/Ha,
    [OIII]/Hb, [SII]/Ha of the central aperture), the median ``|r_query - r_neighbour|``
    over all query-neighbour pairs, against the median over ``n_random_pairs`` random
    pairs of distinct galaxies; pairs with a NaN are skipped.

    Parameters
    ----------
    latents : array, shape (N, D)
    labels : array of str, shape (N,), or None
        ``""`` = unlabelled (never a query, still a neighbour). ``None`` skips classes.
    k : int
        Neighbours per galaxy, ``1 <= k < N``.
    line_ratios : array, shape (N, R), optional
    ratio_names : sequence of str
        Names of the ``R`` ratio columns.
    n_random_pairs : int
        Random pairs for the reference distribution.
    seed : int

    Examples
    --------
    >>> import numpy as np
    >>> z = np.r_[np.zeros((5, 2)), np.ones((5, 2)) * 10] + np.arange(10)[:, None] * 0.01
    >>> r = neighbour_retrieval(z, np.array(["SF"] * 5 + ["Seyfert"] * 5), k=3)
    >>> r.same_class_fraction
    1.0
    """
    from sklearn.neighbors import NearestNeighbors

    latents = np.asarray(latents, dtype=np.float64)
    if latents.ndim != 2:
        raise ValueError(f"latents must have shape (N, D). Received: shape {latents.shape}")
    n = latents.shape[0]
    if not np.isfinite(latents).all():
        raise ValueError("latents contain non-finite values.")
    if not 1 <= k < n:
        raise ValueError(f"k must satisfy 1 <= k < N = {n}. Received: {k!r}")
    neighbours = _neighbours_excluding_self(NearestNeighbors(n_neighbors=k + 1).fit(latents), latents, k)

    per_class: dict[str, ClassRetrieval] = {}
    overall, chance, n_queries = math.nan, math.nan, 0
    if labels is not None:
        labels = _as_labels(labels)
        if labels.shape[0] != n:
            raise ValueError(f"labels must have {n} entries like latents. Received: {labels.shape[0]}")
        same = (labels[neighbours] == labels[:, None]).mean(axis=1)
        counts = _class_counts(labels)
        queries = labels != ""
        n_queries = int(queries.sum())
        for label, count in counts.items():
            if label == "":
                continue
            members = labels == label
            per_class[label] = ClassRetrieval(
                label=label,
                n_queries=int(count),
                same_class_fraction=float(same[members].mean()),
                chance=(count - 1) / (n - 1),
            )
        if n_queries:
            overall = float(same[queries].mean())
            chance = float(sum(r.chance * r.n_queries for r in per_class.values()) / n_queries)

    ratios: dict[str, RatioRetrieval] = {}
    if line_ratios is not None:
        line_ratios = np.asarray(line_ratios, dtype=np.float64)
        if line_ratios.ndim == 1:
            line_ratios = line_ratios[:, None]
        if line_ratios.shape[0] != n or line_ratios.shape[1] != len(ratio_names):
            raise ValueError(
                f"line_ratios must have shape ({n}, {len(ratio_names)}) to match latents and ratio_names. "
                f"Received: shape {line_ratios.shape}"
            )
        rng = np.random.default_rng(seed)
        first = rng.integers(0, n, n_random_pairs)
        second = (first + rng.integers(1, n, n_random_pairs)) % n  # never equal to first
        for j, name in enumerate(ratio_names):
            r = line_ratios[:, j]
            near = np.abs(r[:, None] - r[neighbours]).ravel()
            rand = np.abs(r[first] - r[second])
            near, rand = near[np.isfinite(near)], rand[np.isfinite(rand)]
            ratios[name] = RatioRetrieval(
                name=name,
                n_neighbour_pairs=int(near.size),
                n_random_pairs=int(rand.size),
                neighbour_median=float(np.median(near)) if near.size else math.nan,
                random_median=float(np.median(rand)) if rand.size else math.nan,
            )
    return Retrieval(
        k=int(k),
        n_galaxies=n,
        n_queries=n_queries,
        same_class_fraction=overall,
        chance=chance,
        per_class=per_class,
        ratios=ratios,
    )


# --------------------------------------------------------------------------- helpers


def _json_float(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _fraction_key(fraction: float) -> str:
    return f"{fraction * 100:g}pct"


def _flatten(row: dict[str, Any], name: str, estimate: Estimate) -> None:
    row[name] = estimate.value
    row[f"{name}_low"] = estimate.low
    row[f"{name}_high"] = estimate.high


def _as_labels(labels: Any) -> np.ndarray:
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


def _as_classes(name: str, classes: Sequence[str] | str) -> tuple[str, ...]:
    result = (classes,) if isinstance(classes, str) else tuple(str(c) for c in classes)
    if not result:
        raise ValueError(f"{name} must name at least one class. Received: {classes!r}")
    return result


def _class_counts(labels: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(labels, return_counts=True)
    order = np.lexsort((names, -counts))
    return {str(names[i]): int(counts[i]) for i in order}


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


def _resample_weights(rng: np.random.Generator, y: np.ndarray, n_bootstrap: int, stratified: bool) -> np.ndarray:
    """Bootstrap multiplicities, shape (n_bootstrap, n): how often each galaxy is drawn."""
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


def _weighted_metrics(
    score: np.ndarray, y: np.ndarray, weights: np.ndarray, k_values: Mapping[str, int]
) -> dict[str, np.ndarray]:
    """AUROC, AP and tie-aware precision/recall/enrichment@k for rows of sample weights.

    Equivalent to scikit-learn's ``roc_auc_score`` and ``average_precision_score`` with
    ``sample_weight=weights[b]``; rows missing a class give NaN.
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


def _paired_interval(point: float, replicates: np.ndarray, tail: float) -> Estimate:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return Estimate(float(point))
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Estimate(float(point), float(low), float(high))


def _neighbours_excluding_self(index, queries: np.ndarray, k: int, query_ids: np.ndarray | None = None) -> np.ndarray:
    """Indices (into the fitted set) of the k nearest neighbours of each query, itself excluded.

    ``index`` is a fitted ``NearestNeighbors`` with at least ``k + 1`` points; query ``i``
    is the fitted point ``query_ids[i]`` (default ``i``), or -1 if it is not in the set.
    Self is removed by index, not by distance, so exact duplicates stay neighbours.
    """
    ids = np.arange(queries.shape[0]) if query_ids is None else np.asarray(query_ids)
    _, found = index.kneighbors(queries, n_neighbors=k + 1)
    is_self = found == ids[:, None]
    # Drop self where found; otherwise drop the (k+1)-th neighbour.
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    keep = np.ones_like(found, dtype=bool)
    keep[np.arange(found.shape[0]), drop] = False
    return found[keep].reshape(found.shape[0], k)
