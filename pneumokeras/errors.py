"""Errors the user can cause; the CLI prints them as one line and exits 2."""


class UserError(Exception):
    """Bad input (missing file, invalid data or settings); exit code 2."""
