"""Latent-neighbour retrieval: are a galaxy's nearest latent neighbours of its class and line ratios?

:func:`neighbour_retrieval` takes the ``k`` nearest neighbours of every galaxy in latent
space (:func:`ifskeras.discovery.neighbours.neighbours_excluding_self`) and measures how
often they share its label, and how close their central line ratios are, each against
what random galaxies give.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ifskeras.discovery.bootstrap import json_float
from ifskeras.discovery.metrics import as_labels, class_display_name, count_classes
from ifskeras.discovery.neighbours import as_latents, neighbours_excluding_self
from ifskeras.survey.bpt import RATIO_LABELS, RATIO_NAMES

__all__ = [
    "RETRIEVAL_RATIOS",
    "ClassRetrieval",
    "RatioRetrieval",
    "Retrieval",
    "neighbour_retrieval",
]

#: The central-aperture ratios (``scores.csv`` columns) that retrieval compares between
#: neighbours; [OI] 6302 is left out, being too often below S/N 3 to compare.
RETRIEVAL_RATIOS: tuple[str, ...] = RATIO_NAMES[:3]
_DEFAULT_RANDOM_PAIRS = 100_000


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
            "same_class_fraction": json_float(self.same_class_fraction),
            "chance": json_float(self.chance),
            "lift": json_float(self.lift),
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
            "neighbour_median": json_float(self.neighbour_median),
            "random_median": json_float(self.random_median),
            "ratio": json_float(self.ratio),
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
            "same_class_fraction": json_float(self.same_class_fraction),
            "chance": json_float(self.chance),
            "lift": json_float(self.lift),
            "per_class": {class_display_name(c): r.to_dict() for c, r in self.per_class.items()},
            "ratios": {name: r.to_dict() for name, r in self.ratios.items()},
        }


def neighbour_retrieval(
    latents: np.ndarray,
    labels: np.ndarray | Sequence[str] | None,
    *,
    k: int = 10,
    line_ratios: np.ndarray | None = None,
    ratio_names: Sequence[str] = tuple(RATIO_LABELS[name] for name in RETRIEVAL_RATIOS),
    n_random_pairs: int = _DEFAULT_RANDOM_PAIRS,
    seed: int = 0,
    groups: np.ndarray | None = None,
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
    groups : array, shape (N,), optional
        The galaxy each row observes (MANGAID): repeat observations of the query's own
        galaxy are never its neighbours.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.r_[np.zeros((5, 2)), np.ones((5, 2)) * 10] + np.arange(10)[:, None] * 0.01
    >>> r = neighbour_retrieval(z, np.array(["SF"] * 5 + ["Seyfert"] * 5), k=3)
    >>> r.same_class_fraction
    1.0
    """
    latents = as_latents(latents)
    n = latents.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must satisfy 1 <= k < N = {n}. Received: {k!r}")
    _, neighbours = neighbours_excluding_self(latents, latents, k, fitted_groups=groups, query_groups=groups)

    per_class: dict[str, ClassRetrieval] = {}
    overall, chance, n_queries = math.nan, math.nan, 0
    if labels is not None:
        labels = as_labels(labels)
        if labels.shape[0] != n:
            raise ValueError(f"labels must have {n} entries like latents. Received: {labels.shape[0]}")
        same = (labels[neighbours] == labels[:, None]).mean(axis=1)
        counts = count_classes(labels)
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
