"""``rank_score``: the one ranking ifskeras recommends when there are no labels.

The rule, chosen on two development surveys and never fitted to labels (the 3 x 3 peak
in a second round, prompted by a first discovery-benchmark run that fell short, and then
checked on benchmark surveys generated after it was fixed: docs/results.md):

1. for each emission line that carries information of its own (the DAP's tied doublet
   copies left out), take the galaxy's *peak* noise-aware reconstruction error of that
   line: the highest mean chi2 in a 3 x 3 window of the line's map (``peak_<LINE>``;
   models exported before it existed fall back to the whole-map mean ``chi2_<LINE>``,
   and before chi2 existed to ``err_<LINE>``);
2. put it on that line's own scale: the robust z-score of its logarithm against the
   training galaxies' values of the same line, ``(log e - median) / (1.4826 MAD)``, so
   every line counts alike whatever its brightness or noise, and an error far beyond all
   training galaxies still counts as far (a percentile would stop at 100);
3. ``rank_score`` is the mean of the galaxy's :data:`TOP_LINES` highest line z-scores:
   a galaxy is unusual when a few of its lines are reconstructed much worse than is
   usual for those lines, as an AGN's [OIII], [OI] or HeII maps are;
4. ``rank_percentile`` places ``rank_score`` among the training galaxies'.

A line without a valid pixel in a galaxy (for the peak: without a 3 x 3 window of 5
measured pixels) counts as typical (z = 0); an infinite error (a float overflow) counts
as the largest finite one, far beyond every training galaxy. Why a peak and not
the mean over the map: an AGN's or a compact starburst's residual sits in a few
neighbouring pixels, and a mean over the whole map divides it by every pixel of the
galaxy (on the development surveys the peak raised AUROC from 0.84 to 0.91 on average
over nine runs). Why per line and not the galaxy-level errors or the latent k-NN score:
the galaxy-level error lets the bright lines (H-alpha, [NII]), where clumpy star-forming
discs are hard too, decide the ranking, and the k-NN score was near chance (AUROC
0.50-0.65) although it had done well on another generator's survey. docs/results.md has
the numbers of both rounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["TOP_LINES", "RANK_RULE", "RANK_BASES", "RANK_SCORE_EXPLANATION", "rank_score_explanation",
           "rank_basis_of", "per_line_names", "line_z_scores", "rank_scores"]

#: Number of the galaxy's most unusual lines averaged into ``rank_score``.
TOP_LINES = 3
#: Scale of the median absolute deviation to a Gaussian standard deviation.
_MAD_TO_SIGMA = 1.4826
#: Written to scoring.json, so a scores directory says how its ranking was made.
RANK_RULE = (f"mean of the {TOP_LINES} highest per-line robust z-scores of log peak_<LINE> (the highest 3x3-window "
             "mean chi2; chi2_<LINE> for format-3 models, err_<LINE> without ivar) against the training galaxies, "
             "tied DAP doublet copies left out")
#: Per-line columns rank_score can be built from, the preferred first.
RANK_BASES = ("peak_", "chi2_", "err_")

#: What each per-line basis measures, in the report's words.
_BASIS_WORDS = {
    "peak_": "the model's noise-aware reconstruction error of that line where it is worst (chi2, residuals weighted "
             "by the inverse variance, averaged over the 3 x 3 pixel window with the highest value, so that a "
             "compact residual such as a nucleus is not diluted by the rest of the map)",
    "chi2_": "the model's noise-aware reconstruction error of that line over all its pixels (chi2, residuals "
             "weighted by the inverse variance; this model was exported before the 3 x 3 peak existed: "
             "`ifskeras export` on its run gives it)",
    "err_": "the model's reconstruction error of that line over all its pixels (squared residuals in scaled flux; "
            "this model was exported before the noise-aware scores existed: `ifskeras export` on its run gives them)",
}


def rank_score_explanation(basis: str = "peak_") -> str:
    """The report's paragraph on what rank_score is, for the per-line basis it was built from."""
    return (
        "Galaxies are ranked by rank_score, the ranking ifskeras recommends without labels. For each emission line "
        f"(the DAP's tied doublet copies left out), {_BASIS_WORDS[basis]} is compared with the training galaxies' "
        f"errors for the same line, as a robust z-score of its logarithm; rank_score is the mean of a galaxy's "
        f"{TOP_LINES} highest line z-scores. A galaxy ranks high when a few of its lines are reconstructed much worse "
        "than is usual for those lines, whatever their brightness, as an AGN's [OIII], [OI] or HeII maps are. The "
        "rule was chosen on development surveys and never sees labels; how well it does on other synthetic surveys "
        "is in docs/results.md. anomaly_score (the paper's reconstruction error), chi2_score, knn_score and "
        "combined_score are kept beside it."
    )


