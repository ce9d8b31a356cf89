"""``ifskeras survey``: choose MaNGA cubes from the SDSS catalogues and download their MAPS files.

- ``survey select``: DRPall (and DAPall) -> a sample CSV, one row per cube, with each MAPS
  file's path on the Science Archive Server;
- ``survey fetch``: the sample CSV -> MAPS files in one directory, in parallel, resumable.

Library errors become one-line messages on stderr and exit code 1; an interrupt exits with 130.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ifskeras.cli.errors import EXIT_FAILURE, clean_errors, print_error
from ifskeras.survey.fetch import DEFAULT_BASE_URL

_LISTED_FAILURES = 5
_MEGABYTE = 1e6

survey_app = typer.Typer(
    name="survey",
    help="Choose MaNGA cubes from the DRPall/DAPall catalogues and download their DAP MAPS files.",
    no_args_is_help=True,
)


@survey_app.command("select")
def select(
    drpall: Path = typer.Argument(
        ..., help="DRPall catalogue, e.g. drpall-v3_1_1.fits (DR17) or drpall-v2_4_3.fits (DR15)."),
    dapall: Optional[Path] = typer.Argument(
        None, help="DAPall catalogue (optional), e.g. dapall-v3_1_1-3.1.0.fits: keeps cubes the DAP analysed "
                   "with --daptype, drops DAPQUAL CRITICAL, breaks ties by its S/N."),
    out: Path = typer.Option(..., "--out", "-o", help="Sample CSV to write."),
    release: str = typer.Option("dr17", "--release", help="dr17 or dr15: the release whose MAPS files to use."),
    daptype: Optional[str] = typer.Option(
        None, "--daptype", help="DAP analysis type (default: the release's HYB10, "
                                "HYB10-MILESHC-MASTARSSP for dr17, HYB10-GAU-MILESHC for dr15)."),
    targets: str = typer.Option(
        "primary,secondary,colour-enhanced", "--targets",
        help="Comma-separated MNGTARG1 samples (bits 10, 11, 12 of v1_2_0), or 'any' for every cube."),
    keep_critical: bool = typer.Option(
        False, "--keep-critical", help="Keep cubes with the CRITICAL bit (30) of DRP3QUAL or DAPQUAL."),
    z_min: Optional[float] = typer.Option(None, "--z-min", help="Lowest redshift kept (DRPall z, else nsa_z)."),
    z_max: Optional[float] = typer.Option(None, "--z-max", help="Highest redshift kept."),
    ba_min: Optional[float] = typer.Option(None, "--ba-min", help="Lowest axis ratio kept (nsa_elpetro_ba)."),
    all_cubes: bool = typer.Option(
        False, "--all-cubes", help="Keep repeat observations of a galaxy (default: one cube per MANGAID)."),
) -> None:
    """Choose cubes from the DRPall (and DAPall) and write a sample CSV with their MAPS paths.

    Columns: plateifu, mangaid, plate, ifudesign, z, re_arcsec, ba, ifu_fibres, release, daptype, path (relative to the SAS root). Prints how many cubes each cut removed.

    One cube per galaxy: of a MANGAID's cubes that pass the cuts, the largest IFU bundle; then the highest S/N (DAPall SNR_MED in r, else DRPall BLUESN2+REDSN2); then the lowest plate and IFU design.

    Example: ifskeras survey select drpall-v3_1_1.fits dapall-v3_1_1-3.1.0.fits --out sample.csv --z-max 0.08
    """
    from ifskeras.survey.archive import SelectionOptions, select_sample, write_sample_csv

    with clean_errors():
        options = SelectionOptions(release=release, daptype=daptype, targets=tuple(targets.split(",")),
                                   drop_critical=not keep_critical, z_min=z_min, z_max=z_max, ba_min=ba_min,
                                   one_per_galaxy=not all_cubes)
        selection = select_sample(drpall, dapall, options)
        write_sample_csv(out, selection.rows)
    typer.echo(f"read {selection.catalogue_rows} cubes from {drpall}"
               + (f" (DAPall {dapall}, {options.daptype})" if dapall is not None else ""))
    width = max((len(cut.name) for cut in selection.cuts), default=0)
    for cut in selection.cuts:
        typer.echo(f"  {cut.name:<{width}}  removed {cut.removed:>6}, {cut.remaining:>6} left")
    typer.echo(f"wrote {len(selection.rows)} cubes ({options.release}, {options.daptype}) to {out}")
    if not selection.rows:
        print_error("no cube passed the cuts")
        raise typer.Exit(EXIT_FAILURE)


@survey_app.command("fetch")
def fetch(
    sample: Path = typer.Argument(..., help="Sample CSV with a 'path' column (from `ifskeras survey select`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the MAPS files (flat: OUT/<file name>)."),
    base_url: str = typer.Option(DEFAULT_BASE_URL, "--base-url", help="Archive root the paths are relative to."),
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, help="Parallel downloads (threads)."),
    retries: int = typer.Option(3, "--retries", min=0, help="Retries per file after the first attempt "
                                "(connection errors, timeouts, cut or damaged bodies, HTTP 5xx/429; never 404/403)."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.001,
                                  help="Seconds to wait for a connection and for each read."),
    backoff: float = typer.Option(1.0, "--backoff", min=0.0,
                                  help="Seconds before the first retry; doubles each retry (at most 60)."),
    check: str = typer.Option("quick", "--check", help="How files already in OUT are checked: quick (header, "
                              "size, gzip trailer) or full (decompress everything)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Download the MAPS files of a sample in parallel; rerun to fetch only what is missing or damaged.

    Each file is streamed to a hidden temporary name and renamed into OUT only when its size matches the Content-Length, its gzip stream decompresses to the end and it starts with a FITS header. Failures never stop the run: they are listed in OUT/fetch_failures.csv and the exit code is 1. OUT/fetch.json records what was fetched, sizes, sha256 and when.

    Example: ifskeras survey fetch sample.csv --out maps/ --jobs 8
    """
    from ifskeras.common.progress import counting_progress
    from ifskeras.survey.fetch import FetchOptions, fetch_sample

    with clean_errors(": rerun the same command to fetch the rest"):
        options = FetchOptions(base_url=base_url, jobs=jobs, retries=retries, timeout=timeout,
                               backoff=backoff, check=check)
        with counting_progress(not quiet, "downloading", unit="files") as progress:
            result = fetch_sample(sample, out, options, progress=progress)
    if not quiet:
        typer.echo(f"fetched {len(result.fetched)} files ({result.bytes_fetched / _MEGABYTE:.1f} MB) into "
                   f"{result.out_dir} in {result.seconds:.1f} s; {len(result.present)} already there")
        if result.replaced:
            typer.echo(f"replaced {len(result.replaced)} damaged file(s), e.g. "
                       f"{result.replaced[0].item.target.name}: {result.replaced[0].replaced_damaged}")
    if result.failures:
        typer.echo(f"{len(result.failures)} file(s) failed (all listed in {result.failures_csv}):", err=True)
        for failure in result.failures[:_LISTED_FAILURES]:
            typer.echo(f"  {failure.item.path}: {failure.reason}", err=True)
        if len(result.failures) > _LISTED_FAILURES:
            typer.echo(f"  ... and {len(result.failures) - _LISTED_FAILURES} more", err=True)
        raise typer.Exit(EXIT_FAILURE)


def register(app: typer.Typer) -> None:
    """Add the ``survey`` command group to the top-level app."""
    app.add_typer(survey_app, name="survey")
