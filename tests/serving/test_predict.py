"""Tests for pneumokeras.serving.predict and examples/other_app.py.

An untrained stand-in model at 32 px (see `contract_model`) with a hand-written
model.json; DICOMs from `synth.generate`. Checks that predict feeds the model the
converter's pixels, that PNG/JPEG/DICOM and broken files give the right rows, and
that the stand-alone example prints predict's probability. The tests marked
`backend` run under KERAS_BACKEND=tensorflow and jax.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_fixtures import contract_model
from PIL import Image

from pneumokeras.errors import UserError
from pneumokeras.evaluation.calibration import calibrate
from pneumokeras.io.dicom import read_dicom
from pneumokeras.io.images import load_image
from pneumokeras.records.convert import encode_png
from pneumokeras.serving import predict

SIZE = 32
META = {
    "class_names": ["normal", "pneumonia"],
    "input_size": SIZE,
    "threshold": 0.45,
    "threshold_method": "youden",
    "temperature": 1.7,
}
REPO = Path(__file__).resolve().parents[2]

# Marked `backend` (TensorFlow and JAX): the tests where the model's numbers or its
# loading matter (the training pixels, TTA's draws, run folders and broken files, the
# example app). The rest check predict's rows, cards and warnings around the same
# model call, and run once.


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run") / "model.keras"
    contract_model(SIZE).save(path)
    path.with_name("model.json").write_text(json.dumps(META))
    return path


def _model_probability(model_path: Path, pixels: np.ndarray, temperature: float) -> float:
    """The calibrated probability for (S, S) uint8 pixels, straight through the model."""
    model = keras.saving.load_model(model_path)
    raw = model.predict(pixels[None, :, :, None].astype(np.float32), verbose=0)[0, 1]
    return float(calibrate(raw, temperature))


# ---------------------------------------------------------------- preprocessing


@pytest.mark.backend
def test_a_dicom_and_its_converted_png_predict_as_the_training_pixels(dicoms, model_path, tmp_path):
    # That predict's pixels of a DICOM are the converter's (what convert stores,
    # decoded as training decodes it) is test_images.py's
    # test_dicom_pixels_equal_the_converters; here the predictions on them agree.
    dcm = dicoms[0]
    stored = encode_png(read_dicom(dcm, size=SIZE).pixels)
    trained_on = tf.io.decode_png(stored, channels=1).numpy()[..., 0]
    patient_id = read_dicom(dcm).patient_id
    # The same DICOM, and the converter's PNG of it, predict identically, and equal
    # the model run directly on the training pixels.
    png = tmp_path / "converted.png"
    png.write_bytes(stored)
    rows = predict.predict_files(model_path, [str(dcm), str(png)])
    assert rows[0]["probability"] == pytest.approx(rows[1]["probability"], abs=1e-6)
    assert rows[0]["probability"] == pytest.approx(
        _model_probability(model_path, trained_on, META["temperature"]), abs=1e-6
    )
    assert rows[0]["patient_id"] == patient_id
    assert rows[1]["patient_id"] == ""


# ---------------------------------------------------------------- rows and files


def test_rows_for_every_format_and_broken_files(model_path, dicoms, image_files, tmp_path):
    broken_dcm = tmp_path / "broken.dcm"
    broken_dcm.write_bytes(b"DICM? no")
    broken_png = tmp_path / "broken.png"
    broken_png.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    inputs = [str(dicoms[0]), str(broken_dcm), str(image_files["png"].parent), str(broken_png)]
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
            assert row["probability"] is None
            assert row["label"] is None
        else:
            assert 0.0 < row["probability"] < 1.0
            assert row["label"] == int(row["probability"] >= META["threshold"])
            assert row["class"] == META["class_names"][row["label"]]

    with open(out, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert list(written[0]) == list(predict.COLUMNS)
    assert [w["path"] for w in written] == [r["path"] for r in rows]
    assert float(written[0]["probability"]) == rows[0]["probability"]
    assert written[1]["probability"] == ""
    assert written[1]["error"] == "not a DICOM file"

    # Batching does not change the numbers.
    single = predict.predict_files(model_path, inputs, batch_size=32)
    for a, b in zip(rows, single, strict=True):
        if a["error"]:
            assert b["error"] == a["error"]
        else:
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-6)


def test_json_output_and_the_format_of_the_out_suffix(model_path, dicoms, tmp_path, capsys):
    from pneumokeras.cli import main

    out = tmp_path / "p.json"
    rows = predict.predict_files(model_path, [str(d) for d in dicoms], out_path=out, fmt="json")
    assert json.loads(out.read_text()) == rows
    assert len(rows) == 3
    assert json.loads(predict.format_rows(rows, "json")) == rows
    # Without --format, an --out ending in .json gets JSON (CSV elsewhere).
    inferred = tmp_path / "inferred.JSON"
    main(["predict", "--model", str(model_path), str(dicoms[0]), "--out", str(inferred)])
    assert json.loads(inferred.read_text())[0]["path"] == str(dicoms[0])
    plain = tmp_path / "plain.txt"
    main(["predict", "--model", str(model_path), str(dicoms[0]), "--out", str(plain)])
    assert plain.read_text().startswith("path,patient_id,probability")
    capsys.readouterr()
    # A --format that contradicts the suffix is refused before any work.
    with pytest.raises(SystemExit) as done:
        main(
            [
                "predict",
                "--model",
                str(model_path),
                str(dicoms[0]),
                "--out",
                str(tmp_path / "x.json"),
                "--format",
                "csv",
            ]
        )
    assert done.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --out {tmp_path / 'x.json'} ends in .json but --format is csv; change one of them"
    )
    assert not (tmp_path / "x.json").exists()
    assert predict.output_format(None, None) == "csv"
    assert predict.output_format("a.csv", None) == "csv"


def test_batch_size_is_the_models_batch(model_path, tmp_path, monkeypatch):
    from pneumokeras.models.model_card import Classifier

    calls = []
    forward = Classifier.forward

    def counted(self, batch):
        calls.append(len(batch))
        return forward(self, batch)

    monkeypatch.setattr(Classifier, "forward", counted)
    folder = tmp_path / "many"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    for i in range(40):
        Image.fromarray(np.roll(pixels, i)).save(folder / f"{i:02d}.png")
    predict.predict_files(model_path, [folder], batch_size=40)
    assert calls == [40]  # one call, not Keras-sized pieces of 32
    calls.clear()
    predict.predict_files(model_path, [folder], batch_size=16)
    assert calls == [16, 16, 8]
    calls.clear()
    predict.predict_files(model_path, [folder / "00.png"], batch_size=2, tta=5)
    assert calls == [1, 2, 2, 1]  # the image, then its 5 augmented copies 2 at a time


def test_an_oversized_image_gets_its_error_row_and_the_others_are_predicted(
    model_path, image_files, oversized_png, tmp_path, capsys
):
    from pneumokeras.cli import main

    inputs = [str(image_files["png"]), str(oversized_png), str(image_files["jpeg"])]
    rows = predict.predict_files(model_path, inputs)
    assert [bool(r["error"]) for r in rows] == [False, True, False]
    assert rows[1]["probability"] is None
    assert "\n" not in rows[1]["error"]
    main(["predict", "--model", str(model_path), *inputs, "--out", str(tmp_path / "p.csv")])
    assert "predicted 2 file(s), 1 unreadable" in capsys.readouterr().err


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


def _lone_model(model_path, folder):
    folder.mkdir(exist_ok=True)
    lone = folder / "model.keras"
    lone.write_bytes(model_path.read_bytes())
    return lone


def test_missing_card_is_refused_unless_a_threshold_is_given(model_path, dicoms, tmp_path, caplog):
    lone = _lone_model(model_path, tmp_path / "lone")
    with pytest.raises(UserError, match=r"model.json is missing.*--threshold"):
        predict.predict_files(lone, [str(dicoms[0])])
    with caplog.at_level(logging.WARNING, logger="pneumokeras.serving.predict"):
        rows = predict.predict_files(lone, [str(dicoms[0])], threshold=0.3)
    assert "uncalibrated (temperature 1), threshold 0.3" in caplog.text
    pixels, _ = load_image(dicoms[0], SIZE)
    assert rows[0]["probability"] == pytest.approx(
        _model_probability(model_path, pixels, 1.0), abs=1e-6
    )
    assert rows[0]["label"] == int(rows[0]["probability"] >= 0.3)


def test_an_incomplete_or_unfitted_card_is_said_plainly(model_path, dicoms, tmp_path, caplog):
    lone = _lone_model(model_path, tmp_path / "partial")
    lone.with_name("model.json").write_text(json.dumps({"input_size": SIZE}))
    with pytest.raises(UserError, match="incomplete or invalid: missing class_names, threshold"):
        predict.predict_files(lone, [str(dicoms[0])])
    unfitted = {k: v for k, v in META.items() if k != "threshold_method"}
    lone.with_name("model.json").write_text(json.dumps(unfitted))
    with caplog.at_level(logging.WARNING, logger="pneumokeras.serving.predict"):
        rows = predict.predict_files(lone, [str(dicoms[0])])
    assert "training's defaults, not fitted" in caplog.text
    assert rows[0]["label"] == int(rows[0]["probability"] >= META["threshold"])


@pytest.mark.backend
def test_run_folders_and_broken_model_files(model_path, dicoms, tmp_path):
    rows = predict.predict_files(model_path.parent, [str(dicoms[0])])
    assert rows == predict.predict_files(model_path, [str(dicoms[0])])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"is a folder without model.keras"):
        predict.predict_files(tmp_path / "empty", [str(dicoms[0])])
    truncated = tmp_path / "cut" / "model.keras"
    truncated.parent.mkdir()
    truncated.write_bytes(model_path.read_bytes()[:2000])
    truncated.with_name("model.json").write_text(json.dumps(META))
    text = tmp_path / "text" / "model.keras"
    text.parent.mkdir()
    text.write_text("not a model")
    text.with_name("model.json").write_text(json.dumps(META))
    for bad in (truncated, text):
        with pytest.raises(UserError, match=r"is not a valid .keras file"):
            predict.predict_files(bad, [str(dicoms[0])])


def test_inputs_the_model_was_not_trained_for_are_flagged(model_path, dicoms, tmp_path):
    pydicom_data = pytest.importorskip("pydicom.data")
    mr = pydicom_data.get_testdata_file("MR_small.dcm")
    ct = pydicom_data.get_testdata_file("CT_small.dcm")
    flagged = _lone_model(model_path, tmp_path / "stats")
    # Training images of mid-grey means only: a black image is far outside.
    stats = {"images": 100, "percentiles": [0.5, 99.5], "mean": [90.0, 140.0], "std": [40.0, 70.0]}
    flagged.with_name("model.json").write_text(json.dumps({**META, "input_statistics": stats}))
    black = tmp_path / "black.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(black)
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.full((16, 16), 120, dtype=np.uint8)).save(tiny)
    rows = predict.predict_files(flagged, [mr, ct, str(black), str(tiny), str(dicoms[0])])
    by_name = {Path(r["path"]).name: r for r in rows}
    assert "modality MR is not a radiograph" in by_name["MR_small.dcm"]["warning"]
    assert "modality CT is not a radiograph" in by_name["CT_small.dcm"]["warning"]
    assert "mean grey level 0 is outside" in by_name["black.png"]["warning"]
    assert "smaller than the model's input" in by_name["tiny.png"]["warning"]
    for row in rows:  # a warning never replaces the prediction
        assert row["error"] == ""
        assert 0 < row["probability"] < 1
    # A synthetic CR chest DICOM with no recorded statistics: no warning.
    assert predict.predict_files(model_path, [str(dicoms[0])])[0]["warning"] == ""


def test_what_the_reader_did_is_noted_on_the_row(model_path, tmp_path):
    upright = np.zeros((40, 64), dtype=np.uint8)
    upright[:, :8] = 255  # a bright band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: the viewer turns it 90° clockwise
    Image.fromarray(np.rot90(upright, 1)).save(tmp_path / "turned.jpg", quality=100, exif=exif)
    Image.fromarray(upright).convert("RGB").save(tmp_path / "rgb.png")
    Image.fromarray(upright).save(tmp_path / "plain.png")
    rows = predict.predict_files(model_path, [str(tmp_path)])
    notes = {Path(r["path"]).name: r["note"] for r in rows}
    assert notes == {
        "plain.png": "",
        "rgb.png": "RGB image of a gray picture: made gray",
        "turned.jpg": "EXIF orientation 6 applied (turned 90° clockwise)",
    }
    assert all(r["error"] == "" for r in rows)


def test_model_json_must_match_the_model(model_path, dicoms, tmp_path):
    other = tmp_path / "model.keras"
    other.write_bytes(model_path.read_bytes())
    other.with_name("model.json").write_text(json.dumps({**META, "input_size": 64}))
    with pytest.raises(UserError, match=r"input size 64 .* takes 32 px"):
        predict.predict_files(other, [str(dicoms[0])])


@pytest.mark.backend
def test_tta_is_seeded_and_reports_spread(model_path, dicoms, tmp_path):
    inputs = [str(d) for d in dicoms]
    rows = predict.predict_files(model_path, inputs, tta=3, seed=1, out_path=tmp_path / "t.csv")
    again = predict.predict_files(model_path, inputs, tta=3, seed=1)
    plain = predict.predict_files(model_path, inputs)
    for row, same, base in zip(rows, again, plain, strict=True):
        assert 0 < row["tta_mean"] < 1
        assert row["tta_std"] > 0
        assert row["tta_mean"] == pytest.approx(same["tta_mean"], abs=1e-6)
        assert row["tta_std"] == pytest.approx(same["tta_std"], abs=1e-6)
        assert row["probability"] == pytest.approx(base["probability"], abs=1e-6)
    header = (tmp_path / "t.csv").read_text().splitlines()[0].split(",")
    assert header[-2:] == ["tta_mean", "tta_std"]
    # A file's TTA result does not depend on the files before it in the call.
    alone = predict.predict_files(model_path, [inputs[2]], tta=3, seed=1)[0]
    assert alone["tta_mean"] == pytest.approx(rows[2]["tta_mean"], abs=1e-6)
    assert alone["tta_std"] == pytest.approx(rows[2]["tta_std"], abs=1e-6)
    other_seed = predict.predict_files(model_path, [inputs[2]], tta=3, seed=2)[0]
    assert other_seed["tta_mean"] != pytest.approx(alone["tta_mean"], abs=1e-9)


# ---------------------------------------------------------------- the example app


def _other_app():
    """examples/other_app.py's functions (its `main` not run)."""
    return runpy.run_path(str(REPO / "examples" / "other_app.py"), run_name="other_app")


