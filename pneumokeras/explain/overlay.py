"""Heatmap overlays and contact sheets as PNG bytes (matplotlib Agg, Pillow).

Figures from values: nothing here computes a heatmap or a score. matplotlib's
Agg canvas is used directly (no pyplot, no global backend change), so rendering
is safe in any process and thread that owns its figure.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np

CONTACT_SHEET_TILES = 32
CONTACT_SHEET_COLUMNS = 8
CONTACT_SHEET_TILE_PX = 320


def overlay_title(
    name: str,
    probability: float,
    decision: str,
    threshold: float,
    shown: str,
    truth: str | None = None,
    empty: bool = False,
) -> str:
    """Three title lines: image name; probability, decision and truth; what is shown.

    Args:
        name: image name.
        probability: calibrated pneumonia probability.
        decision: name of the decided class.
        threshold: decision threshold on `probability`.
        shown: what the heatmap is, e.g. "Grad-CAM of 'pneumonia' at stack4_block2_out".
        truth: name of the true class, or None when unknown.
        empty: the map is all zeros (no positive evidence for the class).
    """
    line = f"P(pneumonia) = {probability:.3f} → {decision} (threshold {threshold:.2f})"
    if truth is not None:
        line += f"; truth: {truth}"
    if empty:
        # An all-zero map paints the image uniformly: say so rather than mislead.
        shown += " (no positive evidence)"
    return "\n".join([name, line, shown])


def render_overlay(
    pixels: np.ndarray,
    heatmap: np.ndarray,
    alpha: float = 0.4,
    title: str = "",
    boxes: np.ndarray | None = None,
    colorbar_label: str = "heatmap (normalised)",
) -> bytes:
    """Draws an X-ray with its heatmap, a colour bar and ground-truth boxes.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change).

    Args:
        pixels: `(S, S)` uint8 grey image.
        heatmap: `(S, S)` map in [0, 1].
        alpha: heatmap opacity, [0, 1].
        title: figure title (may have several lines).
        boxes: `(K, 4)` boxes `x, y, w, h` as fractions of the image, or None.
        colorbar_label: label of the colour bar.

    Returns:
        PNG bytes.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    height, width = pixels.shape[:2]
    # Blend once here (what two stacked imshow layers would draw): one image to
    # resample instead of two, which halves the drawing time.
    jet = matplotlib.colormaps["jet"]
    grey = np.asarray(pixels, dtype=np.float32)[..., None] / 255.0
    colour = jet(np.clip(heatmap, 0.0, 1.0))[..., :3]
    blended = (1.0 - alpha) * grey + alpha * colour
    # Fixed axes (no tight/constrained layout, which would draw the figure twice):
    # a square image panel, the colour bar on its right, the title above.
    fig_w, fig_h, panel = 5.2, 5.0, 4.05  # inches
    fig = Figure(figsize=(fig_w, fig_h), dpi=100)
    FigureCanvasAgg(fig)
    bottom = 0.15 / fig_h
    ax = fig.add_axes((0.03, bottom, panel / fig_w, panel / fig_h))
    cax = fig.add_axes((0.03 + (panel + 0.12) / fig_w, bottom, 0.16 / fig_w, panel / fig_h))
    ax.imshow(np.clip(blended, 0.0, 1.0))
    if boxes is not None:
        for x, y, w, h in np.asarray(boxes, dtype=float).reshape(-1, 4):
            # Pixel centres sit at integer coordinates: an image edge is at -0.5.
            ax.add_patch(
                Rectangle(
                    (x * width - 0.5, y * height - 0.5),
                    w * width,
                    h * height,
                    fill=False,
                    edgecolor="lime",
                    linewidth=1.5,
                )
            )
    ax.set_axis_off()
    if title:
        # Centred on the figure: long lines may be wider than the image panel.
        fig.suptitle(title, fontsize=9, x=0.5, y=0.99, va="top")
    # The bar shows the opaque colour scale, not the faded overlay colours.
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=jet), cax=cax)
    bar.set_label(colorbar_label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def contact_sheet(overlays: Sequence[bytes], columns: int = CONTACT_SHEET_COLUMNS) -> bytes:
    """Tiles overlay PNGs (at most `CONTACT_SHEET_TILES`) in a grid; returns PNG bytes."""
    from PIL import Image

    tiles = []
    for png in overlays[:CONTACT_SHEET_TILES]:
        tile = Image.open(io.BytesIO(png)).convert("RGB")
        tile.thumbnail((CONTACT_SHEET_TILE_PX, CONTACT_SHEET_TILE_PX))
        tiles.append(tile)
    if not tiles:
        raise ValueError("contact_sheet needs at least one overlay")
    columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    cell_w = max(tile.width for tile in tiles)
    cell_h = max(tile.height for tile in tiles)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    for index, tile in enumerate(tiles):
        row, col = divmod(index, columns)
        sheet.paste(tile, (col * cell_w + (cell_w - tile.width) // 2, row * cell_h))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()
