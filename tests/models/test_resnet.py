"""Tests for pneumokeras.models.resnet: shapes, names, parameter count, saving round trip.

Run under each backend (keras-hub's CI matrix):
    KERAS_BACKEND=tensorflow python -m pytest tests/test_resnet.py
    KERAS_BACKEND=jax python -m pytest tests/test_resnet.py
The round trip saves under the suite's backend and loads under both, so the two
runs together cover "saved under JAX, loaded under TensorFlow" and the reverse.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from pneumokeras.config import ModelConfig
from pneumokeras.models.resnet import LAST_CONV_LAYER, build_model, build_resnet18

SMALL = {"image_size": 64, "filters": 8}


def _pixels(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 1), dtype=np.uint8)


@pytest.fixture(scope="module")
def small_model() -> keras.Model:
    # Shared by the read-only tests: building is the slow part under JAX, where
    # every initializer op is compiled on first use.
    return build_resnet18(**SMALL)


@pytest.fixture
def restore_dtype_policy():
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)


def test_parameter_count_matches_torchvision():
    # torchvision resnet18(num_classes=2) with conv1 taking 1 channel:
    # 11,689,512 - 6,272 (conv1: 2 fewer input channels) - 511,974 (fc 1000 -> 2).
    model = build_resnet18(224)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 11_171_266
    assert model.input_shape == (None, 224, 224, 1)
    assert model.output_shape == (None, 2)
    assert model.get_layer("stack4_block2_out").output.shape == (None, 7, 7, 512)


def test_output_is_probabilities(small_model):
    model = small_model
    probs = model.predict(_pixels(3, 64), verbose=0)
    assert probs.shape == (3, 2)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(probs >= 0)


def test_layer_names_are_stable(small_model):
    model = small_model
    names = {layer.name for layer in model.layers}
    for name in [
        "image",
        "pixel_rescaling",
        "stem_conv",
        "stem_bn",
        "stem_pool",
        "stack1_block1_conv1",
        "stack1_block1_bn1",
        "stack1_block2_conv2",
        "stack3_block1_shortcut_conv",
        "stack3_block1_shortcut_bn",
        "stack4_block2_out",
        "avg_pool",
        "logits",
        "predictions",
    ]:
        assert name in names, name
    # Stage 1 keeps the stem's shape, so it has no projection shortcut.
    assert "stack1_block1_shortcut_conv" not in names
    # Grad-CAM's target is the post-ReLU output of the last residual addition.
    out = model.get_layer(LAST_CONV_LAYER["resnet18"])
    assert isinstance(out, keras.layers.Activation)
    assert out.input is model.get_layer("stack4_block2_add").output
    assert model.get_layer("predictions").get_config()["activation"] == "softmax"


def test_batch_norm_matches_torch_defaults(small_model):
    model = small_model
    bn = model.get_layer("stack2_block1_bn1")
    assert bn.momentum == pytest.approx(0.9)
    assert bn.epsilon == pytest.approx(1e-5)
    assert not any(
        layer.get_config().get("use_bias", False)
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
    )


def test_uint8_and_float_inputs_agree(small_model):
    model = small_model
    pixels = _pixels(2, 64)
    from_uint8 = model.predict(pixels, verbose=0)
    from_float = model.predict(pixels.astype(np.float32), verbose=0)
    np.testing.assert_allclose(from_uint8, from_float, atol=1e-6)


def test_dropout_adds_a_layer():
    model = build_resnet18(**SMALL, dropout=0.3)
    assert model.get_layer("head_dropout").rate == pytest.approx(0.3)


def test_mixed_precision_outputs_float32(restore_dtype_policy):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = build_resnet18(**SMALL)
    assert model.get_layer("stack1_block1_conv1").compute_dtype == "bfloat16"
    probs = model.predict(_pixels(2, 64), verbose=0)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 16}, "image_size must be ≥ 32. Received: image_size=16"),
        ({"image_size": 64.0}, "image_size must be an integer"),
        ({"image_size": 64, "filters": 0}, "filters must be an integer ≥ 1"),
        ({"image_size": 64, "num_classes": 1}, "num_classes must be an integer ≥ 2"),
        ({"image_size": 64, "dropout": 1.0}, "dropout must be in"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_resnet18(**kwargs)


def test_resnet10_is_resnet18_with_one_block_per_stage():
    # MONAI's resnet10 (BasicBlock, layers [1, 1, 1, 1]) with 1 input channel and
    # 2 classes, counted by hand: stem 3,136 + 128; stage 1 73,728 + 256; stage 2
    # 73,728 + 147,456 + 8,192 (1x1 shortcut) + 768; stage 3 294,912 + 589,824 +
    # 32,768 + 1,536; stage 4 1,179,648 + 2,359,296 + 131,072 + 3,072; fc 1,026.
    model = build_model(ModelConfig(name="resnet10"), image_size=224)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 4_900_546
    assert model.name == "resnet10"
    assert model.get_layer(LAST_CONV_LAYER["resnet10"]).output.shape == (None, 7, 7, 512)
    names = {layer.name for layer in model.layers}
    assert "stack4_block1_out" in names
    assert not any("block2" in name for name in names)
    fine = build_model(ModelConfig(name="resnet10", filters=8, last_stride=1), image_size=64)
    assert fine.get_layer("stack4_block1_out").output.shape[1:3] == (4, 4)


def test_build_model_dispatches_on_name():
    model = build_model(ModelConfig(name="resnet18", filters=8, dropout=0.1), image_size=32)
    assert model.name == "resnet18"
    assert model.get_layer("stem_conv").filters == 8
    with pytest.raises(ValueError, match="model name must be one of"):
        build_model(ModelConfig(name="vgg16"), image_size=32)  # type: ignore[arg-type]


@pytest.mark.parametrize("name, size", [("densenet121", 32), ("efficientnetv2b0", 64)])
def test_keras_applications_share_the_contract(name, size):
    model = build_model(ModelConfig(name=name), image_size=size)  # one build each: slow
    assert model.name == name
    assert model.input_shape == (None, size, size, 1)
    assert model.layers[1].name == "pixel_rescaling"
    # EfficientNetV2's own [0, 255] -> [-1, 1] rescaling must not run twice.
    assert sum(isinstance(layer, keras.layers.Rescaling) for layer in model.layers) == 1
    model.get_layer(LAST_CONV_LAYER[name])  # flat model: reachable by name
    # A plain call: `predict` would trace the whole network under TensorFlow first.
    probs = keras.ops.convert_to_numpy(model(_pixels(2, size), training=False))
    assert probs.shape == (2, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """A small ResNet18 saved under the suite's backend, its input and its output."""
    folder = tmp_path_factory.mktemp("saved")
    model = build_resnet18(**SMALL, dropout=0.2)
    # Non-trivial BN statistics, so a loader that dropped them would be caught.
    rng = np.random.default_rng(2)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0.0, 0.5, channels).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
    pixels = _pixels(4, 64, seed=1)
    model_path = folder / "model.keras"
    model.save(model_path)
    np.save(folder / "pixels.npy", pixels)
    return model_path, folder / "pixels.npy", model.predict(pixels, verbose=0)


