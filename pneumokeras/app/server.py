"""Serving the page: which model, the server's command line, and the server process itself.

`cli.py app` resolves the model (`--model`, else `PNEUMOKERAS_MODEL`, else the
demo's `demo_output/run`), checks the address is free, and replaces itself with
`python -m pneumokeras.app.server …` (`server_command`). That process's `main`
sets the process-wide state a long-running server wants and then runs Streamlit
on `page.py`, which reads the model, the data folder and the upload limit from
the environment (`PNEUMOKERAS_MODEL`, `PNEUMOKERAS_DATA`,
`PNEUMOKERAS_MAX_UPLOAD_MB`), so `streamlit run pneumokeras/app/page.py` with
those variables shows the same page, only without the server's tuning.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pneumokeras.errors import UserError
from pneumokeras.models.model_card import model_file

APP_SCRIPT = Path(__file__).with_name("page.py")
MODEL_VARIABLE = "PNEUMOKERAS_MODEL"
DATA_VARIABLE = "PNEUMOKERAS_DATA"
UPLOAD_LIMIT_VARIABLE = "PNEUMOKERAS_MAX_UPLOAD_MB"
DEFAULT_MODEL = "demo_output/run"
# Streamlit's `server.maxUploadSize` (per file, MB) and the app's own check. A large
# uncompressed DX radiograph is 20-60 MB; RSNA's JPEG DICOMs are about 0.13 MB.
DEFAULT_UPLOAD_LIMIT_MB = 100


def resolve_model(model: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    """The `.keras` file to serve: `--model`, else `PNEUMOKERAS_MODEL`, else the demo's.

    Raises:
        UserError: the model named does not exist (for the demo's default: run
            `make demo` first).
    """
    if model is not None:
        return model_file(Path(model)).resolve()
    if environ.get(MODEL_VARIABLE, "").strip():
        try:
            return model_file(Path(environ[MODEL_VARIABLE].strip())).resolve()
        except UserError as err:
            raise UserError(f"{MODEL_VARIABLE}: {err}") from None
    if not Path(DEFAULT_MODEL).exists():
        raise UserError(
            f"no model in {DEFAULT_MODEL}: run `make demo` first, or pass --model "
            f"(or set {MODEL_VARIABLE})"
        )
    return model_file(Path(DEFAULT_MODEL)).resolve()


def upload_limit_mb(environ: Mapping[str, str]) -> float:
    """The per-file upload limit from `PNEUMOKERAS_MAX_UPLOAD_MB` (default 100 MB)."""
    text = environ.get(UPLOAD_LIMIT_VARIABLE, "")
    try:
        value = float(text) if text else float(DEFAULT_UPLOAD_LIMIT_MB)
    except ValueError:
        value = float(DEFAULT_UPLOAD_LIMIT_MB)
    return value if value > 0 else float(DEFAULT_UPLOAD_LIMIT_MB)


def server_command(
    model: Path,
    data: str | os.PathLike[str] | None,
    host: str,
    port: int,
    max_upload_mb: int,
    environ: Mapping[str, str],
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of the server process (`main` below).

    The environment selects the TensorFlow backend (Grad-CAM differentiates with
    `tf.GradientTape`; models trained under JAX load unchanged).

    Args:
        model: the `.keras` file (`resolve_model`).
        data: a converted folder (with `manifest.json`) to browse, or None.
        host: address to bind (127.0.0.1: this machine only).
        port: TCP port.
        max_upload_mb: largest file accepted, MB (`server.maxUploadSize`).
        environ: the environment to start from.

    Returns:
        `(argv, env)`.

    Raises:
        UserError: a data folder without a manifest, a bad port or limit.
    """
    if not 0 < int(port) < 65536:
        raise UserError(f"--port must be 1-65535; got {port}")
    if int(max_upload_mb) < 1:
        raise UserError(f"--max-upload-mb must be ≥ 1; got {max_upload_mb}")
    env = dict(environ)
    env.update(
        {
            "KERAS_BACKEND": "tensorflow",
            MODEL_VARIABLE: str(model),
            UPLOAD_LIMIT_VARIABLE: str(int(max_upload_mb)),
        }
    )
    env.pop(DATA_VARIABLE, None)
    if data is not None:
        folder = Path(data)
        if not (folder / "manifest.json").is_file():
            raise UserError(
                f"--data {folder} has no manifest.json; give a folder made by "
                "`python cli.py convert`"
            )
        env[DATA_VARIABLE] = str(folder.resolve())
    argv = [
        sys.executable,
        "-m",
        "pneumokeras.app.server",
        "--server.address",
        host,
        "--server.port",
        str(int(port)),
        "--server.maxUploadSize",
        str(int(max_upload_mb)),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
    ]
    return argv, env


def keep_session(free_memory: bool = True) -> None:
    """`keras.backend.clear_session` in the server process: nothing to clear (see `main`)."""


def main(argv: Sequence[str] | None = None) -> None:
    """The server process: process-wide settings, then Streamlit on `page.py` with `argv`.

    - Environment defaults (`environment.set_defaults`) and TensorFlow imported
      with its start-up lines hidden, before Streamlit starts any thread.
    - Keras' `clear_session` made a no-op for this process. Streamlit calls it
      after every run of a script that imported Keras (`_clean_problem_modules` in
      `streamlit/runtime/scriptrunner/script_runner.py`), for scripts that build a
      model per run; this page builds its model once per process and keeps it, and
      the clearing garbage-collects the whole heap and empties TensorFlow's eager
      kernel cache, so the next Grad-CAM rebuilds its kernels (224 px ResNet18 on 2
      busy CPU cores: an upload took 4.0 s after a clearing instead of 2.4 s, plus
      1.4 s for the clearing itself).

    Args:
        argv: Streamlit `run` options (default: `sys.argv[1:]`).
    """
    from pneumokeras.utils import environment

    environment.set_defaults()
    environment.import_tensorflow_quietly()
    import keras

    keras.backend.clear_session = keep_session
    from streamlit.web import cli as streamlit_cli

    options = list(sys.argv[1:] if argv is None else argv)
    streamlit_cli.main(args=["run", str(APP_SCRIPT), *options], prog_name="streamlit")


if __name__ == "__main__":
    main()
