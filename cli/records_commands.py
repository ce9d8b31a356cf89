"""Placeholder replaced as the commands land."""


def register(app) -> None:
    """Add this module's commands to the Typer app."""
