"""Tests of pneumokeras.explain.overlay: overlay figures and contact sheets.

matplotlib and Pillow only: no Keras backend, run once.
"""

import io

import numpy as np
import pytest
from PIL import Image

from pneumokeras.explain import overlay

SIZE = 64
# render_overlay's fixed layout at 100 dpi: a 520 x 500 px figure whose square
# image panel is 405 px wide, 15.6 px from the left and 15 px above the bottom.
FIGURE = (520, 500)
PANEL_LEFT, PANEL_TOP, PANEL = 15.6, 500 - 15 - 405, 405


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _lime(rgb: np.ndarray) -> np.ndarray:
    """Pixels drawn in the box colour (pure green: not in the jet map or the grey image)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (g > 200) & (r < 60) & (b < 60)


def test_overlay_draws_the_boxes_where_they_are():
    pixels = np.full((SIZE, SIZE), 128, np.uint8)
    heatmap = np.zeros((SIZE, SIZE), np.float32)
    box = (0.5, 0.25, 0.25, 0.5)  # x, y, w, h
    rgb = _decode(overlay.render_overlay(pixels, heatmap, boxes=np.array([box])))
    assert rgb.shape[:2] == FIGURE[::-1]
    rows, cols = np.nonzero(_lime(rgb))
    assert rows.size > 0
    x, y, w, h = box
    # Box edges lie on pixel edges (x·S − 0.5 in pixel coordinates), within the line width.
    assert cols.min() == pytest.approx(PANEL_LEFT + x * PANEL, abs=3)
    assert cols.max() == pytest.approx(PANEL_LEFT + (x + w) * PANEL, abs=3)
    assert rows.min() == pytest.approx(PANEL_TOP + y * PANEL, abs=3)
    assert rows.max() == pytest.approx(PANEL_TOP + (y + h) * PANEL, abs=3)
    # No boxes, no box colour.
    plain = _decode(overlay.render_overlay(pixels, heatmap))
    assert not _lime(plain).any()


def test_overlay_blends_the_heatmap_with_alpha():
    pixels = np.full((SIZE, SIZE), 255, np.uint8)  # white X-ray
    hot = np.ones((SIZE, SIZE), np.float32)  # jet(1.0) is dark red (0.5, 0, 0)
    centre = (int(PANEL_TOP + PANEL / 2), int(PANEL_LEFT + PANEL / 2))
    for alpha, expected in ((0.0, (255, 255, 255)), (1.0, (128, 0, 0)), (0.4, (204, 153, 153))):
        rgb = _decode(overlay.render_overlay(pixels, hot, alpha=alpha))
        np.testing.assert_allclose(rgb[centre], expected, atol=2)


def test_overlay_title_says_what_is_shown():
    title = overlay.overlay_title(
        "p1", 0.8123, "pneumonia", 0.3, "Grad-CAM of 'pneumonia' at conv", truth="normal"
    )
    assert title.splitlines() == [
        "p1",
        "P(pneumonia) = 0.812 → pneumonia (threshold 0.30); truth: normal",
        "Grad-CAM of 'pneumonia' at conv",
    ]
    empty = overlay.overlay_title("p2", 0.1, "normal", 0.5, "Score-CAM", empty=True)
    assert empty.splitlines()[1:] == [
        "P(pneumonia) = 0.100 → normal (threshold 0.50)",
        "Score-CAM (no positive evidence)",
    ]


def _tile(colour, size=(100, 50)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_contact_sheet_tiles_in_order_and_caps_the_count():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    sheet = _decode(overlay.contact_sheet([_tile(c) for c in colours], columns=2))
    assert sheet.shape[:2] == (2 * 50, 2 * 100)
    for index, colour in enumerate(colours):
        row, col = divmod(index, 2)
        np.testing.assert_array_equal(sheet[row * 50 + 25, col * 100 + 50], colour)
    np.testing.assert_array_equal(sheet[75, 150], (255, 255, 255))  # the empty cell

    many = overlay.contact_sheet([_tile((9, 9, 9))] * 40)
    rows = -(-overlay.CONTACT_SHEET_TILES // overlay.CONTACT_SHEET_COLUMNS)
    assert Image.open(io.BytesIO(many)).size == (overlay.CONTACT_SHEET_COLUMNS * 100, rows * 50)
    # Large overlays are shrunk to thumbnails.
    big = Image.open(io.BytesIO(overlay.contact_sheet([_tile((0, 0, 0), (640, 600))])))
    assert big.size == (overlay.CONTACT_SHEET_TILE_PX, 300)
    with pytest.raises(ValueError, match="at least one"):
        overlay.contact_sheet([])
