"""Training: loss, class weights, optimizer and schedule, callbacks, resume, devices.

`train()` writes into the run folder:
    model.keras   the best epoch by validation ROC-AUC (uncompiled; stock layers)
    model.json    the model card (`model_card.ModelCard`): class names, input size,
                  threshold, temperature, backend, config, training data,
                  validation metrics of the best epoch (1-based `best_epoch`)
    history.csv   one row per finished epoch, numbered from 1 (rewritten
                  atomically; never repeats); `learning_rate` is the rate of the
                  epoch's first step
    run.json      the run's record: settings, data fingerprint, fold, backend,
                  status (`running` until the last epoch, then `finished`)
    logs/         TensorBoard logs
    backup/       BackupAndRestore state while a run is unfinished

A run folder describes one run. Re-running the same command after a kill resumes
at the last finished epoch; a run with other settings, data, fold or backend is
refused, and so is a finished run (unless `overwrite`, which replaces it).

Several processes (JAX, after `distributed.initialize`): `data.batch_size` stays
the global batch (each process feeds its `1/n` part from its own share of the
training shards; the learning rate is not rescaled), `DataParallel` spans the
devices of all processes, and process 0 alone writes the run folder. A killed
run resumes when all processes are started again with the same command: every
process restores process 0's backup (`_SharedBackup`), so a resume needs the run
folder on a file system all processes see (any folder on one machine; a shared
file system across machines); a process that does not see it stops the run with
a clear error. Validation runs the whole validation split in every process: each
global validation batch holds every example once per process, which leaves the
metrics (ratios of counts, means) those of the whole split.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pneumokeras import __version__
from pneumokeras.config import Config
from pneumokeras.errors import UserError
from pneumokeras.evaluation import drift
from pneumokeras.models import resnet
from pneumokeras.models.model_card import CARD_FILE, MODEL_FILE, ModelCard, read_card, write_card
from pneumokeras.records import pipeline as data_lib
from pneumokeras.records.manifest import Manifest, load_manifest
from pneumokeras.training import distributed
from pneumokeras.utils import performance
from pneumokeras.utils.fileio import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    read_json_object,
)

MONITOR = "val_auc"
RUN_RECORD = "run.json"
# What `train` writes into a run folder (and `overwrite` removes).
RUN_OUTPUTS = (MODEL_FILE, CARD_FILE, "history.csv", RUN_RECORD, "logs", "backup")
# Training images sampled for the card's intensity statistics (out-of-distribution
# warnings in predict).
STATISTICS_SAMPLE = 512
# Test hook: kill this process (SIGKILL) at the end of this 1-based epoch, after
# the backup of that epoch was written, so resume tests kill at a known point.
KILL_AFTER_EPOCH_VARIABLE = "PNEUMOKERAS_TEST_KILL_AFTER_EPOCH"
# Test hook: at the end of training each process saves its model weights into
# this folder as process-<index>.npz (multi-process runs must agree).
WEIGHTS_DUMP_VARIABLE = "PNEUMOKERAS_TEST_WEIGHTS_DIR"


@dataclasses.dataclass(frozen=True)
class TrainSummary:
    """What a training run produced (`best_epoch` numbered from 1).

    `process_index` 0 wrote the run folder; `processes` ran the training together.
    """

    run_dir: Path
    best_epoch: int
    best_val_auc: float
    epochs_run: int
    seconds: float
    backend: str
    processes: int = 1
    process_index: int = 0


def make_loss(config: Config) -> keras.losses.Loss:
    """Cross-entropy (class weights are given to `fit`) or focal cross-entropy."""
    if config.train.loss == "focal":
        return keras.losses.CategoricalFocalCrossentropy(gamma=config.train.focal_gamma)
    return keras.losses.CategoricalCrossentropy()


def make_optimizer(config: Config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam (AdamW when weight decay > 0) with cosine decay over all training steps."""
    train = config.train
    total_steps = steps_per_epoch * train.epochs
    warmup_steps = round(train.warmup_epochs * steps_per_epoch)
    if warmup_steps >= total_steps:
        raise UserError("train.warmup_epochs must be shorter than train.epochs")
    if train.schedule == "cosine":
        learning_rate: Any = keras.optimizers.schedules.CosineDecay(
            # With warm-up, the rate climbs linearly from 0 to the peak first.
            initial_learning_rate=0.0 if warmup_steps else train.learning_rate,
            decay_steps=total_steps - warmup_steps,
            warmup_target=train.learning_rate if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    else:
        learning_rate = train.learning_rate
    if train.weight_decay > 0:
        return keras.optimizers.AdamW(learning_rate, weight_decay=train.weight_decay)
    return keras.optimizers.Adam(learning_rate)


def make_metrics() -> list[keras.metrics.Metric]:
    """ROC-AUC, precision, recall and accuracy of the pneumonia class.

    Labels are one-hot. `AUC(multi_label=True)` averages the per-column AUCs; for a
    2-way softmax both columns rank the same patients in reverse with flipped
    labels, so the average equals the pneumonia ROC-AUC.
    """
    return [
        keras.metrics.AUC(multi_label=True, num_labels=2, name="auc"),
        keras.metrics.Precision(class_id=1, name="precision"),
        keras.metrics.Recall(class_id=1, name="recall"),
        keras.metrics.CategoricalAccuracy(name="accuracy"),
    ]


def export_model(model: keras.Model) -> keras.Model:
    """The classifier's layers as an uncompiled functional model, input to `predictions`.

    No optimizer or metrics, and no training-only head (`resnet.add_box_head`).
    """
    # `input` and one output tensor (not lists) keep the single-tensor call
    # signature, so callers passing one array get no structure warning.
    return keras.Model(model.input, model.get_layer("predictions").output, name=model.name)


def standard_logs(logs: Mapping[str, Any]) -> dict[str, Any]:
    """Keras logs with a box head's metric names made plain (`val_predictions_auc` → `val_auc`).

    Losses keep their names (`loss` is the total, `predictions_loss` and
    `box_map_loss` its parts).
    """
    plain = {}
    for key, value in logs.items():
        prefix = "val_" if key.startswith("val_") else ""
        name = key[len(prefix) :]
        if name.startswith("predictions_") and name != "predictions_loss":
            name = name[len("predictions_") :]
        plain[prefix + name] = value
    return plain


def save_model(model: keras.Model, path: Path) -> None:
    """Saves `model` uncompiled to `path` atomically (`.keras` needs that suffix)."""
    with atomic_path(path, suffix=".keras") as tmp:
        export_model(model).save(tmp)


def training_card(
    config: Config,
    manifest: Manifest,
    data_dir: Path,
    fold: int | None,
    class_weight: Mapping[int, float] | None,
    devices: int,
    statistics: Mapping[str, Any],
) -> ModelCard:
    """The model card of a model being trained (threshold and temperature not fitted yet).

    Its `data` names the converted folder fully: `source`, `source_layout`
    (`rsna` for manifests written before other layouts existed), `images` and
    `patients` over all splits (the manifest's `grouping.patients`; without it one
    image per patient, as in RSNA), split counts and the manifest's fingerprint.
    """
    splits = manifest.splits
    images = sum(split.count for split in splits.values())
    return ModelCard(
        input_size=config.data.image_size,
        backend=keras.backend.backend(),
        keras_version=keras.__version__,
        project_version=__version__,
        model_name=config.model.name,
        gradcam_layer=resnet.LAST_CONV_LAYER[config.model.name],
        config=config.to_dict(),
        data={
            "data_dir": str(data_dir.resolve()),
            "source": manifest.source,
            "source_layout": manifest.source_layout,
            "images": images,
            "patients": manifest.grouping.patients if manifest.grouping else images,
            "image_size": manifest.image_size,
            "fingerprint": manifest.fingerprint,
            "splits": {
                name: {"count": split.count, "positives": split.positives}
                for name, split in splits.items()
            },
        },
        fold=fold,
        class_weights=(
            None if class_weight is None else {str(c): w for c, w in class_weight.items()}
        ),
        devices=devices,
        input_statistics=statistics,
    )


# ---------------------------------------------------------------- the run folder


def _run_record(
    config: Config, manifest: Manifest, fold: int | None, status: str
) -> dict[str, Any]:
    return {
        "status": status,
        "config": config.to_dict(),
        "data_fingerprint": manifest.fingerprint,
        "data_source": manifest.source,
        "fold": fold,
        "backend": keras.backend.backend(),
    }


def _differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """`key: old → new` for every setting (flattened) that differs."""
    out = []
    for key in ("data_fingerprint", "fold", "backend"):
        if recorded.get(key) != current[key]:
            out.append(f"{key}: {recorded.get(key)} → {current[key]}")
    old, new = recorded.get("config", {}), current["config"]
    for section in sorted(set(old) | set(new)):
        for name in sorted(set(old.get(section, {})) | set(new.get(section, {}))):
            before, after = old.get(section, {}).get(name), new.get(section, {}).get(name)
            if before != after:
                out.append(f"{section}.{name}: {before} → {after}")
    return out


def prepare_run_dir(
    run_dir: Path,
    config: Config,
    manifest: Manifest,
    fold: int | None,
    overwrite: bool,
) -> bool:
    """Makes `run_dir` ready for this run; returns True when it resumes an unfinished one.

    Raises:
        UserError: a finished run (without `overwrite`), an unfinished run with
            other settings, data, fold or backend, or a folder that is not empty
            and holds no run record.
    """
    current = _run_record(config, manifest, fold, "running")
    record_path = run_dir / RUN_RECORD
    entries = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    if entries and overwrite:
        for name in RUN_OUTPUTS:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    elif entries:
        if not record_path.is_file():
            what = "files of a run" if set(entries) & set(RUN_OUTPUTS) else "other files"
            raise UserError(
                f"{run_dir} is not empty and holds {what} without a {RUN_RECORD}; "
                "choose a new --out, or pass --overwrite to replace the run"
            )
        recorded = read_json_object(record_path, "run record")
        if recorded.get("status") == "finished":
            raise UserError(
                f"{run_dir} holds a finished run; choose a new --out, or pass --overwrite "
                "to replace it"
            )
        changed = _differences(recorded, current)
        if changed:
            raise UserError(
                f"{run_dir} holds an unfinished run with other settings ("
                + "; ".join(changed[:3])
                + (" …" if len(changed) > 3 else "")
                + "); rerun with the same settings to resume it, or pass --overwrite"
            )
        return True
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record_path, current)
    return False


