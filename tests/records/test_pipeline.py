import numpy as np
import pytest
import tensorflow as tf

from pneumokeras.config import load_config
from pneumokeras.errors import UserError
from pneumokeras.records import pipeline as data
from pneumokeras.records import tfrecords
from pneumokeras.records.manifest import load_manifest

# Tests that build the training pipeline or call the Augmenter (Keras preprocessing
# layers) are marked `backend`; the parsing, decoding and evaluation pipeline is
# plain TensorFlow and runs once.


def _config(*overrides):
    return load_config(None, ["data.image_size=64", "data.batch_size=8", *overrides])


@pytest.mark.backend
def test_training_batches_shapes_dtypes_labels(converted_dir):
    dataset, steps = data.training_dataset(converted_dir, _config())
    manifest = load_manifest(converted_dir).to_json()
    count = manifest["splits"]["train"]["count"]
    assert steps == -(-count // 8)
    seen = 0
    positives = 0
    for images, labels in dataset:
        assert images.dtype == tf.float32
        assert labels.dtype == tf.float32
        assert images.shape[1:] == (64, 64, 1)
        assert labels.shape[1:] == (2,)
        assert float(tf.reduce_min(images)) >= 0
        assert float(tf.reduce_max(images)) <= 255
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


@pytest.mark.backend
def test_augmentation_is_deterministic_for_a_seed(converted_dir):
    a = _first_batches(converted_dir, seed=3)
    b = _first_batches(converted_dir, seed=3)
    c = _first_batches(converted_dir, seed=4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_decode_eager_equals_inside_tf_data(converted_dir):
    files = [
        str(converted_dir / n)
        for n in load_manifest(converted_dir).to_json()["splits"]["val"]["files"]
    ]
    raw = next(iter(tf.data.TFRecordDataset(files)))
    eager = data.decode(data.parse(raw), 64)
    graph = next(
        iter(tf.data.TFRecordDataset(files).map(data.parse).map(lambda e: data.decode(e, 64)))
    )
    for key in ("image", "label"):
        np.testing.assert_array_equal(eager[key].numpy(), graph[key].numpy())


@pytest.mark.backend
def test_balanced_sampling_proportions(converted_dir):
    config = _config("data.sampling=balanced", "data.batch_size=16")
    dataset, _ = data.training_dataset(converted_dir, config)
    labels = np.concatenate([y.numpy()[:, 1] for _, y in dataset.take(25)])
    assert len(labels) == 400
    assert abs(labels.mean() - 0.5) < 0.08  # natural share here is about 0.3


@pytest.mark.backend
def test_folds_select_patients(converted_dir):
    manifest = load_manifest(converted_dir).to_json()
    config = _config("data.batch_size=64")
    val = data.evaluation_dataset(converted_dir, "val", config, fold=1)
    n_val = sum(int(x.shape[0]) for x, _ in val)
    assert n_val == sum(1 for f in manifest["folds"].values() if f == 1)
    train, _ = data.training_dataset(converted_dir, config, fold=1)
    n_train = sum(int(x.shape[0]) for x, _ in train)
    assert n_train + n_val == len(manifest["folds"])
    with pytest.raises(UserError, match="out of range"):
        data.training_dataset(converted_dir, config, fold=7)


@pytest.mark.backend
def test_process_sharding_splits_files(converted_dir):
    config = _config("data.batch_size=64")
    counts = []
    for index in range(2):
        dataset, _ = data.training_dataset(converted_dir, config, shard=(2, index))
        counts.append(sum(int(x.shape[0]) for x, _ in dataset))
    manifest = load_manifest(converted_dir).to_json()
    assert sum(counts) == manifest["splits"]["train"]["count"]
    assert all(c > 0 for c in counts)


def test_image_size_mismatch_is_a_clear_error(converted_dir):
    with pytest.raises(UserError, match=r"data.image_size is 128"):
        data.training_dataset(converted_dir, _config("data.image_size=128"))


# ------------------------------------------------------------------ box supervision


def test_whole_batches_only_need_one_batch_of_training_data(converted_dir):
    # train asks for whole batches (one step shape); 48 training examples.
    _, steps = data.training_dataset(converted_dir, _config(), drop_remainder=True)
    assert steps == 48 // 8
    with pytest.raises(
        UserError,
        match=r"\(48 examples\) is smaller than one batch of 64; "
        "lower data.batch_size",
    ):
        data.training_dataset(converted_dir, _config("data.batch_size=64"), drop_remainder=True)


def test_box_mask_marks_pixel_centres_inside_any_box():
    # The one rasteriser: training's box targets and localization's scores use it.
    boxes = np.array([[0.1, 0.2, 0.3, 0.25], [0.5, 0.55, 0.4, 0.4]], np.float32)
    mask = data.box_mask(tf.constant(boxes), 40).numpy()
    assert mask.shape == (40, 40, 1)
    assert mask.dtype == np.float32
    rows = ((np.arange(40) + 0.5) / 40)[:, None]
    cols = ((np.arange(40) + 0.5) / 40)[None, :]
    expected = np.zeros((40, 40), bool)
    for x, y, w, h in boxes.astype(np.float32):
        expected |= (rows >= y) & (rows < y + h) & (cols >= x) & (cols < x + w)
    np.testing.assert_array_equal(mask[..., 0], expected.astype(np.float32))
    # Pixel (row 8, col 4) has its centre at (0.1125, 0.2125): inside the first box.
    assert mask[8, 4, 0] == 1
    assert mask[0, 0, 0] == 0
    assert data.box_mask(tf.zeros([0, 4]), 16).numpy().sum() == 0


def test_box_targets_are_the_covered_share_of_each_cell():
    masks = np.zeros((1, 8, 8, 1), np.float32)
    masks[0, :4, :, 0] = 1  # top half
    masks[0, 4:6, :4, 0] = 1  # half of the bottom-left cell
    targets = data.box_targets(tf.constant(masks), 2).numpy()
    np.testing.assert_allclose(targets, [[1.0, 1.0, 0.5, 0.0]])


@pytest.mark.backend
def test_training_and_validation_batches_with_box_targets(converted_dir):
    manifest = load_manifest(converted_dir).to_json()
    weights = {0: 0.7, 1: 1.9}
    dataset, _ = data.training_dataset(
        converted_dir, _config("augment.flip=false"), box_grid=4, class_weight=weights
    )
    positives_with_boxes = 0
    for images, targets, sample_weight in dataset:
        labels, boxes = targets[data.PREDICTIONS].numpy(), targets[data.BOX_MAP].numpy()
        assert images.shape[1:] == (64, 64, 1)
        assert boxes.shape[1:] == (16,)
        assert boxes.min() >= 0
        assert boxes.max() <= 1
        np.testing.assert_allclose(sample_weight, np.where(labels[:, 1] == 1, 1.9, 0.7))
        # Negatives have no box; every positive has some coverage.
        assert boxes[labels[:, 1] == 0].max(initial=0) == 0
        positives_with_boxes += int((boxes[labels[:, 1] == 1].max(axis=1) > 0).sum())
    assert positives_with_boxes == manifest["splits"]["train"]["positives"]

    records = tfrecords.read_split(converted_dir, "val")
    batches = list(data.evaluation_dataset(converted_dir, "val", _config(), box_grid=4))
    boxes = np.concatenate([t[data.BOX_MAP].numpy() for _, t in batches])
    expected = data.box_targets(
        tf.stack([data.box_mask(r["boxes"], 64) for r in records]), 4
    ).numpy()
    np.testing.assert_allclose(boxes, expected)


@pytest.mark.backend
def test_augment_on_device_leaves_the_host_batches_as_decoded(converted_dir):
    """With `augment.on_device` the pipeline only decodes and batches (the model augments)."""
    flip_only = ["augment.rotation_degrees=0", "augment.brightness=0", "augment.contrast=0"]
    config = _config("data.deterministic=true", *flip_only)
    host, _ = data.training_dataset(converted_dir, config, seed=3)
    plain, _ = data.training_dataset(
        converted_dir, _config("data.deterministic=true", "augment.on_device=true"), seed=3
    )
    reference, _ = data.training_dataset(
        converted_dir, _config("data.deterministic=true", "augment.flip=false", *flip_only),
        seed=3,
    )  # fmt: skip
    plain_images = np.concatenate([images for images, _ in plain.as_numpy_iterator()])
    reference_images = np.concatenate([images for images, _ in reference.as_numpy_iterator()])
    np.testing.assert_array_equal(plain_images, reference_images)
    flipped = np.concatenate([images for images, _ in host.as_numpy_iterator()])
    assert not np.array_equal(flipped, reference_images)  # the host flips some of them
    with pytest.raises(UserError, match=r"augment.on_device does not work with box supervision"):
        data.training_dataset(
            converted_dir, _config("augment.on_device=true"), box_grid=2, class_weight=None
        )
    on_device = _config("augment.on_device=true", "augment.gamma=0.3", "augment.noise=2")
    with pytest.raises(UserError, match=r"augment.gamma and augment.noise run on the host"):
        data.training_dataset(converted_dir, on_device)
    smoothed = _config("augment.on_device=true", "augment.label_smoothing=0.2")
    _, labels = next(iter(data.training_dataset(converted_dir, smoothed)[0]))
    np.testing.assert_allclose(np.unique(labels.numpy()), [0.1, 0.9], atol=1e-6)


def test_label_smoothing_softens_only_the_training_targets(converted_dir):
    config = _config("augment.label_smoothing=0.2", "augment.flip=false")
    _, labels = next(iter(data.training_dataset(converted_dir, config)[0]))
    np.testing.assert_allclose(np.unique(labels.numpy()), [0.1, 0.9], atol=1e-6)
    _, targets = next(iter(data.training_dataset(converted_dir, config, box_grid=4)[0]))
    np.testing.assert_allclose(np.unique(targets[data.PREDICTIONS].numpy()), [0.1, 0.9], atol=1e-6)
    _, plain = next(iter(data.evaluation_dataset(converted_dir, "val", config)))
    assert set(np.unique(plain.numpy())) == {0.0, 1.0}
