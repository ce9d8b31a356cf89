"""What does each ingredient of the realistic survey cost rank_score? DEVELOPMENT survey only.

The held-out discovery run left the realistic variant at AUROC 0.77 (AE and VAE) against
0.93-0.97 on the four others, and the per-group table could not say which of the
variant's changes costs what. This script switches ONE ingredient off at a time in the
realistic development survey (seed 1000, 600 galaxies, 32 x 32; the survey rank_score was
developed on, never a benchmark variant) and trains the benchmark's AE on each:

- ``brightness``: the classic per-class Halpha brightness (blueberries and Seyferts drawn
  brighter than SF) instead of one shared range;
- ``correlated noise``: noise independent between spaxels;
- ``DIG``: no diffuse ionised gas;
- ``weak AGN``: no diluted nuclei (every Seyfert at full strength);
- ``off-centre AGN``: every nucleus at the galaxy centre;
- ``nuisance``: no bars, edge-on discs or companions;
- ``class mix``: the classic mix (retired 12% instead of 28%, SF 60% instead of 46%);
- ``none``: all of the above off at once (the realistic survey's galaxies with nothing
  added; the DAP's doublet ratios stay), the end point the costs should add up to.

Each galaxy draws from its own random stream and the realistic draws come after the
classic ones, so an ablated survey holds the same galaxy ids with the same classes and the
same classic draws (geometry, line ratios, dust, depth; realistic draws after the switched-
off one can differ), except ``class mix``, which draws the classes again. The change of
AUROC against the realistic survey is therefore measured PAIRED, by a stratified bootstrap over galaxies of the difference,
averaged over the training seeds. The reference is the realistic survey itself, trained
with the same settings and seeds (``discovery-dev-realistic/ae-tied-seedN``, the default
model, rescored with today's code).

Written down before the first run: an ingredient is said to cost rank_score AUROC when the
95% interval of that paired change is above 0. This is a diagnosis, not a rule search:
nothing in ifskeras changes from it. Writes results/dev_realistic_ingredients.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from unittest import mock

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_discovery  # noqa: E402
import common  # noqa: E402

REFERENCE = bench_discovery.Variant("dev-realistic", 1000, 600, 32, {"variant": "realistic"},
                                    note="the realistic development survey")
REFERENCE_WORK = common.WORK_DIR / "discovery-dev-realistic"
WORK = common.WORK_DIR / "discovery-dev-ingredients"
#: name -> (_LayoutOptions changes, _Variant changes, make_survey changes)
ABLATIONS = {
    "brightness": ({}, {"log_ha_brightness": "classic", "brightness": "peak"}, {}),
    "correlated noise": ({}, {"noise_correlation_fwhm": 0.0}, {}),
    "DIG": ({"dig_level": (), "dig_scale": ()}, {}, {}),
    "weak AGN": ({"weak_agn_fraction": 0.0, "weak_agn_contrast": ()}, {}, {}),
    "off-centre AGN": ({"agn_offset_fraction": 0.0, "agn_offset": ()}, {}, {}),
    "nuisance": ({"bar_fraction": 0.0}, {"edge_on_fraction": 0.0, "edge_on_inclination": (),
                                         "edge_on_thickness": (), "companion_fraction": 0.0}, {}),
    "class mix": ({}, {}, {"class_fractions": "classic"}),
}


def all_off() -> tuple[dict, dict, dict]:
    layout, variant, survey = {}, {}, {}
    for layout_changes, variant_changes, survey_changes in ABLATIONS.values():
        layout |= layout_changes
        variant |= variant_changes
        survey |= survey_changes
    return layout, variant, survey


ABLATIONS["none"] = all_off()


@contextmanager
def realistic_without(layout_changes: dict, variant_changes: dict):
    """The realistic variant, with some of its settings back at the classic survey's, while inside."""
    from ifskeras.survey.synth import galaxy

    base = galaxy._VARIANTS["realistic"]
    variant_changes = {key: (galaxy._LOG_HA_PEAK if value == "classic" else value)
                       for key, value in variant_changes.items()}
    ablated = replace(base, layout=replace(base.layout, **layout_changes), **variant_changes)
    with mock.patch.object(galaxy, "_VARIANTS", MappingProxyType({**galaxy._VARIANTS, "realistic": ablated})):
        yield


def ablated_records(name: str) -> Path:
    from ifskeras.survey.synth.survey import DEFAULT_CLASS_FRACTIONS

    layout_changes, variant_changes, survey_changes = ABLATIONS[name]
    survey = dict(REFERENCE.survey)
    if survey_changes.get("class_fractions") == "classic":
        survey["class_fractions"] = dict(DEFAULT_CLASS_FRACTIONS)
    variant = replace(REFERENCE, name=name, survey=survey)
    with realistic_without(layout_changes, variant_changes):
        return bench_discovery.make_records(variant, work_dir(name))


def work_dir(name: str) -> Path:
    return WORK / name.replace(" ", "-")


def train_and_score(records: Path, work: Path, seed: int, name: str) -> Path:
    # The reference runs were trained by bench_tied_lines.py with the default model
    # (tied copies in the loss); every arm here uses the same settings and names.
    return bench_discovery.train_and_score(records, work, "ae", seed, bench_discovery.fit_settings(False),
                                           name=name, scores_name="scores-ingredients",
                                           model_options={"tied_lines_in_loss": True})


def ranked(scores: Path) -> dict[str, tuple[str, float]]:
    """id -> (label, rank_score) of a scores directory."""
    from ifskeras.discovery.score import load_scores

    table = load_scores(scores)[0]
    return {str(i): (str(label), float(value)) for i, label, value in
            zip(table["id"], table["label"], table["rank_score"])}


