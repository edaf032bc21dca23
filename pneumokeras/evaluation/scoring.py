"""The evaluated images of a converted folder, and a model's scores on them.

`read_evaluated` reads a split (or `all` splits together) of a converted folder:
each example's id, label, patient (`patients.csv`, else the example itself),
view and attributes (`records.attribute_table`), in `tfrecords.read_split` order,
the order in which `predict` scores them through the tf.data evaluation
pipeline. `evaluate` and `compare` read their images through here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pneumokeras.config import Config
from pneumokeras.errors import UserError
from pneumokeras.evaluation.external import ALL_SPLITS
from pneumokeras.models.model_card import Classifier
from pneumokeras.records import pipeline, tfrecords
from pneumokeras.records.attribute_table import example_attributes, read_attributes
from pneumokeras.records.manifest import Manifest, load_manifest
from pneumokeras.sources.attributes import Attributes


@dataclasses.dataclass(frozen=True)
class SplitData:
    """The evaluated examples, in `tfrecords.read_split` order (split after split for `all`).

    Attributes:
        example_ids: (N,) str, `image/patient_id` (an RSNA patientId, an image id).
        labels: (N,) int, 1 = pneumonia.
        patients: (N,) str, the patient (not the example id; see patients.csv).
        views: (N,) str, upper case, '' when unknown.
        attributes: N `Attributes` (sex, age, view, source).
        splits: the splits read, in order.
    """

    example_ids: np.ndarray
    labels: np.ndarray
    patients: np.ndarray
    views: np.ndarray
    attributes: tuple[Attributes, ...]
    splits: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.size)


def split_names(data_dir: Path, manifest: Manifest, split: str) -> list[str]:
    """The splits `split` stands for: itself, or every non-empty one for `all`.

    Raises:
        UserError: an unknown split, or `all` of a folder without examples.
    """
    known = manifest.splits
    if split == ALL_SPLITS:
        names = [name for name, info in known.items() if info.count > 0]
        if not names:
            raise UserError(f"{data_dir} holds no examples")
        return names
    if split not in known:
        raise UserError(
            f"{data_dir} has no split {split!r} (known: {', '.join(known)}, {ALL_SPLITS})"
        )
    return [split]


def read_evaluated(data_dir: str | Path, manifest: Manifest, split: str) -> SplitData:
    """The examples of `split` (`all`: every non-empty split, concatenated).

    Raises:
        UserError: unknown or empty split, missing/corrupt shards, or a
            patients.csv / attributes.csv that does not match the examples.
    """
    data_dir = Path(data_dir)
    names = split_names(data_dir, manifest, split)
    patients = tfrecords.read_patients(data_dir)
    table = read_attributes(data_dir, manifest)
    ids: list[str] = []
    labels: list[int] = []
    views: list[str] = []
    for name in names:
        part = _read_metadata(data_dir, manifest, name)
        if not part[0]:
            raise UserError(f"split {name!r} of {data_dir} is empty")
        ids += part[0]
        labels += part[1]
        views += part[2]
    return SplitData(
        example_ids=np.array(ids, dtype=object),
        labels=np.array(labels, dtype=int),
        patients=np.array(tfrecords.patient_ids(ids, patients), dtype=object),
        views=np.array(views, dtype=object),
        attributes=tuple(example_attributes(ids, views, table, manifest.source)),
        splits=tuple(names),
    )


_METADATA = ("image/patient_id", "image/label", "image/view")


def _read_metadata(
    data_dir: Path, manifest: Manifest, split: str
) -> tuple[list[str], list[int], list[str]]:
    """Example ids, labels and views (upper case) of a split, in shard order.

    Parses only those features, many examples per call (`tf.io.parse_example` on
    batches of serialized examples): the images are not decoded, which is what
    `tfrecords.read_split` would spend most of its time on at RSNA size.

    Raises:
        UserError: a corrupt shard, or a count that differs from the manifest.
    """
    import tensorflow as tf

    info = manifest.split(split)
    features = {key: tfrecords.FEATURES[key] for key in _METADATA}
    dataset = tf.data.TFRecordDataset([str(data_dir / name) for name in info.files])
    dataset = dataset.batch(4096).map(lambda batch: tf.io.parse_example(batch, features))
    ids: list[str] = []
    labels: list[int] = []
    views: list[str] = []
    try:
        for parsed in dataset:
            ids += [v.decode() for v in parsed["image/patient_id"].numpy()]
            labels += [int(v) for v in parsed["image/label"].numpy()]
            views += [v.decode().upper() for v in parsed["image/view"].numpy()]
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
        raise UserError(
            f"a shard of split {split!r} in {data_dir} is corrupt: {err.message.splitlines()[0]}"
        ) from err
    if len(ids) != info.count:
        raise UserError(f"split {split!r} has {len(ids)} examples; manifest says {info.count}")
    return ids, labels, views


def predict(
    classifier: Classifier,
    data_dir: Path,
    names: list[str] | tuple[str, ...],
    config: Config,
    progress: bool,
) -> np.ndarray:
    """(N,) float64 raw pneumonia probabilities of the splits `names`, in shard order.

    Through `Classifier.forward`, the compiled forward pass every command shares.
    `config.data.image_size` must be the folder's (the model's input size).

    Raises:
        RuntimeError: a count that differs from the manifest, or non-finite output.
    """
    import keras

    manifest = load_manifest(data_dir)
    parts = []
    for name in names:
        count = manifest.splits[name].count
        bar = keras.utils.Progbar(count) if progress else None
        outputs = [np.zeros(0, dtype=np.float32)]
        for images, _ in pipeline.evaluation_dataset(data_dir, name, config).as_numpy_iterator():
            outputs.append(classifier.forward(images)[:, 1])
            if bar is not None:
                bar.add(len(images))
        probs = np.concatenate(outputs)
        if len(probs) != count:
            raise RuntimeError(f"split {name!r}: {len(probs)} predictions for {count} examples")
        if not np.all(np.isfinite(probs)):
            raise RuntimeError(f"the model outputs non-finite probabilities on split {name!r}")
        parts.append(probs.astype(np.float64))
    return np.concatenate(parts)
