import json

import numpy as np
import pytest

from pneumokeras import tfrecords
from pneumokeras.convert import encode_png
from pneumokeras.errors import UserError


def _example(i):
    pixels = np.full((16, 16), i, dtype=np.uint8)
    boxes = [(0.1 * (i % 3), 0.2, 0.3, 0.4)] * (i % 3)
    return {
        "png": encode_png(pixels),
        "patient_id": f"patient-{i}",
        "label": int(i % 3 > 0),
        "boxes": boxes,
        "view": "AP" if i % 2 else "PA",
        "detailed_class": "Lung Opacity" if i % 3 else "Normal",
    }


def _write_dataset(out, n=23, shards=4):
    examples = [_example(i) for i in range(n)]
    per = -(-n // shards)
    names, stats = [], {}
    for k in range(shards):
        name = tfrecords.shard_name("train", k, shards)
        chunk = examples[k * per : (k + 1) * per]
        tfrecords.write_shard(
            out / name,
            (tfrecords.serialize_example(**{**e, "boxes": e["boxes"]}) for e in chunk),
        )
        names.append(name)
        stats[name] = {"count": len(chunk), "bytes": (out / name).stat().st_size}
    manifest = {
        "image_size": 16,
        "splits": {"train": {"count": n, "positives": 0, "files": names}},
        "shards": stats,
    }
    (out / tfrecords.MANIFEST).write_text(json.dumps(manifest))
    return examples


def test_shard_name():
    assert tfrecords.shard_name("train", 3, 16) == "train-00003-of-00016.tfrecord"


def test_round_trip_n_examples_k_shards(tmp_path):
    examples = _write_dataset(tmp_path)
    records = tfrecords.read_split(tmp_path, "train")
    assert len(records) == len(examples)
    for written, read in zip(examples, records, strict=True):
        assert read["png"] == written["png"]
        assert read["patient_id"] == written["patient_id"]
        assert read["label"] == written["label"]
        np.testing.assert_allclose(read["boxes"], np.reshape(written["boxes"], (-1, 4)), rtol=1e-6)
        assert read["view"] == written["view"]
        assert read["class"] == written["detailed_class"]


def test_serialization_is_deterministic():
    a = tfrecords.serialize_example(**_example(5))
    b = tfrecords.serialize_example(**_example(5))
    assert a == b


def test_missing_shard(tmp_path):
    _write_dataset(tmp_path)
    (tmp_path / tfrecords.shard_name("train", 2, 4)).unlink()
    with pytest.raises(UserError, match="missing"):
        tfrecords.load_manifest(tmp_path)


def test_truncated_shard(tmp_path):
    _write_dataset(tmp_path)
    shard = tmp_path / tfrecords.shard_name("train", 1, 4)
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(UserError, match="corrupt"):
        tfrecords.load_manifest(tmp_path)


def test_corrupt_bytes_same_size(tmp_path):
    _write_dataset(tmp_path)
    shard = tmp_path / tfrecords.shard_name("train", 1, 4)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, CRC no longer matches
    shard.write_bytes(bytes(data))
    tfrecords.load_manifest(tmp_path)  # sizes still match
    with pytest.raises(UserError, match="corrupt"):
        tfrecords.read_split(tmp_path, "train")


def test_no_manifest(tmp_path):
    with pytest.raises(UserError, match="no manifest.json"):
        tfrecords.load_manifest(tmp_path)


def test_write_shard_is_atomic_on_error(tmp_path):
    def failing():
        yield tfrecords.serialize_example(**_example(1))
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        tfrecords.write_shard(tmp_path / "train-00000-of-00001.tfrecord", failing())
    assert list(tmp_path.iterdir()) == []
