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

from pneumokeras import environment

# Before anything imports TensorFlow, JAX or Keras.
environment.set_defaults()

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
    if debug:
        os.environ[environment.DEBUG_VARIABLE] = "1"  # library code reads it too


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
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--size", default=256, show_default=True, help="Stored image side, pixels.")
@click.option("--val", default=0.1, show_default=True, help="Validation share of patients.")
@click.option("--test", default=0.1, show_default=True, help="Test share of patients.")
@click.option("--folds", default=0, show_default=True, help="K stratified folds (0 = none).")
@click.option("--seed", default=0, show_default=True, help="Split seed.")
@click.option("--workers", type=int, default=None, help=WORKERS_HELP)
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
    from pneumokeras.convert import convert as run_convert
    from pneumokeras.layouts import LayoutOptions

    if class_info is None and layout == "rsna" and labels is not None:
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
        layout=LayoutOptions(layout, **layout_options),
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
    if summary.notes:
        click.echo(
            f"converted {summary.notes} RGB image(s) of gray pictures to gray; listed in "
            f"{summary.out_dir / 'notes.csv'}"
        )


@cli.command(
    epilog=_example(
        "KERAS_BACKEND=jax python cli.py train --data tfrecords/demo --out runs/demo \\",
        "  --config configs/demo.yaml --set train.epochs=3",
        "Two processes on one machine (run both; the second with --process-id 1):",
        "  KERAS_BACKEND=jax python cli.py train --data tfrecords/demo --out runs/demo \\",
        "  --coordinator 127.0.0.1:8476 --num-processes 2 --process-id 0",
    )
)
@click.option("--data", "data_dir", required=True, type=click.Path(), help="Converted folder.")
@click.option(
    "--out",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Run folder (model.keras, model.json, history.csv, logs/).",
)
@_settings_options
@click.option("--fold", type=int, default=None, help="Hold out this fold (convert --folds K).")
@click.option(
    "--overwrite", is_flag=True, help="Replace a finished (or different) run in --out."
)
@click.option(
    "--coordinator",
    metavar="HOST:PORT",
    default=None,
    help="Several processes (JAX): process 0's address, where its coordinator listens "
    "(or PNEUMOKERAS_COORDINATOR).",
)
@click.option(
    "--num-processes",
    type=int,
    default=None,
    help="Processes in the run (or PNEUMOKERAS_NUM_PROCESSES; SLURM/Open MPI: detected).",
)
@click.option(
    "--process-id",
    type=int,
    default=None,
    help="This process, 0..N-1; 0 writes --out (or PNEUMOKERAS_PROCESS_ID).",
)
def train(
    data_dir, run_dir, config_path, overrides, fold, overwrite, coordinator, num_processes,
    process_id,
) -> None:
    """Train the classifier; a rerun resumes a killed run."""
    from pneumokeras import distributed

    backend = environment.check_backend("train")
    cluster = distributed.settings(coordinator, num_processes, process_id)
    distributed.check_backend(cluster, backend)
    config = _load_config(config_path, overrides)
    environment.import_tensorflow_quietly()  # `--debug` keeps TF's start-up lines
    distributed.initialize(cluster, backend)  # before any JAX computation
    from pneumokeras.train import train as run_train

    where = f" (process {cluster.process_id} of {cluster.num_processes})"
    click.echo(
        f"training {config.model.name} under Keras {backend} backend"
        + (where if cluster.multi_process else ""),
        err=True,
    )
    try:
        summary = run_train(data_dir, run_dir, config, fold=fold, overwrite=overwrite)
    except Exception as err:
        if not cluster.multi_process:
            raise
        _exit_multi_process(err)
    if summary.process_index:
        click.echo(f"process {summary.process_index} of {summary.processes} finished")
        return
    click.echo(
        f"best epoch {summary.best_epoch}: validation ROC-AUC "
        f"{summary.best_val_auc:.3f}; model in {summary.run_dir / 'model.keras'} "
        f"({summary.seconds:.0f} s, {summary.backend})"
    )


def _exit_multi_process(err: Exception) -> None:
    """One error line and an immediate exit (see `distributed.hard_exit`), as `main` words it."""
    from pneumokeras import distributed
    from pneumokeras.config import ConfigError
    from pneumokeras.errors import UserError

    if _DEBUG:
        traceback.print_exc()
    line = str(err).splitlines()[0] if str(err) else ""
    if isinstance(err, UserError | ConfigError):
        distributed.hard_exit(line or type(err).__name__, 2)
    distributed.hard_exit(f"{type(err).__name__}: {line} (run with --debug for the traceback)", 1)


