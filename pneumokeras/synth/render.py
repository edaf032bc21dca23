"""Pixels of a synthetic patient: attenuation map → exposure curve → 8-bit image, and its boxes.

Images are built in an "attenuation" map (0 = air, ~1 = mediastinum) on a grid
of at most `MAX_BASE` pixels a side, then mapped to grey levels by the patient's
exposure curve and resized. A label box is the bounding box of the visible part
of its opacity, so it encloses the opacity and stays inside the lung field.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from scipy import ndimage

from pneumokeras.synth.acquisition import (
    collimate,
    correlate,
    frame,
    in_field_of_view,
    resample,
)
from pneumokeras.synth.geometry import (
    EDGE,
    MAX_BASE,
    band,
    body_xy,
    ellipse_profile,
    heart_field,
    lateral_edge,
    lung_fields,
    lung_side,
    noise_field,
    opacity_in_lung,
    resize,
    soft,
    window,
)
from pneumokeras.synth.spec import UNIT_CIRCLE, Anatomy, PatientSpec


def boxes(spec: PatientSpec, size: int) -> list[tuple[float, float, float, float]]:
    """Returns the label boxes `(x, y, width, height)` of a patient, pixels.

    `x, y` is the top-left corner. Each box is the bounding box, in whole pixels,
    of the visible part of one opacity: the cells of `render_image`'s geometry
    grid where the opacity is non-zero within its own lung field. So a box
    encloses every pixel its opacity changes (plus resampling's one or two
    pixels above 256 px) and lies within the bounding box of that lung.
    """
    spec = in_field_of_view(spec)
    n = min(size, MAX_BASE)
    scale = size / n
    out = []
    for blob in spec.opacities:
        win, profile, lung = opacity_in_lung(spec.anatomy, spec.findings, blob, n)
        rows, cols = np.nonzero((profile > 0) & (lung > 0))
        r0, r1 = win[0].start + rows.min(), win[0].start + rows.max() + 1
        c0, c1 = win[1].start + cols.min(), win[1].start + cols.max() + 1
        x0, y0 = math.floor(c0 * scale), math.floor(r0 * scale)
        x1, y1 = math.ceil(c1 * scale), math.ceil(r1 * scale)
        out.append((float(x0), float(y0), float(x1 - x0), float(y1 - y0)))
    return out


def _ribs(
    a: Anatomy, x: np.ndarray, y: np.ndarray, edges: tuple[np.ndarray, np.ndarray], eps: float
) -> np.ndarray:
    """Rib cage: posterior ribs (dense, falling laterally), anterior ribs (faint)."""
    q = np.clip(np.abs(x) / a.lung_lateral, 0, 1.2)
    phase = (y - a.rib_top + 0.02 * q - 0.18 * q * q * np.sqrt(q)) / a.rib_spacing
    frac = phase - np.floor(phase)
    # Cortical bone makes a rib's edges denser than its middle.
    posterior = band(frac - 0.22, 0.18, eps / a.rib_spacing) * (
        0.65 + 0.35 * ((frac - 0.22) / 0.18) ** 2
    )
    posterior *= soft(phase, 0.1) * soft(9.5 - phase, 0.3)
    phase_a = (y - a.rib_top - 0.12 - 0.14 * (1 - q)) / (1.25 * a.rib_spacing)
    frac_a = phase_a - np.floor(phase_a)
    anterior = band(frac_a - 0.3, 0.12, eps / a.rib_spacing) * soft(phase_a, 0.1)
    anterior *= soft(5.5 - phase_a, 0.3) * soft(q - 0.3, 0.05)
    edge = np.where(x < 0, *edges)
    cage = soft(edge + 0.035 - np.abs(x), eps) * soft(np.abs(x) - 0.03, eps)
    return a.rib_density * cage * (posterior + 0.45 * anterior)


def _attenuation(
    spec: PatientSpec, u: np.ndarray, v: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Anatomy and findings without opacities, (n, n), and the (left, right) lung fields."""
    a, f = spec.anatomy, spec.findings
    n = u.shape[0]
    x, y = body_xy(a, u, v)
    eps = EDGE

    # Soft tissue: thickness ∝ chord length of a cylinder, narrowing to the shoulders.
    half = a.body_half_width * (0.6 + 0.4 * soft(y + 0.42, 0.08))
    chord = np.sqrt(np.clip(1 - (x / half) ** 2, 0, 1))
    att = a.tissue_density * (0.3 + 0.7 * chord) * soft(half - np.abs(x), eps)
    for side in (-1, 1) if a.breast_density else ():
        breast = replace(UNIT_CIRCLE, cx=side * 0.2, cy=a.lung_base[0] - 0.03, rx=0.17, ry=0.13)
        win = window(a, breast, n)
        cut = soft(y[win] - (a.lung_base[0] - 0.12), 0.03)
        att[win] += a.breast_density * ellipse_profile(x[win], y[win], breast, 1.0) * cut

    hy = a.heart[1]
    heart = heart_field(a, f, x, y)
    edges = (lateral_edge(a, -1, y), lateral_edge(a, 1, y))
    left, right = lung_fields(a, heart, x, y, edges)
    lungs = np.maximum(left, right)
    att -= a.lung_air * lungs * (0.7 + 0.3 * chord)
    # Vessel markings, denser towards the hila.
    hila = np.exp(-((np.abs(x) - 0.1) ** 2 + (y + 0.02) ** 2) / 0.02)
    att += 0.015 * lungs * (0.4 + hila) * noise_field(rng, n, 0.005)

    spine_x = a.spine_curve[0] * np.sin(2.2 * y + a.spine_curve[1])
    upper = soft(hy - y, 0.04)
    att += 0.22 * upper * band(x - spine_x, a.mediastinum_half_width, eps)
    att -= 0.1 * soft(-0.18 - y, eps) * band(x - spine_x, 0.012, 0.004)
    knob = replace(UNIT_CIRCLE, cx=0.055, cy=-0.2, rx=0.035, ry=0.032)
    win = window(a, knob, n)
    att[win] += 0.18 * ellipse_profile(x[win], y[win], knob, 0.5)
    vertebrae = 0.75 + 0.25 * np.cos(2 * np.pi * y / 0.055)
    att += 0.12 * vertebrae * band(x - spine_x, 0.03, eps)
    # Below the diaphragm the heart merges with the abdomen's soft tissue.
    att += 0.14 * heart * soft(a.lung_base[1] - 0.7 * a.dome_height - y, 0.03)

    att += _ribs(a, x, y, edges, eps)
    for side in (-1, 1):
        along = side * x
        line = -0.34 - 0.1 * (along - 0.05) / 0.3
        span = soft(along - 0.05, eps) * soft(0.36 - along, eps)
        att += 0.16 * span * band(y - line, 0.013, eps)

    if a.gastric_bubble:
        bubble = replace(UNIT_CIRCLE, cx=0.17, cy=a.lung_base[1] + 0.04, rx=0.05, ry=0.028)
        win = window(a, bubble, n)
        att[win] -= 0.2 * ellipse_profile(x[win], y[win], bubble, 0.5)
    if f.effusion is not None:
        side, height = f.effusion
        mask = right if side == 1 else left
        lateral = np.clip(side * x / a.lung_lateral, 0, 1)
        # A meniscus: the fluid climbs the lateral chest wall.
        level = a.lung_base[(side + 1) // 2] - height - 0.08 * lateral**3
        att += 0.9 * a.lung_air * mask * soft(y - level, 0.015)
    if f.catheter is not None:
        x0, bend, y_end = f.catheter
        path = x0 - bend * (y + 0.6) ** 2 * np.sign(x0)
        att += 0.5 * band(x - path, 0.004, 0.002) * soft(y + 0.6, eps) * soft(y_end - y, eps)
    for ex, ey in f.electrodes:
        win = window(a, replace(UNIT_CIRCLE, cx=ex, cy=ey, rx=0.025, ry=0.025), n)
        ring = np.sqrt((x[win] - ex) ** 2 + (y[win] - ey) ** 2)
        att[win] += 0.5 * band(ring - 0.018, 0.004, 0.002)
    if f.nodule is not None:
        # Sampled in image coordinates, like the opacities.
        win = window(None, f.nodule, n)
        att[win] += f.nodule.amplitude * ellipse_profile(u[win], v[win], f.nodule, 0.5)
    return att, (left, right)


def render_image(spec: PatientSpec, size: int) -> np.ndarray:
    """Renders a patient as an 8-bit radiograph as displayed (larger values are denser).

    Geometry is drawn at `min(size, 256)` pixels and upsampled (it is smooth);
    per-pixel grain is drawn at full size. Opacities are added after the blur,
    within their own lung and with compact support, so they change pixels only
    inside their boxes (plus one or two pixels of resampling). Then the detector
    (`spec.detector`, see `acquisition`): its field of view frames the geometry,
    its resolution resamples the image, collimator margins, noise of its texture,
    padded borders and a side marker follow. Polarity is the file's business
    (`encoding`): the returned pixels are always MONOCHROME2.

    Args:
        spec: the patient.
        size: output side, pixels.

    Returns:
        uint8 array of shape `(size, size)`; larger values are denser (brighter).
    """
    detector = spec.detector
    spec = in_field_of_view(spec)
    n = min(size, MAX_BASE)
    rng = np.random.default_rng(spec.texture_seed)
    grid = (np.arange(n, dtype=np.float32) + 0.5) / n
    u, v = np.meshgrid(grid, grid)
    att, lungs = _attenuation(spec, u, v, rng)
    ex = spec.exposure
    att = ndimage.gaussian_filter(att, ex.blur * n, truncate=3.0)
    att += ex.mottle * noise_field(rng, n, 0.004)
    opacity_texture = noise_field(rng, n, 0.015)
    for blob in spec.opacities:
        win = window(None, blob, n)
        texture = np.clip(1 + 0.35 * opacity_texture[win], 0.2, 1.8)
        lung = lungs[lung_side(spec.anatomy, blob) > 0][win]  # an opacity stays in its lung
        att[win] += blob.amplitude * ellipse_profile(u[win], v[win], blob, 1.5) * lung * texture
    # A film-like curve: linear for thin parts, saturating softly for dense ones.
    level = np.tanh(np.maximum(ex.offset + ex.gain * att, 0.0) / 255.0) ** ex.gamma * 255.0
    level = resample(resize(level, size), detector.resolution)
    level = collimate(level, detector)
    noise = correlate(
        rng.standard_normal((size, size), dtype=np.float32),
        detector.grain_correlation * size / 1024,
    )
    level += noise * (ex.grain * size / 1024)
    level = frame(level, detector)
    return np.clip(np.rint(level), 0, 255).astype(np.uint8)
