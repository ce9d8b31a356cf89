"""Candidate rank_score rules on the DEVELOPMENT surveys only (never a benchmark variant).

Second round of the search in docs/results.md ("How rank_score was chosen"). The first
round compared galaxy- and line-level statistics of the per-line chi2, each a mean over
all of a line's pixels. An AGN's or a blueberry's signature sits in a few central (or,
in the realistic variant, off-centre) pixels, so a mean over a whole 32 x 32 map dilutes
it by the number of pixels; this round asks whether a *local* statistic of the same
noise-normalised residual map does better. The candidates were written down before the
script was first run:

- ``mean``: the line's mean chi2 (today's ``chi2_<LINE>``, today's rule);
- ``peak3`` / ``peak5``: the highest mean chi2 in a 3x3 / 5x5 window (windows with at
  least half their pixels measured);
- ``excess3``: the highest matched-filter excess of a 3x3 window, sum(chi) / sqrt(n)
  with chi = (data - model) / sigma: one-sided, a line brighter than the model there;
- ``top5``: the mean of the line's 5 highest pixel chi2;
- ``mean+peak3``: the top lines among both the ``mean`` and the ``peak3`` z-scores.

Each is turned into a ranking by the same rule as today (robust z of the log against the
training galaxies, mean of the 3 highest lines, tied copies left out). Reads the runs
``benchmarks/work/discovery-dev*/{ae,vae}-seedN`` that bench_tied_lines.py and the first
round trained; prints AUROC (AP) of Seyfert + blueberry against SF and writes
results/dev_rank_rules.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DEV_SURVEYS = {"demo": HERE / "work" / "discovery-dev", "realistic": HERE / "work" / "discovery-dev-realistic"}
RUNS = {"demo": ["ae-seed0", "ae-seed1", "ae-seed2", "vae-seed0", "vae-seed1", "vae-seed2"],
        "realistic": ["ae-seed0", "ae-seed1", "ae-seed2"]}
POSITIVE, NEGATIVE = ("Seyfert", "blueberry"), ("SF",)


def window_sums(values: np.ndarray, width: int) -> np.ndarray:
    """Sum over every width x width window (valid windows only) of [N, L, S, S] maps: [N, L, S', S']."""
    padded = np.pad(np.cumsum(np.cumsum(values, axis=-1), axis=-2), ((0, 0), (0, 0), (1, 0), (1, 0)))
    return (padded[..., width:, width:] - padded[..., :-width, width:]
            - padded[..., width:, :-width] + padded[..., :-width, :-width])


def line_statistics(chi: np.ndarray, used: np.ndarray) -> dict[str, np.ndarray]:
    """Per-line candidate statistics [N, L] from signed chi maps and their used-pixel masks."""
    chi2 = np.where(used, chi * chi, 0.0)
    count = used.sum(axis=(-2, -1))
    out = {"mean": np.where(count > 0, chi2.sum(axis=(-2, -1)) / np.maximum(count, 1), np.nan)}
    for width in (3, 5):
        sums, counts = window_sums(chi2, width), window_sums(used.astype(float), width)
        enough = counts >= 0.5 * width * width
        peak = np.where(enough, sums / np.maximum(counts, 1), -np.inf).max(axis=(-2, -1))
        out[f"peak{width}"] = np.where(np.isfinite(peak), peak, np.nan)
    sums, counts = window_sums(np.where(used, chi, 0.0), 3), window_sums(used.astype(float), 3)
    excess = np.where(counts >= 5, sums / np.sqrt(np.maximum(counts, 1)), -np.inf).max(axis=(-2, -1))
    # log needs a positive value: a window excess below 0.1 sigma counts as 0.1.
    out["excess3"] = np.where(np.isfinite(excess), np.maximum(excess, 0.1), np.nan)
    flat = np.where(used, chi2, -np.inf).reshape(*chi2.shape[:2], -1)
    top = np.sort(flat, axis=-1)[..., -5:]
    top_mean = np.where(np.isfinite(top), top, np.nan)
    out["top5"] = np.where(count >= 5, np.nanmean(top_mean, axis=-1), np.nan)
    return out


def residual_maps(model_dir: Path, records: Path, view: int = 0, *, with_sigma: bool = False):
    """Signed chi maps, used masks, ids and splits of every galaxy, through the SavedModel.

    ``view`` (0-7) turns and flips every galaxy first (:func:`ifskeras.learning.augment.
    dihedral_galaxies`; 0 is the galaxy as observed); the maps come back in that view.
    ``with_sigma`` adds, last, each pixel's flux error carried into the model's scaled space
    (1 where unused), so that residuals ``chi * sigma`` of two lines can be combined.
    """
    import tensorflow as tf

    from ifskeras.discovery.score import load_model
    from ifskeras.learning.augment import dihedral_galaxies
    from ifskeras.records import load_manifest, make_dataset

    loaded, metadata = load_model(model_dir)
    softening = float(metadata["softening"])
    manifest = load_manifest(records)
    chis, sigmas, useds, ids, splits = [], [], [], [], []
    for split in ("train", "val", "test"):
        if manifest.examples(split) == 0:
            continue
        for batch in make_dataset(records, split, batch_size=64, training=False, with_ivar=True):
            if view:
                index = tf.fill(tf.shape(batch["flux"])[:1], view)
                batch = {**batch, **{key: dihedral_galaxies(batch[key], index) for key in ("flux", "valid", "ivar")}}
            out = loaded.score(batch["flux"], batch["valid"], batch["ivar"])
            flux = np.nan_to_num(batch["flux"].numpy()[..., 0].astype(np.float64))
            valid = batch["valid"].numpy()[..., 0] > 0
            ivar = np.nan_to_num(batch["ivar"].numpy()[..., 0].astype(np.float64))
            flux = np.where(valid, flux, 0.0)
            model = out["reconstruction"].numpy()[..., 0].astype(np.float64)
            # The model's own scaled space (asinh) and the flux error carried into it.
            used = valid & (ivar > 0)
            sigma = np.where(used, 1.0 / np.sqrt(np.where(used, ivar, 1.0) * (flux**2 + softening**2)), 1.0)
            chi = np.where(used, (np.arcsinh(flux / softening) - np.arcsinh(model / softening)) / sigma, 0.0)
            chis.append(chi.astype(np.float32))
            if with_sigma:
                sigmas.append(sigma.astype(np.float32))
            useds.append(used)
            ids.extend(v.decode() for v in batch["id"].numpy())
            splits.extend([split] * chi.shape[0])
    maps = (np.concatenate(chis), np.concatenate(useds), ids, np.asarray(splits), list(metadata["lines"]))
    return (*maps, np.concatenate(sigmas)) if with_sigma else maps


def kept_line_indices(lines: list[str]) -> list[int]:
    """Indices of the lines a ranking counts: the DAP's tied doublet copies left out."""
    from ifskeras.survey.lines import tied_lines_among

    tied = set(tied_lines_among(lines))
    return [i for i, line in enumerate(lines) if line not in tied]


