#!/usr/bin/env python3
"""`python cli.py COMMAND ...`: the same as the installed `pneumokeras` command."""

from pneumokeras.cli import main

if __name__ == "__main__":
    main(prog_name="cli.py")
