"""Tests of the synthetic patients' pixels and boxes (pneumokeras/synth/render.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pneumokeras import synth
from pneumokeras.synth import render
from pneumokeras.synth.geometry import MAX_BASE


@pytest.mark.parametrize("size", [128, 640])
def test_opacities_change_pixels_only_inside_their_boxes(size: int) -> None:
    # 640 exercises the upsampling path: bicubic resampling spreads a change by up
    # to two pixels of the grid the geometry is drawn on.
    margin = 2 + 2 * size / min(size, MAX_BASE)
    yy, xx = np.mgrid[0:size, 0:size]
    for index in range(4):
        spec = synth.sample_patient(synth.patient_seed(5, index), synth.LUNG_OPACITY)
        with_opacity = synth.render_image(spec, size).astype(int)
        without = synth.render_image(dataclasses.replace(spec, opacities=()), size).astype(int)
        inside = np.zeros((size, size), bool)
        boxes = synth.boxes(spec, size)
        assert 1 <= len(boxes) <= 4
        for x, y, w, h in boxes:
            # RSNA boxes: 5th-95th percentile sides 12-61 % of the image.
            assert 0.1 * size <= max(w, h) <= 0.6 * size
            in_x = (xx >= x - margin) & (xx < x + w + margin)
            inside |= in_x & (yy >= y - margin) & (yy < y + h + margin)
        changed = with_opacity != without
        assert changed.any()
        assert not (changed & ~inside).any()
        # Each opacity is visible: clearly brighter than the same patient without it.
        for x, y, w, h in boxes:
            box = (slice(int(y), int(y + h)), slice(int(x), int(x + w)))
            assert (with_opacity[box] - without[box]).max() >= 25


def test_boxes_enclose_their_opacity_and_lie_in_its_lung() -> None:
    """Every box holds its opacity's added intensity and stays in a lung field.

    The lung fields are synth's own (left and right lung less the heart, on the
    render grid); a box that crosses the mediastinum or leaves the chest fails.
    """
    size = 128
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    u, v = np.meshgrid(grid, grid)
    checked = 0
    for index in range(60):
        spec = synth.sample_patient(synth.patient_seed(21, index), synth.LUNG_OPACITY)
        _, fields = render._attenuation(spec, u, v, np.random.default_rng(0))
        lung_boxes = []
        for field in fields:
            rows, cols = np.nonzero(field > 0)
            lung_boxes.append((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
        in_lungs = np.maximum(*fields) > 0.5
        without = synth.render_image(dataclasses.replace(spec, opacities=()), size).astype(int)
        for blob, (x, y, w, h) in zip(spec.opacities, synth.boxes(spec, size), strict=True):
            x0, y0, x1, y1 = int(x), int(y), int(x + w), int(y + h)
            assert any(
                x0 >= lx0 and y0 >= ly0 and x1 <= lx1 and y1 <= ly1
                for lx0, ly0, lx1, ly1 in lung_boxes
            ), (index, (x, y, w, h), lung_boxes)
            # Most of the box is lung, not mediastinum, neck or abdomen.
            assert in_lungs[y0:y1, x0:x1].mean() >= 0.6, (index, (x, y, w, h))
            alone = dataclasses.replace(spec, opacities=(blob,))
            added = np.clip(synth.render_image(alone, size).astype(int) - without, 0, None)
            assert added[y0:y1, x0:x1].sum() >= 0.9 * added.sum() > 0, (index, (x, y, w, h))
            checked += 1
    assert checked >= 80
