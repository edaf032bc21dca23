"""Tests of pneumokeras.explain.explain: the command, its output files and its folder rule.

Runs call tf-keras-vis, so they run under the TensorFlow backend only (skipped
under JAX); the heatmaps themselves are tested in test_cam.py.
"""

import csv
import json
import logging
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

from pneumokeras.config import Config, ExplainConfig
from pneumokeras.errors import UserError
from pneumokeras.explain import explain
from pneumokeras.io.png import decode_png
from pneumokeras.models.model_card import CLASS_NAMES, ModelCard, write_card

ROOT = Path(__file__).resolve().parents[2]
SIZE = 64
needs_tensorflow = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf-keras-vis differentiates with tf.GradientTape: TensorFlow backend only",
)


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
        explain.explain_run("missing.keras", "out", Config(), files=["x.png"])


# ------------------------------------------------------------------ runs (TensorFlow)


@pytest.fixture(scope="module")
def tiny_model():
    from pneumokeras.models.resnet import build_resnet18

    keras.utils.set_random_seed(0)
    return build_resnet18(SIZE, filters=8)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A tiny synthetic RSNA set (30 patients, 64 px) converted to TFRecords:
    `root/synth`, `root/tfrecords`."""
    from factories import synth_and_convert

    root = tmp_path_factory.mktemp("explain-data")
    synth_and_convert(root, patients=30, synth_size=SIZE, seed=2, size=SIZE)
    return root


@pytest.fixture(scope="module")
def saved_model(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("explain-model") / "model.keras"
    tiny_model.save(path)
    return path


def _run_dir(model_file, run_dir, **card):
    """A run folder: a copy of `model_file` and a model card with `card`'s fields."""
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_file, run_dir / "model.keras")
    write_card(run_dir, ModelCard(input_size=SIZE, **card))
    return run_dir


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@needs_tensorflow
@pytest.mark.backend
def test_explain_run_on_positives_of_a_split(tiny_model, saved_model, converted, tmp_path):
    from pneumokeras.records import tfrecords

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
    assert json.loads((out / "summary.json").read_text()) == summary.to_dict()
    assert summary.method == "gradcam"
    assert summary.layer == "stack3_block2_out"
    assert summary.target_class == "pneumonia"
    assert summary.count == summary.positives_with_boxes == len(expected) == 4

    hits = [int(row["pointing_game"]) for row in rows]
    energies = [float(row["energy_in_boxes"]) for row in rows]
    assert set(hits) <= {0, 1}
    assert all(0.0 <= e <= 1.0 for e in energies)
    assert summary.pointing_game == pytest.approx(np.mean(hits))
    assert summary.energy_in_boxes == pytest.approx(np.mean(energies), abs=1e-6)
    assert all(row["true_label"] == "1" and row["explained_class"] == "pneumonia" for row in rows)

    # Probabilities are temperature-calibrated (T = 2), labels use the threshold.
    images = np.stack([decode_png(r["png"]) for r in positives[:4]])[..., None]
    raw = keras.ops.convert_to_numpy(tiny_model(images.astype(np.float32)))[:, 1]
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
@pytest.mark.backend
def test_explain_run_explains_the_thresholded_prediction(saved_model, converted, tmp_path):
    run = _run_dir(saved_model, tmp_path / "run", threshold=0.3)
    config = Config(explain=ExplainConfig(method="gradcam++", target_class="predicted", limit=6))
    summary = explain.explain_run(
        run, tmp_path / "out", config, data_dir=converted / "tfrecords", progress=False
    )
    rows = _read_csv(tmp_path / "out" / "explain.csv")
    assert summary.count == len(rows) == 3  # the whole test split
    assert summary.layer == "stack4_block2_out"
    assert summary.temperature == 1.0
    for row in rows:
        assert row["explained_class"] == CLASS_NAMES[int(row["predicted_label"])]
        assert int(row["predicted_label"]) == int(float(row["probability"]) >= 0.3)
        assert (row["pointing_game"] == "") == (row["true_label"] == "0")


@needs_tensorflow
@pytest.mark.backend
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


@needs_tensorflow
def test_an_unreadable_file_among_good_ones_is_one_line(small_model, tmp_path, oversized_png):
    good = _pngs(tmp_path / "in", "a.png", "b.png")
    shutil.copy(oversized_png, tmp_path / "in" / "huge.png")
    with pytest.raises(UserError) as info:
        explain.explain_run(small_model, tmp_path / "out", Config(), files=[tmp_path / "in"])
    assert str(info.value).startswith(f"cannot read {tmp_path / 'in' / 'huge.png'}: ")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()
    assert good  # the good files are not explained: the run is refused as a whole


