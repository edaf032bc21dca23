"""Tests for pneumokeras.app.analysis: one image predicted, explained and scored.

The analysis runs Grad-CAM (tf-keras-vis), so these tests run under TensorFlow
only (the TensorFlow pass of `make test`), on a tiny stand-in model
(`contract_model`) with a hand-written card, and on an ensemble of two.
"""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest
from model_fixtures import contract_ensemble
from PIL import Image

from pneumokeras.app import analysis
from pneumokeras.models.model_card import load_classifier
from pneumokeras.serving.predict import tta_probabilities

SIZE = 32
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="Grad-CAM (tf-keras-vis) needs TensorFlow"
)


def _inside(boxes: np.ndarray, size: int) -> np.ndarray:
    """`(S, S)` bool: pixel centres inside a box (`x <= (col + 0.5) / S < x + w`)."""
    centres = (np.arange(size) + 0.5) / size
    inside = np.zeros((size, size), bool)
    for x, y, w, h in boxes:
        rows = (y <= centres) & (centres < y + h)
        cols = (x <= centres) & (centres < x + w)
        inside |= rows[:, None] & cols[None, :]
    return inside


def test_analyse_predicts_explains_and_scores(classifier, explainer, examples):
    positive = examples[0]
    result = analysis.analyse_upload(
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
    assert result.members is None
    assert result.member_std is None
    heatmap = result.heatmap
    assert heatmap.shape == (SIZE, SIZE)
    assert heatmap.min() == 0.0
    assert heatmap.max() == pytest.approx(1.0)
    assert result.explained == "pneumonia"
    assert result.layer == "bn"
    # The localisation scores of this map and these boxes, by their definitions.
    inside = _inside(positive.boxes, SIZE)
    peak = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    assert result.pointing_game is bool(inside[peak])
    assert result.energy_in_boxes == pytest.approx(heatmap[inside].sum() / heatmap.sum(), abs=1e-6)
    # TTA: predict's seeded draws for these pixels.
    count, mean, std = result.tta
    samples = tta_probabilities(classifier, result.record.pixels, 3, 0)
    assert count == 3
    assert (mean, std) == pytest.approx((samples.mean(), samples.std()))
    assert analysis.shown_text(result) == "Grad-CAM of 'pneumonia' at bn"
    png = analysis.overlay_png(result, alpha=0.5)
    assert Image.open(io.BytesIO(png)).format == "PNG"

    # "predicted" explains the decided class; negatives get no localisation score.
    negative = analysis.analyse_upload(
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


def test_an_ensemble_gives_its_members_spread_and_their_mean_map(tmp_path, examples):
    from pneumokeras.explain.cam import HeatmapExplainer, _normalize_maps
    from pneumokeras.explain.explain import heatmap_explainer

    ensemble = load_classifier(contract_ensemble(SIZE, tmp_path))
    explainer = heatmap_explainer(ensemble, "gradcam", "")
    result = analysis.analyse_upload(ensemble, explainer, "p.dcm", examples[0].data, 10)
    images = result.record.pixels[None, :, :, None].astype(np.float32)
    members = [ensemble.model.get_layer(f"member_{k}") for k in range(2)]
    raw = [float(keras.ops.convert_to_numpy(m(images))[0, 1]) for m in members]
    expected = ensemble.calibrate(np.array(raw))
    assert result.members == pytest.approx(tuple(expected), abs=1e-6)
    assert result.member_std == pytest.approx(float(np.std(expected)), abs=1e-6)
    assert result.member_std > 0  # the two members differ
    maps = [HeatmapExplainer(m, "gradcam", "bn")(images)[0] for m in members]
    np.testing.assert_allclose(
        result.heatmap, _normalize_maps(np.mean(maps, axis=0)[None])[0], atol=1e-5
    )
    assert result.layer == "bn of each member"
    assert analysis.members_text(result).startswith(
        f"Ensemble of 2: members' SD {result.member_std:.3f} (member probabilities "
    )


def test_a_bad_file_is_a_result_with_its_error(classifier, explainer):
    result = analysis.analyse_upload(classifier, explainer, "x.txt", b"hello", 10)
    assert not result.ok
    assert result.error == "not a DICOM, PNG or JPEG file"
    with pytest.raises(ValueError, match="no heatmap"):
        analysis.overlay_png(result, 0.4)


def test_image_facts_name_the_format_size_and_what_the_reader_did():
    from pneumokeras.io.record import ImageRecord

    pixels = np.zeros((SIZE, SIZE), dtype=np.uint8)
    plain = ImageRecord(pixels=pixels, patient_id="", format="PNG", mode="L", width=64, height=40)
    assert analysis.image_facts(plain) == [
        ("format", "PNG"),
        ("mode", "L"),
        ("original size", "64 × 40 px"),
    ]
    turned = ImageRecord(
        pixels=pixels,
        patient_id="",
        format="JPEG",
        mode="L",
        width=40,
        height=64,
        note="EXIF orientation 6 applied (turned 90° clockwise)",
    )
    assert analysis.image_facts(turned)[-1] == (
        "read as",
        "EXIF orientation 6 applied (turned 90° clockwise)",
    )
