"""``ifskeras synth``: write a synthetic MaNGA-like survey of DAP MAPS files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def synth(
    out_dir: Path = typer.Argument(..., metavar="OUTDIR", help="Directory for the MAPS files and catalogue."),
    n: int = typer.Option(200, "--n", min=1, help="Number of galaxies."),
    seed: int = typer.Option(0, "--seed", help="Survey seed; the same seed writes identical files."),
    dap: str = typer.Option("dr15", "--dap", help="Channel set: dr15 (22 lines) or dr17 (35 lines)."),
    variant: Optional[str] = typer.Option(
        None, "--variant",
        help="classic or realistic (default: classic, the library's DEFAULT_VARIANT). "
             "classic: the original survey, identical files for a seed. realistic: harder and closer to "
             "MaNGA, so an anomaly ranking is not tuned to an easy survey: one Ha brightness distribution "
             "for all line-emitting classes, the DAP's tied doublet ratios, noise correlated between "
             "neighbouring spaxels, diffuse ionised gas, weak and off-centre AGN, bars, thin edge-on discs, "
             "close companions, 28% retired galaxies.",
    ),
    fractions: Optional[str] = typer.Option(
        None, "--fractions",
        help="Class mix, e.g. 'SF=0.6,composite=0.13,Seyfert=0.05,LINER=0.09,retired=0.12,blueberry=0.01' "
             "(the classic default; realistic: SF=0.46,composite=0.12,Seyfert=0.05,LINER=0.08,retired=0.28,"
             "blueberry=0.01); normalised, classes left out get none.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a survey already in OUTDIR (its catalogue and the files it lists)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Write a synthetic MaNGA-like survey: DAP MAPS files plus catalog.csv and catalog.fits.

    Star-forming discs with clumps, composites, Seyferts, LINERs, retired galaxies, rare blueberries.

    BPT-consistent line ratios, case B Balmer lines with dust, hexagonal IFU footprints, real noise levels.

    Two variants: classic (the default) and realistic (harder, closer to MaNGA; see --variant).

    Example: ifskeras synth survey/ --n 200 --seed 1 --variant realistic
    """
    from ifskeras.survey.synth import (
        DEFAULT_VARIANT, VARIANTS, SurveyExistsError, make_survey, parse_class_fractions,
    )

    dap = dap.lower()
    if dap not in ("dr15", "dr17"):
        raise typer.BadParameter(f"must be dr15 or dr17. Received: {dap!r}", param_hint="--dap")
    variant = DEFAULT_VARIANT if variant is None else variant.lower()
    if variant not in VARIANTS:
        raise typer.BadParameter(f"must be one of {', '.join(VARIANTS)}. Received: {variant!r}", param_hint="--variant")
    try:
        class_fractions = None if fractions is None else parse_class_fractions(fractions)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--fractions") from None
    try:
        summary = make_survey(out_dir, n, seed=seed, dap=dap, variant=variant, class_fractions=class_fractions,
                              overwrite=overwrite, progress=not quiet)
    except SurveyExistsError as error:
        typer.secho(
            f"error: {out_dir} already holds a survey ({len(error.files)} MAPS or catalogue files, e.g. "
            f"{error.files[0].name}). Use --overwrite to replace it, or choose another directory.",
            fg="red", err=True,
        )
        raise typer.Exit(1) from None
    counts = summary.counts
    width = max(len(name) for name in counts)
    typer.echo(f"wrote {len(summary.paths)} MAPS files ({variant}, {dap}, seed {seed}) to {summary.out_dir} "
               f"in {summary.seconds:.1f} s")
    for name, count in counts.items():
        typer.echo(f"  {name:<{width}} {count:>6}  ({100.0 * count / n:.1f}%)")
    typer.echo(f"catalogue: {summary.catalog_csv}, {summary.catalog_fits}")


def register(app: typer.Typer) -> None:
    """Add the ``synth`` command to the Typer app."""
    app.command("synth")(synth)
