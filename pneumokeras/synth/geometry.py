"""Shapes of the phantom on a pixel grid: smooth steps, ellipses, lung fields, noise fields.

Pure NumPy functions shared by sampling (where an opacity may go) and rendering
(what it looks like). Grids hold image-normalised coordinates `(u, v)`: fractions
of the image side from the top-left corner; `body_xy` maps them to the body units
of an `Anatomy`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from pneumokeras.synth.spec import Anatomy, Blob, Findings

# Geometry is drawn at most this many pixels a side and upsampled; it is smooth.
MAX_BASE = 256
# Random texture fields are drawn at this fixed resolution so that a patient looks
# the same at every output size.
TEXTURE_SIZE = 128
# Width of the soft edges of anatomical shapes, body units.
EDGE = 0.006


def lateral_edge(anatomy: Anatomy, side: int, y: Any) -> Any:
    """|x| of a lung's lateral edge at height `y`: narrow at the apex, widest at the base.

    `y` is an array (the result has its shape) or a number.
    """
    base = anatomy.lung_base[(side + 1) // 2]
    t = np.clip((y - anatomy.lung_top) / (base - anatomy.lung_top), 0.0, 1.0)
    return anatomy.lung_medial + (anatomy.lung_lateral - anatomy.lung_medial) * t**0.6


def soft(d: np.ndarray, width: float) -> np.ndarray:
    """Smooth step from 0 (d ≤ -width) to 1 (d ≥ width)."""
    t = d * (0.5 / width)
    t += 0.5
    np.clip(t, 0.0, 1.0, out=t)
    return t * t * (3 - 2 * t)


def resize(field: np.ndarray, n: int) -> np.ndarray:
    """Bicubic resize of a square float field to `(n, n)` float32."""
    if field.shape[0] == n:
        return field
    image = Image.fromarray(field.astype(np.float32), mode="F")
    return np.array(image.resize((n, n), Image.Resampling.BICUBIC), dtype=np.float32)


def noise_field(rng: np.random.Generator, n: int, correlation: float) -> np.ndarray:
    """Smooth noise of unit std, correlation length a fraction of the side; (n, n)."""
    white = rng.standard_normal((TEXTURE_SIZE, TEXTURE_SIZE), dtype=np.float32)
    field = ndimage.gaussian_filter(white, correlation * TEXTURE_SIZE, mode="wrap")
    return resize(field / field.std(), n)


def _ellipse_r2(
    u: np.ndarray, v: np.ndarray, cx: float, cy: float, rx: float, ry: float, angle: float
) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    du, dv = u - cx, v - cy
    return ((c * du + s * dv) / rx) ** 2 + ((-s * du + c * dv) / ry) ** 2


def ellipse_profile(u: np.ndarray, v: np.ndarray, blob: Blob, power: float = 2.0) -> np.ndarray:
    """Profile `(1 - r²)^power` inside the ellipse, exactly 0 outside."""
    r2 = _ellipse_r2(u, v, blob.cx, blob.cy, blob.rx, blob.ry, blob.angle)
    return np.maximum(1.0 - r2, 0.0) ** power


def body_xy(a: Anatomy, u: Any, v: Any) -> tuple[Any, Any]:
    """Image-normalised `(u, v)` → body coordinates `(x, y)` (inverse of `to_image`).

    Arrays (of one shape) or numbers.
    """
    c, s = math.cos(a.rotation), math.sin(a.rotation)
    du, dv = (u - a.center_x) / a.scale, (v - a.center_y) / a.scale
    return c * du + s * dv, -s * du + c * dv


def heart_field(a: Anatomy, f: Findings, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Soft heart mask in [0, 1] (cardiomegaly included) on body coordinates."""
    hx, hy, hrx, hry, hangle = a.heart
    scale = f.heart_scale
    heart_r2 = _ellipse_r2(x, y, hx, hy, hrx * scale, hry * (1 + (scale - 1) / 3), hangle)
    return soft(1 - heart_r2, 0.12)


