"""Can residuals of line RATIOS find the weak AGN rank_score misses? DEVELOPMENT surveys only.

The held-out discovery run found the realistic variant's weak Seyferts at AUROC 0.60 while
their central BPT position separates them at 0.88: a diluted nucleus changes line ratios
over a few pixels while each line's flux stays ordinary, so no single line's residual
stands out. The candidates, written down before this script was first run, measure the
residual of the ratio of two lines next to each other in wavelength (the pairs
astronomers use because dust barely changes them), with no line chosen for AGN:

- for each pair (l, m) of lines adjacent in map order after the tied copies are left out,
  the pixel's ratio residual ``(r_l - r_m) / sqrt(sigma_l**2 + sigma_m**2)``, where ``r``
  is the residual in the model's asinh space (about a log for bright pixels, so ``r_l -
  r_m`` is the residual of log(l/m)) and ``sigma`` the flux error carried into it; its
  3x3 peak of the squared value (windows with >= 5 pixels used in both lines), as for
  the lines;
- ``pairs``: the same rule as rank_score (robust z of the log against the training
  galaxies, mean of the 3 highest) over the pairs alone;
- ``lines+pairs``: the mean of the 3 highest among the line and the pair z-scores;
- against ``lines``: today's rank_score (the 3x3 peak of each line).

Decision rule, fixed in advance: a candidate becomes the rule to test on new held-out
surveys (seeds 300 higher, trained after the choice) if its mean AUROC on the three
realistic-dev runs is at least 0.02 above ``lines`` and its mean on the six demo runs is
not below ``lines`` by more than 0.005. Nothing is adopted from this script alone.
Writes results/dev_ratio_residuals.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from dev_rank_rules import (dev_runs, evaluate_candidates, kept_line_indices, line_statistics,  # noqa: E402
                            mean_auroc_by_survey, residual_maps, save_results, window_sums)

#: The same window and least number of used pixels as the SavedModel's chi2_peak_per_line.
WINDOW, MIN_PIXELS = 3, 5


def adjacent_pairs(lines: list[str]) -> list[tuple[int, int]]:
    """Indices of lines next to each other in map (wavelength) order, tied copies left out."""
    kept = kept_line_indices(lines)
    return list(zip(kept[:-1], kept[1:]))


def pair_peaks(chi: np.ndarray, sigma: np.ndarray, used: np.ndarray, pairs) -> np.ndarray:
    """[N, P] highest 3x3-window mean of the squared ratio residual of each pair."""
    out = []
    for l, m in pairs:
        both = used[:, l] & used[:, m]
        residual = chi[:, l] * sigma[:, l] - chi[:, m] * sigma[:, m]
        ratio_chi2 = np.where(both, residual**2 / (sigma[:, l] ** 2 + sigma[:, m] ** 2), 0.0)
        sums = window_sums(ratio_chi2[:, None], WINDOW)[:, 0]
        counts = window_sums(both[:, None].astype(float), WINDOW)[:, 0]
        peak = np.where(counts >= MIN_PIXELS, sums / np.maximum(counts, 1), -np.inf).max(axis=(-2, -1))
        out.append(np.where(np.isfinite(peak), np.maximum(peak, 0.0), np.nan))
    return np.stack(out, axis=1)


def main() -> int:
    from ifskeras.discovery.ranking import line_z_scores

    results = {}
    for survey, run, records, model_dir, labels in dev_runs():
        chi, used, ids, splits, lines, sigma = residual_maps(model_dir, records, with_sigma=True)
        reference = splits == "train"
        line_z = line_z_scores(line_statistics(chi, used)["peak3"][:, kept_line_indices(lines)], reference)
        pair_z = line_z_scores(pair_peaks(chi, sigma, used, adjacent_pairs(lines)), reference)
        candidates = {"lines": line_z, "pairs": pair_z, "lines+pairs": np.concatenate([line_z, pair_z], axis=1)}
        results[f"{survey}/{run}"] = evaluate_candidates(candidates, ids, labels, f"{survey:9s} {run:10s}")
    summary = mean_auroc_by_survey(results, ("lines", "pairs", "lines+pairs"))
    verdicts = {name: (summary[name]["realistic"] >= summary["lines"]["realistic"] + 0.02
                       and summary[name]["demo"] >= summary["lines"]["demo"] - 0.005)
                for name in ("pairs", "lines+pairs")}
    print(json.dumps(summary, indent=1), "\nworth a held-out test:", verdicts)
    save_results("dev_ratio_residuals.json", {"runs": results, "summary": summary, "worth_a_heldout_test": verdicts})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
