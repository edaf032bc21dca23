"""`python -m pneumokeras COMMAND ...`: the same as the installed `pneumokeras` command."""

from pneumokeras.cli import main

if __name__ == "__main__":
    main(prog_name="python -m pneumokeras")
