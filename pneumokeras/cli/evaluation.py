"""Commands that measure models: `evaluate` and `compare`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pneumokeras.cli.options import (
    MODEL_HELP,
    data_option,
    example,
    import_tensorflow,
    load_config,
    model_option,
    out_dir_option,
    settings_options,
)
from pneumokeras.sources.attributes import NAMES as ATTRIBUTE_NAMES
from pneumokeras.utils import environment


def _parse_by(
    context: click.Context | None, parameter: click.Parameter | None, value: str | None
) -> tuple[str, ...] | None:
    """`--by sex,age` → ('sex', 'age'); `none` → (); absent → None (every attribute)."""
    if value is None:
        return None
    if value.strip().lower() == "none":
        return ()
    names = tuple(part.strip().lower() for part in value.split(",") if part.strip())
    unknown = [name for name in names if name not in ATTRIBUTE_NAMES]
    if not names or unknown:
        shown = unknown[0] if unknown else value
        raise click.BadParameter(
            f"unknown attribute {shown!r}; give a comma-separated list of "
            f"{', '.join(ATTRIBUTE_NAMES)}, or none"
        )
    return names


def by_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """`--by ATTRIBUTES`, passed as `by` (None, a tuple of names, or () for none)."""
    return click.option(
        "--by",
        default=None,
        callback=_parse_by,
        metavar="ATTRIBUTES",
        help="Subgroup analysis by these attributes, comma-separated: sex, age, view, source "
        "(default: every attribute with two or more known values in the data; none: no "
        "analysis).",
    )(func)


@click.command(
    epilog=example(
        "python cli.py evaluate --model runs/demo/model.keras --data tfrecords/demo \\",
        "  --split test --out runs/demo/eval",
        "python cli.py evaluate --model runs/demo --data kermany_tfrecords --split all \\",
        "  --refit-fraction 0.3 --out runs/demo/eval_kermany",
        "python cli.py evaluate --model runs/demo --data tfrecords/demo --by sex,age,view \\",
        "  --out runs/demo/eval",
    )
)
@model_option
@data_option()
@click.option(
    "--split",
    default="test",
    show_default=True,
    help="Split to evaluate; on external data also `all` (every split together).",
)
@out_dir_option("Folder for metrics.json, plots and report.md.")
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Decision threshold (default: chosen on the validation split; external data: the "
    "model card's).",
)
@click.option(
    "--external/--internal",
    "external",
    default=None,
    help="Treat the data as a data set the model did not train on (the card's threshold and "
    "temperature, card unchanged) or as its own (fit on its val split, update the card). "
    "Default: external when the data's manifest fingerprint differs from the training "
    "data's in the model card.",
)
@click.option(
    "--refit-fraction",
    type=float,
    default=None,
    help="External data: re-fit temperature and threshold on this share of the patients "
    "(0 < F < 1, stratified, seeded by train.seed) and report the rest with the model's "
    "own and the re-fitted ones side by side.",
)
@by_option
@settings_options
def evaluate(
    model_path: str,
    data_dir: str,
    split: str,
    out_dir: str,
    threshold: float | None,
    external: bool | None,
    refit_fraction: float | None,
    by: tuple[str, ...] | None,
    config_path: str | None,
    overrides: tuple[str, ...],
) -> None:
    """Clinical metrics with 95 % CIs, calibration, subgroups, plots; also on external data."""
    environment.check_backend("evaluate")
    config = load_config(config_path, overrides)
    import_tensorflow()
    from pneumokeras.evaluation.evaluate import evaluate_run
    from pneumokeras.evaluation.report import gap_words

    result = evaluate_run(
        model_path,
        data_dir,
        out_dir,
        config,
        split=split,
        threshold=threshold,
        external_data=external,
        refit_fraction=refit_fraction,
        by=by,
    )
    where = "external data: " if result.external else ""
    line = (
        f"{where}ROC-AUC {_number(result.roc_auc)}, sensitivity {_number(result.sensitivity)}, "
        f"specificity {_number(result.specificity)}"
    )
    if result.largest_gap:
        line += f"; largest subgroup gap: {gap_words(result.largest_gap)}"
    click.echo(f"{line}; report in {result.report}")


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@click.command(
    epilog=example(
        "python cli.py compare --model runs/a --model runs/b --data tfrecords/demo \\",
        "  --split test --out runs/compare",
        "python cli.py compare --model runs/small --model runs/cv/ensemble.keras \\",
        "  --data tfrecords/demo128 --data tfrecords/demo224 --out runs/compare",
    )
)
@click.option(
    "--model",
    "model_paths",
    required=True,
    multiple=True,
    type=click.Path(),
    help=f"A model to compare (repeat, two or more): {MODEL_HELP}",
)
@click.option(
    "--data",
    "data_dirs",
    required=True,
    multiple=True,
    type=click.Path(),
    help="Converted folder (cli.py convert); repeat with the same data converted at another "
    "--size when the models take different sizes (each reads the folder of its size).",
)
@click.option(
    "--split",
    default="test",
    show_default=True,
    help="Split to compare on, or `all` (every split together, for external data).",
)
@out_dir_option("Folder for compare.json, compare.md, compare.csv and roc.png.")
@settings_options
def compare(
    model_paths: tuple[str, ...],
    data_dirs: tuple[str, ...],
    split: str,
    out_dir: str,
    config_path: str | None,
    overrides: tuple[str, ...],
) -> None:
    """Paired comparison of two or more models on the same images (DeLong, McNemar)."""
    environment.check_backend("compare")
    config = load_config(config_path, overrides)
    if len(model_paths) < 2:
        raise click.UsageError(
            f"compare needs two or more models (--model A --model B); got {len(model_paths)}"
        )
    import_tensorflow()
    from pneumokeras.evaluation.compare import compare_run

    result = compare_run(model_paths, data_dirs, out_dir, config, split=split)
    aucs = ", ".join(f"{name} {auc:.3f}" for name, auc in result.roc_auc.items())
    click.echo(f"ROC-AUC {aucs} on {result.n} images; report in {result.report}")
