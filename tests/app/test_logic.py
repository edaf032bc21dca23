"""Tests for pneumokeras.app.logic: uploads, analysis, downloads, model panel, examples, launch.

Reading and launching are backend-independent; the analysis runs Grad-CAM
(tf-keras-vis), so those tests run under TensorFlow only (the TensorFlow pass of
`make test`), on a tiny stand-in model (`contract_model`) with a hand-written card.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import tempfile

import keras
import numpy as np
import pytest
from model_fixtures import contract_model
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from pneumokeras.app import logic as app_logic
from pneumokeras.app.logic import UploadError, read_upload
from pneumokeras.errors import UserError
from pneumokeras.io.dicom import read_dicom
from pneumokeras.models import model_card
from pneumokeras.models.model_card import ModelCard

SIZE = 32
needs_tensorflow = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="Grad-CAM (tf-keras-vis) needs TensorFlow"
)


def dicom_bytes(pixels: np.ndarray, photometric: str = "MONOCHROME2", **tags) -> bytes:
    """An uncompressed DICOM file in memory (pydicom), with extra tags."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "CR"
    ds.PatientID = "app-test"
    ds.set_pixel_data(pixels, photometric, pixels.dtype.itemsize * 8)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def png_bytes(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def examples():
    return app_logic.synthetic_examples()


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Python's temporary folder, pointed at an empty folder the test can inspect."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


# ------------------------------------------------------------------------- uploads


def test_dicom_upload_gives_the_converters_pixels(examples, tmp_path, private_tmp):
    from pneumokeras.records.convert import encode_png

    path = tmp_path / "case.dcm"
    path.write_bytes(examples[0].data)
    # What convert stores for this DICOM, decoded as training decodes it.
    stored = np.asarray(Image.open(io.BytesIO(encode_png(read_dicom(path, SIZE).pixels))))
    # Uploaded without a suffix: the content says DICOM.
    record = read_upload("case", examples[0].data, SIZE, limit_mb=10)
    np.testing.assert_array_equal(record.pixels, stored)
    assert record.format == "DICOM"
    assert record.modality == "CR"
    assert record.width == 256
    assert record.transfer_syntax_name == "JPEG Baseline (Process 1)"
    assert list(private_tmp.iterdir()) == []  # the temporary copy is gone


def test_png_and_jpeg_uploads_whatever_their_names(private_tmp):
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (20, 40), dtype=np.uint8)
    record = read_upload("scan.PNG", png_bytes(wide), SIZE, limit_mb=10)
    assert record.pixels.shape == (SIZE, SIZE)
    assert record.format == "PNG"
    assert (record.width, record.height) == (40, 20)
    # A JPEG called .png is read by its content.
    assert read_upload("photo.png", png_bytes(wide, "JPEG"), SIZE, 10).format == "JPEG"
    assert list(private_tmp.iterdir()) == []


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("empty.dcm", b"", "empty file"),
        ("notes.txt", b"patientId,Target\n", "not a DICOM, PNG or JPEG file"),
        ("fake.dcm", b"no preamble here", "not a DICOM file"),
        ("broken.png", b"\x89PNG\r\n\x1a\n truncated", "truncated or corrupt image"),
        ("frames.dcm", dicom_bytes(np.zeros((3, 8, 8), np.uint8)), "multi-frame (3 frames)"),
        ("colour.dcm", dicom_bytes(np.zeros((8, 8, 3), np.uint8), "RGB"), "colour image (RGB)"),
        (
            "mask.dcm",
            dicom_bytes(np.zeros((8, 8), np.uint8), Modality="SEG"),
            "non-image object (SEG)",
        ),
    ],
)
def test_bad_uploads_are_one_line_reasons(name, data, reason, private_tmp):
    with pytest.raises(UploadError) as info:
        read_upload(name, data, SIZE, limit_mb=10)
    assert str(info.value).startswith(reason)
    assert "\n" not in str(info.value)
    assert list(private_tmp.iterdir()) == []


