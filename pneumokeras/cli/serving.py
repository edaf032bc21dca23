"""Commands that serve a model: `predict` and `export`."""

from __future__ import annotations

import click

from pneumokeras.cli.options import example, import_tensorflow, model_option
from pneumokeras.utils import environment, extras


@click.command(
    epilog=example(
        "python cli.py predict --model runs/demo/model.keras scans/ --out predictions.csv",
    )
)
@model_option
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write predictions here (default: print to stdout).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json"]),
    default=None,
    help="Output format (default: json for an --out ending in .json, else csv).",
)
@click.option("--batch-size", default=32, show_default=True, help="Images per model call.")
@click.option(
    "--tta",
    default=0,
    show_default=True,
    help="Test-time augmentations per image (mean and spread).",
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Decision threshold (default: the model card's; required without a card).",
)
def predict(
    model_path: str,
    inputs: tuple[str, ...],
    out_path: str | None,
    fmt: str | None,
    batch_size: int,
    tta: int,
    threshold: float | None,
) -> None:
    """Predict pneumonia on DICOM, PNG or JPEG files and folders."""
    environment.check_backend("predict")
    import_tensorflow()
    from pneumokeras.serving.predict import format_rows, output_format, predict_files

    rows = predict_files(
        model_path,
        list(inputs),
        out_path=out_path,
        fmt=fmt,
        batch_size=batch_size,
        tta=tta,
        threshold=threshold,
    )
    failed = sum(1 for row in rows if row.get("error"))
    warned = sum(1 for row in rows if row.get("warning"))
    if out_path is None:
        click.echo(format_rows(rows, output_format(None, fmt)), nl=False)
    click.echo(
        f"predicted {len(rows) - failed} file(s)"
        + (f", {warned} with warnings (see the warning column)" if warned else "")
        + (f", {failed} unreadable (see the error column)" if failed else "")
        + (f"; wrote {out_path}" if out_path else ""),
        err=True,
    )


@click.command(
    epilog=example(
        "python cli.py export --model runs/demo --format onnx",
        "python cli.py export --model runs/demo/model.keras --format saved_model \\",
        "  --out serving/pneumonia/1 --check-images scans/",
    )
)
@model_option
@click.option(
    "--format",
    "fmt",
    required=True,
    type=click.Choice(["onnx", "saved_model"]),
    help="ONNX file or TensorFlow SavedModel folder.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(),
    default=None,
    help="Output (default: model.onnx or model_savedmodel/ beside the model).",
)
@click.option("--force", is_flag=True, help="Replace an earlier export at --out.")
@click.option(
    "--check-images",
    multiple=True,
    type=click.Path(),
    metavar="PATH",
    help="Image files or folders to check on besides the synthetic ones (repeatable).",
)
def export(
    model_path: str, fmt: str, out_path: str | None, force: bool, check_images: tuple[str, ...]
) -> None:
    """Export for serving (ONNX, SavedModel), checked against the .keras model."""
    if fmt == "onnx":
        extras.require("export", "export --format onnx")
    if environment.check_backend("export") == "tensorflow":
        import_tensorflow()
    from pneumokeras.serving.export import FORMAT_NAMES, export_model

    summary = export_model(model_path, fmt, out_path, force=force, check_images=check_images)
    for note in summary.notes:
        click.echo(f"note: {note}", err=True)
    name = FORMAT_NAMES[summary.format]
    opset = summary.details.get("onnx_opset")
    given = f" + {summary.check_files} given" if summary.check_files else ""
    click.echo(
        f"exported {summary.model} to {summary.out} ({name}"
        + (f", opset {opset}" if opset else "")
        + ", dynamic batch)\n"
        f"max |{name} - Keras| = {summary.max_abs_diff:.2e} (limit {summary.tolerance:g}) on "
        f"{summary.synthetic_images} synthetic{given} images, batches of "
        f"{' and '.join(map(str, summary.batch_sizes))}\n"
        f"model card embedded and written to {summary.card}"
    )
