"""The Streamlit page (pneumokeras/app/page.py) driven by `streamlit.testing.v1.AppTest`.

No browser (see test_browser.py for one): uploads go through the file
uploader's `set_value`; images expose no pixels, so the tests check texts and the
presence of images and download buttons. A tiny stand-in model (`contract_model`,
64 px) with a fitted-looking card keeps each page run to a few seconds. The page
computes Grad-CAM (tf-keras-vis), so these tests run in the TensorFlow pass only.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest
from model_fixtures import contract_ensemble, contract_model
from PIL import Image

from pneumokeras.app import server
from pneumokeras.app.analysis import read_upload
from pneumokeras.app.downloads import RESEARCH_NOTICE
from pneumokeras.models import model_card
from pneumokeras.models.model_card import ModelCard

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the app computes Grad-CAM (tf-keras-vis), which needs the TensorFlow backend",
)

SIZE = 64
APP = str(Path(__file__).resolve().parents[2] / "pneumokeras" / "app" / "page.py")
TIMEOUT = 120  # seconds per page run: the first one loads TensorFlow and the model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    contract_model(SIZE).save(folder / "model.keras")
    model_card.write_card(
        folder,
        ModelCard(
            input_size=SIZE,
            threshold=0.45,
            threshold_method="youden",
            temperature=1.7,
            model_name="contract",
            backend="tensorflow",
        ),
    )
    return folder


def start(monkeypatch, model: Path | str, data: Path | None = None):
    """A first page run on `model` (and `data` to browse).

    The page changes no process-wide state: Keras' `clear_session` (which Streamlit
    calls after every run) is still Keras' own afterwards.
    """
    from streamlit.testing.v1 import AppTest

    clear_session = keras.backend.clear_session
    monkeypatch.setenv(server.MODEL_VARIABLE, str(model))
    if data is None:
        monkeypatch.delenv(server.DATA_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(server.DATA_VARIABLE, str(data))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    assert keras.backend.clear_session is clear_session
    return at


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def texts(elements) -> list[str]:
    return [element.value for element in elements]


def test_model_panel_uploads_and_settings(monkeypatch, run_dir, examples):
    at = start(monkeypatch, run_dir)
    # The model panel, the research-only notice and what the number means.
    assert texts(at.warning) == [RESEARCH_NOTICE]
    panel = at.sidebar.markdown[0].value
    for line in (
        f"- **file**: {run_dir / 'model.keras'}",
        "- **architecture**: contract, ",
        f"- **input**: {SIZE} × {SIZE} px grayscale",
        "- **calibration**: T = 1.7",
        "- **threshold**: 0.450: Youden's J on the validation split",
    ):
        assert line in panel
    assert "temperature T = 1.7" in at.caption[0].value
    assert "P ≥ 0.450" in at.caption[0].value
    assert at.sidebar.selectbox(key="layer").value == "bn"

    assert at.file_uploader[0].accept_multiple_files
    chest = np.clip(np.random.default_rng(0).normal(120, 40, (50, 80)), 0, 255).astype(np.uint8)
    at.file_uploader[0].set_value(
        [
            ("patient.dcm", examples[0].data, "application/dicom"),
            ("cut.dcm", examples[0].data[:3000], "application/dicom"),
            ("chest.png", png(chest), "image/png"),
            ("notes.txt", b"not an image", "text/plain"),
            ("empty.png", b"", "image/png"),
        ]
    )
    at.run()
    assert not at.exception, at.exception

    # Two predictions: probability, label at the card's threshold, input and overlay.
    classifier = model_card.load_classifier(run_dir)
    metrics = at.metric
    assert [m.label for m in metrics] == ["P(pneumonia), calibrated"] * 2
    for metric, (name, data) in zip(
        metrics, [("p.dcm", examples[0].data), ("c.png", png(chest))], strict=True
    ):
        record = read_upload(name, data, SIZE, 10)
        expected = float(classifier.probabilities(record.pixels[None, :, :, None])[0])
        assert metric.value == f"{expected:.3f}"
    labels = [t for t in texts(at.markdown) if t.startswith("Label: ")]
    for metric, label in zip(metrics, labels, strict=True):
        decided = "pneumonia" if float(metric.value) >= 0.45 else "normal"
        assert label == f"Label: **{decided}** (threshold 0.450)"
    assert len(at.image) == 4  # as the model sees it + overlay, for each
    captions = [c for image in at.image for c in image.captions]
    assert captions.count(f"as the model sees it ({SIZE} × {SIZE} px)") == 2
    assert captions.count("Grad-CAM of 'pneumonia' at bn") == 2
    facts = next(t for t in texts(at.markdown) if "transfer syntax" in t)
    assert "- modality: CR" in facts
    assert "- transfer syntax: JPEG Baseline (Process 1)" in facts

    # Each broken file: one line on its own card; the others are still shown.
    assert texts(at.error) == [
        "cut.dcm: truncated or corrupt pixel data",
        "notes.txt: not a DICOM, PNG or JPEG file",
        "empty.png: empty file",
    ]
    buttons = [b.label for b in at.get("download_button")]
    assert buttons == ["Overlay PNG", "Overlay PNG", "Results as CSV", "Results as JSON"]

    # Settings re-draw the same uploads: another method, opacity and TTA.
    at.sidebar.radio(key="method").set_value("Grad-CAM++")
    at.sidebar.slider(key="alpha").set_value(0.7)
    at.sidebar.number_input(key="tta").set_value(4)
    at.run()
    assert not at.exception, at.exception
    captions = [c for image in at.image for c in image.captions]
    assert captions.count("Grad-CAM++ of 'pneumonia' at bn") == 2
    assert (
        sum(
            bool(re.fullmatch(r"TTA \(4 augmented copies\): [01]\.\d{3} ± \d\.\d{3}", t))
            for t in texts(at.markdown)
        )
        == 2
    )

    # Browsing needs --data: the page says how to give it.
    at.radio(key="view").set_value("Browse converted data").run()
    assert "--data DIR" in at.info[0].value


def test_gallery_and_a_converted_split(monkeypatch, run_dir, converted_dir):
    at = start(monkeypatch, run_dir, data=converted_dir)
    at.radio(key="view").set_value("Synthetic examples").run()
    assert not at.exception, at.exception
    assert len(at.metric) == 4
    assert len(at.image) == 8
    assert not at.error
    truths = [t for t in texts(at.markdown) if t.startswith("Truth: ")]
    assert len(truths) == 4
    assert all(
        re.search(r"pointing game: \*\*(hit|miss)\*\* · energy in boxes \d\.\d\d", t)
        for t in truths[:2]
    )
    assert truths[2:] == ["Truth: **normal**"] * 2
    assert any(t.startswith("Pointing game ") for t in texts(at.markdown))

    at.radio(key="view").set_value("Browse converted data").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="split").value == "test"
    assert len(at.metric) == 4
    at.checkbox(key="positives").check().run()
    assert not at.exception, at.exception
    truths = [t for t in texts(at.markdown) if t.startswith("Truth: ")]
    assert truths
    assert all("pointing game" in t for t in truths)


def test_a_missing_model_a_broken_one_and_data_of_another_size(monkeypatch, run_dir, tmp_path):
    # The page reads its environment on every run, so one AppTest sees all three.
    at = start(monkeypatch, tmp_path / "nothing")
    assert texts(at.error) == [f"model {tmp_path / 'nothing'} does not exist"]
    assert texts(at.warning) == [RESEARCH_NOTICE]
    (tmp_path / "model.keras").write_bytes(b"not a zip")
    monkeypatch.setenv(server.MODEL_VARIABLE, str(tmp_path))
    at.run()
    assert texts(at.error) == [
        f"{tmp_path / 'model.keras'} is not a valid .keras file (not a zip archive)"
    ]
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text('{"image_size": 128, "splits": {}, "shards": {}}')
    monkeypatch.setenv(server.MODEL_VARIABLE, str(run_dir))
    monkeypatch.setenv(server.DATA_VARIABLE, str(data))
    at.run()
    at.radio(key="view").set_value("Browse converted data").run()
    assert not at.exception, at.exception
    assert texts(at.error) == [f"The model takes {SIZE} px images but {data} holds 128 px images."]


def test_an_ensemble_shows_its_mean_map_and_its_members_spread(monkeypatch, tmp_path, examples):
    ensemble = contract_ensemble(SIZE, tmp_path)
    at = start(monkeypatch, ensemble)
    assert not at.error
    panel = at.sidebar.markdown[0].value
    assert "- **members**: 2 fold models (member_0, member_1)" in panel
    assert "- **out-of-fold (2 folds pooled)**: auc 0.830" in panel
    assert "Youden's J on the pooled out-of-fold predictions" in panel
    assert "epoch None" not in panel
    assert "validation split" not in panel + at.caption[0].value
    assert at.sidebar.selectbox(key="layer").label == "Layer (of each member)"
    at.file_uploader[0].set_value([("patient.dcm", examples[0].data, "application/dicom")])
    at.run()
    assert not at.exception, at.exception
    assert not at.error
    assert [m.label for m in at.metric] == ["P(pneumonia), calibrated"]
    captions = [c for image in at.image for c in image.captions]
    assert "Grad-CAM of 'pneumonia' at bn of each member" in captions
    spread = [t for t in texts(at.markdown) if t.startswith("Ensemble of 2: members' SD ")]
    assert len(spread) == 1
    assert re.fullmatch(
        r"Ensemble of 2: members' SD \d\.\d{3} \(member probabilities [01]\.\d{3}, [01]\.\d{3}\)",
        spread[0],
    )


def test_an_uncalibrated_model_and_a_broken_ensemble_card(monkeypatch, tmp_path, examples):
    run = tmp_path / "run"
    run.mkdir()
    contract_model(SIZE).save(run / "model.keras")
    model_card.write_card(run, ModelCard(input_size=SIZE))  # T = 1, never fitted
    at = start(monkeypatch, run)
    at.file_uploader[0].set_value([("patient.dcm", examples[0].data, "application/dicom")])
    at.run()
    assert not at.exception, at.exception
    assert [m.label for m in at.metric] == ["P(pneumonia), uncalibrated"]
    assert "not calibrated (T = 1, never fitted)" in at.caption[0].value
    # A card naming members the model does not hold: one line, no traceback.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.keras").write_bytes((run / "model.keras").read_bytes())
    card = json.loads((run / "model.json").read_text())
    card["members"] = [{"name": "member_0", "gradcam_layer": "bn"}]
    (broken / "model.json").write_text(json.dumps(card))
    monkeypatch.setenv(server.MODEL_VARIABLE, str(broken))
    at.run()
    assert not at.exception, at.exception
    errors = texts(at.error)
    assert len(errors) == 1
    assert errors[0].startswith("The page stopped: ")
    assert "\n" not in errors[0]
