"""The demo: the whole method on a synthetic survey, from MAPS files to an HTML report.

synth -> convert -> fit -> export -> score -> evaluate -> report, each stage writing
into its own folder of the demo directory. A stage whose output is complete is reused
on a second run, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

__all__ = ["DemoSettings", "DemoResult", "run_demo"]


@dataclass(frozen=True)
class DemoSettings:
    """Sized to finish in under 10 minutes on a 2-core CPU with the defaults."""

    n: int = 600
    model: str = "ae"
    epochs: int = 12
    size: int = 32
    latent_dim: int = 16
    # Half the default filters: 1.8x faster, so the demo fits in 10 minutes on 2 cores.
    filters: tuple[int, ...] = (8, 16)
    batch_size: int = 16
    seed: int = 0
    jobs: int = 2
    top_n: int = 10


@dataclass
class DemoResult:
    out_dir: Path
    report: Path
    bundle: object
    top: list[tuple[str, str, float]]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)


def run_demo(out_dir: str | Path, settings: DemoSettings = DemoSettings(), *, fresh: bool = False,
             say: Callable[[str], None] = print, progress: bool = True) -> DemoResult:
    """Run every stage of the method on a synthetic survey; returns where things went."""
    from ifskeras.learning.config import RunConfig

    out_dir = Path(out_dir)
    if fresh and out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings_path = out_dir / "demo_settings.json"
    wanted = json.dumps(dataclasses.asdict(settings), sort_keys=True)
    if settings_path.exists() and settings_path.read_text() != wanted:
        raise ValueError(
            f"{out_dir} holds a demo made with other settings ({settings_path}); use --fresh or another --out"
        )
    settings_path.write_text(wanted)
    survey, records, run, scores, report = (out_dir / name for name in ("survey", "records", "run", "scores", "report"))
    result = DemoResult(out_dir, report / "index.html", None, [])

    def stage(name: str, done: bool, action: Callable[[], None]) -> None:
        if done:
            say(f"[{name}] reusing {out_dir / name}")
            result.reused.append(name)
            return
        say(f"[{name}] ...")
        started = time.perf_counter()
        action()
        result.stage_seconds[name] = time.perf_counter() - started
        say(f"[{name}] done in {result.stage_seconds[name]:.0f} s")

    def synth() -> None:
        from ifskeras.survey.synth import make_survey

        summary = make_survey(survey, settings.n, seed=settings.seed, progress=progress, overwrite=True)
        say("  classes: " + ", ".join(f"{name} {count}" for name, count in summary.counts.items()))

    def convert() -> None:
        from ifskeras.records import ConvertOptions, convert_maps

        if records.exists():
            shutil.rmtree(records)
        from ifskeras.common.progress import counting_progress

        options = ConvertOptions(size=settings.size, labels=str(survey / "catalog.csv"))
        with counting_progress(progress, "converting") as callback:
            converted = convert_maps([survey], records, options, jobs=settings.jobs, progress=callback)
        say(f"  {converted.converted} galaxies: {converted.examples}; {len(converted.failures)} failures")

    def fit() -> None:
        from ifskeras.learning.train import fit as fit_run

        config = RunConfig().override(
            model={"kind": settings.model, "latent_dim": settings.latent_dim, "filters": settings.filters},
            train={"epochs": settings.epochs, "batch_size": settings.batch_size, "seed": settings.seed,
                   "early_stopping_patience": 0},
        )
        fitted = fit_run(records, run, config, overwrite=True, progress=progress)
        last = fitted.history[-1]
        say(f"  {fitted.epochs_completed} epochs, best epoch {fitted.best_epoch}, "
            f"val objective {fitted.best_objective:.4f}, {last['samples_per_second']:.0f} samples/s")

    def score() -> None:
        from ifskeras.discovery.score import score_records

        scored = score_records(run / "model", records, scores, seed=settings.seed, progress=progress)
        say(f"  {scored.n_galaxies} galaxies at {scored.samples_per_second:.0f} galaxies/s")

    stage("survey", (survey / "catalog.csv").exists() and len(list(survey.glob("manga-*"))) == settings.n, synth)
    stage("records", (records / "manifest.json").exists(), convert)
    stage("run", (run / "model" / "saved_model.pb").exists(), fit)
    stage("scores", (scores / "scores.csv").exists(), score)

    from ifskeras.discovery.pipeline import evaluate_run, report_run
    from ifskeras.discovery.score import load_scores

    def evaluate_and_report() -> None:
        result.bundle = evaluate_run(scores, positive=("Seyfert", "blueberry"), negative=("SF",), seed=settings.seed)
        report_run(scores, report, run_dir=run, bundle=result.bundle, top_n=settings.top_n,
                   title="ifskeras demo: synthetic MaNGA survey")

    stage("report", False, evaluate_and_report)
    table, _, _ = load_scores(scores)
    order = sorted(range(len(table["id"])), key=lambda i: -table["rank_score"][i])[: settings.top_n]
    result.top = [(str(table["id"][i]), str(table["label"][i]), float(table["rank_score"][i])) for i in order]
    return result
