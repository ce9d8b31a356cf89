"""``ifskeras fit`` and ``ifskeras export``: training and SavedModel export."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ifskeras.learning.config import MODEL_KINDS, PRECISIONS, STRATEGIES

# The choice lists are defined once, in the config; the CLI only presents them.
ModelKind = Enum("ModelKind", {name: name for name in MODEL_KINDS}, type=str)
StrategyName = Enum("StrategyName", {name: name for name in STRATEGIES}, type=str)
Precision = Enum("Precision", {name: name for name in PRECISIONS}, type=str)


def fit(
    records: Path = typer.Argument(..., help="Records directory written by `ifskeras convert`."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (config, checkpoints, history, model)."),
    model: Optional[ModelKind] = typer.Option(None, "--model", help="ae: ConvLSTM autoencoder (default); vae: variational."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML or JSON file with sections model, train and augment."),
    epochs: Optional[int] = typer.Option(None, help="Number of epochs."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch size (split over replicas)."),
    latent_dim: Optional[int] = typer.Option(None, help="Size of the latent vector."),
    learning_rate: Optional[float] = typer.Option(None, help="Peak Adam learning rate."),
    seed: Optional[int] = typer.Option(None, help="Seed: the same seed gives the same weights on CPU."),
    strategy: Optional[StrategyName] = typer.Option(None, help="Devices: auto, one, mirrored (GPUs), multiworker (TF_CONFIG)."),
    precision: Optional[Precision] = typer.Option(
        None, "--precision", "--mixed-precision",
        help="mixed_bfloat16 or mixed_float16 on GPUs: float16/bfloat16 compute, float32 weights and loss."),
    jit: bool = typer.Option(False, "--jit", help="XLA-compile the forward and backward pass (compiles 30-70 s; on CPU faster only at 16x16, slower at 64x64: measure first)."),
    cache: Optional[bool] = typer.Option(
        None, "--cache/--no-cache",
        help="Keep the records in memory after the first epoch (default: when they fit in a quarter of the available memory)."),
    resume: bool = typer.Option(
        False, "--resume",
        help="Continue a run from its last checkpoint; --epochs, --cache, --strategy and --jit may change, other options must match the run."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train a ConvLSTM autoencoder or VAE on records, then export a SavedModel to OUT/model.

    Example: ifskeras fit records/ --model vae --out runs/vae1 --epochs 30 --batch-size 32
    """
    from ifskeras.learning.config import load_config
    from ifskeras.records import RecordsError
    from ifskeras.learning.train import TrainingError, fit as fit_run

    try:
        # On --resume the run's own config.json is the base: only options given here change it.
        base = load_config(out / "config.json" if resume and config is None and (out / "config.json").exists() else config)
        run_config = base.override(
            model={"kind": model.value if model else None, "latent_dim": latent_dim},
            train={
                "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
                "strategy": strategy.value if strategy else None,
                "precision": precision.value if precision else None,
                "jit_compile": jit or None,
                "cache": cache,
            },
        )
        result = fit_run(records, out, run_config, resume=resume, overwrite=overwrite, progress=not quiet)
    except (ValueError, RecordsError, TrainingError) as error:  # ConfigError is a ValueError
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    for change in result.resume_changes:
        typer.echo(f"resumed with {change}")
    last = result.history[-1] if result.history else {}
    typer.echo(f"records {'kept in memory after the first epoch' if result.records_cached else 'read from disk every epoch'}"
               f" ({result.cache_reason})")
    typer.echo(
        f"trained {result.epochs_completed} epochs (best epoch {result.best_epoch}, "
        f"best val objective {result.best_objective:.5f}{', stopped early' if result.stopped_early else ''}); "
        f"last epoch {last.get('samples_per_second', float('nan')):.1f} samples/s"
    )
    if result.export_path:
        typer.echo(f"SavedModel: {result.export_path}")
    typer.echo(f"history: {out / 'history.csv'}")


def export(
    run_dir: Path = typer.Argument(..., help="Run directory written by `ifskeras fit`."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory of the SavedModel to write."),
) -> None:
    """Export the best model of a run as a SavedModel (reconstruct, encode, score, metadata).

    Example: ifskeras export runs/vae1 --out models/vae1
    """
    from ifskeras.learning.export import ExportError, export_run

    try:
        path = export_run(run_dir, out)
    except ExportError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"SavedModel: {path}")


def register(app: typer.Typer) -> None:
    """Add fit and export to the Typer app."""
    app.command("fit")(fit)
    app.command("export")(export)
