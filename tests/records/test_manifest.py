"""Tests for pneumokeras.records.manifest: the schema, its reader, writer and fingerprint.

Pure Python (no TensorFlow): shards are stand-in files, since loading a manifest
checks only that each listed shard exists with the recorded size.
"""

from __future__ import annotations

import json
import re

import pytest

from pneumokeras.errors import UserError
from pneumokeras.records.manifest import (
    MANIFEST,
    Grouping,
    Manifest,
    ShardInfo,
    SplitInfo,
    fingerprint_of,
    load_manifest,
    write_manifest,
)


def _write(out, shards=3, extra=None):
    """A folder with `shards` stand-in train shards and their manifest.json; returns the JSON."""
    names, stats = [], {}
    for k in range(shards):
        name = f"train-{k:05d}-of-{shards:05d}.tfrecord"
        (out / name).write_bytes(b"x" * (10 + k))
        names.append(name)
        stats[name] = {"count": 2, "bytes": 10 + k}
    data = {
        "image_size": 16,
        "splits": {"train": {"count": 2 * shards, "positives": 1, "files": names}},
        "shards": stats,
        **(extra or {}),
    }
    (out / MANIFEST).write_text(json.dumps(data))
    return data


def test_a_folder_of_an_earlier_version_loads_with_defaults(tmp_path):
    _write(tmp_path)
    manifest = load_manifest(tmp_path)
    assert manifest.image_size == 16
    assert manifest.splits["train"] == SplitInfo(6, 1, tuple(sorted(manifest.shards)))
    assert manifest.source_layout == "rsna"
    assert manifest.grouping is None
    assert manifest.folds == {}
    assert manifest.num_folds == 0
    assert manifest.attributes is None


def test_round_trip_keeps_every_field_and_unknown_keys(tmp_path):
    manifest = Manifest(
        image_size=64,
        splits={"train": SplitInfo(3, 1, ("train-00000-of-00001.tfrecord",))},
        shards={"train-00000-of-00001.tfrecord": ShardInfo(3, 12)},
        source="images",
        source_layout="findings",
        seed=7,
        class_weights={"0": 0.75, "1": 1.5},
        folds={"a": 0, "b": 1},
        num_folds=2,
        fold_class_weights=({"0": 1.0, "1": 1.0}, None),
        skipped=4,
        label_mapping={"column": "Finding Labels"},
        grouping=Grouping("Patient ID column", patients=2, file="patients.csv", images=3),
        kept_splits=True,
        patients_in_several_splits=1,
        notes=2,
        attributes="attributes.csv",
        extra={"written_by": "a newer version"},
    )
    (tmp_path / "train-00000-of-00001.tfrecord").write_bytes(b"y" * 12)
    write_manifest(tmp_path, manifest)
    again = load_manifest(tmp_path)
    assert again == manifest  # `stored` is not compared
    assert again.extra == {"written_by": "a newer version"}
    assert again.fingerprint == manifest.fingerprint


def test_the_fingerprint_hashes_the_stored_json_not_the_key_order():
    data = {"image_size": 16, "splits": {"train": {"count": 3}}, "seed": 0}
    fingerprint = fingerprint_of(data)
    assert re.fullmatch("[0-9a-f]{16}", fingerprint)
    reordered = {"seed": 0, "splits": {"train": {"count": 3}}, "image_size": 16}
    assert fingerprint_of(reordered) == fingerprint
    assert fingerprint_of({**data, "seed": 1}) != fingerprint


def test_the_fingerprint_of_a_loaded_folder_is_that_of_its_file(tmp_path):
    data = _write(tmp_path, extra={"some_future_key": [1, 2]})
    assert load_manifest(tmp_path).fingerprint == fingerprint_of(data)


def test_missing_shard(tmp_path):
    _write(tmp_path)
    (tmp_path / "train-00001-of-00003.tfrecord").unlink()
    with pytest.raises(UserError, match="missing"):
        load_manifest(tmp_path)


def test_truncated_shard(tmp_path):
    _write(tmp_path)
    shard = tmp_path / "train-00002-of-00003.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-1])
    with pytest.raises(UserError, match="corrupt"):
        load_manifest(tmp_path)


def test_no_manifest(tmp_path):
    with pytest.raises(UserError, match=r"no manifest.json"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"image_size": None}, "malformed"),
        ({"splits": {"train": {"count": "many", "positives": 0, "files": []}}}, "malformed"),
    ],
)
def test_a_malformed_manifest_is_one_line(tmp_path, change, message):
    _write(tmp_path, extra=change)
    with pytest.raises(UserError, match=message):
        load_manifest(tmp_path)


def test_a_manifest_without_shards_names_the_key(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"image_size": 16, "splits": {}}))
    with pytest.raises(UserError, match="lacks 'shards'"):
        load_manifest(tmp_path)


def test_unknown_split_is_one_line(tmp_path):
    _write(tmp_path)
    with pytest.raises(UserError, match="unknown split 'val'; known: train"):
        load_manifest(tmp_path).split("val")
