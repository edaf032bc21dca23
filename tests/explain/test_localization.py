"""Tests of pneumokeras.explain.localization: pointing game and energy in boxes.

Pure functions of arrays: no Keras backend, run once.
"""

import numpy as np
import pytest

from pneumokeras.explain.localization import box_mask, energy_in_boxes, pointing_game
from pneumokeras.records import pipeline as data


def _peak(shape, row, col):
    heatmap = np.zeros(shape)
    heatmap[row, col] = 1.0
    return heatmap


def test_pointing_game_hit_and_miss():
    heatmap = _peak((10, 10), row=2, col=7)  # pixel centre at x = 0.75, y = 0.25
    assert pointing_game(heatmap, [[0.6, 0.1, 0.3, 0.3]])
    assert not pointing_game(heatmap, [[0.0, 0.0, 0.5, 0.5]])
    # Any of several boxes counts.
    assert pointing_game(heatmap, [[0.0, 0.0, 0.5, 0.5], [0.7, 0.2, 0.1, 0.1]])


def test_pointing_game_boxes_at_the_border():
    corner = _peak((8, 8), row=7, col=7)  # centre (0.9375, 0.9375), exact in binary
    assert pointing_game(corner, [[0.75, 0.75, 0.25, 0.25]])
    # Half-open boxes: one ending exactly at the centre does not contain it.
    assert not pointing_game(corner, [[0.75, 0.75, 0.1875, 0.1875]])
    # A box running past the image edge still contains the edge pixels.
    assert pointing_game(corner, [[0.875, 0.875, 0.5, 0.5]])
    assert pointing_game(_peak((8, 8), 0, 0), [[0.0, 0.0, 0.125, 0.125]])


def test_pointing_game_without_peak_or_boxes_misses():
    everywhere = [[0.0, 0.0, 1.0, 1.0]]
    assert not pointing_game(np.zeros((8, 8)), everywhere)
    assert not pointing_game(np.ones((8, 8)), everywhere)
    assert not pointing_game(_peak((8, 8), 3, 3), np.zeros((0, 4)))


def test_energy_in_boxes_known_fractions():
    uniform = np.ones((10, 10))
    assert energy_in_boxes(uniform, [[0.0, 0.0, 0.5, 0.5]]) == pytest.approx(0.25)
    assert energy_in_boxes(uniform, [[0.5, 0.5, 0.5, 0.5]]) == pytest.approx(0.25)
    # Past the right edge: only columns 8 and 9 are inside.
    assert energy_in_boxes(uniform, [[0.8, 0.0, 0.4, 1.0]]) == pytest.approx(0.2)
    weighted = np.zeros((10, 10))
    weighted[1, 1], weighted[8, 8] = 3.0, 1.0
    assert energy_in_boxes(weighted, [[0.0, 0.0, 0.3, 0.3]]) == pytest.approx(0.75)


def test_energy_in_boxes_counts_overlaps_once():
    uniform = np.ones((8, 8))
    # Rows/cols 0-3 and 2-5: 16 + 16 - 4 pixels of 64.
    boxes = [[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5]]
    assert energy_in_boxes(uniform, boxes) == pytest.approx(28 / 64)
    single = [[0.0, 0.0, 0.5, 0.5]]
    assert energy_in_boxes(uniform, single * 3) == energy_in_boxes(uniform, single)
    assert energy_in_boxes(uniform, [[0.0, 0.0, 1.0, 1.0]] * 2) == pytest.approx(1.0)


def test_energy_in_boxes_edge_cases():
    assert energy_in_boxes(np.zeros((8, 8)), [[0.0, 0.0, 1.0, 1.0]]) == 0.0
    assert energy_in_boxes(np.ones((8, 8)), np.zeros((0, 4))) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        energy_in_boxes(-np.ones((8, 8)), [[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="2-D"):
        energy_in_boxes(np.ones((1, 8, 8)), [[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="square"):
        pointing_game(np.ones((8, 6)), [[0.0, 0.0, 1.0, 1.0]])


def test_box_mask_marks_pixel_centres_inside_any_box():
    boxes = np.array([[0.1, 0.2, 0.3, 0.25], [0.5, 0.55, 0.4, 0.4]], np.float32)
    mask = box_mask(boxes, 40)
    assert mask.shape == (40, 40)
    assert mask.dtype == bool
    # Pixel (row 8, col 4) has its centre at (0.1125, 0.2125): inside the first box.
    assert mask[8, 4]
    assert not mask[0, 0]
    # Rows 8-17 (centres 0.2125-0.4375) x columns 4-15, and rows 22-37 x columns 20-35.
    assert mask.sum() == 10 * 12 + 16 * 16
    assert box_mask(np.zeros((0, 4)), 16).sum() == 0


def test_scores_count_a_box_edge_as_the_box_loss_trains_it():
    # A box from the TFRecords (float32) with a pixel centre on its edge: at 5 px the
    # centres are 0.1, 0.3, ...; the box [0.1, 0.3) holds the first in float32 (as
    # the training target rasterises it) but not the second. Scoring the same box
    # in float64 (the former NumPy rasteriser) swapped the two.
    boxes = np.array([[0.1, 0.1, 0.2, 0.2]], np.float32)
    trained = data.box_mask(boxes, 5).numpy()[..., 0]
    assert trained[0, 0] == 1
    assert trained.sum() == 1
    np.testing.assert_array_equal(box_mask(boxes, 5), trained > 0)
    assert pointing_game(_peak((5, 5), 0, 0), boxes)
    assert not pointing_game(_peak((5, 5), 1, 1), boxes)
    assert energy_in_boxes(_peak((5, 5), 0, 0) + _peak((5, 5), 1, 1), boxes) == 0.5
