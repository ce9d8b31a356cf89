"""Commands of the data layer: ``convert``, ``inspect``, ``verify`` and ``records merge``.

Each command parses its options, calls one library function in ``ifskeras.records``
and prints the outcome. Library errors become one-line messages on stderr and exit
code 1; an interrupt exits with 130. TensorFlow is imported only when a command
writes or fully verifies records.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ifskeras.cli.errors import EXIT_FAILURE, clean_errors, print_error

_LISTED_FAILURES = 5

records_app = typer.Typer(
    name="records",
    help="Maintain TFRecord datasets made by `ifskeras convert` (merge cluster parts).",
    no_args_is_help=True,
)


def convert(
    inputs: list[Path] = typer.Argument(
        ..., help="MAPS files, directories (searched recursively for *MAPS*.fits*) or text files listing paths."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory for shards and manifest.json."),
    size: int = typer.Option(64, "--size", min=1, help="Grid side S: every galaxy becomes L x S x S."),
    mode: str = typer.Option("fit", "--mode", help="fit: crop to the covered square and resample "
                             "(area-weighted over valid pixels); pad: centre crop or zero-pad, exact values."),
    lines: str = typer.Option("", "--lines", help="Comma-separated DAP line names (default: the paper's 19 lines)."),
    min_coverage: float = typer.Option(0.5, "--min-coverage", help="fit mode: an output pixel is valid when "
                                       "at least this fraction of its area is valid input."),
    scale: str = typer.Option("bundle", "--scale", help="fit mode, what the grid spans: bundle (the covered "
                              "square of the IFU bundle) or re (--re-span effective radii around the galaxy, "
                              "from --radii: one size on the grid for every galaxy)."),
    radii: Path = typer.Option(None, "--radii", "--drpall", help="--scale re: effective radii by plate-IFU: "
                               "a DRPall file, a `survey select` sample, or a synthetic survey's catalog.csv."),
    re_span: float = typer.Option(3.0, "--re-span", help="--scale re: effective radii across the grid "
                                  "(3: out to 1.5 Re, the Primary sample's coverage)."),
    labels: Path = typer.Option(None, "--labels", help="CSV with columns plateifu and the label column."),
    label_column: str = typer.Option("class", "--label-column", help="Label column of --labels."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Fraction in the validation split (stable hash of the MANGAID, else plate-IFU)."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", help="Fraction in the test split."),
    name: str = typer.Option("maps", "--name", help="Shard name prefix: NAME-SPLIT.tfrecord-00000-of-00004."),
    shard_mb: float = typer.Option(100.0, "--shard-mb", help="Target shard size in MB."),
    min_shards: int = typer.Option(1, "--min-shards", help="At least this many shards per split (>= number of training workers)."),
    compression: str = typer.Option("none", "--compression", help="none or gzip (gzip reads about 3x slower)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes; each writes whole shards when there are at least this many (see --min-shards)."),
    resume: bool = typer.Option(False, "--resume", help="Finish an interrupted conversion, keeping its completed shards."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the records already in --out."),
    strict: bool = typer.Option(False, "--strict", help="Exit with code 1 if any input failed."),
    num_workers: int = typer.Option(1, "--num-workers", min=1, help="Cluster runs: the inputs are split into this many parts."),
    worker_index: int = typer.Option(0, "--worker-index", min=0, help="Cluster runs: the part this run converts."),
    allow_mixed_releases: bool = typer.Option(
        False, "--allow-mixed-releases",
        help="Accept inputs of several DAP releases (VERSDAP, DAPTYPE) in one records directory; refused by "
             "default, as DR15 and DR17 fit the lines differently."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Convert MAPS files to sharded TFRecords with a manifest.

    One example per galaxy (id, flux, ivar, valid, label, ra, dec) on an S x S grid, split into train/val/test by a stable hash of the MANGAID (else the plate-IFU). Copies and repeat observations of a galaxy are converted once: the largest IFU bundle, falling back to the next file if it cannot be read; the others are listed in duplicates.csv. Bad files are listed in failures.csv and never stop the run. Safe to interrupt: rerun the same command with --resume.

    Example: ifskeras convert data/maps/ --out records/ --size 64 --jobs 4
    """
    from ifskeras.common.progress import counting_progress
    from ifskeras.records.convert import ConvertOptions, convert_maps

    with clean_errors(": rerun the same command with --resume to finish"):
        if compression not in ("none", "gzip"):
            raise ValueError(f"--compression must be none or gzip. Received: {compression!r}")
        options_kwargs = {"lines": tuple(_split_names(lines))} if lines.strip() else {}
        options = ConvertOptions(
            size=size, mode=mode, min_coverage=min_coverage, val_fraction=val_fraction,
            test_fraction=test_fraction, shard_mb=shard_mb, min_shards=min_shards,
            compression=None if compression == "none" else compression, name=name,
            labels=str(labels) if labels else None, label_column=label_column,
            num_workers=num_workers, worker_index=worker_index, allow_mixed_releases=allow_mixed_releases,
            scale=scale, radii=str(radii) if radii else None, re_span=re_span, **options_kwargs,
        )
        with counting_progress(not quiet, "converting") as progress:
            result = convert_maps(inputs, out, options, jobs=jobs, resume=resume,
                                  overwrite=overwrite, progress=progress)
    totals = result.manifest["totals"]
    if not quiet:
        counts = ", ".join(f"{split} {n}" for split, n in result.examples.items())
        typer.echo(
            f"converted {totals['examples']} galaxies ({counts}) into {result.out_dir} "
            f"at {result.galaxies_per_second:.1f} galaxies/s"
            + (f"; {result.resumed_shards} shards kept from the interrupted run" if result.resumed_shards else "")
        )
        if result.duplicates:
            typer.echo(f"skipped {len(result.duplicates)} file(s), other copies or repeat observations of "
                       f"converted galaxies (listed in {result.out_dir / 'duplicates.csv'})")
        if result.failures:
            typer.echo(f"{len(result.failures)} input(s) failed (all listed in {result.out_dir / 'failures.csv'}):")
            for failure in result.failures[:_LISTED_FAILURES]:
                replaced = f" (replaced by {failure['replaced_by']})" if failure.get("replaced_by") else ""
                typer.echo(f"  {failure['path']}: {failure['reason']}{replaced}")
            if len(result.failures) > _LISTED_FAILURES:
                typer.echo(f"  ... and {len(result.failures) - _LISTED_FAILURES} more")
    if totals["examples"] == 0:
        print_error("no galaxy was converted")
        raise typer.Exit(EXIT_FAILURE)
    if strict and result.failures:
        print_error(f"{len(result.failures)} input(s) failed and --strict was given")
        raise typer.Exit(EXIT_FAILURE)


