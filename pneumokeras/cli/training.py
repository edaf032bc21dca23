"""Commands that train: `train` and `cv`."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any, NoReturn

import click

from pneumokeras.cli.options import (
    data_option,
    debugging,
    example,
    import_tensorflow,
    load_config,
    out_dir_option,
    setting_given,
    settings_options,
)
from pneumokeras.utils import environment


@click.command(
    epilog=example(
        "KERAS_BACKEND=jax python cli.py train --data tfrecords/demo --out runs/demo \\",
        "  --config configs/demo.yaml --set train.epochs=3",
        "Two processes on one machine (run both; the second with --process-id 1):",
        "  KERAS_BACKEND=jax python cli.py train --data tfrecords/demo --out runs/demo \\",
        "  --coordinator 127.0.0.1:8476 --num-processes 2 --process-id 0",
    )
)
@data_option()
@out_dir_option("Run folder (model.keras, model.json, history.csv, logs/).", name="run_dir")
@settings_options
@click.option("--fold", type=int, default=None, help="Hold out this fold (convert --folds K).")
@click.option("--overwrite", is_flag=True, help="Replace a finished (or different) run in --out.")
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
    data_dir: str,
    run_dir: str,
    config_path: str | None,
    overrides: tuple[str, ...],
    fold: int | None,
    overwrite: bool,
    coordinator: str | None,
    num_processes: int | None,
    process_id: int | None,
) -> None:
    """Train the classifier; a rerun resumes a killed run."""
    from pneumokeras.training import distributed

    backend = environment.check_backend("train")
    cluster = distributed.settings(coordinator, num_processes, process_id)
    distributed.check_backend(cluster, backend)
    config = load_config(config_path, overrides)
    import_tensorflow()
    config = _sized_config(config, config_path, overrides, data_dir)
    distributed.initialize(cluster, backend)  # before any JAX computation
    from pneumokeras.training.train import train as run_train

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


def _sized_config(
    config: Any, config_path: str | None, overrides: tuple[str, ...], data_dir: str
) -> Any:
    """`config` with `data.image_size` taken from the data unless the user set it (said)."""
    if setting_given(config_path, overrides, "data.image_size"):
        return config
    from pneumokeras.training.train import with_data_image_size

    config, note = with_data_image_size(config, data_dir)
    if note:
        click.echo(f"note: {note}", err=True)
    return config


def _exit_multi_process(err: Exception) -> NoReturn:
    """One error line and an immediate exit (see `distributed.hard_exit`), as `main` words it."""
    from pneumokeras.config import ConfigError
    from pneumokeras.errors import UserError
    from pneumokeras.training import distributed

    if debugging():
        traceback.print_exc()
    line = str(err).splitlines()[0] if str(err) else ""
    if isinstance(err, UserError | ConfigError):
        distributed.hard_exit(line or type(err).__name__, 2)
    distributed.hard_exit(f"{type(err).__name__}: {line} (run with --debug for the traceback)", 1)


@click.command(
    epilog=example(
        "python cli.py cv --data tfrecords/demo --out runs/cv --config configs/demo.yaml",
        "python cli.py cv --data tfrecords/demo --out runs/cv --only-fold 2   # one per machine",
    )
)
@data_option("Converted folder with folds (convert --folds K).")
@out_dir_option("Folder for fold-<k>/ runs, oof.csv, cv_metrics.json, ensemble.keras.")
@settings_options
@click.option(
    "--only-fold",
    type=int,
    default=None,
    help="Train this fold only (one fold per machine); aggregate when all are done.",
)
def cv(
    data_dir: str,
    out_dir: str,
    config_path: str | None,
    overrides: tuple[str, ...],
    only_fold: int | None,
) -> None:
    """K-fold cross-validation: out-of-fold metrics and an ensemble of the fold models."""
    environment.check_backend("cv")
    config = load_config(config_path, overrides)
    import_tensorflow()
    config = _sized_config(config, config_path, overrides, data_dir)
    from pneumokeras.models.ensemble import ENSEMBLE_FILE
    from pneumokeras.training.cv import METRICS_FILE, REPORT_FILE, cross_validate

    summary = cross_validate(
        data_dir, out_dir, config, only_fold=only_fold, say=lambda line: click.echo(line, err=True)
    )
    if summary.result is None:
        in_use = f" ({', '.join(map(str, summary.in_use))} in use by another process)"
        click.echo(
            f"trained fold(s) {', '.join(map(str, summary.trained)) or 'none'}; waiting for "
            f"fold(s) {', '.join(map(str, summary.pending))}"
            + (in_use if summary.in_use else "")
            + ": rerun the same command to aggregate once they are finished"
        )
        return
    result, out = summary.result, Path(out_dir)
    auc = result.summary["roc_auc"]
    pooled = result.pooled["roc_auc"]["value"]
    mean = "n/a" if auc.mean is None else f"{auc.mean:.3f}"
    spread = "n/a" if auc.sd is None else f"{auc.sd:.3f}"
    click.echo(
        f"{summary.num_folds} folds: ROC-AUC {mean} ± {spread} (mean ± sd), "
        f"pooled out-of-fold {'n/a' if pooled is None else f'{pooled:.3f}'}; ensemble in "
        f"{out / ENSEMBLE_FILE}; metrics in {out / METRICS_FILE}, report in {out / REPORT_FILE}"
    )