def finish_run_dir(run_dir: Path) -> None:
    """Marks the run finished in its record (a rerun is then refused)."""
    record = read_json_object(run_dir / RUN_RECORD, "run record")
    atomic_write_json(run_dir / RUN_RECORD, {**record, "status": "finished"})


# ---------------------------------------------------------------- callbacks


class HistoryWriter(keras.callbacks.Callback):
    """Writes history.csv after every epoch, replacing rows of epochs run again.

    Epochs are numbered from 1, as Keras prints them and the model card stores
    `best_epoch`. `learning_rate` is the rate of the epoch's first step (the
    cosine schedule lowers it step by step within the epoch). A resumed run
    restarts at the last backed-up epoch; rows of later epochs from the killed
    run are dropped, so the file never holds an epoch twice.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self._rate = math.nan

    def _rows(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as handle:
            return list(csv.DictReader(handle))

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        number = epoch + 1
        rows = [r for r in self._rows() if int(r["epoch"]) < number]
        row = {"epoch": str(number)}
        for key, value in sorted(standard_logs(logs or {}).items()):
            row[key] = f"{float(value):.6g}"
        row["learning_rate"] = f"{self._rate:.6g}"
        rows.append(row)
        fields = list(dict.fromkeys(k for r in rows for k in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buffer.getvalue())


class BestModelSaver(keras.callbacks.Callback):
    """Saves model.keras + its card when validation ROC-AUC improves (or every epoch).

    The best score so far is read back from the card, so a resumed run keeps
    comparing against the killed run's best epoch. Without `card` (the processes
    of a multi-process run other than 0) it only keeps track of the best epoch.
    With `keep_last` (`train.checkpoint: last`) every epoch replaces the saved one.
    """

    def __init__(self, run_dir: Path, card: ModelCard | None, keep_last: bool = False):
        super().__init__()
        self.model_path = run_dir / MODEL_FILE
        self.card = card
        self.keep_last = keep_last
        self.best = -math.inf
        self.best_epoch: int | None = None
        if self.model_path.is_file() and (run_dir / CARD_FILE).is_file():
            saved = read_card(self.model_path)
            self.best = float(saved.validation.get("auc", -math.inf))
            self.best_epoch = saved.best_epoch

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        logs = standard_logs(logs or {})
        score = float(logs.get(MONITOR, math.nan))
        if math.isnan(score) or (score <= self.best and not self.keep_last):
            return
        self.best, self.best_epoch = score, epoch + 1
        if self.card is None:
            return
        with _process_local():
            save_model(self.model, self.model_path)
        validation = {k[4:]: float(v) for k, v in logs.items() if k.startswith("val_")}
        write_card(self.model_path, self.card.replace(best_epoch=epoch + 1, validation=validation))


class _KillAfterEpoch(keras.callbacks.Callback):
    """Test hook (see `KILL_AFTER_EPOCH_VARIABLE`): SIGKILL at the end of one epoch."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if epoch + 1 == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def _process_local() -> Iterator[None]:
    """Keras without the multi-process distribution (process 0's writes, the input pipeline).

    Under `DataParallel` over several processes, creating or assigning a Keras
    variable is a collective (JAX checks the value is the same in every
    process), so it must happen in all processes at once. Saving a model or its
    weights creates variables (Keras builds a reference optimizer to list what
    to save); done by process 0 alone, that would pair with the next collective
    of the others. Reading variables is local either way.
    """
    previous = keras.distribution.distribution()
    if distributed.process_count() == 1 or previous is None:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