def test_other_app_reads_pixels_as_predict_and_refuses_what_it_cannot(
    image_files, dicoms, tmp_path
):
    app = _other_app()
    for name in ("png", "jpeg", "png16"):
        got = app["prepare"](str(image_files[name]), SIZE)
        assert got.shape == (1, SIZE, SIZE, 1)
        np.testing.assert_array_equal(got[0, :, :, 0], load_image(image_files[name], SIZE)[0])
    # A DICOM, whatever its name (Pillow may read its preamble as a TIFF); other formats.
    disguised = tmp_path / "scan.png"
    disguised.write_bytes(dicoms[0].read_bytes())
    with pytest.raises(app["Refused"], match=r"^a DICOM file: read it with `pneumokeras predict`"):
        app["prepare"](str(disguised), SIZE)
    tiff = tmp_path / "scan.tif"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tiff)
    with pytest.raises(app["Refused"], match=r"^unsupported format TIFF"):
        app["prepare"](str(tiff), SIZE)
    colour = tmp_path / "photo.png"
    rgb = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(colour)
    with pytest.raises(app["Refused"], match=r"^colour image"):
        app["prepare"](str(colour), SIZE)
    with pytest.raises(UserError, match="colour image"):
        load_image(colour, SIZE)  # predict refuses it too
    # The card is named after the model file: ensemble.keras → ensemble.json.
    (tmp_path / "ensemble.keras").write_bytes(b"")
    (tmp_path / "ensemble.json").write_text("{}")
    assert app["model_and_card"](str(tmp_path / "ensemble.keras"))[1] == (
        tmp_path / "ensemble.json"
    )
    (tmp_path / "lone.keras").write_bytes(b"")
    with pytest.raises(SystemExit, match=r"no model card .*lone\.json"):
        app["model_and_card"](str(tmp_path / "lone.keras"))


