"""How commands fail: one-line messages and exit codes, never tracebacks (shared by the command modules)."""

from __future__ import annotations

from contextlib import contextmanager

import typer

EXIT_FAILURE = 1
#: What shells report for a process stopped by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130


def print_error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


@contextmanager
def clean_errors(hint_on_interrupt: str = ""):
    """Turn library errors into ``error: ...`` and exit code 1, Ctrl-C into exit code 130."""
    from ifskeras.records.schema import RecordsError
    from ifskeras.survey.maps import MapsReadError

    try:
        yield
    except (RecordsError, MapsReadError, ValueError, KeyError) as error:
        print_error(str(error).strip("'\"") if isinstance(error, KeyError) else str(error))
        raise typer.Exit(EXIT_FAILURE) from None
    except OSError as error:
        print_error(f"{getattr(error, 'filename', '') or ''} {error.strerror or error}".strip())
        raise typer.Exit(EXIT_FAILURE) from None
    except KeyboardInterrupt:
        print_error(f"interrupted{hint_on_interrupt}")
        raise typer.Exit(EXIT_INTERRUPTED) from None
