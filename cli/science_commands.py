"""``ifskeras score``, ``neighbors``, ``evaluate``, ``report`` and ``demo``: discovery commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _fail(error: Exception) -> None:
    typer.secho(f"error: {error}", fg="red", err=True)
    raise typer.Exit(1)


def score(
    model_dir: Path = typer.Argument(..., help="SavedModel written by `ifskeras fit` or `ifskeras export`."),
    records: Path = typer.Argument(..., help="Records directory written by `ifskeras convert`."),
    out: Path = typer.Option(..., "--out", "-o", help="Scores directory to write."),
    models: Optional[list[Path]] = typer.Option(
        None, "--model", help="Another SavedModel trained on the same lines and grid (e.g. another training "
        "seed); repeat for more. With it the scores are an ensemble's: rank_score is the models' mean, "
        "with rank_score_spread; latents, knn_score and UMAP are MODEL_DIR's."),
    split: Optional[list[str]] = typer.Option(None, "--split", help="Split(s) to score; default all."),
    batch_size: int = typer.Option(64, help="Galaxies per batch through the model."),
    k: int = typer.Option(10, "-k", help="Neighbours for the latent isolation score."),
    seed: int = typer.Option(0, help="UMAP seed (reproducible, single-threaded)."),
    fast_umap: bool = typer.Option(False, "--fast-umap", help="Multi-threaded UMAP, not reproducible."),
    no_umap: bool = typer.Option(False, "--no-umap", help="Skip UMAP (columns umap_x/umap_y left empty)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Score galaxies with an exported model: anomaly score, per-line errors, latents, k-NN score, UMAP.

    Example: ifskeras score runs/vae1/model records/ --out scores/vae1

    Ensemble of three seeds: ifskeras score runs/vae1/model records/ --out scores/vae --model runs/vae2/model --model runs/vae3/model
    """
    from ifskeras.records import RecordsError
    from ifskeras.discovery.score import ScoringError, score_records

    try:
        result = score_records(
            [model_dir, *(models or [])], records, out, splits=tuple(split) if split else None, batch_size=batch_size, k=k,
            umap=not no_umap, seed=None if fast_umap else seed, progress=not quiet,
        )
    except (ScoringError, RecordsError) as error:
        _fail(error)
    counts = ", ".join(f"{name} {n}" for name, n in result.splits.items())
    typer.echo(f"scored {result.n_galaxies} galaxies ({counts}) at {result.samples_per_second:.0f} galaxies/s")
    typer.echo(f"wrote {out / 'scores.csv'}, {out / 'scores.fits'}, {out / 'latents.npy'}")


def neighbors(
    scores_dir: Path = typer.Argument(..., help="Scores directory written by `ifskeras score`."),
    galaxy_id: str = typer.Argument(..., metavar="ID", help="plateifu of the query galaxy."),
    k: int = typer.Option(10, "-k", help="Number of neighbours."),
    png: Optional[Path] = typer.Option(None, "--png", help="Also render a montage of the query and its neighbours."),
) -> None:
    """The K galaxies nearest to ID in latent space, with distances.

    Example: ifskeras neighbors scores/vae1 8143-3701 -k 5 --png neighbours.png
    """
    from ifskeras.discovery.neighbours import nearest_neighbors
    from ifskeras.discovery.score import ScoringError

    try:
        rows = nearest_neighbors(scores_dir, galaxy_id, k=k)
    except ScoringError as error:
        _fail(error)
    typer.echo(f"{'rank':>4}  {'id':<14} {'label':<12} {'distance':>10}")
    for rank, (neighbour, label, distance) in enumerate(rows, start=1):
        typer.echo(f"{rank:>4}  {neighbour:<14} {label or '-':<12} {distance:>10.4f}")
    if png is not None:
        from ifskeras.discovery.pipeline import render_neighbours_png

        typer.echo(f"montage: {render_neighbours_png(scores_dir, galaxy_id, rows, png)}")


_HEADLINE_COLUMNS = ("score", "AUROC", "AP", "verdict")


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            typer.echo("  ".join("-" * width for width in widths))


def print_evaluation(bundle) -> None:
    """The evaluation table exactly as the report shows it (same formatting function)."""
    from ifskeras.discovery.tables import format_evaluation_table

    evaluation = bundle.evaluation
    negatives = ", ".join(evaluation.negative) if evaluation.negative else "all other galaxies"
    typer.echo(f"evaluation on {bundle.n_galaxies} galaxies ({bundle.split}): positives {', '.join(evaluation.positive)} "
               f"({evaluation.n_positive}) against {negatives} ({evaluation.n_negative})")
    rows = format_evaluation_table(bundle.evaluation, bundle.comparisons)
    # The terminal gets the headline columns; evaluation.csv and the report have them all.
    keep = [i for i, name in enumerate(rows[0]) if name.split(" ")[0] in _HEADLINE_COLUMNS
            or name.startswith(("P@", "\u0394AUROC"))]
    _print_table([[row[i] for i in keep] for row in rows])


_POSITIVE_HELP = ("Comma-separated positive classes (default: Seyfert,blueberry, the synthetic survey's; "
                  "with real labels name yours, e.g. AGN).")
_LABELS_HELP = "CSV with plateifu and a label column (default: the labels stored in the records)."


def _classes(text: Optional[str]) -> Optional[tuple[str, ...]]:
    return tuple(name.strip() for name in text.split(",") if name.strip()) if text else None