# Once, in the JAX pass: a fresh Keras-on-JAX interpreter starts in half the time of a
# TensorFlow one. Fresh interpreters of the other backend load saved models in
# test_cv.py (TensorFlow → JAX), test_explain.py and test_export.py (JAX → TensorFlow).
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="runs in the JAX pass")
@pytest.mark.backend
def test_other_app_prints_predicts_probabilities_of_an_ensemble(image_files, tmp_path):
    from model_fixtures import contract_ensemble

    ensemble = contract_ensemble(SIZE, tmp_path)
    tiff = tmp_path / "scan.tif"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tiff)
    images = [image_files["png"], image_files["png16"], tiff]
    expected = predict.predict_files(ensemble, [str(p) for p in images[:2]])
    # Runs the example in a fresh interpreter and checks pneumokeras was never imported.
    checked = (
        "import runpy, sys; sys.argv = sys.argv[1:]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "finally:\n    assert not [m for m in sys.modules if m.startswith('pneumokeras')]\n"
    )
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            checked,
            str(REPO / "examples" / "other_app.py"),
            str(ensemble),
            *map(str, images),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, row in zip(lines, expected, strict=True):
        match = re.fullmatch(r"(.+): probability (\S+) label (\S+)", line)
        assert match, line
        assert match.group(1) == row["path"]
        assert float(match.group(2)) == pytest.approx(row["probability"], abs=2e-6)
        assert match.group(3) == row["class"]
    assert done.stderr.strip().splitlines()[-1] == (
        f"{tiff}: error: unsupported format TIFF: this example reads PNG and JPEG"
    )
