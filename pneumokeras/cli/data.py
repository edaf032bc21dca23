"""Commands that make data: `synth` and `convert`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pneumokeras.cli.options import example, out_dir_option, workers_option


# ParamType is generic from click 8.4 on; subscripting it would fail on older clicks.
class _RangeType(click.ParamType):  # type: ignore[type-arg]
    """`LOW:HIGH` or one number (a fixed value) → `(low, high)`."""

    name = "LOW:HIGH"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[float, float]:
        if isinstance(value, tuple):
            return value
        parts = str(value).split(":")
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            numbers = []
        if len(numbers) not in (1, 2):
            self.fail(f"expected LOW:HIGH or one number; got {value!r}", param, ctx)
        if numbers[0] > numbers[-1]:
            self.fail(f"LOW must not be above HIGH; got {value!r}", param, ctx)
        return (numbers[0], numbers[-1])


RANGE = _RangeType()
# (option, Scanner setting, help); each defaults to the preset's range.
_SCANNER_OPTIONS = (
    ("--exposure", "offset", "Grey level of air before the film curve (exposure)."),
    ("--gain", "gain", "Grey levels per unit of attenuation (contrast)."),
    ("--gamma", "gamma", "Gamma of the film curve."),
    ("--blur", "blur", "Blur sigma, share of the image side."),
    ("--mottle", "mottle", "Low-frequency noise, attenuation units."),
    ("--noise", "noise", "Per-pixel noise std of a 1024 px image, grey levels."),
    ("--noise-texture", "noise_texture", "Noise correlation, pixels of a 1024 px image."),
    ("--resolution", "resolution", "Share of the output resolution the detector resolves."),
    ("--field-of-view", "field_of_view", "Detector size relative to the default (>1: larger)."),
    ("--collimation", "collimation", "Bright collimator margin per edge, share of the side."),
    ("--border", "border", "Black bar at the left and right edge, share of the side."),
)


def _scanner_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--monochrome1",
        type=click.FloatRange(0, 1),
        default=None,
        help="Probability of storing an image inverted (MONOCHROME1).",
    )(func)
    func = click.option(
        "--markers",
        type=click.FloatRange(0, 1),
        default=None,
        help="Probability of a burned-in L/R side marker.",
    )(func)
    for flag, setting, help_text in reversed(_SCANNER_OPTIONS):
        func = click.option(flag, setting, type=RANGE, default=None, help=help_text)(func)
    return func


@click.command(
    epilog=example(
        "python cli.py synth --out data/synth --patients 600 --size 512 --seed 1",
        "python cli.py synth --out data/other_site --patients 2000 --size 512 --seed 2 --shift",
        "python cli.py synth --out data/gap --patients 600 --size 512 --subgroup-gap sex=F:0.4",
    )
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
@click.option(
    "--shift",
    is_flag=True,
    help="Another site's scanner: every acquisition setting drawn from another range "
    "(the options below override single settings).",
)
@_scanner_options
@click.option(
    "--subgroup-gap",
    default=None,
    metavar="ATTRIBUTE=VALUE[:FACTOR]",
    help="Fainter opacities (contrast x FACTOR, default 0.5) for one subgroup: "
    "sex=M|F, age=<18|18-39|40-59|60-79|80+, view=AP|PA.",
)
def synth(
    out: str,
    patients: int,
    size: int,
    positive_fraction: float,
    seed: int,
    workers: int | None,
    shift: bool,
    subgroup_gap: str | None,
    **scanner: tuple[float, float] | float | None,
) -> None:
    """Write a synthetic RSNA-shaped data set (DICOMs + label CSVs)."""
    from pneumokeras.synth import (
        DEFAULT_SCANNER,
        SHIFTED_SCANNER,
        generate,
        parse_subgroup_gap,
        with_settings,
    )

    summary = generate(
        out,
        patients=patients,
        size=size,
        positive_fraction=positive_fraction,
        seed=seed,
        workers=workers,
        progress=True,
        scanner=with_settings(SHIFTED_SCANNER if shift else DEFAULT_SCANNER, **scanner),
        subgroup_gap=None if subgroup_gap is None else parse_subgroup_gap(subgroup_gap),
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
    type=click.Path(path_type=Path),
    help="rsna: folder of <patientId>.dcm files; folders: the class (or split) folders' "
    "parent; findings: the folder the CSV's image paths are in.",
)
@click.option(
    "--labels",
    type=click.Path(path_type=Path),
    default=None,
    help="rsna: stage_2_train_labels.csv; findings: the CSV; folders: none.",
)
@click.option(
    "--class-info",
    type=click.Path(path_type=Path),
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
@click.option(
    "--sex-column",
    default=None,
    help="findings: default 'Patient Gender' (NIH), else 'Sex' (CheXpert), if present.",
)
@click.option(
    "--age-column",
    default=None,
    help="findings: default 'Patient Age' (NIH), else 'Age' (CheXpert), if present.",
)
def convert(
    layout: str,
    images: Path,
    labels: Path | None,
    class_info: Path | None,
    out: str,
    size: int,
    val: float,
    test: float,
    folds: int,
    seed: int,
    workers: int | None,
    limit: int | None,
    shard_size: int,
    **layout_options: Any,
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
        out=Path(out),
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
            f"{summary.notes} note(s) on converted images or their attributes (a colour file of "
            f"a gray picture made gray, an EXIF orientation applied, an unreadable age, ...); "
            f"listed in {summary.out_dir / 'notes.csv'}"
        )
    for warning in summary.warnings:
        click.echo(f"warning: {warning}", err=True)
