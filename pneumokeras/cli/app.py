"""The `app` command: serves the Streamlit page."""

from __future__ import annotations

import os
import sys

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
    default=None,
    type=click.Path(),
    help="model.keras, ensemble.keras or the run folder holding it (default: "
    "PNEUMOKERAS_MODEL, else demo_output/run).",
)
@data_option("Converted folder to browse.", required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", default=8501, show_default=True, help="TCP port.")
@click.option("--max-upload-mb", default=100, show_default=True, help="Largest file accepted, MB.")
def app(
    model_path: str | None, data_dir: str | None, host: str, port: int, max_upload_mb: int
) -> None:
    """Web app: upload X-rays, see probability, label and Grad-CAM."""
    from pneumokeras.utils import extras

    extras.require("app", "the app")
    from pneumokeras.app.server import resolve_model, server_command
    from pneumokeras.utils.network import check_can_listen

    model = resolve_model(model_path, os.environ)
    force_tensorflow_backend("the app", "Grad-CAM")
    argv, env = server_command(model, data_dir, host, port, max_upload_mb, os.environ)
    check_can_listen(
        host,
        port,
        "choose another --port (or stop the server using it)",
        "give --host an address of this machine (127.0.0.1: this machine only)",
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"note: --host {host} lets other machines reach the app; it has no login, and "
            "uploads are sent unencrypted (plain HTTP)",
            err=True,
        )
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"serving {model} at http://{shown}:{port} (Ctrl+C stops it); research use only",
        err=True,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)  # the server replaces this process: signals go to it
