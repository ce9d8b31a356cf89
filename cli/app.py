"""Entry point of the ``ifskeras`` command. Commands live in topic modules and register here.

TensorFlow is imported only inside the commands that need it, so ``ifskeras --help``
and ``ifskeras synth`` start in a fraction of a second.
"""

from __future__ import annotations

import sys

import typer

from ifskeras import __version__

app = typer.Typer(
    name="ifskeras",
    help="Find unusual galaxies in integral-field surveys with ConvLSTM autoencoders (arXiv 2602.18426).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"ifskeras {__version__}")
        raise typer.Exit()


#: Commands that run TensorFlow; the others start without paying for its import.
_TENSORFLOW_COMMANDS = {"fit", "export", "score", "evaluate", "report", "demo", "neighbors"}


@app.callback()
def _root(
    context: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Find unusual galaxies in integral-field surveys with ConvLSTM autoencoders."""
    uses_tensorflow = context.invoked_subcommand in _TENSORFLOW_COMMANDS or (
        context.invoked_subcommand == "verify" and "--quick" not in sys.argv  # full check reads via TF
    )
    if uses_tensorflow and "--help" not in sys.argv:
        from ifskeras.cli.quiet_tf import import_tensorflow_quietly

        import_tensorflow_quietly()


def _register_commands() -> None:
    from ifskeras.cli import (label_commands, records_commands, science_commands, survey_commands, synth_commands,
                              train_commands)

    for module in (survey_commands, synth_commands, records_commands, label_commands, train_commands,
                   science_commands):
        module.register(app)


_register_commands()


def main() -> None:
    app()
