"""Tests for pneumokeras.predict and examples/other_app.py.

An untrained stand-in model at 32 px (see `contract_model`) with a hand-written
model.json; DICOMs from `synth.generate`. Checks that predict feeds the model the
converter's pixels, that PNG/JPEG/DICOM and broken files give the right rows, and
that the stand-alone example prints predict's probability. Runs under
KERAS_BACKEND=tensorflow and jax.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_fixtures import contract_model
from PIL import Image

from pneumokeras import evaluate, predict
from pneumokeras.convert import encode_png
from pneumokeras.dicom import read_dicom, resize_square
from pneumokeras.errors import UserError
from pneumokeras.synth import IMAGES_DIR, generate

SIZE = 32
META = {
    "class_names": ["normal", "pneumonia"],
    "input_size": SIZE,
    "threshold": 0.45,
    "temperature": 1.7,
}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run") / "model.keras"
    contract_model(SIZE).save(path)
    path.with_name("model.json").write_text(json.dumps(META))
    return path


@pytest.fixture(scope="module")
def dicoms(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("synth")
    generate(root, patients=3, size=64, seed=2, workers=0, progress=False)
    return sorted((root / IMAGES_DIR).glob("*.dcm"))


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    """A non-square PNG, a JPEG, and a 16-bit PNG, in nested folders, odd-case suffixes."""
    rng = np.random.default_rng(0)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    paths = {
        "png": tmp_path / "in" / "wide.PNG",
        "jpeg": tmp_path / "in" / "sub" / "photo.JpEg",
        "png16": tmp_path / "in" / "sub" / "deep.png",
    }
    Image.fromarray(rng.integers(0, 256, (40, 70), dtype=np.uint8)).save(paths["png"])
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(
        paths["jpeg"], format="JPEG"
    )
    Image.fromarray(rng.integers(0, 4096, (48, 48), dtype=np.uint16)).save(paths["png16"])
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    return paths


def _model_probability(model_path: Path, pixels: np.ndarray, temperature: float) -> float:
    """The calibrated probability for (S, S) uint8 pixels, straight through the model."""
    model = keras.saving.load_model(model_path)
    raw = model.predict(pixels[None, :, :, None].astype(np.float32), verbose=0)[0, 1]
    return float(evaluate.calibrate(raw, temperature))


# ---------------------------------------------------------------- preprocessing


def test_dicom_pixels_equal_the_converters(dicoms, model_path, tmp_path):
    dcm = dicoms[0]
    # What convert stores (read_dicom → PNG) and what training decodes (decode_png).
    stored = encode_png(read_dicom(dcm, size=SIZE).pixels)
    trained_on = tf.io.decode_png(stored, channels=1).numpy()[..., 0]
    pixels, patient_id = predict.load_image(dcm, SIZE)
    assert pixels.dtype == np.uint8 and pixels.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(pixels, trained_on)
    assert patient_id == read_dicom(dcm).patient_id != ""

    # The same DICOM, and the converter's PNG of it, predict identically, and equal
    # the model run directly on the training pixels.
    png = tmp_path / "converted.png"
    png.write_bytes(stored)
    rows = predict.predict_files(model_path, [str(dcm), str(png)])
    assert rows[0]["probability"] == pytest.approx(rows[1]["probability"], abs=1e-6)
    assert rows[0]["probability"] == pytest.approx(
        _model_probability(model_path, trained_on, META["temperature"]), abs=1e-6
    )
    assert rows[0]["patient_id"] == patient_id and rows[1]["patient_id"] == ""


def test_png_and_jpeg_are_padded_and_box_resized(images):
    wide = np.array(Image.open(images["png"]))
    pixels, patient_id = predict.load_image(images["png"], SIZE)
    np.testing.assert_array_equal(pixels, resize_square(wide, SIZE))
    assert patient_id == ""
    # Centred on black: the padded top and bottom rows stay 0.
    assert pixels[0].max() == 0 and pixels[-1].max() == 0

    jpeg, _ = predict.load_image(images["jpeg"], SIZE)
    expected = resize_square(np.array(Image.open(images["jpeg"]).convert("L")), SIZE)
    np.testing.assert_array_equal(jpeg, expected)


def test_16_bit_png_is_scaled_not_clipped(images):
    deep = np.array(Image.open(images["png16"]))
    pixels, _ = predict.load_image(images["png16"], 48)  # same size: no resampling
    scaled = np.rint((deep - deep.min()) * (255.0 / (deep.max() - deep.min())))
    np.testing.assert_array_equal(pixels, scaled.astype(np.uint8))
    assert pixels.min() == 0 and pixels.max() == 255


def test_find_inputs_recurses_and_ignores_case(images, dicoms):
    folder = images["png"].parent
    found = predict.find_inputs([str(folder), str(images["png"]), str(dicoms[0])])
    assert found == sorted(images.values()) + [dicoms[0]]  # duplicate dropped, .txt skipped
    with pytest.raises(UserError, match="does not exist"):
        predict.find_inputs([str(folder / "missing.dcm")])


# ---------------------------------------------------------------- rows and files


def test_rows_for_every_format_and_broken_files(model_path, dicoms, images, tmp_path):
    broken_dcm = tmp_path / "broken.dcm"
    broken_dcm.write_bytes(b"DICM? no")
    broken_png = tmp_path / "broken.png"
    broken_png.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    inputs = [str(dicoms[0]), str(broken_dcm), str(images["png"].parent), str(broken_png)]
    out = tmp_path / "out" / "predictions.csv"
    rows = predict.predict_files(model_path, inputs, out_path=out, batch_size=2)

    assert [Path(r["path"]).name for r in rows] == [
        dicoms[0].name,
        "broken.dcm",
        "deep.png",
        "photo.JpEg",
        "wide.PNG",
        "broken.png",
    ]
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["broken.dcm"]["error"] == "not a DICOM file"
    assert by_name["broken.png"]["error"]
    for row in rows:
        if row["error"]:
            assert row["probability"] is None and row["label"] is None
        else:
            assert 0.0 < row["probability"] < 1.0
            assert row["label"] == int(row["probability"] >= META["threshold"])
            assert row["class"] == META["class_names"][row["label"]]

    with open(out, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert list(written[0]) == list(predict.COLUMNS)
    assert [w["path"] for w in written] == [r["path"] for r in rows]
    assert float(written[0]["probability"]) == rows[0]["probability"]
    assert written[1]["probability"] == "" and written[1]["error"] == "not a DICOM file"

    # Batching does not change the numbers.
    single = predict.predict_files(model_path, inputs, batch_size=32)
    for a, b in zip(rows, single, strict=True):
        if a["error"]:
            assert b["error"] == a["error"]
        else:
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-6)


def test_json_output(model_path, dicoms, tmp_path):
    out = tmp_path / "p.json"
    rows = predict.predict_files(model_path, [str(d) for d in dicoms], out_path=out, fmt="json")
    assert json.loads(out.read_text()) == rows and len(rows) == 3
    assert json.loads(predict.format_rows(rows, "json")) == rows


def test_no_usable_input_is_a_user_error(model_path, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files"):
        predict.predict_files(model_path, [str(tmp_path / "empty")])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    with pytest.raises(UserError, match="none of the 1 input file"):
        predict.predict_files(model_path, [str(bad)], out_path=tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists()
    with pytest.raises(UserError, match="format"):
        predict.predict_files(model_path, [str(bad)], fmt="xml")
    with pytest.raises(UserError, match="does not exist"):
        predict.predict_files(tmp_path / "none.keras", [str(bad)])


def test_missing_model_json_uses_defaults_with_a_warning(model_path, dicoms, tmp_path, caplog):
    lone = tmp_path / "model.keras"
    lone.write_bytes(model_path.read_bytes())
    with caplog.at_level(logging.WARNING, logger="pneumokeras.predict"):
        rows = predict.predict_files(lone, [str(dicoms[0])])
    assert "no threshold; using 0.5" in caplog.text
    assert "no temperature; using 1.0" in caplog.text
    pixels, _ = predict.load_image(dicoms[0], SIZE)
    assert rows[0]["probability"] == pytest.approx(
        _model_probability(model_path, pixels, 1.0), abs=1e-6
    )
    assert rows[0]["label"] == int(rows[0]["probability"] >= 0.5)


def test_model_json_must_match_the_model(model_path, dicoms, tmp_path):
    other = tmp_path / "model.keras"
    other.write_bytes(model_path.read_bytes())
    other.with_name("model.json").write_text(json.dumps({**META, "input_size": 64}))
    with pytest.raises(UserError, match="input size 64 .* takes 32 px"):
        predict.predict_files(other, [str(dicoms[0])])


def test_tta_is_seeded_and_reports_spread(model_path, dicoms, tmp_path):
    inputs = [str(d) for d in dicoms]
    rows = predict.predict_files(model_path, inputs, tta=3, seed=1, out_path=tmp_path / "t.csv")
    again = predict.predict_files(model_path, inputs, tta=3, seed=1)
    plain = predict.predict_files(model_path, inputs)
    for row, same, base in zip(rows, again, plain, strict=True):
        assert 0 < row["tta_mean"] < 1 and row["tta_std"] >= 0
        assert row["tta_mean"] == pytest.approx(same["tta_mean"], abs=1e-6)
        assert row["tta_std"] == pytest.approx(same["tta_std"], abs=1e-6)
        assert row["probability"] == pytest.approx(base["probability"], abs=1e-6)
    header = (tmp_path / "t.csv").read_text().splitlines()[0].split(",")
    assert header[-2:] == ["tta_mean", "tta_std"]


# ---------------------------------------------------------------- the example app


def test_other_app_prints_predicts_probability(model_path, images):
    image = images["png"]
    expected = predict.predict_files(model_path, [str(image)])[0]
    # Runs the example in a fresh interpreter and checks pneumokeras was never imported.
    code = (
        "import runpy, sys; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__'); "
        "assert not [m for m in sys.modules if m.startswith('pneumokeras')], 'imported'"
    )
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(REPO / "examples" / "other_app.py"),
            str(model_path),
            str(image),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r"probability (\S+) label (\S+)", done.stdout)
    assert match, done.stdout
    assert float(match.group(1)) == pytest.approx(expected["probability"], abs=2e-6)
    assert match.group(2) == expected["class"]