def top_mean(z: np.ndarray) -> np.ndarray:
    """rank_score's rule on [N, K] z-scores: the mean of each galaxy's TOP_LINES highest."""
    from ifskeras.discovery.ranking import TOP_LINES

    return np.sort(z, axis=1)[:, -TOP_LINES:].mean(axis=1)


def auroc_ap(score: np.ndarray, positive: np.ndarray, chosen: np.ndarray) -> dict[str, float]:
    """AUROC and average precision of ``score`` over the ``chosen`` galaxies."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {"auroc": float(roc_auc_score(positive[chosen], score[chosen])),
            "ap": float(average_precision_score(positive[chosen], score[chosen]))}


def evaluate_candidates(candidates: dict[str, np.ndarray], ids: list[str], labels: dict[str, str], name: str
                        ) -> dict[str, dict[str, float]]:
    """AUROC and AP of each candidate's [N, K] z-scores ranked by the top-3 rule; prints one line ``name``."""
    label = np.asarray([labels[i] for i in ids])
    positive, chosen = np.isin(label, POSITIVE), np.isin(label, POSITIVE + NEGATIVE)
    metrics = {candidate: auroc_ap(top_mean(z), positive, chosen) for candidate, z in candidates.items()}
    print(f"{name} " + "  ".join(f"{candidate} {m['auroc']:.4f} ({m['ap']:.3f})" for candidate, m in metrics.items()),
          flush=True)
    return metrics


def mean_auroc_by_survey(results: dict[str, dict], candidates) -> dict[str, dict[str, float]]:
    """candidate -> survey -> mean AUROC over that survey's runs (``results`` keyed ``SURVEY/RUN``)."""
    summary = {}
    for candidate in candidates:
        by_survey = {}
        for key, metrics in results.items():
            by_survey.setdefault(key.split("/")[0], []).append(metrics[candidate]["auroc"])
        summary[candidate] = {survey: round(float(np.mean(values)), 4) for survey, values in by_survey.items()}
    return summary


def save_results(name: str, payload: dict) -> None:
    """Write ``results/NAME`` (JSON) beside the benchmarks' other results."""
    (HERE / "results" / name).write_text(json.dumps(payload, indent=1))


def evaluate_rules(stats: dict[str, np.ndarray], lines: list[str], reference: np.ndarray, positive: np.ndarray,
                   negative: np.ndarray) -> dict[str, dict]:
    from ifskeras.discovery.ranking import line_z_scores

    keep = kept_line_indices(lines)
    z = {name: line_z_scores(values[:, keep], reference) for name, values in stats.items()}
    z["mean+peak3"] = np.concatenate([z["mean"], z["peak3"]], axis=1)
    chosen = positive | negative
    return {name: auroc_ap(top_mean(values), positive, chosen) for name, values in z.items()}


def dev_runs():
    """(survey, run, records dir, model dir, id -> label) of every development run with a model."""
    from ifskeras.records import read_index

    for survey, work in DEV_SURVEYS.items():
        labels = {row["id"]: row["label"] for row in read_index(work / "records")}
        for run in RUNS[survey]:
            model_dir = work / run / "run" / "model"
            if not (model_dir / "saved_model.pb").exists():
                print(f"{survey} {run}: no model, skipped")
                continue
            yield survey, run, work / "records", model_dir, labels


def main() -> int:
    results = {}
    for survey, run, records, model_dir, labels in dev_runs():
        chi, used, ids, splits, lines = residual_maps(model_dir, records)
        label = np.asarray([labels[i] for i in ids])
        metrics = evaluate_rules(line_statistics(chi, used), lines, splits == "train",
                                 np.isin(label, POSITIVE), np.isin(label, NEGATIVE))
        results[f"{survey}/{run}"] = metrics
        print(f"{survey:9s} {run:10s} " + "  ".join(f"{name} {m['auroc']:.3f} ({m['ap']:.2f})"
                                                   for name, m in metrics.items()), flush=True)
    names = next(iter(results.values())).keys()
    print("mean AUROC:", "  ".join(f"{name} {np.mean([r[name]['auroc'] for r in results.values()]):.3f}"
                                   for name in names))
    save_results("dev_rank_rules.json", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