def test_truncated_dicom_and_upload_limit(examples):
    with pytest.raises(UploadError, match=r"^truncated or corrupt pixel data$"):
        read_upload("cut.dcm", examples[0].data[:3000], SIZE, limit_mb=10)
    with pytest.raises(UploadError, match=r"^0\.0 MB is over the 0\.001 MB upload limit$"):
        read_upload("big.png", b"\x89PNG" + b"\0" * 2000, SIZE, limit_mb=0.001)


# ------------------------------------------------------------------------ analysis


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "model.keras"
    contract_model(SIZE).save(path)
    model_card.write_card(
        path, ModelCard(input_size=SIZE, threshold=0.45, threshold_method="youden", temperature=1.7)
    )
    return model_card.load_classifier(path)


@pytest.fixture(scope="module")
def explainer(classifier):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("Grad-CAM (tf-keras-vis) needs TensorFlow")
    from pneumokeras.explain.cam import HeatmapExplainer

    return HeatmapExplainer(classifier.model, "gradcam", "")


@needs_tensorflow
def test_analyse_predicts_explains_and_scores(classifier, explainer, examples):
    positive = examples[0]
    result = app_logic.analyse_upload(
        classifier,
        explainer,
        positive.name,
        positive.data,
        10,
        target="pneumonia",
        tta=3,
        source="synthetic",
        truth=1,
        boxes=positive.boxes,
    )
    assert result.ok
    assert result.source == "synthetic"
    pixels = result.record.pixels[None, :, :, None]
    assert result.probability == pytest.approx(float(classifier.probabilities(pixels)[0]))
    assert result.label == int(result.probability >= 0.45)
    assert result.threshold == 0.45
    assert result.class_name == ("pneumonia" if result.label else "normal")
    assert result.heatmap.shape == (SIZE, SIZE)
    assert 0 <= result.heatmap.min() <= 1
    assert result.explained == "pneumonia"
    assert result.layer == "bn"
    assert result.pointing_game in (True, False)
    assert 0 <= result.energy_in_boxes <= 1
    count, mean, std = result.tta
    assert count == 3
    assert 0 <= mean <= 1
    assert std >= 0
    assert app_logic.shown_text(result) == "Grad-CAM of 'pneumonia' at bn"
    png = app_logic.overlay_png(result, alpha=0.5)
    assert Image.open(io.BytesIO(png)).format == "PNG"

    # "predicted" explains the decided class; negatives get no localisation score.
    negative = app_logic.analyse_upload(
        classifier,
        explainer,
        "n.dcm",
        examples[2].data,
        10,
        target="predicted",
        truth=0,
        boxes=examples[2].boxes,
    )
    assert negative.explained == negative.class_name
    assert negative.pointing_game is None


@needs_tensorflow
def test_a_bad_file_is_a_result_with_its_error(classifier, explainer):
    result = app_logic.analyse_upload(classifier, explainer, "x.txt", b"hello", 10)
    assert not result.ok
    assert result.error == "not a DICOM, PNG or JPEG file"
    with pytest.raises(ValueError, match="no heatmap"):
        app_logic.overlay_png(result, 0.4)


@needs_tensorflow
def test_results_as_csv_and_json(classifier, explainer, examples):
    good = app_logic.analyse_upload(classifier, explainer, "a.dcm", examples[1].data, 10)
    bad = app_logic.analyse_upload(classifier, explainer, "b.png", b"", 10)
    rows = [app_logic.result_row(good), app_logic.result_row(bad)]
    table = list(csv.DictReader(io.StringIO(app_logic.results_csv(rows))))
    assert tuple(table[0]) == app_logic.ROW_COLUMNS
    assert float(table[0]["probability"]) == pytest.approx(good.probability)
    assert table[0]["modality"] == "CR"
    assert table[0]["heatmap"] == "Grad-CAM"
    assert table[1]["probability"] == ""
    assert table[1]["error"] == "empty file"
    payload = json.loads(app_logic.results_json(rows, app_logic.model_summary(classifier)))
    assert payload["notice"] == app_logic.RESEARCH_NOTICE
    assert payload["model"]["threshold"] == 0.45
    assert payload["model"]["temperature"] == 1.7
    assert payload["results"][0]["label"] == good.label
    assert payload["results"][1]["probability"] is None


