import numpy as np
import pytest
import tensorflow as tf

from pneumokeras import data, tfrecords
from pneumokeras.config import load_config
from pneumokeras.errors import UserError


def _config(*overrides):
    return load_config(None, ["data.image_size=64", "data.batch_size=8", *overrides])


def test_training_batches_shapes_dtypes_labels(converted_dir):
    dataset, steps = data.training_dataset(converted_dir, _config())
    manifest = tfrecords.load_manifest(converted_dir)
    count = manifest["splits"]["train"]["count"]
    assert steps == -(-count // 8)
    seen = 0
    positives = 0
    for images, labels in dataset:
        assert images.dtype == tf.float32 and labels.dtype == tf.float32
        assert images.shape[1:] == (64, 64, 1) and labels.shape[1:] == (2,)
        assert float(tf.reduce_min(images)) >= 0 and float(tf.reduce_max(images)) <= 255
        np.testing.assert_array_equal(tf.reduce_sum(labels, axis=1), 1.0)
        seen += images.shape[0]
        positives += int(tf.reduce_sum(labels[:, 1]))
    assert seen == count
    assert positives == manifest["splits"]["train"]["positives"]


def test_evaluation_order_matches_read_split(converted_dir):
    config = _config()
    records = tfrecords.read_split(converted_dir, "test")
    images, labels = [], []
    for x, y in data.evaluation_dataset(converted_dir, "test", config):
        images.append(x.numpy())
        labels.append(y.numpy())
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert labels[:, 1].tolist() == [r["label"] for r in records]
    first = tf.io.decode_png(records[0]["png"], channels=1).numpy().astype(np.float32)
    np.testing.assert_array_equal(images[0], first)


def _first_batches(converted_dir, seed, n=2):
    dataset, _ = data.training_dataset(converted_dir, _config("data.deterministic=true"), seed=seed)
    return [x.numpy() for x, _ in dataset.take(n)]


def test_augmentation_is_deterministic_for_a_seed(converted_dir):
    a = _first_batches(converted_dir, seed=3)
    b = _first_batches(converted_dir, seed=3)
    c = _first_batches(converted_dir, seed=4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_augmentation_changes_images_but_keeps_range():
    config = _config()
    images = tf.random.uniform((4, 64, 64, 1), 0, 255, seed=1)
    augmented = data.Augmenter(config.augment, seed=0)(images)
    assert augmented.shape == images.shape
    assert not np.allclose(augmented.numpy(), images.numpy())
    assert float(tf.reduce_min(augmented)) >= 0 and float(tf.reduce_max(augmented)) <= 255
    off = load_config(
        None,
        [
            "augment.flip=false",
            "augment.rotation_degrees=0",
            "augment.brightness=0",
            "augment.contrast=0",
        ],
    )
    assert data.Augmenter(off.augment, seed=0).layers == []


def test_decode_eager_equals_inside_tf_data(converted_dir):
    files = [
        str(converted_dir / n)
        for n in tfrecords.load_manifest(converted_dir)["splits"]["val"]["files"]
    ]
    raw = next(iter(tf.data.TFRecordDataset(files)))
    eager = data.decode(data.parse(raw), 64)
    graph = next(
        iter(tf.data.TFRecordDataset(files).map(data.parse).map(lambda e: data.decode(e, 64)))
    )
    for key in ("image", "label"):
        np.testing.assert_array_equal(eager[key].numpy(), graph[key].numpy())


def test_balanced_sampling_proportions(converted_dir):
    config = _config("data.sampling=balanced", "data.batch_size=16")
    dataset, _ = data.training_dataset(converted_dir, config)
    labels = np.concatenate([y.numpy()[:, 1] for _, y in dataset.take(25)])
    assert len(labels) == 400
    assert abs(labels.mean() - 0.5) < 0.08  # natural share here is about 0.3


def test_folds_select_patients(converted_dir):
    manifest = tfrecords.load_manifest(converted_dir)
    config = _config("data.batch_size=64")
    val = data.evaluation_dataset(converted_dir, "val", config, fold=1)
    n_val = sum(int(x.shape[0]) for x, _ in val)
    assert n_val == sum(1 for f in manifest["folds"].values() if f == 1)
    train, _ = data.training_dataset(converted_dir, config, fold=1)
    n_train = sum(int(x.shape[0]) for x, _ in train)
    assert n_train + n_val == len(manifest["folds"])
    with pytest.raises(UserError, match="out of range"):
        data.training_dataset(converted_dir, config, fold=7)


def test_process_sharding_splits_files(converted_dir):
    config = _config("data.batch_size=64")
    counts = []
    for index in range(2):
        dataset, _ = data.training_dataset(converted_dir, config, shard=(2, index))
        counts.append(sum(int(x.shape[0]) for x, _ in dataset))
    manifest = tfrecords.load_manifest(converted_dir)
    assert sum(counts) == manifest["splits"]["train"]["count"]
    assert all(c > 0 for c in counts)


def test_image_size_mismatch_is_a_clear_error(converted_dir):
    with pytest.raises(UserError, match="data.image_size is 128"):
        data.training_dataset(converted_dir, _config("data.image_size=128"))