#: The report's paragraph for the current rule (format-4 models).
RANK_SCORE_EXPLANATION = rank_score_explanation()


def per_line_names(columns, base: str) -> list[str]:
    """The lines a scores table has ``BASE<LINE>`` columns for (``chi2_score`` and its percentile are not lines)."""
    return [name[len(base):] for name in columns
            if name.startswith(base) and name not in ("chi2_score", "chi2_percentile")]


def rank_basis_of(columns: Mapping[str, np.ndarray]) -> str:
    """The per-line basis a scores table's rank_score was built from: the first of RANK_BASES it has."""
    return next((base for base in RANK_BASES if per_line_names(columns, base)), "err_")


def line_z_scores(per_line: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Robust z-score of each galaxy's log error in each line, against the reference galaxies.

    Parameters
    ----------
    per_line : array, shape (N, L)
        A positive per-line error; NaN (a line with no valid pixel) gives z = 0.
    reference : bool array, shape (N,)
        The galaxies the median and MAD are taken over (the training split).

    Examples
    --------
    >>> import numpy as np
    >>> errors = np.array([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0], [64.0, np.nan]])
    >>> np.round(line_z_scores(errors, np.array([True, True, True, False])), 2).tolist()
    [[-0.67, -0.67], [0.0, 0.0], [0.67, 0.67], [3.37, 0.0]]
    """
    reference = np.asarray(reference, dtype=bool)
    if not reference.any():
        raise ValueError("line_z_scores needs at least one reference galaxy")
    # An overflowed error is the most unusual value there is, not a missing one.
    per_line = np.where(np.isposinf(per_line), np.finfo(np.float64).max, np.asarray(per_line, dtype=np.float64))
    finite = np.isfinite(per_line) & (per_line > 0)
    logs = np.log(np.where(finite, per_line, 1.0))
    reference_logs = np.where(finite[reference], logs[reference], np.nan)
    median = np.nanmedian(reference_logs, axis=0)
    spread = _MAD_TO_SIGMA * np.nanmedian(np.abs(reference_logs - median), axis=0)
    # A line every reference galaxy has alike (or none has) cannot single a galaxy out.
    spread = np.where(np.isfinite(spread) & (spread > 0), spread, np.inf)
    z = (logs - np.nan_to_num(median)) / spread
    return np.where(finite, z, 0.0)


def rank_scores(table: Mapping[str, np.ndarray], lines: Sequence[str], reference: np.ndarray, *,
                excluded_lines: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """``rank_score`` and ``rank_percentile`` of every galaxy of a scores table (see the module docstring).

    ``table`` holds ``peak_<LINE>`` (or, failing that, ``chi2_<LINE>``, then
    ``err_<LINE>``) for each of ``lines``; ``excluded_lines`` (the tied doublet copies)
    do not count.
    """
    prefix = next((base for base in RANK_BASES if all(f"{base}{line}" in table for line in lines)), "err_")
    used = [line for line in lines if line not in set(excluded_lines)]
    missing = [f"{prefix}{line}" for line in used if f"{prefix}{line}" not in table]
    if missing or not used:
        raise ValueError(f"rank_score needs the per-line errors; missing columns {missing or 'all'}")
    per_line = np.stack([np.asarray(table[f"{prefix}{line}"], dtype=np.float64) for line in used], axis=1)
    z = line_z_scores(per_line, reference)
    top = min(TOP_LINES, z.shape[1])
    score = np.sort(z, axis=1)[:, -top:].mean(axis=1)
    ordered = np.sort(score[np.asarray(reference, dtype=bool)])
    percentile = 100.0 * np.searchsorted(ordered, score, side="right") / ordered.size
    return {"rank_score": score, "rank_percentile": percentile}
