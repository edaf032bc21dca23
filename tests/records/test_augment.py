"""Tests of the training augmentation (pneumokeras/records/augment.py)."""

import numpy as np
import pytest
import tensorflow as tf

from pneumokeras.config import load_config
from pneumokeras.errors import UserError
from pneumokeras.records.augment import (
    Augmenter,
    RandomAffine,
    RandomBlur,
    RandomGamma,
    RandomNoise,
    device_layers,
)

# Tests that call the Augmenter (Keras preprocessing layers) are marked `backend`;
# the two TensorFlow steps of this module run once.

ACQUISITION = ("augment.gamma=0.4", "augment.noise=8", "augment.blur=1", "augment.contrast=0.3")
EVERYTHING = ("augment.zoom=0.15", "augment.translation=0.05", *ACQUISITION)


def _augment(*overrides):
    return load_config(None, list(overrides)).augment


def _ramp(count=4, size=32):
    row = np.linspace(0.0, 255.0, size, dtype=np.float32)
    return tf.constant(np.tile(row, (count, size, 1))[..., None])


def test_random_gamma_keeps_black_and_white_and_bends_the_middle():
    images = _ramp(8)
    out = RandomGamma(0.5, seed=1)(images).numpy()
    np.testing.assert_allclose(out[:, :, 0], 0.0, atol=0.1)
    np.testing.assert_allclose(out[:, :, -1], 255.0, atol=1e-3)
    assert (np.diff(out[:, 0, :, 0], axis=-1) >= 0).all()  # still monotone
    middle = out[:, 0, 16, 0]
    assert middle.std() > 5  # each image draws its own curve
    # |ln gamma| ≤ 0.5: the middle grey stays between the curves of gamma e^±0.5.
    grey = images.numpy()[0, 0, 16, 0] / 255.0
    assert (middle >= 255 * grey ** np.exp(0.5) - 1e-3).all()
    assert (middle <= 255 * grey ** np.exp(-0.5) + 1e-3).all()


def test_random_noise_levels_per_image():
    images = tf.fill((16, 32, 32, 1), 128.0)
    noise = RandomNoise(10.0, seed=2)(images).numpy() - 128.0
    levels = noise.reshape(16, -1).std(axis=1)
    assert levels.max() <= 11.0
    assert levels.max() - levels.min() > 3.0  # levels drawn from 0 to 10
    assert abs(noise.mean()) < 0.5


@pytest.mark.backend
def test_augmentation_changes_images_but_keeps_range():
    images = tf.random.uniform((4, 64, 64, 1), 0, 255, seed=1)
    for overrides in ((), EVERYTHING):
        augmented = Augmenter(_augment(*overrides), seed=0)(images)
        assert augmented.shape == images.shape
        assert not np.allclose(augmented.numpy(), images.numpy())
        assert float(tf.reduce_min(augmented)) >= 0
        assert float(tf.reduce_max(augmented)) <= 255
    off = _augment(
        "augment.flip=false",
        "augment.rotation_degrees=0",
        "augment.brightness=0",
        "augment.contrast=0",
    )
    plain = Augmenter(off, seed=0)
    assert (plain.geometry, plain.acquisition) == (None, [])
    np.testing.assert_array_equal(plain(images).numpy(), images.numpy())
    everything = Augmenter(_augment(*EVERYTHING), seed=0)
    assert isinstance(everything.geometry, RandomAffine)
    assert [type(step).__name__ for step in everything.acquisition] == [
        "RandomGamma", "RandomContrast", "RandomBrightness", "RandomNoise", "RandomBlur",
    ]  # fmt: skip
    assert len(device_layers(_augment(*EVERYTHING, "augment.gamma=0", "augment.noise=0"), 0)) == 7
    with pytest.raises(UserError, match=r"augment\.gamma and augment\.noise run on the host"):
        device_layers(_augment(*EVERYTHING), 0)


@pytest.mark.backend
def test_augmenter_moves_masks_with_their_images():
    masks = np.zeros((6, 64, 64, 1), np.float32)
    masks[:, 10:30, 5:25] = 1
    augmenter = Augmenter(
        _augment("augment.rotation_degrees=20", "augment.translation=0.1", "augment.zoom=0.2"),
        seed=1,
    )
    images, moved = augmenter(tf.constant(masks * 255.0), tf.constant(masks))
    images, moved = images.numpy(), moved.numpy()
    # Brightness and contrast change only the image; its shape stays the mask's.
    assert not np.array_equal(moved, masks)
    assert moved.min() >= 0
    assert moved.max() <= 1
    bright = images > images.mean(axis=(1, 2, 3), keepdims=True)
    agreement = (bright == (moved > 0.5)).mean()
    assert agreement > 0.97, agreement


