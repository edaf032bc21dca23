"""The `pneumokeras` command group and its entry point: one-line errors, exit codes.

The Keras backend is fixed before `keras` is imported: from `KERAS_BACKEND`
(default tensorflow), except `explain` and `app`, which always run under
TensorFlow because tf-keras-vis needs `tf.GradientTape`. Library modules are
imported inside each command so that `--help` and argument errors stay fast and
backend-neutral. Process-wide settings (environment defaults) are made in `main`
only, never at import.
"""

from __future__ import annotations

import sys
import traceback

import click

from pneumokeras import __version__
from pneumokeras.cli import app, data, demo, evaluation, explain, serving, training


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
# The version from the package itself, not from installed metadata: `python cli.py
# --version` works in a checkout that was never installed.
@click.version_option(version=__version__, message="%(prog)s %(version)s")
@click.pass_context
def cli(context: click.Context, debug: bool) -> None:
    """Train, evaluate and explain pneumonia classifiers on chest X-rays (Keras 3).

    Research and education only; not for diagnosis.
    """
    context.obj = {"debug": debug}


for _command in (
    data.synth,
    data.convert,
    training.train,
    evaluation.evaluate,
    evaluation.compare,
    serving.predict,
    serving.export,
    training.cv,
    explain.explain,
    demo.demo,
    app.app,
):
    cli.add_command(_command)


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _debug_asked(args: list[str]) -> bool:
    """Whether `--debug` comes before the command name."""
    for arg in args:
        if arg == "--debug":
            return True
        if not arg.startswith("-"):
            return False
    return False


def main(argv: list[str] | None = None, prog_name: str = "pneumokeras") -> None:
    """Entry point: user errors → one line on stderr, exit 2; failures → exit 1.

    Args:
        argv: arguments (default: `sys.argv[1:]`).
        prog_name: the name `--help` and `--version` show (`cli.py` in a checkout).
    """
    from pneumokeras.errors import UserError
    from pneumokeras.utils import environment

    environment.set_defaults()  # before anything imports TensorFlow, JAX or Keras
    args = sys.argv[1:] if argv is None else list(argv)
    debug = _debug_asked(args)
    try:
        cli.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.Abort:
        _fail("aborted", 1)
    except click.ClickException as err:
        if debug:
            traceback.print_exc()
        _fail(err.format_message().splitlines()[0], err.exit_code)
    except UserError as err:  # ConfigError, UnreadableInputError too
        if debug:
            traceback.print_exc()
        _fail(str(err).splitlines()[0] if str(err) else type(err).__name__, 2)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as err:
        if debug:
            traceback.print_exc()
        _fail(
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
            "(run with --debug for the traceback)",
            1,
        )
