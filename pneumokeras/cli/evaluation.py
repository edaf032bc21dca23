"""Commands that measure a model: `evaluate`."""

from __future__ import annotations

from pathlib import Path

import click

from pneumokeras.cli.options import (
    data_option,
    example,
    import_tensorflow,
    load_config,
    model_option,
    out_dir_option,
    settings_options,
)
from pneumokeras.utils import environment


@click.command(
    epilog=example(
        "python cli.py evaluate --model runs/demo/model.keras --data tfrecords/demo \\",
        "  --split test --out runs/demo/eval",
        "python cli.py evaluate --model runs/demo --data kermany_tfrecords --split all \\",
        "  --refit-fraction 0.3 --out runs/demo/eval_kermany",
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
@settings_options
def evaluate(
    model_path,
    data_dir,
    split,
    out_dir,
    threshold,
    external,
    refit_fraction,
    config_path,
    overrides,
) -> None:
    """Clinical metrics with 95 % CIs, calibration, plots; also on external data."""
    environment.check_backend("evaluate")
    config = load_config(config_path, overrides)
    import_tensorflow()
    from pneumokeras.evaluation.evaluate import evaluate_run

    metrics = evaluate_run(
        model_path,
        data_dir,
        out_dir,
        config,
        split=split,
        threshold=threshold,
        external_data=external,
        refit_fraction=refit_fraction,
    )
    where = "external data: " if metrics["external"] else ""
    click.echo(where + _metrics_line(metrics) + f"; report in {Path(out_dir) / 'report.md'}")


def _metrics_line(metrics: dict) -> str:
    values = metrics.get("metrics", metrics)

    def get(name: str) -> str:
        entry = values.get(name)
        value = entry.get("value") if isinstance(entry, dict) else entry
        return "n/a" if value is None else f"{value:.3f}"

    return (
        f"ROC-AUC {get('roc_auc')}, sensitivity {get('recall')}, specificity {get('specificity')}"
    )
