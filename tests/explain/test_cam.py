"""Tests of pneumokeras.explain.cam: layer resolution and the tf-keras-vis heatmaps.

Everything that calls tf-keras-vis runs under the TensorFlow backend only (and
is skipped under JAX). Grad-CAM is checked for faithfulness against a direct
`tf.GradientTape` computation.
"""

import keras
import numpy as np
import pytest

from pneumokeras.errors import UserError
from pneumokeras.explain import cam

SIZE = 64
needs_tensorflow = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf-keras-vis differentiates with tf.GradientTape: TensorFlow backend only",
)


def test_normalize_maps_scales_each_map_and_zeroes_flat_ones():
    maps = np.stack([np.full((4, 4), 5.0), np.arange(16.0).reshape(4, 4) + 3.0])
    out = cam._normalize_maps(maps)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0], 0.0)
    assert out[1].min() == 0.0
    assert out[1].max() == 1.0


def test_heatmaps_refuse_other_backends(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(UserError, match="KERAS_BACKEND=tensorflow"):
        cam.compute_heatmaps(None, np.zeros((1, SIZE, SIZE, 1), np.float32))


def _outputs(model, images):
    """The model's softmax outputs `(N, 2)`, straight through the model."""
    return keras.ops.convert_to_numpy(model(images, training=False)).astype(np.float64)


def _blob_images(count=4, size=SIZE, seed=0):
    """Smooth gradient + one bright blob per image + noise; (N, S, S, 1) in [0, 255]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(count):
        cx, cy = rng.uniform(0.2, 0.8, 2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 0.08**2))
        image = 60 + 60 * xx + 120 * blob + rng.normal(0, 8, (size, size))
        images.append(np.clip(image, 0, 255))
    return np.stack(images)[..., None].astype(np.float32)


@pytest.fixture(scope="module")
def tiny_model():
    from pneumokeras.models.resnet import build_resnet18

    keras.utils.set_random_seed(0)
    return build_resnet18(SIZE, filters=8)


@pytest.fixture(scope="module")
def images():
    return _blob_images()


def _reference_gradcam(model, images, layer, class_index):
    """Grad-CAM computed directly (Selvaraju et al., ICCV 2017), independent of tf-keras-vis."""
    import tensorflow as tf

    probe = keras.Model(
        model.inputs, [model.get_layer(layer).output, model.get_layer("logits").output]
    )

    # A graph, not eager: TensorFlow's eager gradients would backpropagate through
    # every layer to the input (see cam.HeatmapExplainer).
    @tf.function
    def features_and_gradients(images):
        with tf.GradientTape() as tape:
            features, logits = probe(images, training=False)
            # The class's log-odds: its logit minus the other one (see log_odds_score).
            score = tf.reduce_sum(logits[:, class_index] - logits[:, 1 - class_index])
        return features, tape.gradient(score, features)

    features, grads = features_and_gradients(tf.constant(images))
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
    upsampled = tf.image.resize(cams[..., None], images.shape[1:3], method="bilinear")[..., 0]
    upsampled = upsampled.numpy()
    low = upsampled.min(axis=(1, 2), keepdims=True)
    high = upsampled.max(axis=(1, 2), keepdims=True)
    # A map with no positive evidence is all zeros (as cam normalises it).
    return np.where(high > low, (upsampled - low) / np.maximum(high - low, 1e-12), 0.0)


@needs_tensorflow
@pytest.mark.backend
# A stage's output, and a layer inside a block (its shortcut feeds the layers after it).
@pytest.mark.parametrize("layer", ["", "stack3_block2_out", "stack3_block1_conv2"])
def test_gradcam_matches_gradient_tape(tiny_model, images, layer):
    explainer = cam.HeatmapExplainer(tiny_model, "gradcam", layer)
    maps = {}
    for target in ("pneumonia", "normal"):
        maps[target] = explainer(images, target)
        reference = _reference_gradcam(
            tiny_model, images, layer or "stack4_block2_out", cam.CLASS_INDEX[target]
        )
        informative = 0
        for ours, theirs in zip(maps[target], reference, strict=True):
            if theirs.max() == 0:
                np.testing.assert_array_equal(ours, 0.0)
                continue
            informative += 1
            assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.99
        assert informative >= 1, "every reference map is flat: pick other images"
    # Each class has its own evidence.
    assert np.abs(maps["pneumonia"] - maps["normal"]).mean() > 0.05


@needs_tensorflow
@pytest.mark.backend
@pytest.mark.parametrize("method", cam.METHODS)
def test_every_method_gives_valid_maps(tiny_model, images, method):
    count = 1 if method == "scorecam" else 2  # Score-CAM: one forward pass per channel
    # The predicted class has positive log-odds, hence evidence to show.
    maps = cam.compute_heatmaps(tiny_model, images[:count], method=method, target_class="predicted")
    assert maps.shape == images[:count].shape[:3]
    assert maps.dtype == np.float32
    assert np.all(np.isfinite(maps))
    assert maps.min() >= 0.0
    assert maps.max() <= 1.0
    assert all(m.max() == pytest.approx(1.0) for m in maps)  # no degenerate maps here


@needs_tensorflow
@pytest.mark.backend
def test_predicted_target_is_the_argmax(tiny_model, images):
    # Shift the pneumonia logit so that the predictions split between the classes.
    model = keras.models.clone_model(tiny_model)
    model.set_weights(tiny_model.get_weights())
    probs = _outputs(model, images)
    kernel, bias = model.get_layer("logits").get_weights()
    bias[1] -= np.median(np.log(probs[:, 1] / probs[:, 0]))
    model.get_layer("logits").set_weights([kernel, bias])
    argmax = np.argmax(_outputs(model, images), axis=-1)
    assert 0 < argmax.sum() < len(argmax)

    explainer = cam.HeatmapExplainer(model, "gradcam")
    np.testing.assert_array_equal(explainer.targets(images, "predicted"), argmax)
    np.testing.assert_allclose(explainer(images, "predicted"), explainer(images, list(argmax)))


@needs_tensorflow
@pytest.mark.backend
def test_layer_names_are_checked(tiny_model, images):
    assert cam.resolve_layer(tiny_model) == "stack4_block2_out"
    with pytest.raises(UserError, match=r"no layer 'stack9'.*stack4_block2_out"):
        cam.compute_heatmaps(tiny_model, images, layer="stack9")
    with pytest.raises(UserError, match="'avg_pool' has no"):
        cam.compute_heatmaps(tiny_model, images, layer="avg_pool")
    with pytest.raises(UserError, match="unknown explain method"):
        cam.compute_heatmaps(tiny_model, images, method="lime")


@pytest.mark.backend
def test_upsampling_keeps_cells_over_their_pixels():
    # Half-pixel centres: a 2-cell ramp becomes [0, 1/4, 3/4, 1] at 4 px; corner
    # alignment (tf-keras-vis' own zoom) would give [0, 1/3, 2/3, 1].
    ramp = np.array([[[0.0, 1.0], [0.0, 1.0]]], np.float32)
    up = cam._upsample(ramp, 4)
    assert up.shape == (1, 4, 4)
    np.testing.assert_allclose(up[0], np.tile([0.0, 0.25, 0.75, 1.0], (4, 1)), atol=1e-6)


@pytest.mark.backend
def test_log_odds_score_is_the_targets_logit_minus_the_others():
    logits = np.array([[1.0, 3.0], [2.0, 5.0], [0.5, -1.0]], np.float32)
    score = cam.log_odds_score([1, 0, 0])(keras.ops.convert_to_tensor(logits))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(score), [2.0, -3.0, 1.5])


@needs_tensorflow
@pytest.mark.backend
@pytest.mark.parametrize("layer", ["stack3_block2_out", "stack3_block1_conv2"])
def test_split_at_layer_gives_the_models_output(tiny_model, images, layer):
    activations, head = cam.split_at_layer(tiny_model, layer)
    inputs = activations(images)
    assert inputs[0].shape[1:] == tiny_model.get_layer(layer).output.shape[1:]
    # Inside a block the head also reads the block's input (the shortcut).
    assert len(inputs) == (2 if layer.endswith("conv2") else 1)
    np.testing.assert_allclose(
        _outputs(head, inputs), _outputs(tiny_model, images), rtol=1e-5, atol=1e-6
    )


_THIN_GRADCAM = """
import numpy as np
from pneumokeras.explain.cam import HeatmapExplainer
from pneumokeras.models.resnet import build_resnet18

model = build_resnet18(64, filters=8)
images = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 1)).astype("float32")
for method in ("gradcam", "gradcam++"):
    for layer in ("", "stack1_block1_conv1"):
        maps = HeatmapExplainer(model, method, layer)(images)
        assert maps.shape == (3, 64, 64), maps.shape
print("maps ok")
"""


@needs_tensorflow
def test_thin_model_gradcam_keeps_the_heap_intact(tmp_path):
    """Regression: Grad-CAM of an 8-filter ResNet18 aborted on AVX-512 CPUs.

    TensorFlow 2.21's eager oneDNN `Conv2DBackpropFilter` corrupted the heap
    ("double free or corruption", SIGABRT or SIGSEGV) when tf-keras-vis
    backpropagated through the whole model. glibc's `MALLOC_CHECK_=3` and
    `MALLOC_PERTURB_` make a corrupted heap fail at once instead of now and then:
    with the eager path this script died in every run on an AVX-512 CPU. On an
    AVX2-only CPU oneDNN picks other kernels and it passes either way.
    """
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "KERAS_BACKEND": "tensorflow",
        "MALLOC_CHECK_": "3",
        "MALLOC_PERTURB_": "165",
    }
    done = subprocess.run(
        [sys.executable, "-c", _THIN_GRADCAM],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "maps ok" in done.stdout
