"""The `train` command: loss, class weights, optimizer and schedule, devices, the run.

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

A run folder describes one run (`run_folder`). Re-running the same command after a
kill resumes at the last finished epoch; a run with other settings, data, fold or
backend is refused, and so is a finished run (unless `overwrite`, which replaces
it), and so is a folder another process is training in (its lock, held until the
run ends). The callbacks that write the folder are in `callbacks`.

Several processes (JAX, after `distributed.initialize`): they first check that
they were all started with the same settings and data (`distributed.agree`; one
line naming the first difference otherwise). `data.batch_size` stays
the global batch (each process feeds its `1/n` part from its own share of the
training shards; the learning rate is not rescaled), `DataParallel` spans the
devices of all processes, and process 0 alone writes the run folder. A killed
run resumes when all processes are started again with the same command: every
process restores process 0's backup (`callbacks.SharedBackup`), so a resume needs the run
folder on a file system all processes see (any folder on one machine; a shared
file system across machines); a process that does not see it stops the run with
a clear error. Validation runs the whole validation split in every process: each
global validation batch holds every example once per process, which leaves the
metrics (ratios of counts, means) those of the whole split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pneumokeras import __version__
from pneumokeras.config import Config
from pneumokeras.errors import UserError
from pneumokeras.evaluation import drift
from pneumokeras.models import augmented, resnet
from pneumokeras.models.model_card import ModelCard
from pneumokeras.records import pipeline as data_lib
from pneumokeras.records.augment import device_layers
from pneumokeras.records.manifest import Manifest, load_manifest
from pneumokeras.training import distributed
from pneumokeras.training.callbacks import BestModelSaver, process_local, run_callbacks
from pneumokeras.training.run_folder import finish_run_dir, prepare_run_dir, run_lock
from pneumokeras.utils import performance

# Training images sampled for the card's intensity statistics (out-of-distribution
# warnings in predict).
STATISTICS_SAMPLE = 512


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


@contextlib.contextmanager
def keras_state() -> Iterator[None]:
    """Puts the global Keras dtype policy and distribution back as they were when the block ends.

    `train` sets both (`train.precision`, data parallelism): a caller that goes
    on in the same process (cv building the ensemble, the demo evaluating) must
    not inherit them.
    """
    policy = keras.config.dtype_policy()
    distribution = keras.distribution.distribution()
    try:
        yield
    finally:
        keras.config.set_dtype_policy(policy)
        keras.distribution.set_distribution(distribution)


def _distribution_scope(config: Config) -> tuple[contextlib.AbstractContextManager[Any], int]:
    """Sets up data parallelism over all devices; returns (scope, devices).

    One process: its local devices. Several (JAX): the devices of all of them;
    each process feeds its own part of every global batch.
    """
    processes = distributed.process_count()
    if processes > 1:
        import jax

        if config.train.distribute != "auto":
            raise UserError(
                "multi-process training spreads over every device: use train.distribute=auto"
            )
        devices = jax.device_count()
        if config.data.batch_size % devices:
            # Every process refuses alike (they agreed on the settings when they joined).
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
    """The classifier, with the training-only box head when box supervision is on, or
    behind the augmentation layers with `augment.on_device`."""
    try:
        model = resnet.build_model(config.model, config.data.image_size)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if config.train.box_loss_weight > 0:
        return resnet.add_box_head(model, resnet.LAST_CONV_LAYER[config.model.name])
    if config.augment.on_device:
        layers = device_layers(config.augment, config.train.seed)
        return augmented.with_augmentation(model, layers), 0
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
        **performance.compile_kwargs(_xla_setting(config), config.train.precision),
    )
    # Adam's slots made now, not inside the first traced step: TensorFlow traces a
    # `tf.function` that creates variables twice (once to create them, once
    # without), so a lazy build traces the train step twice (a tiny one-epoch
    # ResNet18 run without XLA: 30 s instead of 47 s on 2 busy CPU cores).
    model.optimizer.build(model.trainable_variables)


def _xla_setting(config: Config) -> bool | str:
    """`train.xla`, except that `auto` means no XLA for TensorFlow with `augment.on_device`:
    Keras does not XLA-compile the random preprocessing layers there (it warns and runs
    a graph anyway)."""
    if config.augment.on_device and config.train.xla == "auto":
        return False
    return config.train.xla


def _fit_verbosity(verbose: int | str) -> int | str:
    """Keras' progress bar on a terminal; one plain line per epoch otherwise."""
    if verbose != "auto":
        return verbose
    return 1 if sys.stdout.isatty() else 2


def with_data_image_size(config: Config, data_dir: str | Path) -> tuple[Config, str | None]:
    """`config` with `data.image_size` taken from the converted data, and a note when it changed.

    For commands whose user did not set `data.image_size` (neither in a settings
    file nor with `--set`): the data fixes the size the model can take.

    Returns:
        `(config, note)`; `note` is None when the sizes already agree.

    Raises:
        UserError: no manifest in `data_dir`.
    """
    stored = load_manifest(Path(data_dir)).image_size
    if stored == config.data.image_size:
        return config, None
    note = (
        f"training at the data's {stored} px (the default data.image_size is "
        f"{config.data.image_size}; {data_dir} holds {stored} px images)"
    )
    return dataclasses.replace(
        config, data=dataclasses.replace(config.data, image_size=stored)
    ), note


