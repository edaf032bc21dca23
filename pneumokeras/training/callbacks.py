"""The callbacks of a training run: history, best model, backup, and multi-process helpers.

- `HistoryWriter`: history.csv, one row per finished epoch (numbered from 1).
- `BestModelSaver`: model.keras and its card whenever validation ROC-AUC improves.
- `SharedBackup`: `BackupAndRestore` for several processes (process 0 writes, all read).
- `process_local`: Keras without the multi-process distribution, for process 0's
  writes and the input pipeline.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pneumokeras.errors import UserError
from pneumokeras.models import augmented
from pneumokeras.models.model_card import CARD_FILE, MODEL_FILE, ModelCard, read_card, write_card
from pneumokeras.training import distributed
from pneumokeras.utils.fileio import atomic_path, atomic_write_text

MONITOR = "val_auc"


def export_model(model: keras.Model) -> keras.Model:
    """The classifier's layers as an uncompiled functional model, input to `predictions`.

    No optimizer or metrics, and no training-only head (`resnet.add_box_head`) or
    augmentation layers (`models.augmented`).
    """
    model = augmented.classifier_of(model)  # without `augment.on_device`'s layers
    # `input` and one output tensor (not lists) keep the single-tensor call
    # signature, so callers passing one array get no structure warning.
    return keras.Model(model.input, model.get_layer("predictions").output, name=model.name)


def save_model(model: keras.Model, path: Path) -> None:
    """Saves `model` uncompiled to `path` atomically (`.keras` needs that suffix)."""
    with atomic_path(path, suffix=".keras") as tmp:
        export_model(model).save(tmp)


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


@contextlib.contextmanager
def process_local() -> Iterator[None]:
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
        with process_local():
            save_model(self.model, self.model_path)
        validation = {k[4:]: float(v) for k, v in logs.items() if k.startswith("val_")}
        write_card(self.model_path, self.card.replace(best_epoch=epoch + 1, validation=validation))


class SharedBackup(keras.callbacks.BackupAndRestore):
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
            with process_local():
                super()._save_model()

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if distributed.is_writer():
            super().on_train_end(logs)


def run_callbacks(
    run_dir: Path, saver: BestModelSaver, extra: tuple[keras.callbacks.Callback, ...] = ()
) -> list[keras.callbacks.Callback]:
    """The callbacks of `fit`; only process 0 gets those that touch the run folder.

    `extra` (the caller's own callbacks) come last, after the epoch's backup and
    files are written.
    """
    # Order matters: the backup of an epoch is written before anything after it.
    backup = SharedBackup if distributed.process_count() > 1 else keras.callbacks.BackupAndRestore
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
    return callbacks + list(extra)
