"""Tests of pneumokeras.explain.

The localization scores are pure numpy and run under every backend; everything
that calls tf-keras-vis runs under the TensorFlow backend only. Grad-CAM is
checked for faithfulness against a direct `tf.GradientTape` computation.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from pneumokeras import explain
from pneumokeras.config import Config, ExplainConfig
from pneumokeras.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
needs_tensorflow = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf-keras-vis differentiates with tf.GradientTape: TensorFlow backend only",
)


# ------------------------------------------------------ localization scores (any backend)


def _peak(shape, row, col):
    heatmap = np.zeros(shape)
    heatmap[row, col] = 1.0
    return heatmap


def test_pointing_game_hit_and_miss():
    heatmap = _peak((10, 10), row=2, col=7)  # pixel centre at x = 0.75, y = 0.25
    assert explain.pointing_game(heatmap, [[0.6, 0.1, 0.3, 0.3]])
    assert not explain.pointing_game(heatmap, [[0.0, 0.0, 0.5, 0.5]])
    # Any of several boxes counts.
    assert explain.pointing_game(heatmap, [[0.0, 0.0, 0.5, 0.5], [0.7, 0.2, 0.1, 0.1]])


def test_pointing_game_boxes_at_the_border():
    corner = _peak((8, 8), row=7, col=7)  # centre (0.9375, 0.9375), exact in binary
    assert explain.pointing_game(corner, [[0.75, 0.75, 0.25, 0.25]])
    # Half-open boxes: one ending exactly at the centre does not contain it.
    assert not explain.pointing_game(corner, [[0.75, 0.75, 0.1875, 0.1875]])
    # A box running past the image edge still contains the edge pixels.
    assert explain.pointing_game(corner, [[0.875, 0.875, 0.5, 0.5]])
    assert explain.pointing_game(_peak((8, 8), 0, 0), [[0.0, 0.0, 0.125, 0.125]])


def test_pointing_game_without_peak_or_boxes_misses():
    everywhere = [[0.0, 0.0, 1.0, 1.0]]
    assert not explain.pointing_game(np.zeros((8, 8)), everywhere)
    assert not explain.pointing_game(np.ones((8, 8)), everywhere)
    assert not explain.pointing_game(_peak((8, 8), 3, 3), np.zeros((0, 4)))


def test_energy_in_boxes_known_fractions():
    uniform = np.ones((10, 10))
    assert explain.energy_in_boxes(uniform, [[0.0, 0.0, 0.5, 0.5]]) == pytest.approx(0.25)
    assert explain.energy_in_boxes(uniform, [[0.5, 0.5, 0.5, 0.5]]) == pytest.approx(0.25)
    # Past the right edge: only columns 8 and 9 are inside.
    assert explain.energy_in_boxes(uniform, [[0.8, 0.0, 0.4, 1.0]]) == pytest.approx(0.2)
    weighted = np.zeros((10, 10))
    weighted[1, 1], weighted[8, 8] = 3.0, 1.0
    assert explain.energy_in_boxes(weighted, [[0.0, 0.0, 0.3, 0.3]]) == pytest.approx(0.75)


def test_energy_in_boxes_counts_overlaps_once():
    uniform = np.ones((8, 8))
    # Rows/cols 0-3 and 2-5: 16 + 16 - 4 pixels of 64.
    boxes = [[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5]]
    assert explain.energy_in_boxes(uniform, boxes) == pytest.approx(28 / 64)
    single = [[0.0, 0.0, 0.5, 0.5]]
    assert explain.energy_in_boxes(uniform, single * 3) == explain.energy_in_boxes(uniform, single)
    assert explain.energy_in_boxes(uniform, [[0.0, 0.0, 1.0, 1.0]] * 2) == pytest.approx(1.0)


def test_energy_in_boxes_edge_cases():
    assert explain.energy_in_boxes(np.zeros((8, 8)), [[0.0, 0.0, 1.0, 1.0]]) == 0.0
    assert explain.energy_in_boxes(np.ones((8, 8)), np.zeros((0, 4))) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        explain.energy_in_boxes(-np.ones((8, 8)), [[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="2-D"):
        explain.energy_in_boxes(np.ones((1, 8, 8)), [[0.0, 0.0, 1.0, 1.0]])


def test_normalize_maps_scales_each_map_and_zeroes_flat_ones():
    maps = np.stack([np.full((4, 4), 5.0), np.arange(16.0).reshape(4, 4) + 3.0])
    out = explain._normalize_maps(maps)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0], 0.0)
    assert out[1].min() == 0.0 and out[1].max() == 1.0


def test_overlay_names_are_safe_and_unique():
    pixels = np.zeros((4, 4), np.uint8)
    samples = [
        explain._Sample(name=name, patient_id=name, file="", pixels=pixels)
        for name in ("a", "a", "../x y", "summary", "")
    ]
    explain._assign_names(samples)
    assert [s.name for s in samples] == ["a", "a-2", "x_y", "summary-2", "image"]


def test_explain_refuses_other_backends(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(UserError, match="KERAS_BACKEND=tensorflow"):
        explain.compute_heatmaps(None, np.zeros((1, SIZE, SIZE, 1), np.float32))
    with pytest.raises(UserError, match="KERAS_BACKEND=tensorflow"):
        explain.explain_run("missing.keras", "out", Config(), files=["x.png"])


# ------------------------------------------------------------- heatmaps (TensorFlow)


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
    from pneumokeras.resnet import build_resnet18

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
    with tf.GradientTape() as tape:
        features, logits = probe(tf.constant(images), training=False)
        # The class's log-odds: its logit minus the other one (see log_odds_score).
        score = tf.reduce_sum(logits[:, class_index] - logits[:, 1 - class_index])
    grads = tape.gradient(score, features)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
    upsampled = tf.image.resize(cams[..., None], images.shape[1:3], method="bilinear")[..., 0]
    upsampled = upsampled.numpy()
    low = upsampled.min(axis=(1, 2), keepdims=True)
    high = upsampled.max(axis=(1, 2), keepdims=True)
    # A map with no positive evidence is all zeros (as explain normalises it).
    return np.where(high > low, (upsampled - low) / np.maximum(high - low, 1e-12), 0.0)


@needs_tensorflow
@pytest.mark.parametrize("layer", ["", "stack3_block2_out"])
def test_gradcam_matches_gradient_tape(tiny_model, images, layer):
    explainer = explain.HeatmapExplainer(tiny_model, "gradcam", layer)
    maps = {}
    for target in ("pneumonia", "normal"):
        maps[target] = explainer(images, target)
        reference = _reference_gradcam(
            tiny_model, images, layer or "stack4_block2_out", explain.CLASS_INDEX[target]
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
@pytest.mark.parametrize("method", explain.METHODS)
def test_every_method_gives_valid_maps(tiny_model, images, method):
    count = 1 if method == "scorecam" else 2  # Score-CAM: one forward pass per channel
    # The predicted class has positive log-odds, hence evidence to show.
    maps = explain.compute_heatmaps(
        tiny_model, images[:count], method=method, target_class="predicted"
    )
    assert maps.shape == images[:count].shape[:3]
    assert maps.dtype == np.float32
    assert np.all(np.isfinite(maps)) and maps.min() >= 0.0 and maps.max() <= 1.0
    assert all(m.max() == pytest.approx(1.0) for m in maps)  # no degenerate maps here


@needs_tensorflow
def test_predicted_target_is_the_argmax(tiny_model, images):
    # Shift the pneumonia logit so that the predictions split between the classes.
    model = keras.models.clone_model(tiny_model)
    model.set_weights(tiny_model.get_weights())
    probs = explain.predict_probabilities(model, images)
    kernel, bias = model.get_layer("logits").get_weights()
    bias[1] -= np.median(np.log(probs[:, 1] / probs[:, 0]))
    model.get_layer("logits").set_weights([kernel, bias])
    argmax = np.argmax(explain.predict_probabilities(model, images), axis=-1)
    assert 0 < argmax.sum() < len(argmax)

    explainer = explain.HeatmapExplainer(model, "gradcam")
    np.testing.assert_array_equal(explainer.targets(images, "predicted"), argmax)
    np.testing.assert_allclose(explainer(images, "predicted"), explainer(images, list(argmax)))


@needs_tensorflow
def test_layer_names_are_checked(tiny_model, images):
    assert explain.resolve_layer(tiny_model) == "stack4_block2_out"
    with pytest.raises(UserError, match="no layer 'stack9'.*stack4_block2_out"):
        explain.compute_heatmaps(tiny_model, images, layer="stack9")
    with pytest.raises(UserError, match="'avg_pool' has no"):
        explain.compute_heatmaps(tiny_model, images, layer="avg_pool")
    with pytest.raises(UserError, match="unknown explain method"):
        explain.compute_heatmaps(tiny_model, images, method="lime")


# ------------------------------------------------------------------ runs (TensorFlow)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A tiny synthetic RSNA set (30 patients, 64 px) converted to TFRecords."""
    from pneumokeras.convert import convert
    from pneumokeras.synth import generate

    root = tmp_path_factory.mktemp("explain-data")
    generate(root / "synth", patients=30, size=SIZE, seed=2, workers=0, progress=False)
    convert(
        root / "synth" / "stage_2_train_images",
        root / "synth" / "stage_2_train_labels.csv",
        root / "tfrecords",
        size=SIZE,
        workers=0,
        progress=False,
    )
    return root


