"""TFRecord example schema, sharded writer, manifest and shard validation.

One `tf.train.Example` per example (keys in `FEATURES`, described key by key in
the manual's docs/concepts/records.md): per patient in RSNA conversions, per
image in the `folders` and `findings` layouts, whose `patients.csv` says which
patient each example id belongs to
(`read_patients`, `patient_ids`). Shards are named
`<split>-00003-of-00016.tfrecord`; every file is written under a temporary name
and renamed when complete, so a shard or manifest that is visible is whole.
The manifest is `records/manifest.py`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf

from pneumokeras.errors import UserError
from pneumokeras.records.manifest import MANIFEST, load_manifest
from pneumokeras.records.tables import PATIENTS, PATIENTS_COLUMNS
from pneumokeras.utils.fileio import atomic_path, read_csv_table

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/patient_id": tf.io.FixedLenFeature([], tf.string),
    "image/label": tf.io.FixedLenFeature([], tf.int64),
    "image/boxes": tf.io.VarLenFeature(tf.float32),
    "image/view": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/class": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


def shard_name(split: str, index: int, count: int) -> str:
    """`train-00003-of-00016.tfrecord`."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def _feature(value: Any) -> tf.train.Feature:
    """One typed feature: bytes/str, int, or a list of floats."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    if isinstance(value, int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(value)))


def serialize_example(
    png: bytes,
    patient_id: str,
    label: int,
    boxes: Sequence[Sequence[float]] = (),
    view: str = "",
    detailed_class: str = "",
) -> bytes:
    """Serialises one patient to `tf.train.Example` bytes (deterministically).

    Args:
        png: 8-bit grayscale PNG, square.
        patient_id: RSNA patientId.
        label: 1 = pneumonia, 0 = not.
        boxes: `(x, y, w, h)` per box, fractions of the original image.
        view: `AP`, `PA` or ''.
        detailed_class: RSNA detailed class or ''.
    """
    flat_boxes = [float(v) for box in boxes for v in box]
    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                "image/encoded": _feature(png),
                "image/patient_id": _feature(patient_id),
                "image/label": _feature(int(label)),
                "image/boxes": _feature(flat_boxes),
                "image/view": _feature(view),
                "image/class": _feature(detailed_class),
            }
        )
    )
    # The features map has no defined order unless asked: byte-identical reruns.
    return example.SerializeToString(deterministic=True)


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one serialized example into a dict of tensors (boxes as (N, 4))."""
    parsed = tf.io.parse_single_example(serialized, FEATURES)
    parsed["image/boxes"] = tf.reshape(tf.sparse.to_dense(parsed["image/boxes"]), [-1, 4])
    return parsed


def write_shard(path: Path, examples: Iterable[bytes]) -> int:
    """Writes serialized examples to `path` atomically; returns how many."""
    count = 0
    with atomic_path(path) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
        for example in examples:
            writer.write(example)
            count += 1
    return count


def read_split(data_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """Reads every example of a split eagerly (small data, tests, evaluation).

    Returns:
        One dict per example with numpy/python values; boxes as (N, 4) float32.

    Raises:
        UserError: unknown split, missing or corrupt shard, or a count that
            differs from the manifest.
    """
    data_dir = Path(data_dir)
    info = load_manifest(data_dir).split(split)
    files = [str(data_dir / name) for name in info.files]
    records = []
    try:
        for serialized in tf.data.TFRecordDataset(files):
            parsed = parse_example(serialized)
            records.append(
                {
                    "png": parsed["image/encoded"].numpy(),
                    "patient_id": parsed["image/patient_id"].numpy().decode(),
                    "label": int(parsed["image/label"].numpy()),
                    "boxes": parsed["image/boxes"].numpy(),
                    "view": parsed["image/view"].numpy().decode(),
                    "class": parsed["image/class"].numpy().decode(),
                }
            )
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
        raise UserError(
            f"a shard of split {split!r} in {data_dir} is corrupt: {err.message.splitlines()[0]}"
        ) from err
    if len(records) != info.count:
        raise UserError(f"split {split!r} has {len(records)} examples; manifest says {info.count}")
    return records


def read_patients(data_dir: str | Path) -> dict[str, str]:
    """Example id → patient of a converted folder, from the `patients.csv` its manifest names.

    An RSNA folder has no such file (one DICOM per patient: an example's id is its
    patient) and gets an empty mapping, which `patient_ids` reads as the identity.

    Returns:
        `{example id: patient}`; empty when the manifest names no grouping file.

    Raises:
        UserError: no or unreadable manifest, a named file that is missing, or a
            malformed one (another header, a row without two non-empty cells, an
            example id given twice).
    """
    data_dir = Path(data_dir)
    grouping = load_manifest(data_dir).grouping
    name = grouping.file if grouping is not None else None
    if not name:
        return {}
    path = data_dir / name
    if not path.is_file():
        raise UserError(f"{path} (named in {data_dir / MANIFEST}) is missing; re-run convert")
    patients: dict[str, str] = {}
    for line, row in enumerate(read_csv_table(path, PATIENTS_COLUMNS), start=2):
        if len(row) != 2 or not all(row):
            raise UserError(f"{path} line {line}: expected example id,patient; got {row!r}")
        if row[0] in patients:
            raise UserError(f"{path} line {line}: example id {row[0]!r} is given twice")
        patients[row[0]] = row[1]
    return patients


def patient_ids(example_ids: Iterable[str], patients: Mapping[str, str]) -> list[str]:
    """The patient of each example: `patients[id]`, or the id itself when `patients` is empty.

    Args:
        example_ids: `image/patient_id` values of the examples.
        patients: `read_patients` of their folder.

    Raises:
        UserError: an example id a non-empty mapping lacks (a patients.csv of
            another conversion).
    """
    if not patients:
        return list(example_ids)
    out = []
    for example in example_ids:
        if example not in patients:
            raise UserError(
                f"example {example!r} has no row in {PATIENTS}: the file belongs to another "
                "conversion; re-run convert"
            )
        out.append(patients[example])
    return out
