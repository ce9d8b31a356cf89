"""Do the DAP's tied doublet copies belong in the training loss? Measured on the development surveys.

    python benchmarks/bench_tied_lines.py     # about 30 minutes on 2 cores

[OIII]4960, [NII]6549 and [OI]6365 are fixed multiples of [OIII]5008, [NII]6585 and
[OI]6302 in real DAP files, so a loss over all 19 lines counts those three lines twice.
This trains the AE of the discovery benchmark with the copies in the loss (the default,
as in the paper) and without them (``[model] tied_lines_in_loss = false``), with the same
seeds, and compares ``rank_score``, ``chi2_score`` and ``anomaly_score`` (AUROC and AP of
Seyfert+blueberry against SF, bootstrap intervals).

It uses the two *development* surveys ``rank_score`` was chosen on (the demo survey,
seed 0, 600 galaxies; a realistic-variant survey, seed 1000), never the benchmark's
variants, so the choice of default does not look at the surveys that test it. Stages are
cached under ``benchmarks/work/discovery-dev*/``. Writes ``benchmarks/results/tied_lines.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_discovery  # noqa: E402
import common  # noqa: E402

#: The development surveys, with the work directories rank_score was developed in (their
#: surveys and records are reused when present).
SURVEYS = (
    (bench_discovery.Variant("dev-demo", 0, 600, 32, note="the demo survey's seed, rank_score's development survey"),
     "discovery-dev"),
    (bench_discovery.Variant("dev-realistic", 1000, 600, 32, {"variant": "realistic"},
                             note="the realistic development survey"), "discovery-dev-realistic"),
)
SCORES = ("rank_score", "chi2_score", "anomaly_score")


def train_and_score(records: Path, work: Path, seed: int, tied_in_loss: bool) -> Path:
    # Both arms are trained here with the same settings (the development runs of
    # rank_score were trained for other numbers of epochs, so they are not reused).
    return bench_discovery.train_and_score(
        records, work, "ae", seed, bench_discovery.fit_settings(False),
        name=f"ae-{'tied' if tied_in_loss else 'untied'}-seed{seed}", scores_name="scores-now",
        model_options={"tied_lines_in_loss": tied_in_loss},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per setting")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    common.quiet_tensorflow()
    started = time.perf_counter()
    results = {}
    for survey, directory in SURVEYS:
        work = common.WORK_DIR / directory
        records = bench_discovery.make_records(survey, work)
        settings = {}
        for tied_in_loss in (True, False):
            runs = []
            for seed in range(args.seeds):
                scores = train_and_score(records, work, seed, tied_in_loss)
                evaluation = bench_discovery.evaluate(scores, args.bootstrap)
                runs.append({"seed": seed, "scores": {name: evaluation["scores"][name] for name in SCORES}})
                print(f"{survey.name} tied_in_loss={tied_in_loss} seed {seed}: " + ", ".join(
                    f"{name} {runs[-1]['scores'][name]['auroc']['value']:.3f}" for name in SCORES), flush=True)
            settings["tied_in_loss" if tied_in_loss else "tied_out_of_loss"] = {
                "runs": runs, "summary": bench_discovery.summarise(runs)}
        results[survey.name] = {"survey": survey.__dict__ | {"survey": dict(survey.survey)}, **settings}
    common.write_result("tied_lines", {
        "question": "count the DAP's tied doublet copies in the AE's training loss, or leave them out",
        "model": {"kind": "ae", **bench_discovery.fit_settings(False)},
        "positive": list(bench_discovery.POSITIVE),
        "negative": list(bench_discovery.NEGATIVE),
        "surveys": results,
    }, mode="full", started=started)
    for name, data in results.items():
        for setting in ("tied_in_loss", "tied_out_of_loss"):
            row = data[setting]["summary"]
            print(name, setting, ", ".join(f"{score} {row[score]['auroc']['mean']:.3f} "
                                           f"[{row[score]['auroc']['min']:.3f}, {row[score]['auroc']['max']:.3f}]"
                                           for score in SCORES))


if __name__ == "__main__":
    main()
