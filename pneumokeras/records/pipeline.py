"""tf.data input pipeline from converted shards; works under any Keras backend.

Order (fixed here, see `training_dataset`): list shards → (per-process shard) →
interleave records → (fold filter) → parse → cache → shuffle → decode → batch →
augment → prefetch. Shuffle comes before batching so batches mix shards; augment
after batching so the Keras preprocessing layers run vectorised, one random
transform per image (`augment.Augmenter`; training only, like label smoothing of
the targets, `augment.label_smoothing`). Batches are `(images, labels)`: images float32
`(B, H, W, 1)` in [0, 255] (the model rescales), labels one-hot float32 `(B, 2)`
`[normal, pneumonia]`. With box supervision (`box_grid`), targets are a dict
`{"predictions": labels, "box_map": (B, g·g) box coverage per feature-map cell}`,
the boxes rasterised and augmented with the image. Under JAX, Keras converts
batches to NumPy itself.

This module never imports jax.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import tensorflow as tf

from pneumokeras.config import Config
from pneumokeras.errors import UserError
from pneumokeras.records import tfrecords
from pneumokeras.records.augment import Augmenter, check_on_device
from pneumokeras.records.manifest import Manifest, load_manifest

AUTOTUNE = tf.data.AUTOTUNE
# Target names of the training model with a box head (see `resnet.add_box_head`).
PREDICTIONS, BOX_MAP = "predictions", "box_map"
# Process i of a multi-process run draws its shuffling, sampling and augmentation
# from seed + i * PROCESS_SEED_STRIDE (above the small per-class/per-layer offsets).
PROCESS_SEED_STRIDE = 1000


def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one serialized example (see `tfrecords.FEATURES`)."""
    return tfrecords.parse_example(serialized)


def decode(
    example: Mapping[str, tf.Tensor], image_size: int, with_boxes: bool = False
) -> dict[str, tf.Tensor]:
    """Decodes the PNG to float32 `(S, S, 1)` in [0, 255] and one-hot encodes the label.

    With `with_boxes`, also `box_mask`: the example's boxes rasterised (`box_mask`).
    """
    image = tf.io.decode_png(example["image/encoded"], channels=1)
    image = tf.ensure_shape(image, [image_size, image_size, 1])
    decoded = {
        "image": tf.cast(image, tf.float32),
        "label": tf.one_hot(tf.cast(example["image/label"], tf.int32), 2, dtype=tf.float32),
    }
    if with_boxes:
        decoded["box_mask"] = box_mask(example["image/boxes"], image_size)
    return decoded