def evaluate(
    scores_dir: Path = typer.Argument(..., help="Scores directory written by `ifskeras score`."),
    positive: Optional[str] = typer.Option(None, help=_POSITIVE_HELP),
    negative: Optional[str] = typer.Option(None, help="Comma-separated negative classes (default: all others)."),
    labels: Optional[Path] = typer.Option(None, help=_LABELS_HELP),
    label_column: str = typer.Option("class", help="Label column of --labels."),
    split: Optional[str] = typer.Option(None, help="Evaluate one split only (default: every scored galaxy)."),
    no_baselines: bool = typer.Option(False, "--no-baselines", help="Skip PCA and IsolationForest baselines."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples for the intervals."),
) -> None:
    """Evaluate anomaly scores against labels and baselines: AUROC, AP, precision@k with intervals.

    Example: ifskeras evaluate scores/vae1 --labels agn.csv --positive AGN
    """
    from ifskeras.discovery.pipeline import evaluate_run
    from ifskeras.discovery.score import ScoringError

    try:
        bundle = evaluate_run(
            scores_dir, positive=_classes(positive), negative=_classes(negative),
            labels_csv=labels, label_column=label_column, split=split, baselines=not no_baselines, n_bootstrap=bootstrap,
        )
    except (ScoringError, ValueError) as error:
        _fail(error)
    print_evaluation(bundle)
    typer.echo(f"wrote {scores_dir / 'evaluation.json'} and {scores_dir / 'evaluation.csv'}")


def report(
    scores_dir: Path = typer.Argument(..., help="Scores directory written by `ifskeras score`."),
    out: Path = typer.Option(..., "--out", "-o", help="Report directory (index.html + figures/)."),
    run_dir: Optional[Path] = typer.Option(None, help="Training run for loss curves (default: the model's run)."),
    labels: Optional[Path] = typer.Option(None, help=_LABELS_HELP),
    label_column: str = typer.Option("class", help="Label column of --labels."),
    positive: Optional[str] = typer.Option(
        None, help="Positive classes for the evaluation (default: Seyfert,blueberry when present; otherwise the "
                   "report is written without the evaluation and says which classes you could choose)."),
    negative: Optional[str] = typer.Option(None, help="Negative classes (default: all others)."),
    top: int = typer.Option(12, help="Most anomalous galaxies shown in the gallery."),
) -> None:
    """Write an HTML report with PNG figures: losses, scores, UMAP, BPT, gallery, evaluation, neighbours.

    Example: ifskeras report scores/vae1 --out report/vae1 --labels agn.csv --positive AGN
    """
    from ifskeras.discovery.pipeline import choose_positive, evaluate_run, read_labels, report_run
    from ifskeras.discovery.score import ScoringError, load_scores

    try:
        table, _, _ = load_scores(scores_dir)
        galaxy_labels = read_labels(table, labels, label_column)
        bundle, note = None, None
        if any(galaxy_labels != ""):
            try:
                chosen = choose_positive(galaxy_labels, _classes(positive), source=str(labels or scores_dir))
            except ScoringError as error:
                if positive is not None:
                    raise  # classes the user asked for and that are absent: an error, not a silent omission
                chosen, note = None, f"Not evaluated: {error}."
                typer.secho(f"note: the report has no evaluation section: {error}", fg="yellow", err=True)
            if chosen is not None:
                bundle = evaluate_run(scores_dir, positive=chosen, negative=_classes(negative),
                                      labels_csv=labels, label_column=label_column)
                print_evaluation(bundle)
        page = report_run(scores_dir, out, run_dir=run_dir, bundle=bundle, labels_csv=labels,
                          label_column=label_column, evaluation_note=note, top_n=top)
    except (ScoringError, ValueError) as error:
        _fail(error)
    typer.echo(f"report: {page}")


def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Demo directory (survey, records, run, scores, report)."),
    n: int = typer.Option(600, "--n", help="Galaxies in the synthetic survey."),
    model: str = typer.Option("ae", "--model", help="ae or vae."),
    epochs: int = typer.Option(12, "--epochs", help="Training epochs."),
    size: int = typer.Option(32, "--size", help="Map size in spaxels (divisible by 4)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the survey, training and UMAP."),
    fresh: bool = typer.Option(False, "--fresh", help="Start over instead of reusing finished stages."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the whole method on a synthetic survey: synth, convert, fit, score, evaluate, report.

    Example: ifskeras demo --out demo-out --n 600 --model ae --epochs 12
    """
    from ifskeras.demo import DemoSettings, run_demo
    from ifskeras.discovery.score import ScoringError

    if model not in ("ae", "vae"):
        _fail(ValueError(f"--model must be ae or vae. Received: {model!r}"))
    settings = DemoSettings(n=n, model=model, epochs=epochs, size=size, seed=seed)
    try:
        result = run_demo(out, settings, fresh=fresh, say=typer.echo, progress=not quiet)
    except (ScoringError, ValueError) as error:
        _fail(error)
    typer.echo("")
    print_evaluation(result.bundle)
    from ifskeras.discovery.tables import format_class_recall_table

    typer.echo("")
    typer.echo("recall of each class among the most anomalous 1% and 5% of galaxies:")
    _print_table(format_class_recall_table(result.bundle.evaluation))
    typer.echo("")
    typer.echo(f"the {len(result.top)} most anomalous galaxies (rank_score):")
    for rank, (galaxy, label, value) in enumerate(result.top, start=1):
        typer.echo(f"{rank:>3}  {galaxy:<12} {label:<10} {value:.4f}")
    typer.echo("")
    typer.echo(f"report: {result.report.resolve()}")


def register(app: typer.Typer) -> None:
    """Add the discovery commands to the Typer app."""
    app.command("score")(score)
    app.command("neighbors")(neighbors)
    app.command("evaluate")(evaluate)
    app.command("report")(report)
    app.command("demo")(demo)
