"""Does a model score beat the baselines? Paired-bootstrap differences of AUROC and AP.

The differences are taken on the resamples of one :class:`~ifskeras.discovery.metrics.Evaluation`
(the same galaxies for every score), so they are paired: a verdict needs the interval of
the difference to exclude 0, not the two scores' intervals to be apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ifskeras.discovery.bootstrap import Estimate, json_float, percentile_interval
from ifskeras.discovery.metrics import Evaluation, evaluate_scores  # noqa: F401  (evaluate_scores: doctest)

__all__ = ["Comparison", "compare_to_baselines"]


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
            "model_auroc": json_float(self.model_auroc),
            "baseline_auroc": json_float(self.baseline_auroc),
            "delta_auroc": self.delta_auroc.to_dict(),
            "delta_average_precision": self.delta_average_precision.to_dict(),
            "verdict": self.verdict,
        }


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
        delta_auroc = percentile_interval(
            model.auroc.value - base.auroc.value,
            evaluation.bootstrap_auroc[model_score] - evaluation.bootstrap_auroc[name],
            tail,
        )
        delta_ap = percentile_interval(
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