def box_mask(boxes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Rasterises boxes: float32 `(S, S, 1)`, 1 where a pixel's centre is in a box.

    Args:
        boxes: `(K, 4)` boxes `x, y, w, h` as fractions of the image side (K may be 0).
        image_size: side S of the mask, pixels.
    """
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    centres = (tf.range(image_size, dtype=tf.float32) + 0.5) / image_size
    x, y, w, h = (boxes[:, i : i + 1] for i in range(4))  # each (K, 1)
    rows = (centres >= y) & (centres < y + h)  # (K, S)
    cols = (centres >= x) & (centres < x + w)
    inside = tf.reduce_any(rows[:, :, None] & cols[:, None, :], axis=0)
    return tf.cast(inside, tf.float32)[..., None]


def box_targets(masks: tf.Tensor, grid: int) -> tf.Tensor:
    """Box coverage per cell of a `grid x grid` feature map: `(B, S, S, 1)` → `(B, g·g)`.

    Each value is the share of the cell's pixels inside a box (area resize), in [0, 1].
    """
    cells = tf.image.resize(masks, (grid, grid), method="area")
    return tf.reshape(tf.clip_by_value(cells, 0.0, 1.0), [-1, grid * grid])


def _split_files(data_dir: Path, manifest: Manifest, splits: list[str]) -> list[str]:
    files = [str(data_dir / name) for split in splits for name in manifest.splits[split].files]
    if not files:
        raise UserError(f"split(s) {', '.join(splits)} of {data_dir} hold no examples")
    return files


def _fold_filter(
    folds: Mapping[str, int], fold: int, keep_fold: bool
) -> Callable[[Mapping[str, tf.Tensor]], tf.Tensor]:
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


def check_image_size(manifest: Manifest, config: Config, data_dir: Path) -> None:
    """Raises UserError when the converted size differs from `data.image_size`."""
    if manifest.image_size != config.data.image_size:
        raise UserError(
            f"data.image_size is {config.data.image_size} but {data_dir} holds "
            f"{manifest.image_size} px images; use --set data.image_size="
            f"{manifest.image_size} or convert with --size {config.data.image_size}"
        )


def check_fold(manifest: Manifest, fold: int, data_dir: Path) -> None:
    """Raises UserError unless `fold` is one of the folds `convert --folds K` wrote."""
    num_folds = manifest.num_folds
    if num_folds < 1 or not manifest.folds:
        raise UserError(f"--fold {fold}: {data_dir} was converted without --folds")
    if not 0 <= fold < num_folds:
        raise UserError(
            f"--fold {fold} is out of range: {data_dir} has {num_folds} folds (0..{num_folds - 1})"
        )


def sample_images(data_dir: str | Path, split: str, count: int) -> Any:
    """The first `count` images of a split, decoded: `(n, S, S)` uint8 NumPy, n <= count.

    Reads shards in the manifest's order and stops after `count` images.
    """
    data_dir = Path(data_dir)
    manifest = load_manifest(data_dir)
    files = _split_files(data_dir, manifest, [split])
    dataset = (
        tf.data.TFRecordDataset(files)
        .take(count)
        .map(lambda s: tf.io.decode_png(parse(s)["image/encoded"], channels=1)[..., 0])
    )
    images = list(dataset.as_numpy_iterator())
    size = int(manifest.image_size)
    return tf.stack(images).numpy() if images else tf.zeros((0, size, size), tf.uint8).numpy()


def _records(
    data_dir: Path,
    manifest: Manifest,
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
        check_fold(manifest, fold, data_dir)
        files = _split_files(data_dir, manifest, ["train", "val"])
    dataset = tf.data.Dataset.from_tensor_slices(files)
    num_shards, index = shard
    # Multi-process training: each process reads its own subset of the shard files;
    # with fewer files than processes, every process reads them all, in order, and
    # keeps every n-th record (a partition only when every process reads the same
    # records in the same order, hence in order).
    by_record = num_shards > 1 and len(files) < num_shards
    if num_shards > 1 and not by_record:
        dataset = dataset.shard(num_shards, index)
    in_order = sequential or by_record
    dataset = dataset.interleave(
        tf.data.TFRecordDataset,
        cycle_length=1 if in_order else min(8, len(files)),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic or in_order,
    )
    if by_record:
        dataset = dataset.shard(num_shards, index)
    dataset = dataset.map(parse, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if fold is not None:
        dataset = dataset.filter(_fold_filter(manifest.folds, fold, keep_fold=split == "val"))
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
    box_grid: int = 0,
    class_weight: Mapping[int, float] | None = None,
    batch_size: int | None = None,
) -> tuple[tf.data.Dataset, int]:
    """Shuffled, augmented training batches.

    Args:
        data_dir: converted folder (manifest + shards).
        config: settings (data, augment).
        fold: train on all folds but this one (folds recorded by convert).
        seed: shuffle/augmentation seed (default `config.train.seed`).
        drop_remainder: drop the last partial batch (needed when data-parallel).
        shard: `(number of processes, this process)` for multi-process training:
            this process reads every n-th shard file (every n-th record when there
            are fewer files than processes). Shares differ in size, yet
            data-parallel processes must run the same number of steps, so with
            natural sampling and `drop_remainder` an epoch is `steps` batches
            from the share repeated endlessly and shuffled (`steps` counts `1/n`
            of the split); without `drop_remainder`, one pass over the share.
            Each process draws from its own seed (`PROCESS_SEED_STRIDE`): the
            parts of a global batch are independent draws, not one class
            sequence and one series of augmentations repeated in every process.
        box_grid: side g of the box head's feature map; > 0 yields targets
            `{"predictions": labels, "box_map": (B, g·g)}` (see `box_targets`).
        class_weight: with `box_grid`, per-example weights by label, as a third
            element (Keras takes `class_weight` only for one output).
        batch_size: examples per batch (default `data.batch_size`; a process of a
            multi-process run reads its part of the global batch).

    Returns:
        `(dataset, steps_per_epoch)`. With `sampling: balanced` the dataset repeats
        forever and draws both classes equally; otherwise it is one epoch long.
    """
    data_dir = Path(data_dir)
    manifest = load_manifest(data_dir)
    check_image_size(manifest, config, data_dir)
    seed = (config.train.seed if seed is None else seed) + PROCESS_SEED_STRIDE * shard[1]
    deterministic = config.data.deterministic
    batch = config.data.batch_size if batch_size is None else batch_size
    records = _records(data_dir, manifest, "train", fold, shard, deterministic)
    if config.data.cache:
        records = records.cache()
    count = _training_count(manifest, fold) // shard[0]
    # Data-parallel processes must all run `steps` steps (see `shard`).
    equal_steps = config.data.sampling == "natural" and shard[0] > 1 and drop_remainder
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
        if equal_steps:
            # An endless stream of the share, cut to `steps` batches below.
            # Repeating before shuffling keeps one shuffle per epoch: tf.data
            # reshuffles on every pass, and read-ahead past the end of a pass
            # would reshuffle at a point that depends on timing.
            records = records.repeat()
        records = records.shuffle(
            config.data.shuffle_buffer, seed=seed, reshuffle_each_iteration=True
        )
    steps = count // batch if drop_remainder else -(-count // batch)
    if steps < 1:
        raise UserError(
            f"the training data ({count} examples) is smaller than one batch of {batch}; "
            "lower data.batch_size"
        )
    size = config.data.image_size
    if box_grid and config.augment.on_device:
        raise UserError(
            "augment.on_device does not work with box supervision (train.box_loss_weight > 0): "
            "the box targets must move with the image, and the host computes them"
        )
    if config.augment.on_device:
        check_on_device(config.augment)
    augmenter = Augmenter(config.augment, seed)
    smoothing = config.augment.label_smoothing

    def smooth(labels: tf.Tensor) -> tf.Tensor:
        # Label smoothing of the training targets (the loss sees soft targets);
        # class weights still follow the hard label.
        return labels * (1.0 - smoothing) + smoothing / 2.0 if smoothing else labels

    if box_grid:
        weights = tf.constant([float((class_weight or {}).get(c, 1.0)) for c in (0, 1)], tf.float32)

        def augment(b: Mapping[str, tf.Tensor]) -> tuple[Any, ...]:
            images, masks = augmenter(b["image"], b["box_mask"])
            targets = {PREDICTIONS: smooth(b["label"]), BOX_MAP: box_targets(masks, box_grid)}
            if class_weight is None:
                return images, targets
            return images, targets, tf.gather(weights, tf.argmax(b["label"], axis=-1))

    elif config.augment.on_device:
        # The model's training step augments (`models.augmented`); the host only batches.
        def augment(b: Mapping[str, tf.Tensor]) -> tuple[Any, ...]:
            return b["image"], smooth(b["label"])

    else:

        def augment(b: Mapping[str, tf.Tensor]) -> tuple[Any, ...]:
            return augmenter(b["image"]), smooth(b["label"])

    batches = records.map(
        lambda e: decode(e, size, with_boxes=bool(box_grid)),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    ).batch(batch, drop_remainder=drop_remainder or config.data.sampling == "balanced")
    if equal_steps:
        batches = batches.take(steps)
    dataset = (
        batches.map(
            augment,
            # The Keras layers draw from a stateful seed generator: parallel calls
            # would advance it in a racy order, so a deterministic run augments
            # one batch at a time (the ops inside are still vectorised).
            **({} if deterministic else {"num_parallel_calls": AUTOTUNE, "deterministic": False}),
        )
        .prefetch(AUTOTUNE)
        .with_options(_options(deterministic))
    )
    if equal_steps or (config.data.sampling == "natural" and shard == (1, 0)):
        # Filters hide the length from tf.data; Keras needs it to size epochs.
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    return dataset, steps


def _training_count(manifest: Manifest, fold: int | None) -> int:
    if fold is None:
        return int(manifest.splits["train"].count)
    return sum(1 for f in manifest.folds.values() if f != fold)


def evaluation_dataset(
    data_dir: str | Path,
    split: str,
    config: Config,
    fold: int | None = None,
    drop_remainder: bool = False,
    box_grid: int = 0,
    batch_size: int | None = None,
) -> tf.data.Dataset:
    """Batches of `(images, labels)` of a split in file order, without augmentation.

    With `box_grid` > 0, targets are `{"predictions": labels, "box_map": (B, g·g)}`
    as in `training_dataset` (validation of a model with a box head). `batch_size`
    defaults to `data.batch_size`.
    """
    data_dir = Path(data_dir)
    manifest = load_manifest(data_dir)
    check_image_size(manifest, config, data_dir)
    if split not in manifest.splits:
        raise UserError(f"unknown split {split!r}; known: {', '.join(manifest.splits)}")
    size = config.data.image_size
    records = _records(data_dir, manifest, split, fold, (1, 0), deterministic=True, sequential=True)
    if fold is None:
        count = int(manifest.splits[split].count)
    else:
        count = sum(1 for f in manifest.folds.values() if (f == fold) == (split == "val"))
    batch = config.data.batch_size if batch_size is None else batch_size
    batches = count // batch if drop_remainder else -(-count // batch)
    if box_grid:
        records = records.map(
            lambda e: decode(e, size, with_boxes=True), num_parallel_calls=AUTOTUNE
        ).map(
            lambda d: (
                d["image"],
                {PREDICTIONS: d["label"], BOX_MAP: box_targets(d["box_mask"][None], box_grid)[0]},
            )
        )
    else:
        records = records.map(lambda e: decode(e, size), num_parallel_calls=AUTOTUNE).map(
            lambda d: (d["image"], d["label"])
        )
    return (
        records.batch(batch, drop_remainder=drop_remainder)
        .prefetch(AUTOTUNE)
        # Filters hide the length from tf.data; Keras needs it to size the loop.
        .apply(tf.data.experimental.assert_cardinality(batches))
    )