class _SharedBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore of a multi-process run: process 0 writes it, every process reads it.

    All processes must restore the same epoch together (restoring assigns
    variables, a collective), so they first compare the epoch each finds in the
    backup folder; a process that does not see process 0's backup (the run
    folder not on a file system shared by all processes) stops them all.
    """

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        metadata = Path(self._training_metadata_path)
        epoch = -1
        if Path(self._weights_path).is_file() and metadata.is_file():
            epoch = int(json.loads(metadata.read_text())["epoch"])
        epochs = distributed.all_gather(np.array([epoch], np.int32))[:, 0]
        if len(set(epochs.tolist())) > 1:
            found = ", ".join(
                f"process {i}: {'epoch ' + str(e) if e >= 0 else 'none'}"
                for i, e in enumerate(epochs.tolist())
            )
            raise UserError(
                f"the processes see different backups in {self.backup_dir} ({found}); a "
                "multi-process resume needs the run folder on a file system all processes share"
            )
        super().on_train_begin(logs)

    def _save_model(self) -> None:
        if distributed.is_writer():
            with _process_local():
                super()._save_model()

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if distributed.is_writer():
            super().on_train_end(logs)


def _devices() -> int:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.local_device_count()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return len(gpus) if gpus else len(tf.config.list_logical_devices("CPU"))
    return 1


def _distribution_scope(config: Config):
    """Sets up data parallelism over all devices; returns (scope, devices).

    One process: its local devices. Several (JAX): the devices of all of them;
    each process feeds its own part of every global batch.
    """
    import contextlib

    processes = distributed.process_count()
    if processes > 1:
        import jax

        if config.train.distribute != "auto":
            raise UserError(
                "multi-process training spreads over every device: use train.distribute=auto"
            )
        devices = jax.device_count()
        if config.data.batch_size % devices:
            # Every process refuses alike; meet first, so that none leaves (and
            # takes the coordination service with it) while another is still
            # starting its backend, which would fail that one with exit 1.
            distributed.all_gather(np.zeros(1, np.int32))
            raise UserError(
                f"data.batch_size {config.data.batch_size} (the global batch) must divide by "
                f"the {devices} devices of the {processes} processes"
            )
        # Each process reads its own data, so Keras must not shard it again.
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(auto_shard_dataset=False)
        )
        return contextlib.nullcontext(), devices
    devices = _devices() if config.train.distribute == "auto" else 1
    if devices <= 1:
        return contextlib.nullcontext(), 1
    if config.data.batch_size % devices:
        raise UserError(
            f"data.batch_size {config.data.batch_size} must divide by the {devices} devices"
        )
    backend = keras.backend.backend()
    if backend == "jax":
        keras.distribution.set_distribution(keras.distribution.DataParallel())
        return contextlib.nullcontext(), devices
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.distribute.MirroredStrategy().scope(), devices
    return contextlib.nullcontext(), 1


def _process_shard() -> tuple[int, int]:
    """(processes, this process) for multi-process JAX training, else (1, 0)."""
    return distributed.process_count(), distributed.process_index()


def _class_weight(
    manifest: Manifest, config: Config, fold: int | None, data_dir: Path
) -> dict[int, float] | None:
    """Class weights of the training data (the fold's when given), or None when unused."""
    weights = manifest.class_weights if fold is None else manifest.fold_class_weights[fold]
    if not (config.train.class_weighting and config.data.sampling == "natural"):
        return None
    if weights is None:
        raise UserError(f"the training data in {data_dir} lacks one class; nothing to learn")
    return {int(k): float(v) for k, v in weights.items()}


def _build_model(config: Config) -> tuple[keras.Model, int]:
    """The classifier, with the training-only box head when box supervision is on."""
    try:
        model = resnet.build_model(config.model, config.data.image_size)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if config.train.box_loss_weight > 0:
        return resnet.add_box_head(model, resnet.LAST_CONV_LAYER[config.model.name])
    return model, 0


def _compile(model: keras.Model, config: Config, steps: int, box_grid: int) -> None:
    if box_grid:
        # Keras takes class_weight for one output only: the dataset carries
        # the same weights per example (`training_dataset`).
        loss: Any = {
            data_lib.PREDICTIONS: make_loss(config),
            data_lib.BOX_MAP: keras.losses.BinaryCrossentropy(),
        }
        loss_weights: Any = {
            data_lib.PREDICTIONS: 1.0,
            data_lib.BOX_MAP: config.train.box_loss_weight,
        }
        metrics: Any = {data_lib.PREDICTIONS: make_metrics()}
    else:
        loss, loss_weights, metrics = make_loss(config), None, make_metrics()
    model.compile(
        optimizer=make_optimizer(config, steps),
        loss=loss,
        loss_weights=loss_weights,
        metrics=metrics,
        **performance.compile_kwargs(config.train.xla),
    )
    # Adam's slots made now, not inside the first traced step: TensorFlow traces a
    # `tf.function` that creates variables twice (once to create them, once
    # without), so a lazy build traces the train step twice (a tiny one-epoch
    # ResNet18 run without XLA: 30 s instead of 47 s on 2 busy CPU cores).
    model.optimizer.build(model.trainable_variables)


def _callbacks(run_dir: Path, saver: BestModelSaver) -> list[keras.callbacks.Callback]:
    """The callbacks of `fit`; only process 0 gets those that touch the run folder."""
    # Order matters: the backup of an epoch is written before anything after it.
    backup = _SharedBackup if distributed.process_count() > 1 else keras.callbacks.BackupAndRestore
    callbacks = [
        backup(str(run_dir / "backup"), delete_checkpoint=True),
        keras.callbacks.TerminateOnNaN(),
        saver,
    ]
    if distributed.is_writer():
        callbacks += [
            HistoryWriter(run_dir / "history.csv"),
            keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False),
        ]
    kill_after = os.environ.get(KILL_AFTER_EPOCH_VARIABLE)
    if kill_after:
        callbacks.append(_KillAfterEpoch(int(kill_after)))
    return callbacks