# A fresh interpreter of the other backend, without pneumokeras, loads a saved model
# in test_cv.py (the ensemble of trained ResNet10 folds: TensorFlow → JAX in the
# TensorFlow pass, JAX → TensorFlow in the JAX pass).
def test_keras_file_round_trip_in_this_process(saved_model):
    model_path, pixels_path, expected = saved_model
    model = keras.saving.load_model(model_path, safe_mode=True)
    assert model.get_layer("head_dropout").rate == 0.2
    np.testing.assert_allclose(model.predict(np.load(pixels_path), verbose=0), expected, atol=1e-5)


def test_box_head_is_the_classifiers_own_activation_map():
    from pneumokeras.models.resnet import add_box_head

    # Seeded: with other initial weights the logits can reach ≈ 9, where recovering
    # them from float32 sigmoids (log(p / (1 - p))) loses more than the tolerance.
    keras.utils.set_random_seed(0)
    model = build_resnet18(**SMALL)
    pair, grid = add_box_head(model, LAST_CONV_LAYER["resnet18"])
    assert grid == 2  # 64 px / 32
    images = _pixels(3, 64).astype("float32")
    outputs = pair(images)
    assert set(outputs) == {"predictions", "box_map"}
    box_map = keras.ops.convert_to_numpy(outputs["box_map"])
    assert box_map.shape == (3, 4)
    assert box_map.dtype == np.float32
    # Untrained scale 1 and offset 0: the cells' logits are the map d(x, y), whose
    # mean is the image's pneumonia-minus-normal logit (pooling and Dense commute).
    cells = np.log(box_map / (1 - box_map))
    logits = keras.Model(model.input, model.get_layer("logits").output)(images)
    logits = keras.ops.convert_to_numpy(logits)
    np.testing.assert_allclose(cells.mean(axis=1), logits[:, 1] - logits[:, 0], atol=1e-4)
    # Only the difference (fixed), a scale and an offset are added; no features.
    assert len(pair.trainable_weights) == len(model.trainable_weights) + 2
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(outputs["predictions"]),
        keras.ops.convert_to_numpy(model(images)),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="no layer named"):
        add_box_head(model, "stack9_out")
    with pytest.raises(ValueError, match="square feature map"):
        add_box_head(model, "avg_pool")
    with pytest.raises(ValueError, match="not the feature map"):
        add_box_head(model, "stack3_block2_out")


def test_last_stride_one_keeps_the_third_stage_resolution():
    standard = build_resnet18(**SMALL)
    fine = build_resnet18(**SMALL, last_stride=1)
    assert standard.get_layer(LAST_CONV_LAYER["resnet18"]).output.shape[1:3] == (2, 2)
    assert fine.get_layer(LAST_CONV_LAYER["resnet18"]).output.shape[1:3] == (4, 4)
    # Same layers and weights (a stride changes no shape of a kernel).
    assert [w.shape for w in fine.weights] == [w.shape for w in standard.weights]
    assert fine(_pixels(1, 64)).shape == (1, 2)
    with pytest.raises(ValueError, match="last_stride must be 1 or 2"):
        build_resnet18(**SMALL, last_stride=4)
    with pytest.raises(ValueError, match="resnet18 and resnet10 only"):
        build_model(ModelConfig(name="densenet121", last_stride=1), 64)
