"""How well a heatmap points at the ground-truth boxes: pure functions returning values.

- `pointing_game`: Zhang et al., "Top-down Neural Attention by Excitation
  Backprop", ECCV 2016 (here without tolerance margin): a hit when the map's
  maximum lies in a box.
- `energy_in_boxes`: the energy-based pointing game of Wang et al. (Score-CAM,
  CVPR-W 2020): the share of the map's mass inside the boxes.

Boxes are `(K, 4)` `x, y, w, h` as fractions of the image width and height (the
TFRecord `image/boxes` contract). A pixel is inside a box when its centre is,
half-open: `x <= (col + 0.5) / S < x + w`, likewise for rows.

One box rasteriser serves training and scoring: `data.box_mask`, the TensorFlow
op the tf.data pipeline uses for box supervision, so a pixel counts as inside a
box here exactly when the box loss trained it as inside (same float32 rounding
at the box edges). It runs eagerly here; TensorFlow is imported on first use,
which costs nothing in practice: the boxes come from TFRecords, read with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def box_mask(boxes: Any, size: int) -> np.ndarray:
    """Pixels `(S, S)` bool whose centre lies inside any box (see the module docstring).

    Args:
        boxes: `(K, 4)` boxes `x, y, w, h` as fractions of the image side (K may be 0).
        size: side S of the square image, pixels.
    """
    from pneumokeras.records.pipeline import box_mask as rasterise

    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.asarray(rasterise(boxes, size))[..., 0] > 0


def _check_map_and_boxes(heatmap: Any, boxes: Any) -> tuple[np.ndarray, np.ndarray]:
    heatmap = np.asarray(heatmap, dtype=np.float64)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (H, W). Received: shape={heatmap.shape}")
    if heatmap.shape[0] != heatmap.shape[1]:
        raise ValueError(f"heatmap must be square (S, S). Received: shape={heatmap.shape}")
    return heatmap, np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def pointing_game(heatmap: np.ndarray, boxes: Any) -> bool:
    """Whether the heatmap's maximum falls inside a ground-truth box.

    A hit when the centre of the maximal pixel (the first in row-major order on
    ties) lies inside any box. A map with no peak (constant) never hits.

    Args:
        heatmap: `(S, S)` map, any scale.
        boxes: `(K, 4)` boxes `x, y, w, h` as fractions of the image width/height.

    Returns:
        True on a hit; False on a miss, a constant map or no boxes.

    Raises:
        ValueError: the heatmap is not 2-D and square.
    """
    heatmap, boxes = _check_map_and_boxes(heatmap, boxes)
    if len(boxes) == 0 or heatmap.size == 0 or np.ptp(heatmap) <= 0:
        return False
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return bool(box_mask(boxes, heatmap.shape[0])[row, col])


def energy_in_boxes(heatmap: np.ndarray, boxes: Any) -> float:
    """Fraction of the heatmap's mass inside the union of the boxes.

    `sum(map · inside) / sum(map)`, where `inside` marks pixels whose centre lies
    in at least one box, so overlapping boxes are not counted twice.

    Args:
        heatmap: `(S, S)` non-negative map (e.g. in [0, 1]).
        boxes: `(K, 4)` boxes `x, y, w, h` as fractions of the image width/height.

    Returns:
        A fraction in [0, 1]; 0 when the map is all zeros or there are no boxes.

    Raises:
        ValueError: the heatmap is not 2-D and square, or has negative values.
    """
    heatmap, boxes = _check_map_and_boxes(heatmap, boxes)
    if heatmap.size and heatmap.min() < 0:
        raise ValueError("heatmap must be non-negative for energy_in_boxes")
    total = float(heatmap.sum())
    if len(boxes) == 0 or total <= 0:
        return 0.0
    return float(heatmap[box_mask(boxes, heatmap.shape[0])].sum() / total)