def _fit_verbosity(verbose: int | str) -> int | str:
    """Keras' progress bar on a terminal; one plain line per epoch otherwise."""
    if verbose != "auto":
        return verbose
    return 1 if sys.stdout.isatty() else 2


def train(
    data_dir: str | Path,
    run_dir: str | Path,
    config: Config,
    fold: int | None = None,
    verbose: int | str = "auto",
    overwrite: bool = False,
) -> TrainSummary:
    """Trains the configured model on converted data; resumable.

    Args:
        data_dir: converted folder (manifest + shards).
        run_dir: output folder (see module docstring).
        config: validated settings.
        fold: hold out this fold for validation (data converted with `--folds`).
        verbose: Keras `fit` verbosity; `auto` = progress bar on a terminal,
            one line per epoch when output goes to a file or pipe.
        overwrite: replace a finished (or different) run in `run_dir`.

    In a multi-process run (`distributed.initialize` first), every process calls
    this with the same arguments; process 0 alone uses `run_dir`.

    Raises:
        UserError: no manifest, missing shards, image size differing from the
            data, a fold the data does not have, or a run folder holding a
            finished run or an unfinished one with other settings.
    """
    start = time.perf_counter()
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    manifest = load_manifest(data_dir)
    data_lib.check_image_size(manifest, config, data_dir)
    if fold is not None:
        data_lib.check_fold(manifest, fold, data_dir)
    class_weight = _class_weight(manifest, config, fold, data_dir)

    performance.configure_backend(config.train.precision)  # before anything runs on JAX
    keras.utils.set_random_seed(config.train.seed)
    scope, devices = _distribution_scope(config)
    processes, index = _process_shard()
    writer = index == 0
    # Whole batches only: a last, partial batch would be a second step shape, so a
    # second trace (and under XLA a second compile, ≈ 30-60 s for ResNet18 on a
    # CPU) for a few examples. The split is reshuffled every epoch, so the
    # dropped examples (< one batch) differ from epoch to epoch.
    drop_remainder = True
    # `data.batch_size` is the global batch; each process feeds its part of it.
    local_batch = config.data.batch_size // processes
    with scope:
        model, box_grid = _build_model(config)
    # The augmentation layers' seed state differs per process (`data.training_dataset`)
    # and lives in tf.data, so it is made outside the multi-process distribution.
    with _process_local():
        train_ds, steps = data_lib.training_dataset(
            data_dir,
            config,
            fold=fold,
            drop_remainder=drop_remainder,
            shard=(processes, index),
            box_grid=box_grid,
            class_weight=class_weight,
            batch_size=local_batch,
        )
    if config.train.steps_per_epoch:
        steps = min(steps, config.train.steps_per_epoch)
    # Every process validates on the whole split (module docstring); the last,
    # partial batch is kept unless a process has several devices to split it on.
    val_ds = data_lib.evaluation_dataset(
        data_dir,
        "val",
        config,
        fold=fold,
        drop_remainder=devices // processes > 1,
        box_grid=box_grid,
        batch_size=local_batch,
    )
    with scope:
        _compile(model, config, steps, box_grid)
    card = None
    if writer:
        statistics = drift.training_statistics(
            data_lib.sample_images(data_dir, "train", STATISTICS_SAMPLE)
        )
        card = training_card(config, manifest, data_dir, fold, class_weight, devices, statistics)
    # Only now, with settings, data and model checked, does the run folder change;
    # in a multi-process run only process 0's, and the others learn its verdict.
    distributed.on_writer(lambda: prepare_run_dir(run_dir, config, manifest, fold, overwrite))
    saver = BestModelSaver(run_dir, card, keep_last=config.train.checkpoint == "last")
    history = _fit(
        model, config, run_dir, (train_ds, val_ds, steps), box_grid, class_weight, saver, verbose
    )
    _dump_weights(model, index)
    if np.isnan(history.history.get("loss", [0.0])).any():
        raise RuntimeError("training stopped: the loss became NaN")
    if saver.best_epoch is None:
        raise RuntimeError("no epoch produced a finite validation ROC-AUC; nothing saved")
    if writer:
        finish_run_dir(run_dir)
    return TrainSummary(
        run_dir=run_dir,
        best_epoch=saver.best_epoch,
        best_val_auc=saver.best,
        epochs_run=len(history.history.get("loss", [])),
        seconds=time.perf_counter() - start,
        backend=keras.backend.backend(),
        processes=processes,
        process_index=index,
    )


