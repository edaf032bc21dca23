"""The `explain` command (always under TensorFlow: tf-keras-vis)."""

from __future__ import annotations

from typing import Any

import click

from pneumokeras.cli.backend import force_tensorflow_backend
from pneumokeras.cli.options import (
    data_option,
    example,
    import_tensorflow,
    load_config,
    model_option,
    out_dir_option,
    settings_options,
)


@click.command(
    epilog=example(
        "python cli.py explain --model runs/demo/model.keras --data tfrecords/demo \\",
        "  --split test --limit 16 --out runs/demo/explain",
    )
)
@model_option
@click.argument("files", nargs=-1, type=click.Path())
@data_option("Converted folder (instead of FILES).", required=False)
@click.option("--split", default="test", show_default=True)
@click.option("--limit", type=int, default=None, help="At most N images from --data.")
@click.option("--positives-only", is_flag=True, help="Only label-1 images from --data.")
@out_dir_option("Folder for the overlays, explain.csv and summary.json.")
@click.option(
    "--method",
    type=click.Choice(["gradcam", "gradcam++", "scorecam"]),
    default=None,
    help="Default: explain.method of the settings (gradcam).",
)
@click.option("--layer", default=None, help="Target layer (default: last convolutional stage).")
@click.option(
    "--class",
    "target_class",
    type=click.Choice(["pneumonia", "normal", "predicted"]),
    default=None,
    help="Class to explain (default: pneumonia).",
)
@settings_options
def explain(
    model_path: str,
    files: tuple[str, ...],
    data_dir: str | None,
    split: str,
    limit: int | None,
    positives_only: bool,
    out_dir: str,
    method: str | None,
    layer: str | None,
    target_class: str | None,
    config_path: str | None,
    overrides: tuple[str, ...],
) -> None:
    """Grad-CAM heatmaps, scored against RSNA boxes."""
    if bool(files) == bool(data_dir):
        raise click.UsageError("give either FILES or --data")
    extra = [
        f"explain.{k}={v}"
        for k, v in (("method", method), ("layer", layer), ("target_class", target_class))
        if v is not None
    ]
    config = load_config(config_path, (*overrides, *extra))
    force_tensorflow_backend()
    import_tensorflow()
    from pneumokeras.explain.explain import explain_run

    summary = explain_run(
        model_path,
        out_dir,
        config,
        files=list(files) or None,
        data_dir=data_dir,
        split=split,
        limit=limit,
        only_positives=positives_only,
    )
    click.echo(_explain_line(summary) + f"; overlays in {out_dir}")


def _explain_line(summary: Any) -> str:
    """`explained N image(s)`, and the localisation scores when positives were scored."""
    line = f"explained {summary.count} image(s)"
    if summary.pointing_game is not None:
        line += (
            f"; pointing game {summary.pointing_game:.2f}, energy in boxes "
            f"{summary.energy_in_boxes:.2f} over {summary.positives_with_boxes} positives"
        )
    return line
