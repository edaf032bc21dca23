"""Training: loss, class weights, optimizer and schedule, callbacks, resume, devices.

`train()` writes into the run folder:
    model.keras   the best epoch by validation ROC-AUC (uncompiled; stock layers)
    model.json    class names, input size, threshold, temperature, backend, config,
                  validation metrics of the best epoch
    history.csv   one row per finished epoch (rewritten atomically; never repeats)
    logs/         TensorBoard logs
    backup/       BackupAndRestore state while a run is unfinished

Re-running the same command after a kill resumes at the last finished epoch.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pneumokeras import data as data_lib
from pneumokeras import performance, resnet, tfrecords
from pneumokeras.config import Config
from pneumokeras.errors import UserError
from pneumokeras.fileio import atomic_write_json, atomic_write_text

CLASS_NAMES = ("normal", "pneumonia")
MONITOR = "val_auc"


@dataclasses.dataclass(frozen=True)
class TrainSummary:
    """What a training run produced."""

    run_dir: Path
    best_epoch: int
    best_val_auc: float
    epochs_run: int
    seconds: float
    backend: str


def make_loss(config: Config) -> keras.losses.Loss:
    """Cross-entropy (class weights are given to `fit`) or focal cross-entropy."""
    if config.train.loss == "focal":
        return keras.losses.CategoricalFocalCrossentropy(gamma=config.train.focal_gamma)
    return keras.losses.CategoricalCrossentropy()


def make_optimizer(config: Config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam (AdamW when weight decay > 0) with cosine decay over all training steps."""
    train = config.train
    total_steps = steps_per_epoch * train.epochs
    warmup_steps = int(round(train.warmup_epochs * steps_per_epoch))
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
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.keras")
    try:
        export_model(model).save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def model_metadata(config: Config, manifest: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The model.json contract (see DESIGN.md); `extra` adds or overrides fields."""
    meta = {
        "class_names": list(CLASS_NAMES),
        "input_size": config.data.image_size,
        "input": "grayscale pixels in [0, 255], shape (None, H, W, 1)",
        "output": "softmax probabilities [normal, pneumonia]",
        "threshold": 0.5,
        "temperature": 1.0,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "model_name": config.model.name,
        "gradcam_layer": resnet.LAST_CONV_LAYER[config.model.name],
        "config": config.to_dict(),
        "data": {"image_size": manifest["image_size"], "source": manifest.get("source", "")},
    }
    meta.update(extra)
    return meta


class HistoryWriter(keras.callbacks.Callback):
    """Writes history.csv after every epoch, replacing rows of epochs run again.

    A resumed run restarts at the last backed-up epoch; rows of later epochs from
    the killed run are dropped, so the file never holds an epoch twice.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def _rows(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as handle:
            return list(csv.DictReader(handle))

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        rows = [r for r in self._rows() if int(r["epoch"]) < epoch]
        row = {"epoch": str(epoch)}
        for key, value in sorted(standard_logs(logs or {}).items()):
            row[key] = f"{float(value):.6g}"
        # The rate the schedule reached at the end of this epoch.
        rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        row["learning_rate"] = f"{float(rate):.6g}"
        rows.append(row)
        fields = list(dict.fromkeys(k for r in rows for k in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buffer.getvalue())


class BestModelSaver(keras.callbacks.Callback):
    """Saves model.keras + model.json when validation ROC-AUC improves.

    The best score so far is read back from model.json, so a resumed run keeps
    comparing against the killed run's best epoch.
    """

    def __init__(self, run_dir: Path, metadata: dict[str, Any]):
        super().__init__()
        self.model_path = run_dir / "model.keras"
        self.json_path = run_dir / "model.json"
        self.metadata = metadata
        self.best = -math.inf
        if self.json_path.is_file() and self.model_path.is_file():
            saved = json.loads(self.json_path.read_text())
            self.best = float(saved.get("validation", {}).get("auc", -math.inf))

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        logs = standard_logs(logs or {})
        score = float(logs.get(MONITOR, math.nan))
        if math.isnan(score) or score <= self.best:
            return
        self.best = score
        save_model(self.model, self.model_path)
        validation = {k[4:]: float(v) for k, v in logs.items() if k.startswith("val_")}
        atomic_write_json(
            self.json_path, {**self.metadata, "best_epoch": epoch, "validation": validation}
        )


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
    """Sets up data parallelism over all local devices; returns (scope, devices)."""
    import contextlib

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
    if keras.backend.backend() == "jax":
        import jax

        return jax.process_count(), jax.process_index()
    return 1, 0


def train(
    data_dir: str | Path,
    run_dir: str | Path,
    config: Config,
    fold: int | None = None,
    verbose: int | str = "auto",
) -> TrainSummary:
    """Trains the configured model on converted data; resumable.

    Args:
        data_dir: converted folder (manifest + shards).
        run_dir: output folder (see module docstring).
        config: validated settings.
        fold: hold out this fold for validation (data converted with `--folds`).
        verbose: Keras `fit` verbosity.

    Raises:
        UserError: no manifest, missing shards, image size differing from the data.
    """
    start = time.perf_counter()
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    manifest = tfrecords.load_manifest(data_dir)
    data_lib.check_image_size(manifest, config, data_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    performance.configure_backend(config.train.precision)  # before anything runs on JAX
    keras.utils.set_random_seed(config.train.seed)
    scope, devices = _distribution_scope(config)
    drop_remainder = devices > 1

    if fold is None:
        weights = manifest["class_weights"]
    else:
        weights = manifest["fold_class_weights"][fold]
    use_weights = config.train.class_weighting and config.data.sampling == "natural"
    if use_weights and weights is None:
        raise UserError(f"the training data in {data_dir} lacks one class; nothing to learn")
    class_weight = {int(k): float(v) for k, v in weights.items()} if use_weights else None

    with scope:
        try:
            model = resnet.build_model(config.model, config.data.image_size)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        box_grid = 0
        if config.train.box_loss_weight > 0:
            model, box_grid = resnet.add_box_head(model, resnet.LAST_CONV_LAYER[config.model.name])
    train_ds, steps = data_lib.training_dataset(
        data_dir,
        config,
        fold=fold,
        drop_remainder=drop_remainder,
        shard=_process_shard(),
        box_grid=box_grid,
        class_weight=class_weight,
    )
    if config.train.steps_per_epoch:
        steps = min(steps, config.train.steps_per_epoch)
    val_ds = data_lib.evaluation_dataset(
        data_dir, "val", config, fold=fold, drop_remainder=drop_remainder, box_grid=box_grid
    )
    with scope:
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
            **performance.COMPILE_KWARGS,
        )
    metadata = model_metadata(
        config, manifest, fold=fold, class_weights=class_weight, devices=devices
    )
    saver = BestModelSaver(run_dir, metadata)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup"), delete_checkpoint=True),
        keras.callbacks.TerminateOnNaN(),
        saver,
        HistoryWriter(run_dir / "history.csv"),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False),
    ]
    # Balanced sampling repeats forever, so `fit` needs the epoch length.
    repeat = config.data.sampling == "balanced" or config.train.steps_per_epoch
    fit_ds = train_ds.repeat() if repeat and config.data.sampling != "balanced" else train_ds
    history = model.fit(
        fit_ds,
        validation_data=val_ds,
        epochs=config.train.epochs,
        steps_per_epoch=steps if repeat else None,
        class_weight=None if box_grid else class_weight,
        shuffle=False,  # the tf.data pipeline shuffles
        callbacks=callbacks,
        verbose=verbose,
    )
    if np.isnan(history.history.get("loss", [0.0])).any():
        raise RuntimeError("training stopped: the loss became NaN")
    if not saver.model_path.is_file():
        raise RuntimeError("no epoch produced a finite validation ROC-AUC; nothing saved")
    meta = json.loads(saver.json_path.read_text())
    return TrainSummary(
        run_dir=run_dir,
        best_epoch=int(meta["best_epoch"]),
        best_val_auc=float(meta["validation"]["auc"]),
        epochs_run=len(history.history.get("loss", [])),
        seconds=time.perf_counter() - start,
        backend=keras.backend.backend(),
    )