def _auroc(positive: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, score))


def change_of_auroc(ablated: list[dict], reference: list[dict], n_bootstrap: int, seed: int = 0) -> dict:
    """Mean over training seeds of AUROC(ablated) - AUROC(reference), with a 95% bootstrap interval.

    Paired when both surveys give every galaxy the same class (one resampling of galaxy ids
    for both), otherwise each survey is resampled on its own; stratified by class.
    """
    def arrays(runs, ids):
        label = np.array([runs[0][i][0] for i in ids])
        chosen = np.isin(label, bench_discovery.POSITIVE + bench_discovery.NEGATIVE)
        ids = [i for i, keep in zip(ids, chosen) if keep]
        positive = np.isin(label[chosen], bench_discovery.POSITIVE)
        return positive, np.array([[run[i][1] for i in ids] for run in runs]), ids

    pos_a, score_a, ids_a = arrays(ablated, sorted(ablated[0]))
    pos_r, score_r, ids_r = arrays(reference, sorted(reference[0]))
    paired = ids_a == ids_r and np.array_equal(pos_a, pos_r)

    def mean_auroc(positive, scores, index):
        return float(np.mean([_auroc(positive[index], row[index]) for row in scores]))

    def stratified(rng, positive):
        return np.concatenate([rng.choice(np.flatnonzero(positive == kind), size=int((positive == kind).sum()))
                               for kind in (True, False)])

    everything_a, everything_r = np.arange(len(pos_a)), np.arange(len(pos_r))
    value = mean_auroc(pos_a, score_a, everything_a) - mean_auroc(pos_r, score_r, everything_r)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_bootstrap):
        index_a = stratified(rng, pos_a)
        index_r = index_a if paired else stratified(rng, pos_r)
        draws.append(mean_auroc(pos_a, score_a, index_a) - mean_auroc(pos_r, score_r, index_r))
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"value": round(value, 4), "low": round(float(low), 4), "high": round(float(high), 4), "paired": paired,
            "costs": bool(low > 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="training seeds per survey")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--only", nargs="*", default=None, help="ablations to run (default all)")
    args = parser.parse_args()
    common.quiet_tensorflow()
    started = time.perf_counter()
    names = args.only or list(ABLATIONS)
    reference_records = bench_discovery.make_records(REFERENCE, REFERENCE_WORK)
    surveys = {"realistic": (reference_records, REFERENCE_WORK, "ae-tied-seed{}")}
    surveys |= {name: (ablated_records(name), work_dir(name), "ae-seed{}") for name in names}
    runs: dict[str, list[dict]] = {name: [] for name in surveys}
    results: dict[str, dict] = {name: {"runs": []} for name in surveys}
    # Seed by seed, so that an interrupted run has every ingredient at the first seed.
    for seed in range(args.seeds):
        for name, (records, work, run_name) in surveys.items():
            t0 = time.perf_counter()
            scores = train_and_score(records, work, seed, run_name.format(seed))
            evaluation = bench_discovery.evaluate(scores, args.bootstrap)
            runs[name].append(ranked(scores))
            results[name]["runs"].append({"seed": seed, "n_positive": evaluation["n_positive"],
                                          "n_negative": evaluation["n_negative"],
                                          "rank_score": evaluation["scores"]["rank_score"],
                                          "groups": evaluation.get("groups", {})})
            common.log(f"{name} seed {seed}: rank_score AUROC "
                       f"{evaluation['scores']['rank_score']['auroc']['value']:.3f} ({time.perf_counter() - t0:.0f} s)")
    for name, data in results.items():
        data["summary"] = bench_discovery.summarise([{"scores": {"rank_score": run["rank_score"]}}
                                                     for run in data["runs"]])["rank_score"]
        data["groups"] = bench_discovery.summarise_groups(data["runs"])
        if name != "realistic":
            data["change_of_auroc"] = change_of_auroc(runs[name], runs["realistic"], args.bootstrap)
    common.write_result("dev_realistic_ingredients", {
        "question": "how much rank_score AUROC each ingredient of the realistic survey costs, one switched off at a time",
        "reference": REFERENCE.__dict__ | {"survey": dict(REFERENCE.survey)},
        "model": {"kind": "ae", **bench_discovery.fit_settings(False)},
        "ablations": {name: {"layout": layout, "variant": variant, "survey": survey}
                      for name, (layout, variant, survey) in ABLATIONS.items()},
        "surveys": results,
    }, mode="full", started=started)
    print(table(results))
    return 0


def table(results: dict) -> str:
    """Markdown: AUROC over seeds, its paired change, and the groups' AUROC, per survey."""
    groups = list(results["realistic"]["groups"])
    lines = ["| switched off | rank_score AUROC | change [95%] | " + " | ".join(groups) + " |",
             "|---" * (3 + len(groups)) + "|"]
    for name, data in results.items():
        summary, change = data["summary"]["auroc"], data.get("change_of_auroc")
        shown = (f"{change['value']:+.3f} [{change['low']:+.3f}, {change['high']:+.3f}]"
                 f"{'' if change['paired'] else ' unpaired'}" if change else "")
        cells = [f"{data['groups'][g]['rank_score']['mean']:.2f}" if g in data["groups"] else "-" for g in groups]
        lines.append(f"| {'nothing (realistic)' if name == 'realistic' else name} | "
                     f"{summary['mean']:.3f} [{summary['min']:.3f}, {summary['max']:.3f}] | {shown} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