def lung_fields(
    a: Anatomy,
    heart: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    edges: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """The (image-left, image-right) lung fields in [0, 1]: the lungs less the heart.

    The heart displaces the lungs, so it shows as a dense silhouette.
    """
    left, right = _lung_masks(a, x, y, edges, EDGE)
    return left * (1 - heart), right * (1 - heart)


def lung_side(a: Anatomy, blob: Blob) -> int:
    """The lung an opacity (image coordinates) is centred in: -1 image left, +1 right."""
    x, _ = body_xy(a, blob.cx, blob.cy)
    return 1 if x > 0 else -1


def opacity_in_lung(
    a: Anatomy, f: Findings, blob: Blob, n: int
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """An opacity on an n×n grid: its window, its profile there and its lung's field there.

    The grid is `render_image`'s, so the profile is non-zero and the field positive
    on exactly the cells that the opacity changes.
    """
    win = window(None, blob, n)
    grid = (np.arange(n, dtype=np.float32) + 0.5) / n
    u, v = np.meshgrid(grid[win[1]], grid[win[0]])
    x, y = body_xy(a, u, v)
    edges = (lateral_edge(a, -1, y), lateral_edge(a, 1, y))
    fields = lung_fields(a, heart_field(a, f, x, y), x, y, edges)
    return win, ellipse_profile(u, v, blob, 1.5), fields[lung_side(a, blob) > 0]


def share_in_lung(a: Anatomy, f: Findings, blob: Blob) -> float:
    """Share of an opacity's mass inside its lung field (drawn at `TEXTURE_SIZE`)."""
    _, profile, lung = opacity_in_lung(a, f, blob, TEXTURE_SIZE)
    return float((profile * lung).sum() / profile.sum())


def _lung_masks(
    a: Anatomy, x: np.ndarray, y: np.ndarray, edges: tuple[np.ndarray, np.ndarray], eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Soft masks of the image-left and image-right lung, each (n, n) in [0, 1].

    `edges` are the lateral edges (`lateral_edge`) of both lungs on the grid.
    """
    masks = []
    for side, edge in zip((-1, 1), edges, strict=True):
        xs = side * x
        mid, half = (a.lung_medial + a.lung_lateral) / 2, (a.lung_lateral - a.lung_medial) / 2
        dome_rise = np.clip(1 - ((xs - mid) / (1.15 * half)) ** 2, 0, 1)
        dome = a.lung_base[(side + 1) // 2] - a.dome_height * dome_rise
        inside = np.minimum(xs - a.lung_medial, edge - xs)
        masks.append(soft(np.minimum(np.minimum(inside, dome - y), y - a.lung_top), eps))
    return masks[0], masks[1]


def window(anatomy: Anatomy | None, blob: Blob, n: int) -> tuple[slice, slice]:
    """Rows and columns of an n×n grid that hold `blob`'s support (plus a margin).

    `blob` is in body coordinates of `anatomy`, or in image coordinates when
    `anatomy` is None. Drawing only there keeps small shapes cheap.
    """
    cx, cy, radius = blob.cx, blob.cy, max(blob.rx, blob.ry)
    if anatomy is not None:
        (cx, cy), radius = anatomy.to_image(cx, cy), radius * anatomy.scale
    radius += 0.02  # soft edges
    lo_x, hi_x = math.floor((cx - radius) * n), math.ceil((cx + radius) * n) + 1
    lo_y, hi_y = math.floor((cy - radius) * n), math.ceil((cy + radius) * n) + 1
    return slice(max(lo_y, 0), max(hi_y, 0)), slice(max(lo_x, 0), max(hi_x, 0))


def band(distance: np.ndarray, half_width: float, eps: float) -> np.ndarray:
    """1 where |distance| < half_width, with soft edges of width `eps`."""
    return soft(half_width - np.abs(distance), eps)
