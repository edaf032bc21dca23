"""The model card: one schema, one reader and writer; the calibrated classifier."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from model_fixtures import contract_model

from pneumokeras.errors import UserError
from pneumokeras.evaluation.calibration import calibrate
from pneumokeras.models import model_card
from pneumokeras.models.model_card import ModelCard

SIZE = 16


def test_card_round_trips_and_validates():
    card = ModelCard(
        input_size=SIZE,
        threshold=0.3,
        threshold_method="youden",
        temperature=1.5,
        validation={"auc": 0.9},
        best_epoch=3,
    )
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card
    assert card.fitted
    assert not ModelCard(input_size=SIZE).fitted
    assert ModelCard(input_size=SIZE).class_names == ("normal", "pneumonia")
    for bad, message in [
        ({"threshold": 1.5}, "threshold must be in"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"temperature": float("nan")}, "temperature must be > 0"),
        ({"input_size": 0}, "input_size must be a positive integer"),
        ({"input_size": True}, "input_size must be a positive integer"),
        ({"class_names": ("a",)}, "class_names must be two names"),
        ({"threshold_method": "guess"}, "threshold_method must be one of"),
    ]:
        with pytest.raises(ValueError, match=message):
            card.replace(**bad)


def test_training_data_record_old_and_new_cards_load(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"")
    old_data = {
        "data_dir": "/d/rsna",
        "source": "stage_2_train_images",
        "image_size": SIZE,
        "fingerprint": "aaaa",
        "splits": {"train": {"count": 8, "positives": 2}},
    }
    new_data = {**old_data, "source_layout": "folders", "images": 8, "patients": 5}
    for data in (old_data, new_data):  # cards written before and after the data facts grew
        written = ModelCard(input_size=SIZE, data=data)
        model_card.write_card(tmp_path, written)
        assert model_card.read_card(tmp_path) == written
        assert dict(model_card.read_card(tmp_path).data) == data
    old_file = {**ModelCard(input_size=SIZE).to_dict(), "data": old_data}
    (tmp_path / "model.json").write_text(json.dumps(old_file))
    assert "source_layout" not in model_card.read_card(tmp_path).data


def test_read_card_errors_are_one_line(tmp_path):
    model = tmp_path / "model.keras"
    model.write_bytes(b"")
    with pytest.raises(UserError, match="has no model card"):
        model_card.read_card(model)
    card = tmp_path / "model.json"
    for text, message in [
        ("{not json", "is unreadable"),
        ("[1, 2]", "is not a JSON object"),
        (json.dumps({"input_size": SIZE}), "missing class_names, threshold, temperature"),
        (json.dumps({**ModelCard(input_size=SIZE).to_dict(), "threshold": -1}), "threshold"),
        (json.dumps({**ModelCard(input_size=SIZE).to_dict(), "surprise": 1}), None),
    ]:
        card.write_text(text)
        if message is None:  # unknown keys are ignored (cards from later versions)
            assert model_card.read_card(tmp_path).input_size == SIZE
            continue
        with pytest.raises(UserError, match=message) as info:
            model_card.read_card(model)
        assert "\n" not in str(info.value)


def test_paths_accept_run_folders_and_name_cards_after_the_model(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        model_card.model_file(tmp_path / "none.keras")
    with pytest.raises(UserError, match=r"folder without model.keras"):
        model_card.model_file(tmp_path)
    (tmp_path / "model.keras").write_bytes(b"")
    assert model_card.model_file(tmp_path) == tmp_path / "model.keras"
    assert model_card.card_path(tmp_path) == tmp_path / "model.json"
    (tmp_path / "ensemble.keras").write_bytes(b"")
    assert model_card.card_path(tmp_path / "ensemble.keras") == tmp_path / "ensemble.json"
    written = model_card.write_card(tmp_path / "ensemble.keras", ModelCard(input_size=SIZE))
    assert written == tmp_path / "ensemble.json"
    assert model_card.read_card(tmp_path / "ensemble.keras") == ModelCard(input_size=SIZE)


@pytest.mark.backend
def test_classifier_calibrates_and_decides(tmp_path):
    path = tmp_path / "model.keras"
    contract_model(SIZE).save(path)
    card = ModelCard(input_size=SIZE, threshold=0.5, threshold_method="manual", temperature=2.0)
    model_card.write_card(path, card)
    classifier = model_card.load_classifier(tmp_path)
    assert classifier.card == card
    assert classifier.path == path
    assert not classifier.card_missing
    images = np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE, 1)).astype(np.float32)
    raw = np.asarray(keras.saving.load_model(path).predict(images, verbose=0))[:, 1]
    np.testing.assert_allclose(classifier.raw_probabilities(images, batch_size=2), raw, atol=1e-6)
    probs = classifier.probabilities(images[..., 0])  # (N, S, S) works too
    np.testing.assert_allclose(probs, calibrate(raw, 2.0), atol=1e-6)
    np.testing.assert_array_equal(classifier.decide(probs), (probs >= 0.5).astype(int))
    assert classifier.class_name(1) == "pneumonia"
    with pytest.raises(ValueError, match=r"images must be \(N, 16, 16, 1\)"):
        classifier.probabilities(np.zeros((1, 8, 8, 1)))
    assert classifier.raw_probabilities(np.zeros((0, SIZE, SIZE, 1))).shape == (0,)


@pytest.mark.backend
def test_load_classifier_refuses_what_breaks_the_contract(tmp_path):
    path = tmp_path / "model.keras"
    contract_model(SIZE).save(path)
    with pytest.raises(UserError, match="has no model card"):
        model_card.load_classifier(path)
    default = model_card.load_classifier(path, require_card=False)
    assert default.card_missing
    assert default.card == ModelCard(input_size=SIZE)
    model_card.write_card(path, ModelCard(input_size=SIZE * 2))
    with pytest.raises(UserError, match=r"says input size 32 but .* takes 16 px"):
        model_card.load_classifier(path)
    inputs = keras.Input((SIZE, SIZE, 3))
    rgb = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs)))
    rgb.save(tmp_path / "rgb.keras")
    with pytest.raises(UserError, match=r"expected \(None, S, S, 1\) to \(None, 2\)"):
        model_card.load_keras_model(tmp_path / "rgb.keras")
    (tmp_path / "text.keras").write_text("hello")
    with pytest.raises(UserError, match=r"not a valid .keras file"):
        model_card.load_keras_model(tmp_path / "text.keras")