def run_facts(
    config: Config, manifest: Manifest, fold: int | None, overwrite: bool
) -> dict[str, Any]:
    """What every process of a multi-process run must agree on, flat (`distributed.agree`)."""
    facts: dict[str, Any] = {
        f"{section}.{key}": value
        for section, values in config.to_dict().items()
        for key, value in values.items()
    }
    facts.update(
        {
            "the data (manifest fingerprint)": manifest.fingerprint,
            "--fold": fold,
            "--overwrite": overwrite,
            "the Keras backend": keras.backend.backend(),
            "the Keras version": keras.__version__,
            "the pneumokeras version": __version__,
        }
    )
    return facts


def _joined_manifest(data_dir: Path, config: Config, fold: int | None, overwrite: bool) -> Manifest:
    """The data's manifest, once every process of the run has the same settings and data.

    In a multi-process run this is the first thing the processes do together:
    a process that cannot read its data, or holds other settings or other data,
    stops them all with one line naming the first difference.

    Raises:
        UserError: no manifest, or processes that disagree.
    """
    try:
        manifest = load_manifest(data_dir)
    except UserError as err:
        distributed.agree({}, failure=err)
        raise
    distributed.agree(run_facts(config, manifest, fold, overwrite))
    return manifest


def train(
    data_dir: str | Path,
    run_dir: str | Path,
    config: Config,
    fold: int | None = None,
    verbose: int | str = "auto",
    overwrite: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
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
        callbacks: more Keras callbacks for `fit`, called after the run's own
            (an epoch's backup and files are written first).

    In a multi-process run (`distributed.initialize` first), every process calls
    this with the same arguments; process 0 alone uses `run_dir`. The global
    Keras dtype policy and distribution are as they were when this returns.

    Raises:
        UserError: no manifest, missing shards, image size differing from the
            data, a fold the data does not have, a run folder holding a
            finished run or an unfinished one with other settings, a run folder
            in use by another process (`RunInUseError`), or processes of one run
            started with other settings or data.
    """
    with keras_state():
        return _train(
            Path(data_dir), Path(run_dir), config, fold, verbose, overwrite, tuple(callbacks)
        )


def _train(
    data_dir: Path,
    run_dir: Path,
    config: Config,
    fold: int | None,
    verbose: int | str,
    overwrite: bool,
    callbacks: tuple[keras.callbacks.Callback, ...],
) -> TrainSummary:
    manifest = _joined_manifest(data_dir, config, fold, overwrite)
    data_lib.check_image_size(manifest, config, data_dir)
    if fold is not None:
        data_lib.check_fold(manifest, fold, data_dir)
    class_weight = _class_weight(manifest, config, fold, data_dir)
    with contextlib.ExitStack() as held:
        # The run folder is locked at once (a second process is refused before any
        # work), in a multi-process run by process 0, the others learning its verdict.
        distributed.on_writer(lambda: held.enter_context(run_lock(run_dir)))
        return _run(
            data_dir, run_dir, config, fold, verbose, overwrite, callbacks, manifest, class_weight
        )


def _run(
    data_dir: Path,
    run_dir: Path,
    config: Config,
    fold: int | None,
    verbose: int | str,
    overwrite: bool,
    callbacks: tuple[keras.callbacks.Callback, ...],
    manifest: Manifest,
    class_weight: dict[int, float] | None,
) -> TrainSummary:
    """The run itself, its folder locked: model, data, the folder prepared, `fit`."""
    start = time.perf_counter()
    performance.configure_backend(config.train.precision)  # before anything runs on JAX
    keras.utils.set_random_seed(config.train.seed)
    scope, devices = _distribution_scope(config)
    processes, index = distributed.process_count(), distributed.process_index()
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
    with process_local():
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
    # Only now, with settings, data and model checked, does the run folder change; in
    # a multi-process run only process 0's, and the others learn its verdict.
    distributed.on_writer(lambda: prepare_run_dir(run_dir, config, manifest, fold, overwrite))
    saver = BestModelSaver(run_dir, card, keep_last=config.train.checkpoint == "last")
    history = _fit(
        model,
        config,
        (train_ds, val_ds, steps),
        box_grid,
        class_weight,
        run_callbacks(run_dir, saver, callbacks),
        verbose,
    )
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
    data: tuple[Any, Any, int],
    box_grid: int,
    class_weight: Mapping[int, float] | None,
    callbacks: list[keras.callbacks.Callback],
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
            callbacks=callbacks,
            verbose=_fit_verbosity(verbose) if distributed.is_writer() else 0,
        )
    except Exception as exc:
        message = distributed.peer_failure(exc) if distributed.process_count() > 1 else None
        if message:
            raise RuntimeError(message) from exc
        raise
