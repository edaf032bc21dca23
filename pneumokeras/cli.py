"""Command-line front end: parses arguments and calls the library, nothing more.

The Keras backend is fixed before `keras` is imported: from `KERAS_BACKEND`
(default tensorflow), except `explain`, which always runs under TensorFlow because
tf-keras-vis needs `tf.GradientTape`. Library modules are imported inside each
command so that `--help` and argument errors stay fast and backend-neutral.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import click

# Quiet TensorFlow's C++ start-up logging before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

_DEBUG = False


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


WORKERS_HELP = "Processes (default: all cores; 0 = in-process)."


def _example(*lines: str) -> str:
    """A command epilog: 'Example:' and the invocation, kept verbatim by click."""
    return "\b\nExample:\n" + "\n".join(f"  {line}" for line in lines)


def _settings_options(func):
    """`--config FILE` and repeated `--set section.key=value`."""
    func = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="SECTION.KEY=VALUE",
        help="Override one setting (repeatable), e.g. --set train.epochs=3.",
    )(func)
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="YAML settings file (see configs/).",
    )(func)


def _load_config(config_path: str | None, overrides: tuple[str, ...]):
    from pneumokeras.config import load_config

    return load_config(config_path, overrides)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="pneumokeras", message="%(prog)s %(version)s")
def cli(debug: bool) -> None:
    """Train, evaluate and explain pneumonia classifiers on chest X-rays (Keras 3).

    Research and education only; not for diagnosis.
    """
    global _DEBUG
    _DEBUG = debug


@cli.command(
    epilog=_example("python cli.py synth --out data/synth --patients 600 --size 512 --seed 1")
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--patients", default=1000, show_default=True, help="Number of patients.")
@click.option("--size", default=1024, show_default=True, help="Image side, pixels.")
@click.option(
    "--positive-fraction",
    default=0.225,
    show_default=True,
    help="Share of pneumonia-positive patients.",
)
@click.option("--seed", default=0, show_default=True, help="Random seed.")
@click.option("--workers", type=int, default=None, help=WORKERS_HELP)
def synth(out, patients, size, positive_fraction, seed, workers) -> None:
    """Write a synthetic RSNA-shaped data set (DICOMs + label CSVs)."""
    from pneumokeras.synth import generate

    summary = generate(
        out,
        patients=patients,
        size=size,
        positive_fraction=positive_fraction,
        seed=seed,
        workers=workers,
        progress=True,
    )
    click.echo(
        f"wrote {summary.patients} patients ({summary.positives} positive) at "
        f"{summary.size} px to {summary.out_dir} in {summary.seconds:.1f} s"
    )


@cli.command(
    epilog=_example(
        "python cli.py convert --images S/stage_2_train_images \\",
        "  --labels S/stage_2_train_labels.csv --out tfrecords/rsna --size 256",
    )
)
@click.option("--images", required=True, type=click.Path(), help="Folder of <patientId>.dcm files.")
@click.option("--labels", required=True, type=click.Path(), help="stage_2_train_labels.csv.")
@click.option(
    "--class-info",
    type=click.Path(),
    default=None,
    help="stage_2_detailed_class_info.csv (optional).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--size", default=256, show_default=True, help="Stored image side, pixels.")
@click.option("--val", default=0.1, show_default=True, help="Validation share of patients.")
@click.option("--test", default=0.1, show_default=True, help="Test share of patients.")
@click.option("--folds", default=0, show_default=True, help="K stratified folds (0 = none).")
@click.option("--seed", default=0, show_default=True, help="Split seed.")
@click.option("--workers", type=int, default=None, help=WORKERS_HELP)
@click.option("--limit", type=int, default=None, help="Convert only the first N patients.")
@click.option("--shard-size", default=512, show_default=True, help="Examples per shard.")
def convert(
    images, labels, class_info, out, size, val, test, folds, seed, workers, limit, shard_size
) -> None:
    """Convert RSNA DICOMs + labels to sharded TFRecords (resumable)."""
    from pneumokeras.convert import convert as run_convert

    if class_info is None:
        default = Path(labels).parent / "stage_2_detailed_class_info.csv"
        class_info = default if default.is_file() else None
    summary = run_convert(
        images,
        labels,
        out,
        class_info_csv=class_info,
        size=size,
        val_fraction=val,
        test_fraction=test,
        folds=folds,
        seed=seed,
        workers=workers,
        limit=limit,
        shard_size=shard_size,
    )
    counts = ", ".join(
        f"{s} {summary.counts[s]} ({summary.positives[s]} positive)" for s in summary.counts
    )
    click.echo(f"converted {counts} into {summary.out_dir} in {summary.seconds:.1f} s")
    if summary.skipped:
        click.echo(
            f"skipped {summary.skipped} file(s) or label(s); reasons in "
            f"{summary.out_dir / 'skipped.csv'}"
        )


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors → one line on stderr, exit 2; failures → exit 1."""
    from pneumokeras.errors import UserError

    user_errors: tuple[type[Exception], ...] = (UserError,)
    try:
        from pneumokeras.config import ConfigError

        user_errors += (ConfigError,)
    except ImportError:  # pragma: no cover - config has no heavy imports
        pass
    try:
        cli.main(args=argv, prog_name="cli.py", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.Abort:
        _fail("aborted", 1)
    except click.ClickException as err:
        if _DEBUG:
            traceback.print_exc()
        _fail(err.format_message().splitlines()[0], err.exit_code)
    except user_errors as err:
        if _DEBUG:
            traceback.print_exc()
        _fail(str(err).splitlines()[0] if str(err) else type(err).__name__, 2)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as err:  # noqa: BLE001 - anything else is our failure, still one line
        if _DEBUG:
            traceback.print_exc()
        _fail(
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
            "(run with --debug for the traceback)",
            1,
        )
