"""``ifskeras label``: label tables from the maps (``bpt``) or from a catalogue (``match``).

Each command parses its options, calls one function of :mod:`ifskeras.discovery.labels`
and prints a summary. Library errors become one-line messages on stderr and exit code 1.
No TensorFlow is imported.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from ifskeras.cli.errors import EXIT_FAILURE, clean_errors, print_error

_LISTED = 5

label_app = typer.Typer(
    name="label",
    help="Make label tables (plateifu, class, ...) for `convert --labels` and `evaluate --labels`.",
    no_args_is_help=True,
)


def _examples(items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (", ..." if len(items) > _LISTED else "")


def _report_failures(failures: list[dict], failures_csv: Path) -> None:
    if not failures:
        return
    typer.echo(f"{len(failures)} input(s) failed (all listed in {failures_csv}):")
    for failure in failures[:_LISTED]:
        typer.echo(f"  {failure['path']}: {failure['reason']}")
    if len(failures) > _LISTED:
        typer.echo(f"  ... and {len(failures) - _LISTED} more")


@label_app.command("bpt")
def bpt(
    inputs: list[Path] = typer.Argument(
        ..., help="MAPS files, directories (searched for *MAPS*.fits*) or records directories (with manifest.json)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Labels CSV to write; failures go to OUT.failures.csv beside it."),
    radius_arcsec: float = typer.Option(1.5, "--radius-arcsec", help="Central aperture radius in arcsec "
                                        "(1.5: an SDSS 3\" fibre; MaNGA spaxels are 0.5\")."),
    radius_kpc: float = typer.Option(None, "--radius-kpc", help="A fixed physical radius instead (needs --redshifts; "
                                     "flat LCDM, H0 70, Om0 0.3)."),
    redshifts: Path = typer.Option(None, "--redshifts", help="CSV with columns plateifu and z, for --radius-kpc."),
    min_snr: float = typer.Option(3.0, "--min-snr", help="Per-line S/N cut on the covariance-corrected aperture S/N."),
    strict: bool = typer.Option(False, "--strict", help="Exit with code 1 if any input failed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Label galaxies by the BPT class (and WHAN class) of their central aperture.

    The BPT class follows Kewley et al. (2006) with line S/N corrected for MaNGA's spaxel covariance (Law et al. 2016: noise x (1 + 1.62 log10 N), N spaxels summed, N <= 100). Where MAPS files hold EMLINE_GEW, the WHAN class (Cid Fernandes et al. 2011) comes from the aperture's mean H-alpha equivalent width. The `class` column is `retired` when WHAN says retired or passive, `unclassified` when a [NII]-diagram line is below the S/N cut, else the BPT class: use it as `--labels OUT --label-column class`.

    Example: ifskeras label bpt data/maps/ --out labels.csv
    """
    from ifskeras.discovery.labels import bpt_labels, read_redshifts, write_label_table

    with clean_errors("; the output was not written"):
        if radius_kpc is not None and redshifts is None:
            raise ValueError("--radius-kpc needs --redshifts CSV (columns plateifu, z)")
        if redshifts is not None and radius_kpc is None:
            raise ValueError("--redshifts is only used with --radius-kpc")
        table = bpt_labels(inputs, radius_arcsec=radius_arcsec, radius_kpc=radius_kpc,
                           redshifts=read_redshifts(redshifts) if redshifts is not None else None,
                           min_snr=min_snr, progress=not quiet)
        failures_csv = write_label_table(table, out)
    if not quiet:
        counts = ", ".join(f"{name} {n}" for name, n in table.counts().items())
        typer.echo(f"labelled {len(table.rows)} galaxies into {out}" + (f": {counts}" if counts else ""))
        if table.duplicates:
            typer.echo(f"skipped {len(table.duplicates)} repeated plate-IFU(s), e.g. {_examples(table.duplicates)}")
        _report_failures(table.failures, failures_csv)
    if not table.rows:
        print_error("no galaxy was labelled")
        raise typer.Exit(EXIT_FAILURE)
    if strict and table.failures:
        print_error(f"{len(table.failures)} input(s) failed and --strict was given")
        raise typer.Exit(EXIT_FAILURE)


@label_app.command("match")
def match(
    catalog: Path = typer.Argument(..., help="Catalogue table: FITS, CSV or ECSV (format from the extension)."),
    survey: list[Path] = typer.Option(..., "--survey", help="MAPS files or directories, or a records directory "
                                      "(repeat for several)."),
    key: str = typer.Option("plateifu", "--key", help="Match by plateifu or mangaid (mangaid: every observation "
                            "of a galaxy gets its row)."),
    catalog_key: str = typer.Option("", "--catalog-key", help="The catalogue's key column, when not named like --key "
                                    "(case is ignored)."),
    columns: list[str] = typer.Option(..., "--column", "-c", help="Catalogue column to keep (repeat for several)."),
    out: Path = typer.Option(..., "--out", "-o", help="Labels CSV to write (plateifu, mangaid, the columns)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Join label columns of a catalogue to the survey's galaxies by plate-IFU or MaNGA-ID.

    Survey galaxies come from a records directory's index.csv or from the MAPS files' primary headers (PLATEIFU, MANGAID). Catalogue rows without a survey galaxy and galaxies without a row are counted, with examples. A missing column is an error listing the available ones; a key repeated with different values is an error naming it.

    Example: ifskeras label match agn.fits --survey records/ --key mangaid --column AGN_TYPE --out agn.csv
    """
    from ifskeras.discovery.labels import match_catalog, read_catalog, survey_galaxies, write_label_table

    with clean_errors("; the output was not written"):
        if key not in ("plateifu", "mangaid"):
            raise ValueError(f"--key must be plateifu or mangaid. Received: {key!r}")
        table = read_catalog(catalog)
        galaxies, failures = survey_galaxies(survey, progress=not quiet)
        if not galaxies:
            raise ValueError(f"no survey galaxy found in {', '.join(map(str, survey))}"
                             + (f" ({failures[0]['path']}: {failures[0]['reason']})" if failures else ""))
        result = match_catalog(table, galaxies, key=key, columns=columns, catalog_key=catalog_key or None,
                               source=str(catalog))
        labels = dataclasses.replace(result.table, failures=failures)
        failures_csv = write_label_table(labels, out)
    if not quiet:
        typer.echo(f"matched {len(labels.rows)} of {len(galaxies)} survey galaxies by {key} into {out}")
        if result.unmatched_galaxies:
            typer.echo(f"{len(result.unmatched_galaxies)} survey galaxies have no catalogue row, "
                       f"e.g. {_examples(result.unmatched_galaxies)}")
        if result.unmatched_catalog:
            typer.echo(f"{len(result.unmatched_catalog)} catalogue {key}s are not in the survey, "
                       f"e.g. {_examples(result.unmatched_catalog)}")
        if result.catalog_rows_without_key:
            typer.echo(f"{result.catalog_rows_without_key} catalogue rows have an empty {key}")
        _report_failures(failures, failures_csv)
    if not labels.rows:
        print_error(f"no survey galaxy matched the catalogue by {key}")
        raise typer.Exit(EXIT_FAILURE)


def register(app: typer.Typer) -> None:
    """Add the ``label`` command group to the top-level app."""
    app.add_typer(label_app, name="label")