# -------------------------------------------------------------------- model panel


def test_model_facts_from_a_full_card(classifier):
    card = classifier.card.replace(
        model_name="resnet18",
        backend="jax",
        keras_version="3.15.1",
        best_epoch=4,
        config={"model": {"filters": 32, "last_stride": 1}},
        data={
            "source": "synthetic",
            "image_size": 128,
            "splits": {"train": {"count": 480, "positives": 108}},
        },
        validation={"auc": 0.97, "loss": 0.3, "box_map_loss": 0.2, "recall": 0.9},
        calibration={
            "n": 60,
            "fitted_on": "val",
            "nll_before": 0.31,
            "nll_after": 0.28,
            "applied": True,
        },
        gradcam_layer="stack4_block2_out",
    )
    facts = dict(app_logic.model_facts(_with_card(classifier, card)))
    assert facts["architecture"].startswith("resnet18 (filters 32, last_stride 1), ")
    assert (
        facts["trained under"] == f"Keras 3.15.1, jax backend, pneumokeras {card.project_version}"
    )
    assert facts["trained on"] == "synthetic at 128 px: train 480 (108 positive)"
    assert facts["validation (epoch 4)"] == "auc 0.970, recall 0.900"
    assert facts["calibration"] == "T = 1.7, fitted on 60 val images; NLL 0.310 → 0.280"
    assert facts["threshold"] == "0.450: Youden's J on the validation split"
    assert facts["Grad-CAM layer (default)"] == "stack4_block2_out"
    assert "temperature T = 1.7" in app_logic.decision_rule(classifier)
    assert "P ≥ 0.450" in app_logic.decision_rule(classifier)
    kept = _with_card(classifier, card.replace(temperature=1.0, calibration={"applied": False}))
    assert (
        "T = 1: the temperature fitted on validation was not supported"
        in app_logic.decision_rule(kept)
    )
    assert dict(app_logic.model_facts(kept))["calibration"].endswith(
        "(fit not applied: not supported by the data)"
    )


def test_decision_rule_says_when_nothing_was_fitted(classifier):
    unfitted = _with_card(classifier, ModelCard(input_size=SIZE))
    assert "never fitted" in app_logic.decision_rule(unfitted)
    assert "run `evaluate`" in dict(app_logic.model_facts(unfitted))["threshold"]
    unfitted.card_missing = True
    assert app_logic.decision_rule(unfitted).startswith("No model card")


def _with_card(classifier, card):
    copy = model_card.Classifier(classifier.model, card, classifier.path)
    return copy


# ------------------------------------------------------------------------ examples


def test_synthetic_examples_are_dicoms_with_boxes(examples):
    assert [e.truth for e in examples] == [1, 1, 0, 0]
    for example in examples:
        assert example.data[128:132] == b"DICM"
        if example.truth:
            assert len(example.boxes) >= 1
            assert (example.boxes >= 0).all()
            assert (example.boxes[:, :2] + example.boxes[:, 2:] <= 1).all()
        else:
            assert len(example.boxes) == 0
    again = app_logic.synthetic_examples()
    assert [e.data for e in again] == [e.data for e in examples]  # made in memory, seeded


def test_split_examples_pages_and_positives():
    pixels = np.full((8, 8), 7, np.uint8)
    records = [
        {
            "png": png_bytes(pixels),
            "label": i % 2,
            "patient_id": f"p{i}",
            "boxes": np.array([[0.1, 0.1, 0.2, 0.2]] * (i % 2), np.float32),
            "view": "AP",
            "class": "",
        }
        for i in range(7)
    ]
    page, total = app_logic.split_examples(records, 2, 3)
    assert total == 7
    assert [e.name for e in page] == ["p2", "p3", "p4"]
    np.testing.assert_array_equal(page[0].pixels, pixels)
    page, total = app_logic.split_examples(records, 2, 3, positives_only=True)
    assert total == 3
    assert [e.name for e in page] == ["p5"]
    assert page[0].boxes.shape == (1, 4)


