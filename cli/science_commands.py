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
    """
    from ifskeras.records import RecordsError
    from ifskeras.score import ScoringError, score_records

    try:
        result = score_records(
            model_dir, records, out, splits=tuple(split) if split else None, batch_size=batch_size, k=k,
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
    from ifskeras.score import ScoringError, nearest_neighbors

    try:
        rows = nearest_neighbors(scores_dir, galaxy_id, k=k)
    except ScoringError as error:
        _fail(error)
    typer.echo(f"{'rank':>4}  {'id':<14} {'label':<12} {'distance':>10}")
    for rank, (neighbour, label, distance) in enumerate(rows, start=1):
        typer.echo(f"{rank:>4}  {neighbour:<14} {label or '-':<12} {distance:>10.4f}")
    if png is not None:
        from ifskeras.discovery import render_neighbours_png

        typer.echo(f"montage: {render_neighbours_png(scores_dir, galaxy_id, rows, png)}")


def register(app: typer.Typer) -> None:
    """Add the discovery commands to the Typer app."""
    app.command("score")(score)
    app.command("neighbors")(neighbors)
