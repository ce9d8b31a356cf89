"""The ``ifskeras`` command line: thin Typer commands over library functions."""