def _pngs(folder, *names):
    """Grey 80 px PNGs named `names` in `folder`; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(names))
    for name in names:
        Image.fromarray(rng.integers(0, 256, (80, 80), dtype=np.uint8)).save(folder / name)
    return [folder / name for name in names]


def _folder(path):
    return sorted(p.name for p in path.iterdir())


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """The few-layer stand-in model (`contract_model`), saved: explains in about 1 s."""
    from model_fixtures import contract_model

    path = tmp_path_factory.mktemp("small-model") / "model.keras"
    contract_model(SIZE).save(path)
    return path


@pytest.fixture(scope="module")
def earlier_run(small_model, tmp_path_factory):
    """A run folder, and an explain folder written by a run on a.png and b.png."""
    root = tmp_path_factory.mktemp("earlier")
    run = _run_dir(small_model, root / "run")
    out = root / "explain"
    explain.explain_run(run, out, Config(), files=_pngs(root / "in", "a.png", "b.png"))
    assert _folder(out) == ["a.png", "b.png", "contact_sheet.png", "explain.csv", "summary.json"]
    return run, out


def _copy_of(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "out")


@needs_tensorflow
@pytest.mark.backend
def test_a_model_without_card_uses_the_defaults_and_says_so(small_model, tmp_path, caplog):
    lone = tmp_path / "lone" / "model.keras"
    lone.parent.mkdir()
    shutil.copyfile(small_model, lone)
    inputs = _pngs(tmp_path / "in", "a.png")
    with caplog.at_level(logging.WARNING, logger="pneumokeras.explain.explain"):
        summary = explain.explain_run(lone, tmp_path / "out", Config(), files=inputs)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "\n" not in warnings[0]
    assert "no model card (model.json)" in warnings[0]
    assert "threshold 0.5 and temperature 1.0" in warnings[0]
    assert (summary.threshold, summary.temperature) == (0.5, 1.0)
    row = _read_csv(tmp_path / "out" / "explain.csv")[0]
    assert int(row["predicted_label"]) == int(float(row["probability"]) >= 0.5)


@needs_tensorflow
@pytest.mark.backend
def test_a_second_run_replaces_the_first_in_its_folder(earlier_run, tmp_path):
    run, earlier = earlier_run
    out = _copy_of(earlier, tmp_path)
    summary = explain.explain_run(run, out, Config(), files=_pngs(tmp_path / "in", "c.png"))
    # Only the second run's overlays: the folder describes one run.
    assert _folder(out) == ["c.png", "contact_sheet.png", "explain.csv", "summary.json"]
    assert [row["overlay"] for row in _read_csv(out / "explain.csv")] == ["c.png"]
    assert summary.count == 1


@needs_tensorflow
@pytest.mark.backend
def test_a_folder_with_other_files_is_refused_untouched(earlier_run, tmp_path):
    run, earlier = earlier_run
    inputs = _pngs(tmp_path / "in", "a.png", "b.png")
    # Explaining into the input folder would mix inputs and outputs.
    with pytest.raises(UserError, match=r"holds files explain did not write \(a.png and 1 more\)"):
        explain.explain_run(run, inputs[0].parent, Config(), files=inputs)
    assert _folder(inputs[0].parent) == ["a.png", "b.png"]

    out = _copy_of(earlier, tmp_path)
    before = {name: (out / name).read_bytes() for name in _folder(out)}
    (out / "notes").mkdir()
    with pytest.raises(UserError, match=r"\(notes\); give an empty or new folder"):
        explain.explain_run(run, out, Config(), files=inputs)
    (out / "notes").rmdir()
    (out / "explain.csv").write_text("name,score\na,1\n")  # not explain's table any more
    before["explain.csv"] = (out / "explain.csv").read_bytes()
    with pytest.raises(UserError, match="did not write"):
        explain.explain_run(run, out, Config(), files=inputs)
    assert {name: (out / name).read_bytes() for name in _folder(out)} == before
    with pytest.raises(UserError, match="is a file, not a folder"):
        explain.explain_run(run, out / "a.png", Config(), files=inputs)
    (tmp_path / "empty").mkdir()
    assert explain._previous_outputs(tmp_path / "empty") == []


@needs_tensorflow
@pytest.mark.backend
def test_the_next_run_replaces_an_interrupted_one(earlier_run, tmp_path, monkeypatch):
    run, earlier = earlier_run
    out = _copy_of(earlier, tmp_path)

    def interrupt(overlays):
        raise KeyboardInterrupt  # after every overlay, before the tables

    with monkeypatch.context() as patch:
        patch.setattr(explain, "contact_sheet", interrupt)
        with pytest.raises(KeyboardInterrupt):
            explain.explain_run(run, out, Config(), files=_pngs(tmp_path / "two", "c.png"))
    # The earlier run's outputs are gone; the ledger lists what this one left.
    assert _folder(out) == [explain.LEDGER, "c.png"]
    (out / ".c.png.tmp-x1y2").write_bytes(b"")  # as a killed atomic write leaves it

    explain.explain_run(run, out, Config(), files=_pngs(tmp_path / "three", "d.png"))
    assert _folder(out) == ["contact_sheet.png", "d.png", "explain.csv", "summary.json"]


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
        from pneumokeras.models.resnet import build_resnet18
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
    write_card(run, ModelCard(input_size=SIZE, backend="jax"))
    return run


@needs_tensorflow
@pytest.mark.backend
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
    assert summary.count == 3
    assert summary.source == {"files": 3}
    assert summary.layer == "stack4_block2_out"
    assert summary.pointing_game is None
    assert summary.energy_in_boxes is None
    assert [row["name"] for row in rows] == [p.stem for p in dicoms] + ["chest"]
    assert [row["file"] for row in rows] == [str(p) for p in [*dicoms, png]]
    assert all(row["true_label"] == "" and row["pointing_game"] == "" for row in rows)
    assert all((out / f"{row['name']}.png").is_file() for row in rows)

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"cannot read .*broken.png"):
        explain._file_samples([broken], SIZE, limit=None)