def test_localisation_summary_counts_scored_positives():
    results = [
        app_logic.Result("a", pointing_game=True, energy_in_boxes=0.6),
        app_logic.Result("b", pointing_game=False, energy_in_boxes=0.2),
        app_logic.Result("c"),
    ]
    assert app_logic.localisation_summary(results).startswith("pointing game 1 / 2 hits")
    assert "energy in boxes 0.40" in app_logic.localisation_summary(results)
    assert app_logic.localisation_summary(results[2:]) == ""


# ------------------------------------------------------------------------ launching


def test_streamlit_command(tmp_path, classifier):
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text("{}")
    argv, env = app_logic.streamlit_command(
        classifier.path.parent,
        data,
        port=8600,
        max_upload_mb=20,
        environ={"KERAS_BACKEND": "jax", "PATH": "/bin"},
    )
    assert argv[:5] == [sys.executable, "-m", "streamlit", "run", str(app_logic.APP_SCRIPT)]
    options = dict(zip(argv[5::2], argv[6::2], strict=True))
    assert options == {
        "--server.address": "127.0.0.1",
        "--server.port": "8600",
        "--server.maxUploadSize": "20",
        "--server.headless": "true",
        "--server.fileWatcherType": "none",
        "--browser.gatherUsageStats": "false",
        "--client.toolbarMode": "viewer",
    }
    assert env["KERAS_BACKEND"] == "tensorflow"
    assert env["PATH"] == "/bin"
    assert env[app_logic.MODEL_VARIABLE] == str(classifier.path.resolve())
    assert env[app_logic.DATA_VARIABLE] == str(data.resolve())
    assert env[app_logic.UPLOAD_LIMIT_VARIABLE] == "20"
    assert env[app_logic.SERVER_VARIABLE] == "1"
    assert app_logic.upload_limit_mb(env) == 20
    assert app_logic.upload_limit_mb({}) == app_logic.DEFAULT_UPLOAD_LIMIT_MB


def test_streamlit_command_refuses_bad_arguments(tmp_path, classifier):
    with pytest.raises(UserError, match="does not exist"):
        app_logic.streamlit_command(tmp_path / "none.keras")
    with pytest.raises(UserError, match=r"has no manifest.json"):
        app_logic.streamlit_command(classifier.path, tmp_path)
    with pytest.raises(UserError, match="--port"):
        app_logic.streamlit_command(classifier.path, port=0)
    with pytest.raises(UserError, match="--max-upload-mb"):
        app_logic.streamlit_command(classifier.path, max_upload_mb=0)


def test_cli_app_without_a_model_is_one_line(capsys, monkeypatch, tmp_path):
    from pneumokeras.cli import main

    monkeypatch.chdir(tmp_path)
    for argv, message in (
        (["app"], "run `make demo` first"),
        (["app", "--model", str(tmp_path / "x.keras")], "does not exist"),
    ):
        with pytest.raises(SystemExit) as done:
            main(argv)
        err = capsys.readouterr().err
        assert done.value.code == 2
        assert len(err.strip().splitlines()) == 1
        assert message in err


def test_keep_keras_session_only_in_the_apps_server(monkeypatch):
    cleared = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda free_memory=True: cleared.append(1))
    assert not app_logic.keep_keras_session({})
    keras.backend.clear_session()
    assert cleared == [1]
    assert app_logic.keep_keras_session({app_logic.SERVER_VARIABLE: "1"})
    keras.backend.clear_session()  # what Streamlit calls after each run: now nothing happens
    assert cleared == [1]