def inspect(
    records_dir: Path = typer.Argument(..., help="Records directory (with manifest.json)."),
    png: Path = typer.Option(None, "--png", help="Save a montage of one galaxy's maps to this PNG (needs --id)."),
    galaxy_id: str = typer.Option(None, "--id", help="Plate-IFU of the galaxy to draw."),
) -> None:
    """Summarise a records directory: counts per split, lines, shape, preprocessing, failures.

    With --png and --id, also draw one galaxy's maps, one panel per line, invalid pixels blank.

    Example: ifskeras inspect records/ --png 7815-3702.png --id 7815-3702
    """
    from ifskeras.records.inspect import render_galaxy, summarize_records

    if (png is None) != (galaxy_id is None):
        print_error("--png and --id go together")
        raise typer.Exit(2)
    with clean_errors():
        typer.echo(summarize_records(records_dir))
        if png is not None:
            typer.echo(f"wrote {render_galaxy(records_dir, galaxy_id, png)}")


def verify(
    records_dir: Path = typer.Argument(..., help="Records directory (with manifest.json)."),
    quick: bool = typer.Option(False, "--quick", help="Only check that shards exist with the recorded sizes."),
) -> None:
    """Check records against their manifest; exit 1 on any problem.

    Recomputes every shard's sha256, reads every record (CRCs), decodes every example and reports missing, truncated, corrupted or extra files and count mismatches.

    Example: ifskeras verify records/
    """
    _quiet_tensorflow_logs()
    from ifskeras.records.verify import verify_records

    with clean_errors():
        report = verify_records(records_dir, full=not quick)
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(EXIT_FAILURE)


@records_app.command("merge")
def merge(
    parts: list[Path] = typer.Argument(..., help="Records directories to join (e.g. the --worker-index parts)."),
    out: Path = typer.Option(..., "--out", "-o", help="New, empty output directory."),
    transfer: str = typer.Option("link", "--transfer", help="link (hard links, copy across file systems), copy or move."),
    allow_partial: bool = typer.Option(False, "--allow-partial", help="Merge even if some cluster parts are missing."),
    allow_mixed_releases: bool = typer.Option(
        False, "--allow-mixed-releases", help="Merge parts converted from different DAP releases (DR15 with DR17)."),
) -> None:
    """Join records directories into one dataset, renumbering shards; counts add up.

    Example: ifskeras records merge part0/ part1/ part2/ --out records/
    """
    from ifskeras.records.merge import merge_records

    with clean_errors():
        manifest = merge_records(parts, out, transfer=transfer, allow_partial=allow_partial,
                                 allow_mixed_releases=allow_mixed_releases)
    counts = ", ".join(f"{split} {entry['examples']}" for split, entry in manifest["splits"].items())
    typer.echo(f"merged {len(parts)} directories into {out}: {manifest['totals']['examples']} examples ({counts})")


def _quiet_tensorflow_logs() -> None:
    """TensorFlow's C++ start-up chatter is not for users of these commands (kept if set)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _split_names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the Typer app."""
    app.command("convert")(convert)
    app.command("inspect")(inspect)
    app.command("verify")(verify)
    app.add_typer(records_app, name="records")
