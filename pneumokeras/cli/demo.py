"""The `demo` command: the whole pipeline on synthetic data."""

from __future__ import annotations

import click

from pneumokeras.cli.options import (
    example,
    import_tensorflow,
    load_config,
    settings_options,
    workers_option,
)
from pneumokeras.utils import environment

DEMO_CONFIG = "demo"  # the preset (configs/demo.yaml; inside the package when installed)


@click.command(epilog=example("python cli.py demo --out demo_output"))
@click.option(
    "--out",
    "out_dir",
    default="demo_output",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for every stage's output (an earlier demo's is replaced).",
)
@click.option("--patients", default=600, show_default=True, help="Synthetic patients.")
@click.option("--size", default=512, show_default=True, help="Synthetic DICOM side, pixels.")
@click.option("--seed", default=0, show_default=True, help="Data seed.")
@workers_option
@settings_options
def demo(
    out_dir: str,
    patients: int,
    size: int,
    seed: int,
    workers: int | None,
    config_path: str | None,
    overrides: tuple[str, ...],
) -> None:
    """Run synth → convert → train → evaluate → explain on synthetic data."""
    environment.check_backend("demo")
    config = load_config(config_path or DEMO_CONFIG, overrides)
    import_tensorflow()
    from pneumokeras.demo import run_demo

    summary = run_demo(
        out_dir,
        config,
        patients=patients,
        size=size,
        seed=seed,
        workers=workers,
        echo=lambda line: click.echo(line, err=True),
    )

    def rate(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    click.echo(
        f"\ndemo finished in {summary.seconds / 60:.1f} min on synthetic data\n"
        f"  test ROC-AUC     {summary.test_roc_auc:.3f}\n"
        f"  sensitivity      {summary.sensitivity:.3f}\n"
        f"  specificity      {summary.specificity:.3f}\n"
        f"  pointing game    {rate(summary.pointing_game)} (Grad-CAM maximum inside a box, "
        "all test positives)\n"
        f"                   {rate(summary.pointing_game_detected)} (test positives the model "
        "called pneumonia)\n"
        f"  subgroup gap     {summary.largest_gap or 'none estimable (subgroups too small)'}"
        " (the largest; all in the report)\n"
        f"  report           {summary.report}\n"
        f"  overlays         {summary.overlays}"
    )
