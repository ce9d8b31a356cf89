"""The tables of the discovery stage as rows of strings, shared by the report and the command line.

Every number goes through :func:`format_number` (a fixed number of decimals), and each
``format_*_table`` function returns a header row followed by rows of strings. The
HTML report (:mod:`ifskeras.discovery.report`) and the terminal print these same rows,
so both always show identical numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ifskeras.discovery.comparison import Comparison
from ifskeras.discovery.metrics import Evaluation, class_display_name
from ifskeras.discovery.retrieval import Retrieval
from ifskeras.survey.lines import pretty_line_name

__all__ = [
    "DECIMALS",
    "as_text",
    "format_number",
    "format_estimate",
    "format_evaluation_table",
    "format_class_recall_table",
    "format_retrieval_table",
    "format_ratio_table",
    "format_top_table",
]

#: Decimals of every number printed by the report and the command line.
DECIMALS = 3
_NOT_AVAILABLE = "n/a"
#: Lines of largest reconstruction error named in each row of the top table.
_TOP_LINES = 3


def format_number(value: Any, decimals: int = DECIMALS) -> str:
    """A number as printed everywhere: ints as ints, floats with ``decimals`` decimals, NaN/None as 'n/a'.

    Examples
    --------
    >>> format_number(0.91234), format_number(48), format_number(float("nan"))
    ('0.912', '48', 'n/a')
    """
    if value is None:
        return _NOT_AVAILABLE
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        return _NOT_AVAILABLE
    text = f"{value:.{decimals}f}"
    return "0." + "0" * decimals if text == "-0." + "0" * decimals else text


def format_estimate(estimate, decimals: int = DECIMALS) -> str:
    """``'value [low, high]'``, or the value alone when there is no interval."""
    value = format_number(estimate.value, decimals)
    if not (math.isfinite(estimate.low) and math.isfinite(estimate.high)):
        return value
    return f"{value} [{format_number(estimate.low, decimals)}, {format_number(estimate.high, decimals)}]"


def format_evaluation_table(
    evaluation: Evaluation, comparisons: Sequence[Comparison] | None = None
) -> list[list[str]]:
    """Header row and one row per score: AUROC, AP, precision/recall/enrichment@k with CIs, verdicts.

    The ``comparisons`` (from :func:`ifskeras.discovery.metrics.compare_to_baselines`) add the
    AUROC difference model minus baseline and the verdict to each baseline's row; the
    model's own row reads ``'model'``.
    """
    level = f"{evaluation.confidence * 100:g}% CI"
    header = ["score", f"AUROC [{level}]", f"AP [{level}]"]
    for key in evaluation.k_values:
        k = evaluation.k_label(key)
        header += [f"P@{k} [{level}]", f"R@{k} [{level}]", f"enrichment@{k} [{level}]"]
    by_baseline = {c.baseline: c for c in comparisons or ()}
    models = {c.model for c in comparisons or ()}
    if comparisons:
        header += [f"\u0394AUROC vs model [{level}]", "verdict"]
    rows = [header]
    for name, m in evaluation.metrics.items():
        row = [name, format_estimate(m.auroc), format_estimate(m.average_precision)]
        for key in evaluation.k_values:
            row += [format_estimate(m.precision_at_k[key]), format_estimate(m.recall_at_k[key]),
                    format_estimate(m.enrichment_at_k[key])]
        if comparisons:
            if name in by_baseline:
                c = by_baseline[name]
                row += [format_estimate(c.delta_auroc), c.verdict]
            else:
                row += ["", "model" if name in models else ""]
        rows.append(row)
    return rows


def format_class_recall_table(evaluation: Evaluation) -> list[list[str]]:
    """Recall of every class among the top 1% / 5% of the whole sample, one row per score and fraction."""
    classes = list(evaluation.class_counts)
    header = ["score", "top"] + [f"{class_display_name(c)} (n={evaluation.class_counts[c]})" for c in classes]
    rows = [header]
    for name, m in evaluation.metrics.items():
        for fraction in evaluation.top_fractions:
            rows.append([name, f"{fraction * 100:g}%"] + [format_number(m.class_recall[c][fraction]) for c in classes])
    return rows


def format_retrieval_table(retrieval: Retrieval) -> list[list[str]]:
    """Same-class fraction among the k nearest latent neighbours per class, against chance."""
    header = ["class", "queries", f"same-class fraction of {retrieval.k} neighbours", "chance", "lift"]
    rows = [header]
    for label, r in retrieval.per_class.items():
        rows.append([class_display_name(label), format_number(r.n_queries), format_number(r.same_class_fraction),
                     format_number(r.chance), format_number(r.lift)])
    rows.append(["all labelled", format_number(retrieval.n_queries), format_number(retrieval.same_class_fraction),
                 format_number(retrieval.chance), format_number(retrieval.lift)])
    return rows


def format_ratio_table(retrieval: Retrieval) -> list[list[str]]:
    """Median |difference| of central line ratios: neighbours against random pairs."""
    header = ["line ratio", "neighbour pairs", "median |\u0394| neighbours", "median |\u0394| random pairs",
              "ratio (< 1: neighbours alike)"]
    rows = [header]
    for name, r in retrieval.ratios.items():
        rows.append([name, format_number(r.n_neighbour_pairs), format_number(r.neighbour_median),
                     format_number(r.random_median), format_number(r.ratio)])
    return rows


#: The model's scores a scores table may hold, the recommended ranking first.
MODEL_SCORE_COLUMNS = ("rank_score", "anomaly_score", "chi2_score", "nelbo_score", "knn_score", "combined_score")
#: Each score's percentile column (against the training galaxies), as ``ifskeras score`` writes it.
_PERCENTILE_COLUMNS = {"rank_score": "rank_percentile", "anomaly_score": "anomaly_percentile",
                       "chi2_score": "chi2_percentile", "nelbo_score": "nelbo_percentile",
                       "knn_score": "knn_percentile"}


def format_top_table(columns, ids, labels, score, score_column: str, top_n: int) -> list[list[str]]:
    """The ``top_n`` galaxies of highest ``score``: rank, id, split, class, scores, percentile, worst lines.

    ``columns`` maps column names of the scores table to arrays; ``ids`` and ``labels``
    (or ``None``) are its id and label columns as text. Besides ``score_column``, the
    rows show the other model scores present and the galaxy's ``_TOP_LINES`` most unusual
    lines with their z-scores: the lines ``rank_score`` is the mean of (see
    :func:`unusual_line_z_scores`).
    """
    order = np.argsort(-np.where(np.isfinite(score), score, -np.inf), kind="stable")[: max(0, int(top_n))]
    extra = [c for c in MODEL_SCORE_COLUMNS if c in columns and c != score_column]
    percentile_column = _PERCENTILE_COLUMNS.get(score_column)
    if percentile_column in columns:
        percentile = np.asarray(columns[percentile_column], dtype=float)
    else:
        finite = np.isfinite(score)
        percentile = np.array([100.0 * np.sum(score[finite] <= s) / max(1, finite.sum()) for s in score])
    line_z, line_names = unusual_line_z_scores(columns)
    header = ["rank", "id"] + (["split"] if "split" in columns else []) + (["class"] if labels is not None else [])
    header += [score_column, "percentile", *extra] + (["most unusual lines (z)"] if line_z is not None else [])
    rows = [header]
    for rank, i in enumerate(order, start=1):
        row = [str(rank), ids[i]]
        if "split" in columns:
            row.append(as_text(columns["split"][i]))
        if labels is not None:
            row.append(class_display_name(labels[i]))
        row += [format_number(score[i]), format_number(percentile[i])]
        row += [format_number(float(columns[c][i])) for c in extra]
        if line_z is not None:
            worst = np.argsort(-line_z[i], kind="stable")[:_TOP_LINES]
            row.append(", ".join(f"{_pretty(line_names[j])} ({line_z[i, j]:.1f})" for j in worst))
        rows.append(row)
    return rows


def unusual_line_z_scores(columns, excluded_lines=None) -> tuple[np.ndarray | None, list[str]]:
    """Per-line z-scores of the errors ``rank_score`` is built from: ([N, L] or None, line names).

    The first per-line basis the table has all lines of (``peak_``, ``chi2_``, ``err_``),
    as robust z-scores against the training galaxies (every galaxy without a split
    column) after each line's brightness trend is taken out (when the table has
    ``log_snr_<LINE>``), ``excluded_lines`` left out (scoring.json's ``rank_excluded_lines``; by
    default the tied DAP doublet copies): for one model, the numbers ``rank_score``
    averages the highest three of. For an ensemble they are z-scores of the models' mean
    errors, while ``rank_score`` averages each model's own.
    """
    from ifskeras.discovery.ranking import line_brightness, line_z_scores, per_line_names, rank_basis_of
    from ifskeras.survey.lines import tied_lines_among

    base = rank_basis_of(columns)
    names = per_line_names(columns, base)
    left_out = set(tied_lines_among(names) if excluded_lines is None else excluded_lines)
    names = [name for name in names if name not in left_out]
    if not names:
        return None, []
    errors = np.column_stack([np.asarray(columns[base + name], dtype=float) for name in names])
    split = np.asarray(columns["split"]).astype(str) if "split" in columns else None
    reference = split == "train" if split is not None and (split == "train").any() else np.ones(len(errors), bool)
    return line_z_scores(errors, reference, line_brightness(columns, names)), names


def _pretty(name: str) -> str:
    """Display name of a DAP line (the name itself if unknown)."""
    try:
        return pretty_line_name(name)
    except ValueError:
        return name


def as_text(value: Any) -> str:
    """A table cell as text: bytes decoded, ``None`` and masked values empty."""
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8")
    if value is None or value is np.ma.masked:
        return ""
    return str(value)