@cli.command(
    epilog=_example(
        "python cli.py evaluate --model runs/demo/model.keras --data tfrecords/demo \\",
        "  --split test --out runs/demo/eval",
        "python cli.py evaluate --model runs/demo --data kermany_tfrecords --split all \\",
        "  --refit-fraction 0.3 --out runs/demo/eval_kermany",
    )
)
@click.option(
    "--model", "model_path", required=True, type=click.Path(), help="model.keras or its run folder."
)
@click.option("--data", "data_dir", required=True, type=click.Path(), help="Converted folder.")
@click.option(
    "--split",
    default="test",
    show_default=True,
    help="Split to evaluate; on external data also `all` (every split together).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for metrics.json, plots and report.md.",
)
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
@_settings_options
def evaluate(
    model_path, data_dir, split, out_dir, threshold, external, refit_fraction, config_path,
    overrides,
) -> None:
    """Clinical metrics with 95 % CIs, calibration, plots; also on external data."""
    environment.check_backend("evaluate")
    config = _load_config(config_path, overrides)
    environment.import_tensorflow_quietly()  # `--debug` keeps TF's start-up lines
    from pneumokeras.evaluate import evaluate_run

    metrics = evaluate_run(
        model_path, data_dir, out_dir, config, split=split, threshold=threshold,
        external_data=external, refit_fraction=refit_fraction,
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


@cli.command(
    epilog=_example(
        "python cli.py predict --model runs/demo/model.keras scans/ --out predictions.csv",
    )
)
@click.option(
    "--model", "model_path", required=True, type=click.Path(), help="model.keras or its run folder."
)
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write predictions here (default: print to stdout).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@click.option("--batch-size", default=32, show_default=True)
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
def predict(model_path, inputs, out_path, fmt, batch_size, tta, threshold) -> None:
    """Predict pneumonia on DICOM, PNG or JPEG files and folders."""
    environment.check_backend("predict")
    environment.import_tensorflow_quietly()  # `--debug` keeps TF's start-up lines
    from pneumokeras.predict import format_rows, predict_files

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
        click.echo(format_rows(rows, fmt), nl=False)
    click.echo(
        f"predicted {len(rows) - failed} file(s)"
        + (f", {warned} with warnings (see the warning column)" if warned else "")
        + (f", {failed} unreadable (see the error column)" if failed else "")
        + (f"; wrote {out_path}" if out_path else ""),
        err=True,
    )


@cli.command(
    epilog=_example(
        "python cli.py export --model runs/demo --format onnx",
        "python cli.py export --model runs/demo/model.keras --format saved_model \\",
        "  --out serving/pneumonia/1 --check-images scans/",
    )
)
@click.option(
    "--model", "model_path", required=True, type=click.Path(), help="model.keras or its run folder."
)
@click.option(
    "--format", "fmt", required=True, type=click.Choice(["onnx", "saved_model"]),
    help="ONNX file or TensorFlow SavedModel folder.",
)
@click.option(
    "--out", "out_path", type=click.Path(), default=None,
    help="Output (default: model.onnx or model_savedmodel/ beside the model).",
)
@click.option("--force", is_flag=True, help="Replace an earlier export at --out.")
@click.option(
    "--check-images", multiple=True, type=click.Path(), metavar="PATH",
    help="Image files or folders to check on besides the synthetic ones (repeatable).",
)
def export(model_path, fmt, out_path, force, check_images) -> None:
    """Export for serving (ONNX, SavedModel), checked against the .keras model."""
    if environment.check_backend("export") == "tensorflow":
        environment.import_tensorflow_quietly()  # `--debug` keeps TF's start-up lines
    from pneumokeras.export import FORMAT_NAMES, export_model

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


@cli.command(
    epilog=_example(
        "python cli.py cv --data tfrecords/demo --out runs/cv --config configs/demo.yaml",
        "python cli.py cv --data tfrecords/demo --out runs/cv --only-fold 2   # one per machine",
    )
)
@click.option("--data", "data_dir", required=True, type=click.Path(),
              help="Converted folder with folds (convert --folds K).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for fold-<k>/ runs, oof.csv, cv_metrics.json, ensemble.keras.")
@_settings_options
@click.option("--only-fold", type=int, default=None,
              help="Train this fold only (one fold per machine); aggregate when all are done.")
def cv(data_dir, out_dir, config_path, overrides, only_fold) -> None:
    """K-fold cross-validation: out-of-fold metrics and an ensemble of the fold models."""
    environment.check_backend("cv")
    config = _load_config(config_path, overrides)
    environment.import_tensorflow_quietly()  # `--debug` keeps TF's start-up lines
    from pneumokeras.cv import METRICS_FILE, REPORT_FILE, cross_validate

    summary = cross_validate(
        data_dir, out_dir, config, only_fold=only_fold, say=lambda line: click.echo(line, err=True)
    )
    if summary.result is None:
        click.echo(
            f"trained fold(s) {', '.join(map(str, summary.trained)) or 'none'}; waiting for "
            f"fold(s) {', '.join(map(str, summary.pending))}: rerun the same command to "
            "aggregate once they are finished"
        )
        return
    result, out = summary.result, Path(out_dir)
    auc = result["summary"]["roc_auc"]
    pooled = result["pooled"]["roc_auc"]
    spread = "n/a" if auc["sd"] is None else f"{auc['sd']:.3f}"
    click.echo(
        f"{summary.num_folds} folds: ROC-AUC {auc['mean']:.3f} ± {spread} (mean ± sd), "
        f"pooled out-of-fold {pooled['value']:.3f}; ensemble in {out / 'ensemble.keras'}; "
        f"metrics in {out / METRICS_FILE}, report in {out / REPORT_FILE}"
    )


def _force_tensorflow_backend(what: str = "explain", why: str = "tf-keras-vis") -> None:
    """Grad-CAM needs tf.GradientTape (tf-keras-vis): pick TensorFlow before keras loads."""
    asked = os.environ.get("KERAS_BACKEND", "tensorflow")
    if asked != "tensorflow":
        click.echo(
            f"note: {what} runs under the TensorFlow backend ({why} needs "
            f"tf.GradientTape); KERAS_BACKEND={asked} is ignored here",
            err=True,
        )
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != "tensorflow":
        raise RuntimeError("keras was already imported with another backend")
    os.environ["KERAS_BACKEND"] = "tensorflow"


@cli.command(
    epilog=_example(
        "python cli.py explain --model runs/demo/model.keras --data tfrecords/demo \\",
        "  --split test --limit 16 --out runs/demo/explain",
    )
)
@click.option(
    "--model", "model_path", required=True, type=click.Path(), help="model.keras or its run folder."
)
@click.argument("files", nargs=-1, type=click.Path())
@click.option(
    "--data",
    "data_dir",
    type=click.Path(),
    default=None,
    help="Converted folder (instead of FILES).",
)
@click.option("--split", default="test", show_default=True)
@click.option("--limit", type=int, default=None, help="At most N images from --data.")
@click.option("--positives-only", is_flag=True, help="Only label-1 images from --data.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
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
@_settings_options
def explain(
    model_path,
    files,
    data_dir,
    split,
    limit,
    positives_only,
    out_dir,
    method,
    layer,
    target_class,
    config_path,
    overrides,
) -> None:
    """Grad-CAM heatmaps, scored against RSNA boxes."""
    if bool(files) == bool(data_dir):
        raise click.UsageError("give either FILES or --data")
    extra = [
        f"explain.{k}={v}"
        for k, v in (("method", method), ("layer", layer), ("target_class", target_class))
        if v is not None
    ]
    config = _load_config(config_path, (*overrides, *extra))
    _force_tensorflow_backend()
    environment.import_tensorflow_quietly()  # `--debug` keeps TF's start-up lines
    from pneumokeras.explain import explain_run

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


def _explain_line(summary: dict) -> str:
    line = f"explained {summary.get('count', 0)} image(s)"
    if summary.get("pointing_game") is not None:
        line += (
            f"; pointing game {summary['pointing_game']:.2f}, energy in boxes "
            f"{summary['energy_in_boxes']:.2f} over {summary.get('positives_with_boxes')} "
            "positives"
        )
    return line


@cli.command(epilog=_example("python cli.py demo --out demo_output"))
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
@click.option("--workers", type=int, default=None, help=WORKERS_HELP)
@_settings_options
def demo(out_dir, patients, size, seed, workers, config_path, overrides) -> None:
    """Run synth → convert → train → evaluate → explain on synthetic data."""
    environment.check_backend("demo")
    config = _load_config(config_path or _DEMO_CONFIG, overrides)
    environment.import_tensorflow_quietly()  # `--debug` keeps TF's start-up lines
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
        f"  report           {summary.report}\n"
        f"  overlays         {summary.overlays}"
    )


@cli.command(
    epilog=_example(
        "python cli.py app --model demo_output/run --data demo_output/tfrecords",
        "  # then open http://127.0.0.1:8501 in a browser",
    )
)
@click.option(
    "--model",
    "model_path",
    default="demo_output/run",
    show_default=True,
    type=click.Path(),
    help="model.keras or its run folder.",
)
@click.option(
    "--data", "data_dir", type=click.Path(), default=None, help="Converted folder to browse."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", default=8501, show_default=True, help="TCP port.")
@click.option(
    "--max-upload-mb", default=100, show_default=True, help="Largest file accepted, MB."
)
def app(model_path, data_dir, host, port, max_upload_mb) -> None:
    """Web app: upload X-rays, see probability, label and Grad-CAM."""
    from pneumokeras.app_logic import streamlit_command
    from pneumokeras.errors import UserError

    if model_path == "demo_output/run" and not Path(model_path).exists():
        raise UserError("no model in demo_output/run: run `make demo` first, or pass --model")
    _force_tensorflow_backend("the app", "Grad-CAM")
    argv, env = streamlit_command(model_path, data_dir, host, port, max_upload_mb)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"note: --host {host} lets other machines reach the app; it has no login, and "
            "uploads are sent unencrypted (plain HTTP)",
            err=True,
        )
    click.echo(
        f"serving the app at http://{host}:{port} (Ctrl+C stops it); research use only",
        err=True,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)  # streamlit replaces this process: signals go to it


_DEMO_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")


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


if __name__ == "__main__":
    main()
