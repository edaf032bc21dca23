"""Tests for pneumokeras.app.examples: synthetic phantoms, pages of a split, the summary."""

from __future__ import annotations

import numpy as np

from pneumokeras.app import analysis
from pneumokeras.app import examples as app_examples


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
    again = app_examples.synthetic_examples()
    assert [e.data for e in again] == [e.data for e in examples]  # made in memory, seeded


def test_split_examples_pages_and_positives(png_bytes):
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
    page, total = app_examples.split_examples(records, 2, 3)
    assert total == 7
    assert [e.name for e in page] == ["p2", "p3", "p4"]
    np.testing.assert_array_equal(page[0].pixels, pixels)
    page, total = app_examples.split_examples(records, 2, 3, positives_only=True)
    assert total == 3
    assert [e.name for e in page] == ["p5"]
    assert page[0].boxes.shape == (1, 4)


def test_localisation_summary_counts_scored_positives():
    results = [
        analysis.Result("a", pointing_game=True, energy_in_boxes=0.6),
        analysis.Result("b", pointing_game=False, energy_in_boxes=0.2),
        analysis.Result("c"),
    ]
    assert app_examples.localisation_summary(results).startswith("pointing game 1 / 2 hits")
    assert "energy in boxes 0.40" in app_examples.localisation_summary(results)
    assert app_examples.localisation_summary(results[2:]) == ""
