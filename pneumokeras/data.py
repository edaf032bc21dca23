"""tf.data input pipeline from converted shards; works under any Keras backend.

Order (fixed here, see `training_dataset`): list shards → (per-process shard) →
interleave records → (fold filter) → parse → cache → shuffle → decode → batch →
augment → prefetch. Shuffle comes before batching so batches mix shards; augment
after batching so the Keras preprocessing layers run vectorised, one random
transform per image. Batches are `(images, labels)`: images float32
`(B, H, W, 1)` in [0, 255] (the model rescales), labels one-hot float32 `(B, 2)`
`[normal, pneumonia]`. Under JAX, Keras converts batches to NumPy itself.

This module never imports jax.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from pneumokeras import tfrecords
from pneumokeras.config import AugmentConfig, Config
from pneumokeras.errors import UserError

AUTOTUNE = tf.data.AUTOTUNE


def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one serialized example (see `tfrecords.FEATURES`)."""
    return tfrecords.parse_example(serialized)


def decode(example: Mapping[str, tf.Tensor], image_size: int) -> dict[str, tf.Tensor]:
    """Decodes the PNG to float32 `(S, S, 1)` in [0, 255] and one-hot encodes the label."""
    image = tf.io.decode_png(example["image/encoded"], channels=1)
    image = tf.ensure_shape(image, [image_size, image_size, 1])
    return {
        "image": tf.cast(image, tf.float32),
        "label": tf.one_hot(tf.cast(example["image/label"], tf.int32), 2, dtype=tf.float32),
    }


class Augmenter:
    """Seeded training augmentation from Keras preprocessing layers.

    Applies, per image: horizontal flip, rotation (±degrees), translation,
    brightness shift and contrast change, then clips to [0, 255]. Works on a
    batch `(B, H, W, 1)` float32 inside or outside tf.data.
    """

    def __init__(self, config: AugmentConfig, seed: int):
        value_range = (0.0, 255.0)
        layers: list[keras.layers.Layer] = []
        if config.flip:
            layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
        if config.rotation_degrees > 0:
            layers.append(
                keras.layers.RandomRotation(
                    config.rotation_degrees / 360.0, fill_mode="constant", seed=seed + 1
                )
            )
        if config.translation > 0:
            layers.append(
                keras.layers.RandomTranslation(
                    config.translation, config.translation, fill_mode="constant", seed=seed + 2
                )
            )
        if config.brightness > 0:
            layers.append(
                keras.layers.RandomBrightness(
                    config.brightness, value_range=value_range, seed=seed + 3
                )
            )
        if config.contrast > 0:
            layers.append(
                keras.layers.RandomContrast(config.contrast, value_range=value_range, seed=seed + 4)
            )
        self.layers = layers

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        for layer in self.layers:
            images = layer(images, training=True)
        return tf.clip_by_value(images, 0.0, 255.0)


def _split_files(data_dir: Path, manifest: Mapping[str, Any], splits: list[str]) -> list[str]:
    files = [
        str(data_dir / name) for split in splits for name in manifest["splits"][split]["files"]
    ]
    if not files:
        raise UserError(f"split(s) {', '.join(splits)} of {data_dir} hold no examples")
    return files


def _fold_filter(folds: Mapping[str, int], fold: int, keep_fold: bool):
    """A tf.data predicate keeping patients in (or out of) `fold`."""
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(folds.keys()), tf.string),
            tf.constant(list(folds.values()), tf.int64),
        ),
        default_value=-1,
    )

    def predicate(example: Mapping[str, tf.Tensor]) -> tf.Tensor:
        assigned = table.lookup(example["image/patient_id"])
        return (
            tf.equal(assigned, fold)
            if keep_fold
            else tf.logical_and(tf.not_equal(assigned, fold), tf.greater_equal(assigned, 0))
        )

    return predicate


def check_image_size(manifest: Mapping[str, Any], config: Config, data_dir: Path) -> None:
    """Raises UserError when the converted size differs from `data.image_size`."""
    if manifest["image_size"] != config.data.image_size:
        raise UserError(
            f"data.image_size is {config.data.image_size} but {data_dir} holds "
            f"{manifest['image_size']} px images; use --set data.image_size="
            f"{manifest['image_size']} or convert with --size {config.data.image_size}"
        )