def _fit(
    model: keras.Model,
    config: Config,
    run_dir: Path,
    data: tuple[Any, Any, int],
    box_grid: int,
    class_weight: Mapping[int, float] | None,
    saver: BestModelSaver,
    verbose: int | str,
) -> keras.callbacks.History:
    """`model.fit` on `data` (training, validation, steps) with the run's callbacks.

    In a multi-process run, losing another process becomes one clear error.
    """
    train_ds, val_ds, steps = data
    # Balanced sampling repeats forever, so `fit` needs the epoch length.
    repeat = config.data.sampling == "balanced" or config.train.steps_per_epoch
    fit_ds = train_ds.repeat() if repeat and config.data.sampling != "balanced" else train_ds
    try:
        return model.fit(
            fit_ds,
            validation_data=val_ds,
            epochs=config.train.epochs,
            steps_per_epoch=steps if repeat else None,
            class_weight=None if box_grid else class_weight,
            shuffle=False,  # the tf.data pipeline shuffles
            callbacks=_callbacks(run_dir, saver),
            verbose=_fit_verbosity(verbose) if distributed.is_writer() else 0,
        )
    except Exception as exc:
        message = distributed.peer_failure(exc) if distributed.process_count() > 1 else None
        if message:
            raise RuntimeError(message) from exc
        raise


def _dump_weights(model: keras.Model, index: int) -> None:
    """Test hook (see `WEIGHTS_DUMP_VARIABLE`)."""
    folder = os.environ.get(WEIGHTS_DUMP_VARIABLE)
    if folder:
        weights = {f"w{i:04d}": np.asarray(w.value) for i, w in enumerate(model.weights)}
        np.savez(Path(folder) / f"process-{index}.npz", **weights)
