"""Fixtures of the app's tests: synthetic examples, a tiny classifier and its explainer."""

from __future__ import annotations

import io
import tempfile

import keras
import numpy as np
import pytest
from model_fixtures import contract_model
from PIL import Image

from pneumokeras.app import examples as app_examples
from pneumokeras.models import model_card
from pneumokeras.models.model_card import ModelCard

SIZE = 32


@pytest.fixture(scope="module")
def examples():
    return app_examples.synthetic_examples()


@pytest.fixture
def png_bytes():
    """`png_bytes(pixels, fmt="PNG")`: an image file in memory."""

    def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt)
        return buffer.getvalue()

    return encode


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Python's temporary folder, pointed at an empty folder the test can inspect."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A 32 px stand-in model with a fitted-looking card (threshold 0.45, T = 1.7)."""
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
    from pneumokeras.explain.explain import heatmap_explainer

    return heatmap_explainer(classifier, "gradcam", "")
