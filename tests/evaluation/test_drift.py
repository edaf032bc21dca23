"""Out-of-distribution checks: training statistics and the warnings they give."""

import numpy as np
import pytest

from pneumokeras.evaluation import drift


def test_training_statistics_are_percentile_ranges_of_per_image_values():
    rng = np.random.default_rng(0)
    means = rng.uniform(80, 160, 200)
    images = np.clip(means[:, None, None] + rng.normal(0, 30, (200, 16, 16)), 0, 255)
    stats = drift.training_statistics(images.astype(np.uint8))
    assert stats["images"] == 200
    assert stats["percentiles"] == [0.5, 99.5]
    low, high = stats["mean"]
    assert 75 < low < 90
    assert 150 < high < 165
    assert 0 < stats["std"][0] < stats["std"][1] < 45


def test_intensity_warnings_flag_only_images_far_outside():
    recorded = {"mean": [100.0, 140.0], "std": [40.0, 60.0]}
    rng = np.random.default_rng(1)
    usual = np.clip(rng.normal(120, 50, (32, 32)), 0, 255).astype(np.uint8)
    assert drift.intensity_warnings(usual, recorded) == []
    # Within the 25 % margin (90..150): still no warning.
    assert drift.intensity_warnings(np.clip(usual + 25, 0, 255).astype(np.uint8), recorded) == []
    black = np.zeros((32, 32), dtype=np.uint8)
    found = drift.intensity_warnings(black, recorded)
    assert len(found) == 2
    assert "mean grey level 0" in found[0]
    assert "contrast" in found[1]
    assert drift.intensity_warnings(black, {}) == []


@pytest.mark.parametrize(
    "facts, expected",
    [
        ({"modality": "CR", "body_part": "CHEST", "rows": 1024, "columns": 1024}, []),
        ({"modality": "dx", "body_part": ""}, []),
        ({"modality": "MR"}, ["modality MR is not a radiograph"]),
        (
            {"modality": "CT", "body_part": "HEAD"},
            ["modality CT is not a radiograph", "body part HEAD is not the chest"],
        ),
        ({"body_part": "THORAX"}, []),
        ({"rows": 100, "columns": 80}, ["smaller than the model's input"]),
    ],
)
def test_source_warnings(facts, expected):
    found = drift.source_warnings(facts, input_size=224)
    assert len(found) == len(expected)
    for text, part in zip(found, expected, strict=True):
        assert part in text
