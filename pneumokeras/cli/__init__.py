"""Command-line front end: one module per command group; it parses arguments and calls
the library, nothing more (`main.py` holds the group and the entry point)."""

from pneumokeras.cli.main import cli, main

__all__ = ["cli", "main"]
