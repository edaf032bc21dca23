"""The `app` command: serves the Streamlit page."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from pneumokeras.cli.backend import force_tensorflow_backend
from pneumokeras.cli.options import data_option, example


@click.command(
    epilog=example(
        "python cli.py app --model demo_output/run --data demo_output/tfrecords",
        "  # then open http://127.0.0.1:8501 in a browser",
    )
)
@click.option(
    "--model",
    "model_path",
    default="demo_output/run",
    show_default=True,
    type=click.Path(),
    help="model.keras or its run folder.",
)
@data_option("Converted folder to browse.", required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", default=8501, show_default=True, help="TCP port.")
@click.option("--max-upload-mb", default=100, show_default=True, help="Largest file accepted, MB.")
def app(model_path, data_dir, host, port, max_upload_mb) -> None:
    """Web app: upload X-rays, see probability, label and Grad-CAM."""
    from pneumokeras.errors import UserError
    from pneumokeras.utils import extras

    extras.require("app", "the app")
    from pneumokeras.app.logic import streamlit_command

    if model_path == "demo_output/run" and not Path(model_path).exists():
        raise UserError("no model in demo_output/run: run `make demo` first, or pass --model")
    force_tensorflow_backend("the app", "Grad-CAM")
    argv, env = streamlit_command(model_path, data_dir, host, port, max_upload_mb)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"note: --host {host} lets other machines reach the app; it has no login, and "
            "uploads are sent unencrypted (plain HTTP)",
            err=True,
        )
    click.echo(
        f"serving the app at http://{host}:{port} (Ctrl+C stops it); research use only",
        err=True,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)  # streamlit replaces this process: signals go to it