@pytest.mark.backend
def test_acquisition_steps_leave_the_masks_alone():
    off = ("augment.flip=false", "augment.rotation_degrees=0")
    masks = np.zeros((4, 32, 32, 1), np.float32)
    masks[:, 8:20, 4:16] = 1
    images, kept = Augmenter(_augment(*off, *ACQUISITION), seed=3)(_ramp(4), tf.constant(masks))
    np.testing.assert_array_equal(kept.numpy(), masks)
    assert not np.allclose(images.numpy(), _ramp(4).numpy())


@pytest.mark.backend
def test_a_seed_fixes_the_augmentation_in_tf_data():
    """The pipeline's use: inside tf.data, whichever Keras backend (layers run as TensorFlow)."""
    import keras

    images = tf.random.uniform((4, 32, 32, 1), 0, 255, seed=4)
    config = _augment(*EVERYTHING)

    def in_tf_data(seed: int) -> np.ndarray:
        dataset = tf.data.Dataset.from_tensors(images).map(Augmenter(config, seed=seed))
        return next(iter(dataset)).numpy()

    first = in_tf_data(7)
    np.testing.assert_allclose(first, in_tf_data(7), atol=1e-3)
    assert not np.allclose(first, in_tf_data(8))
    if keras.backend.backend() == "tensorflow":
        # Eagerly too (the Keras layers draw from the same TensorFlow generators);
        # under JAX an eager call runs them on JAX's own random numbers instead.
        np.testing.assert_allclose(Augmenter(config, seed=7)(images).numpy(), first, atol=1e-2)


def test_the_affine_step_flips_turns_shifts_and_zooms_exactly():
    image = np.zeros((1, 9, 9, 1), np.float32)
    image[0, 1, 2] = 255.0  # one bright pixel at row 1, column 2
    batch = tf.constant(np.repeat(image, 64, axis=0))
    flipped = RandomAffine(True, 0, 0, 0, seed=0)(batch).numpy()
    kinds = {tuple(np.argwhere(f[..., 0] == 255.0)[0]) for f in flipped}
    assert kinds == {(1, 2), (1, 6)}  # kept or mirrored about the centre column
    # Nothing drawn: the identity.
    np.testing.assert_array_equal(RandomAffine(False, 0, 0, 0, seed=1)(batch).numpy(), batch)
    # Rotations about the centre: the bright pixel stays at its distance from it.
    turned = RandomAffine(False, 180, 0, 0, seed=1)(batch).numpy()[..., 0]
    rows, cols = np.indices((9, 9))
    for out in turned:
        weight = out / out.sum()
        centre = ((rows * weight).sum(), (cols * weight).sum())
        assert np.hypot(centre[0] - 4, centre[1] - 4) == pytest.approx(np.hypot(3, 2), abs=0.6)
    shifted = RandomAffine(False, 0, 0.5, 0, seed=2)(batch).numpy()
    assert 0 < (shifted.reshape(64, -1).max(axis=1) < 1).sum() < 64  # some moved out
    zoomed = RandomAffine(False, 0, 0, 0.5, seed=3)(tf.fill((32, 16, 16, 1), 100.0)).numpy()
    # Zooming out leaves a black frame, zooming in keeps the image full.
    corners = zoomed[:, 0, 0, 0]
    assert (corners == 0).any()
    assert (corners == 100).any()


def test_the_blur_keeps_the_mean_and_leaves_unpicked_images_alone():
    images = tf.random.uniform((16, 32, 32, 1), 0, 255, seed=5)
    never = RandomBlur(1.0, probability=0.0, seed=0)(images).numpy()
    np.testing.assert_allclose(never, images.numpy(), atol=1e-4)
    always = RandomBlur(1.0, probability=1.0, seed=0)(images).numpy()
    blurred_std = always.reshape(16, -1).std(axis=1)
    sharp_std = images.numpy().reshape(16, -1).std(axis=1)
    assert (blurred_std <= sharp_std + 1e-3).all()  # σ from 0.1 (nearly sharp) to 1 px
    assert blurred_std.mean() < sharp_std.mean() - 5
    np.testing.assert_allclose(always.mean(), images.numpy().mean(), rtol=0.01)
    half = RandomBlur(1.0, probability=0.5, seed=0)(images).numpy()
    sharp = [np.allclose(h, i, atol=1e-4) for h, i in zip(half, images.numpy(), strict=True)]
    assert 0 < sum(sharp) < 16