def _records(
    data_dir: Path,
    manifest: Mapping[str, Any],
    split: str,
    fold: int | None,
    shard: tuple[int, int],
    deterministic: bool,
    sequential: bool = False,
) -> tf.data.Dataset:
    """Parsed examples of `split`; with `fold`, `train`/`val` mean the fold's sides.

    `sequential` reads shards one after the other, in the manifest's order (the
    order of `tfrecords.read_split`), instead of interleaving them.
    """
    if fold is None:
        files = _split_files(data_dir, manifest, [split])
    else:
        if split not in ("train", "val"):
            raise UserError("--fold selects training and validation data only")
        num_folds = manifest.get("num_folds", 0)
        if not 0 <= fold < num_folds:
            raise UserError(
                f"--fold {fold} is out of range: {data_dir} was converted with "
                f"{num_folds} folds (use convert --folds K)"
            )
        files = _split_files(data_dir, manifest, ["train", "val"])
    dataset = tf.data.Dataset.from_tensor_slices(files)
    num_shards, index = shard
    if num_shards > 1:
        # Multi-process training: each process reads its own subset of shards.
        if len(files) < num_shards:
            raise UserError(f"{len(files)} shard(s) cannot feed {num_shards} processes")
        dataset = dataset.shard(num_shards, index)
    dataset = dataset.interleave(
        tf.data.TFRecordDataset,
        cycle_length=1 if sequential else min(8, len(files)),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
    dataset = dataset.map(parse, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if fold is not None:
        dataset = dataset.filter(_fold_filter(manifest["folds"], fold, keep_fold=split == "val"))
    return dataset


def _options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    return options


def training_dataset(
    data_dir: str | Path,
    config: Config,
    fold: int | None = None,
    seed: int | None = None,
    drop_remainder: bool = False,
    shard: tuple[int, int] = (1, 0),
) -> tuple[tf.data.Dataset, int]:
    """Shuffled, augmented training batches.

    Args:
        data_dir: converted folder (manifest + shards).
        config: settings (data, augment).
        fold: train on all folds but this one (folds recorded by convert).
        seed: shuffle/augmentation seed (default `config.train.seed`).
        drop_remainder: drop the last partial batch (needed when data-parallel).
        shard: `(number of processes, this process)` for multi-process training.

    Returns:
        `(dataset, steps_per_epoch)`. With `sampling: balanced` the dataset repeats
        forever and draws both classes equally; otherwise it is one epoch long.
    """
    data_dir = Path(data_dir)
    manifest = tfrecords.load_manifest(data_dir)
    check_image_size(manifest, config, data_dir)
    seed = config.train.seed if seed is None else seed
    deterministic = config.data.deterministic
    batch = config.data.batch_size
    records = _records(data_dir, manifest, "train", fold, shard, deterministic)
    if config.data.cache:
        records = records.cache()
    count = _training_count(manifest, fold) // shard[0]
    if config.data.sampling == "balanced":
        by_class = [
            records.filter(lambda e, c=c: tf.equal(e["image/label"], c))
            .repeat()
            .shuffle(config.data.shuffle_buffer, seed=seed + c)
            for c in (0, 1)
        ]
        records = tf.data.Dataset.sample_from_datasets(
            by_class, weights=[0.5, 0.5], seed=seed, stop_on_empty_dataset=False
        )
    else:
        records = records.shuffle(
            config.data.shuffle_buffer, seed=seed, reshuffle_each_iteration=True
        )
    steps = count // batch if drop_remainder else -(-count // batch)
    if steps < 1:
        raise UserError(
            f"the training data ({count} examples) is smaller than one batch of {batch}"
        )
    size = config.data.image_size
    augmenter = Augmenter(config.augment, seed)
    dataset = (
        records.map(
            lambda e: decode(e, size), num_parallel_calls=AUTOTUNE, deterministic=deterministic
        )
        .batch(batch, drop_remainder=drop_remainder or config.data.sampling == "balanced")
        .map(
            lambda b: (augmenter(b["image"]), b["label"]),
            # The Keras layers draw from a stateful seed generator: parallel calls
            # would advance it in a racy order, so a deterministic run augments
            # one batch at a time (the ops inside are still vectorised).
            **({} if deterministic else {"num_parallel_calls": AUTOTUNE, "deterministic": False}),
        )
        .prefetch(AUTOTUNE)
        .with_options(_options(deterministic))
    )
    if config.data.sampling == "natural" and shard == (1, 0):
        # Filters hide the length from tf.data; Keras needs it to size epochs.
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    return dataset, steps


def _training_count(manifest: Mapping[str, Any], fold: int | None) -> int:
    if fold is None:
        return int(manifest["splits"]["train"]["count"])
    return sum(1 for f in manifest["folds"].values() if f != fold)


def evaluation_dataset(
    data_dir: str | Path,
    split: str,
    config: Config,
    fold: int | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Batches of `(images, labels)` of a split in file order, without augmentation."""
    data_dir = Path(data_dir)
    manifest = tfrecords.load_manifest(data_dir)
    check_image_size(manifest, config, data_dir)
    if split not in manifest["splits"]:
        raise UserError(f"unknown split {split!r}; known: {', '.join(manifest['splits'])}")
    size = config.data.image_size
    records = _records(data_dir, manifest, split, fold, (1, 0), deterministic=True, sequential=True)
    if fold is None:
        count = int(manifest["splits"][split]["count"])
    else:
        count = sum(1 for f in manifest["folds"].values() if (f == fold) == (split == "val"))
    batch = config.data.batch_size
    batches = count // batch if drop_remainder else -(-count // batch)
    return (
        records.map(lambda e: decode(e, size), num_parallel_calls=AUTOTUNE)
        .map(lambda d: (d["image"], d["label"]))
        .batch(batch, drop_remainder=drop_remainder)
        .prefetch(AUTOTUNE)
        # Filters hide the length from tf.data; Keras needs it to size the loop.
        .apply(tf.data.experimental.assert_cardinality(batches))
    )
