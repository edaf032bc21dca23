"""Commands that make data: `synth` and `convert`."""

from __future__ import annotations

from pathlib import Path

import click

from pneumokeras.cli.options import example, out_dir_option, workers_option


@click.command(
    epilog=example("python cli.py synth --out data/synth --patients 600 --size 512 --seed 1")
)
@out_dir_option("Output folder.", name="out")
@click.option("--patients", default=1000, show_default=True, help="Number of patients.")
@click.option("--size", default=1024, show_default=True, help="Image side, pixels.")
@click.option(
    "--positive-fraction",
    default=0.225,
    show_default=True,
    help="Share of pneumonia-positive patients.",
)
@click.option("--seed", default=0, show_default=True, help="Random seed.")
@workers_option
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


@click.command(
    epilog=example(
        "python cli.py convert --images S/stage_2_train_images \\",
        "  --labels S/stage_2_train_labels.csv --out tfrecords/rsna --size 256",
        "python cli.py convert --layout folders --images chest_xray --keep-splits \\",
        "  --out tfrecords/kermany",
        "python cli.py convert --layout findings --images nih --labels nih/Data_Entry_2017.csv \\",
        "  --out tfrecords/nih",
    )
)
@click.option(
    "--layout",
    type=click.Choice(["rsna", "folders", "findings"]),
    default="rsna",
    show_default=True,
    help="rsna: <patientId>.dcm + RSNA labels; folders: one sub-folder per class "
    "(optionally in train/val/test); findings: PNG/JPEG + a findings CSV (NIH, CheXpert).",
)
@click.option(
    "--images",
    required=True,
    type=click.Path(),
    help="rsna: folder of <patientId>.dcm files; folders: the class (or split) folders' "
    "parent; findings: the folder the CSV's image paths are in.",
)
@click.option(
    "--labels",
    type=click.Path(),
    default=None,
    help="rsna: stage_2_train_labels.csv; findings: the CSV; folders: none.",
)
@click.option(
    "--class-info",
    type=click.Path(),
    default=None,
    help="rsna: stage_2_detailed_class_info.csv (optional).",
)
@out_dir_option("Output folder.", name="out")
@click.option("--size", default=256, show_default=True, help="Stored image side, pixels.")
@click.option("--val", default=0.1, show_default=True, help="Validation share of patients.")
@click.option("--test", default=0.1, show_default=True, help="Test share of patients.")
@click.option("--folds", default=0, show_default=True, help="K stratified folds (0 = none).")
@click.option("--seed", default=0, show_default=True, help="Split seed.")
@workers_option
@click.option("--limit", type=int, default=None, help="Convert only the first N examples.")
@click.option("--shard-size", default=512, show_default=True, help="Examples per shard.")
@click.option(
    "--keep-splits",
    is_flag=True,
    help="folders: keep the data set's train/val/test folders as the splits.",
)
@click.option(
    "--patient-pattern",
    default=None,
    metavar="REGEX",
    help="folders, findings: first group = patient id, searched in the image's relative "
    "path (default: person12_... for folders, .../patient00001/... for findings).",
)
@click.option(
    "--label-column",
    default=None,
    help="findings: label column (default: 'Finding Labels', else 'Pneumonia').",
)
@click.option(
    "--positive",
    default=None,
    help="findings: value meaning pneumonia: a finding name in |-separated findings "
    "(default Pneumonia) or a number (default 1).",
)
@click.option(
    "--uncertain",
    type=click.Choice(["negative", "positive", "drop"]),
    default="drop",
    show_default=True,
    help="findings, numeric labels: what -1 (uncertain) becomes; drop = skipped.csv row.",
)
@click.option(
    "--image-column", default=None, help="findings: default 'Image Index' (NIH), else 'Path'."
)
@click.option("--patient-column", default=None, help="findings: default 'Patient ID' if present.")
@click.option(
    "--view-column",
    default=None,
    help="findings: default 'View Position' (NIH), else 'AP/PA' (CheXpert), if present.",
)
def convert(
    layout,
    images,
    labels,
    class_info,
    out,
    size,
    val,
    test,
    folds,
    seed,
    workers,
    limit,
    shard_size,
    **layout_options,
) -> None:
    """Convert an image folder + labels (RSNA, class folders, findings CSV) to TFRecords."""
    from pneumokeras.records.convert import ConvertOptions
    from pneumokeras.records.convert import convert as run_convert
    from pneumokeras.sources.listing import LayoutOptions

    if class_info is None and layout == "rsna" and labels is not None:
        default = Path(labels).parent / "stage_2_detailed_class_info.csv"
        class_info = default if default.is_file() else None
    options = ConvertOptions(
        images=images,
        out=out,
        labels=labels,
        class_info=class_info,
        layout=LayoutOptions(layout, **layout_options),
        size=size,
        val_fraction=val,
        test_fraction=test,
        folds=folds,
        seed=seed,
        workers=workers,
        limit=limit,
        shard_size=shard_size,
    )
    summary = run_convert(options)
    counts = ", ".join(
        f"{s} {summary.counts[s]} ({summary.positives[s]} positive)" for s in summary.counts
    )
    click.echo(f"converted {counts} into {summary.out_dir} in {summary.seconds:.1f} s")
    if summary.skipped:
        click.echo(
            f"skipped {summary.skipped} file(s) or label(s); reasons in "
            f"{summary.out_dir / 'skipped.csv'}"
        )
    if summary.notes:
        click.echo(
            f"converted {summary.notes} image(s) with a note (a colour file of a gray picture "
            f"made gray, an EXIF orientation applied); listed in {summary.out_dir / 'notes.csv'}"
        )
    for warning in summary.warnings:
        click.echo(f"warning: {warning}", err=True)