@pytest.fixture(scope="module")
def saved_model(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("explain-model") / "model.keras"
    tiny_model.save(path)
    return path


def _run_dir(model_file, run_dir, **meta):
    """A run folder: a copy of `model_file` and a model.json with `meta`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_file, run_dir / "model.keras")
    (run_dir / "model.json").write_text(json.dumps({"input_size": SIZE, **meta}))
    return run_dir


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@needs_tensorflow
def test_explain_run_on_positives_of_a_split(tiny_model, saved_model, converted, tmp_path):
    from pneumokeras import tfrecords

    run = _run_dir(
        saved_model,
        tmp_path / "run",
        threshold=0.5,
        temperature=2.0,
        gradcam_layer="stack3_block2_out",
    )
    out = tmp_path / "explain"
    summary = explain.explain_run(
        run,
        out,
        Config(),
        data_dir=converted / "tfrecords",
        split="train",
        limit=4,
        only_positives=True,
        progress=False,
    )
    positives = [r for r in tfrecords.read_split(converted / "tfrecords", "train") if r["label"]]
    expected = [r["patient_id"] for r in positives[:4]]
    rows = _read_csv(out / "explain.csv")
    assert [row["patient_id"] for row in rows] == expected
    assert tuple(rows[0]) == explain.CSV_COLUMNS
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["method"] == "gradcam" and summary["layer"] == "stack3_block2_out"
    assert summary["target_class"] == "pneumonia"
    assert summary["count"] == summary["positives_with_boxes"] == len(expected) == 4

    hits = [int(row["pointing_game"]) for row in rows]
    energies = [float(row["energy_in_boxes"]) for row in rows]
    assert set(hits) <= {0, 1} and all(0.0 <= e <= 1.0 for e in energies)
    assert summary["pointing_game"] == pytest.approx(np.mean(hits))
    assert summary["energy_in_boxes"] == pytest.approx(np.mean(energies), abs=1e-6)
    assert all(row["true_label"] == "1" and row["explained_class"] == "pneumonia" for row in rows)

    # Probabilities are temperature-calibrated (T = 2), labels use the threshold.
    images = np.stack([explain._decode_png(r["png"]) for r in positives[:4]])[..., None]
    raw = explain.predict_probabilities(tiny_model, images.astype(np.float32))[:, 1]
    calibrated = 1 / (1 + ((1 - raw) / raw) ** 0.5)
    got = np.array([float(row["probability"]) for row in rows])
    np.testing.assert_allclose(got, calibrated, atol=1e-5)
    assert [int(row["predicted_label"]) for row in rows] == list((calibrated >= 0.5).astype(int))

    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["contact_sheet.png", "explain.csv", "summary.json"] + [f"{p}.png" for p in expected]
    )  # and no temporary files left behind
    heights = [Image.open(out / row["overlay"]).size[1] for row in rows]
    assert min(heights) > 200  # overlays are figures, not bare 64 px images
    assert Image.open(out / "contact_sheet.png").size[0] > 2 * SIZE


@needs_tensorflow
def test_explain_run_explains_the_thresholded_prediction(saved_model, converted, tmp_path):
    run = _run_dir(saved_model, tmp_path / "run", threshold=0.3)
    config = Config(explain=ExplainConfig(method="gradcam++", target_class="predicted", limit=6))
    summary = explain.explain_run(
        run, tmp_path / "out", config, data_dir=converted / "tfrecords", progress=False
    )
    rows = _read_csv(tmp_path / "out" / "explain.csv")
    assert summary["count"] == len(rows) == 3  # the whole test split
    assert summary["layer"] == "stack4_block2_out" and summary["temperature"] == 1.0
    for row in rows:
        assert row["explained_class"] == explain.CLASS_NAMES[int(row["predicted_label"])]
        assert int(row["predicted_label"]) == int(float(row["probability"]) >= 0.3)
        assert (row["pointing_game"] == "") == (row["true_label"] == "0")


@needs_tensorflow
def test_explain_run_rejects_bad_requests(saved_model, converted, tmp_path):
    run = _run_dir(saved_model, tmp_path / "run")
    data = converted / "tfrecords"
    with pytest.raises(UserError, match="either image files or a data folder"):
        explain.explain_run(run, tmp_path / "out", Config(), progress=False)
    with pytest.raises(UserError, match="does not exist"):
        explain.explain_run(tmp_path / "nowhere", tmp_path / "out", Config(), data_dir=data)
    with pytest.raises(UserError, match="needs labels"):
        explain.explain_run(run, tmp_path / "out", Config(), files=["x.dcm"], only_positives=True)
    with pytest.raises(UserError, match="convert the data with --size 128"):
        explain._split_samples(data, "test", size=128, limit=5, only_positives=False)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module", autouse=True)
def _jax_build(tmp_path_factory):
    """Starts building and saving a model under JAX in a subprocess, right away.

    Its XLA compilation (~10 s of CPU) then overlaps with the TensorFlow tests
    instead of adding to them; `jax_run` waits for it.
    """
    if keras.backend.backend() != "tensorflow":
        yield None
        return
    run = tmp_path_factory.mktemp("jax-run")
    script = textwrap.dedent(
        f"""
        import keras, numpy as np
        from pneumokeras.resnet import build_resnet18
        assert keras.backend.backend() == "jax"
        keras.utils.set_random_seed(3)
        model = build_resnet18({SIZE}, filters=8)
        model.save({str(run / "model.keras")!r})
        np.savez({str(run / "weights.npz")!r}, *model.get_weights())
        """
    )
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT),
        # The random initialisers compile one XLA kernel per weight shape:
        # unoptimised code compiles several times faster.
        "XLA_FLAGS": "--xla_backend_optimization_level=0",
    }
    with open(run / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
    yield run, process
    if process.poll() is None:  # the JAX test was deselected
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def jax_run(_jax_build):
    """A run folder whose model.keras was built and saved under the JAX backend."""
    run, process = _jax_build
    returncode = process.wait(timeout=300)
    assert returncode == 0, (run / "stderr.txt").read_text()[-2000:]
    (run / "model.json").write_text(json.dumps({"input_size": SIZE, "backend": "jax"}))
    return run


@needs_tensorflow
def test_model_saved_under_jax_explains_files_under_tensorflow(jax_run, converted, tmp_path):
    model = keras.saving.load_model(jax_run / "model.keras", compile=False)
    with np.load(jax_run / "weights.npz") as saved:
        expected = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    loaded = model.get_weights()
    assert len(loaded) == len(expected) == len(model.weights)
    for got, want in zip(loaded, expected, strict=True):
        np.testing.assert_array_equal(got, want)

    dicoms = sorted((converted / "synth" / "stage_2_train_images").glob("*.dcm"))[:2]
    png = tmp_path / "inputs" / "chest.png"
    png.parent.mkdir()
    Image.fromarray(np.full((80, 80), 128, np.uint8)).save(png)
    out = tmp_path / "out"
    summary = explain.explain_run(jax_run, out, Config(), files=[*dicoms, png.parent])
    rows = _read_csv(out / "explain.csv")
    assert summary["count"] == 3 and summary["source"] == {"files": 3}
    assert summary["layer"] == "stack4_block2_out"
    assert summary["pointing_game"] is None and summary["energy_in_boxes"] is None
    assert [row["name"] for row in rows] == [p.stem for p in dicoms] + ["chest"]
    assert [row["file"] for row in rows] == [str(p) for p in [*dicoms, png]]
    assert all(row["true_label"] == "" and row["pointing_game"] == "" for row in rows)
    assert all((out / f"{row['name']}.png").is_file() for row in rows)

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read .*broken.png"):
        explain._file_samples([broken], SIZE, limit=None)
