"""The scanner: ranges each image's acquisition is drawn from, and what it does to the pixels.

A `Scanner` changes how an image is acquired, never the patient or the disease:
the exposure curve (air level, gain, gamma), blur and detector resolution, noise
level and texture, collimation and padded borders, burned-in side markers, the
detector's field of view and the stored polarity. Each image draws its own
values uniformly from the scanner's ranges (`sample_exposure`, `sample_detector`),
from the patient's own random streams, and always in the same order: the same
seed gives the same patient, opacities and boxes under any scanner, and
`DEFAULT_SCANNER` is the scanner `synth` uses without acquisition options.

`SHIFTED_SCANNER` (`synth --shift`) draws every setting from another range than
the default: another site's scanner, for measuring how a model trained on the
default holds up (a pneumonia model loses accuracy at a hospital it was not
trained at: Zech et al., PLOS Medicine 2018).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from pneumokeras.errors import UserError
from pneumokeras.synth.geometry import soft
from pneumokeras.synth.spec import Blob, Detector, Exposure, PatientSpec

Range = tuple[float, float]

# Where a side marker goes: its top-left corner, share of the image side from the
# top and from the nearer side edge (outside the lungs, whose apices start at
# about 0.13 of the side), and the letter's height.
_MARKER_INSET = 0.05
_MARKER_HEIGHT = 0.07


@dataclass(frozen=True)
class Scanner:
    """Ranges `(low, high)` an image's acquisition is drawn from (uniform; low = high fixes it).

    Attributes:
        offset: grey level of air before the film curve.
        gain: grey levels per unit of attenuation (the contrast).
        log_gamma: natural log of the film curve's gamma (0 = gamma 1).
        blur: Gaussian blur sigma, share of the image side.
        mottle: std of low-frequency noise, attenuation units.
        noise: std of per-pixel noise of a 1024-pixel image, grey levels.
        noise_texture: correlation length of that noise, pixels of a
            1024-pixel image (0 = white).
        resolution: share of the output resolution the detector resolves.
        field_of_view: detector side relative to the default (larger: the
            chest looks smaller).
        collimation: bright collimator margin on each of the four edges, share
            of the image side (each edge drawn on its own).
        border: black bar at the left and the right edge, share of the side.
        markers: probability of a burned-in "L" or "R" side marker.
        monochrome1: probability of storing the image with inverted polarity.
    """

    offset: Range = (0.0, 30.0)
    gain: Range = (260.0, 340.0)
    log_gamma: Range = (-0.25, 0.25)
    blur: Range = (0.0008, 0.0025)
    mottle: Range = (0.004, 0.01)
    noise: Range = (3.0, 8.0)
    noise_texture: Range = (0.0, 0.0)
    resolution: Range = (1.0, 1.0)
    field_of_view: Range = (1.0, 1.0)
    collimation: Range = (0.0, 0.0)
    border: Range = (0.0, 0.0)
    markers: float = 0.0
    monochrome1: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready settings (ranges as `[low, high]` lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }


DEFAULT_SCANNER = Scanner()

# Another site's scanner: every setting from another range than the default
# (most do not overlap it). Lower contrast and a harder gamma curve, a brighter
# air level, more blur, coarser sampling, stronger and correlated noise, a larger
# detector, collimator margins and padded borders, side markers on every image,
# half of the images stored as MONOCHROME1.
SHIFTED_SCANNER = Scanner(
    offset=(25.0, 55.0),
    gain=(200.0, 260.0),
    log_gamma=(0.15, 0.45),
    blur=(0.0025, 0.0045),
    mottle=(0.01, 0.018),
    noise=(8.0, 16.0),
    noise_texture=(2.0, 5.0),
    resolution=(0.5, 0.75),
    field_of_view=(1.05, 1.2),
    collimation=(0.01, 0.05),
    border=(0.0, 0.06),
    markers=1.0,
    monochrome1=0.5,
)

# Allowed values of each setting: (low, high) bounds of a range.
_BOUNDS: dict[str, Range] = {
    "offset": (0.0, 255.0),
    "gain": (1.0, 2000.0),
    "log_gamma": (math.log(0.2), math.log(5.0)),
    "blur": (0.0, 0.05),
    "mottle": (0.0, 0.2),
    "noise": (0.0, 64.0),
    "noise_texture": (0.0, 32.0),
    "resolution": (0.05, 1.0),
    "field_of_view": (0.5, 2.0),
    "collimation": (0.0, 0.2),
    "border": (0.0, 0.2),
}


def with_settings(base: Scanner, **settings: Range | float | None) -> Scanner:
    """`base` with some settings replaced; None leaves one as it is.

    Keys are `Scanner`'s fields, and `gamma`: a range of gammas (> 0) that
    becomes `log_gamma`. Ranges are `(low, high)`; `markers` and `monochrome1`
    are probabilities.

    Raises:
        UserError: an unknown setting, a gamma ≤ 0, or (`check_scanner`) a value
            out of bounds.
    """
    changes: dict[str, Any] = {}  # Scanner's fields by name; check_scanner checks them
    fields = {f.name for f in dataclasses.fields(Scanner)}
    for name, value in settings.items():
        if value is None:
            continue
        if name == "gamma":
            low, high = cast(Range, value)  # a range (the floats are the probabilities)
            if low <= 0 or high <= 0:
                raise UserError(f"scanner gamma must be > 0; got {low:g}:{high:g}")
            name, value = "log_gamma", (math.log(low), math.log(high))
        if name not in fields:
            raise UserError(
                f"unknown scanner setting {name!r} (known: {', '.join(sorted(fields))})"
            )
        changes[name] = value
    scanner = replace(base, **changes)
    check_scanner(scanner)
    return scanner


def check_scanner(scanner: Scanner) -> None:
    """Raises UserError naming the first setting out of its bounds or with low > high."""
    for name, (lowest, highest) in _BOUNDS.items():
        low, high = getattr(scanner, name)
        if not low <= high:
            raise UserError(f"scanner {name}: low {low:g} is above high {high:g}")
        if low < lowest or high > highest:
            raise UserError(
                f"scanner {name} must lie in [{lowest:g}, {highest:g}]; got {low:g}:{high:g}"
            )
    for name in ("markers", "monochrome1"):
        value = getattr(scanner, name)
        if not 0.0 <= value <= 1.0:
            raise UserError(f"scanner {name} is a probability in [0, 1]; got {value:g}")


def sample_exposure(rng: np.random.Generator, scanner: Scanner = DEFAULT_SCANNER) -> Exposure:
    """Draws an image's exposure curve, blur and noise level from `scanner`'s ranges."""
    u = rng.uniform
    return Exposure(
        offset=u(*scanner.offset),
        gain=u(*scanner.gain),
        gamma=math.exp(u(*scanner.log_gamma)),
        blur=u(*scanner.blur),
        mottle=u(*scanner.mottle),
        grain=u(*scanner.noise),
    )


def sample_detector(rng: np.random.Generator, scanner: Scanner = DEFAULT_SCANNER) -> Detector:
    """Draws an image's detector settings from `scanner`'s ranges.

    Every value is drawn whatever the ranges are, in one order, so changing one
    setting does not change what the others draw.
    """
    u = rng.uniform
    field_of_view = u(*scanner.field_of_view)
    resolution = u(*scanner.resolution)
    correlation = u(*scanner.noise_texture)
    collimation = (
        u(*scanner.collimation),
        u(*scanner.collimation),
        u(*scanner.collimation),
        u(*scanner.collimation),
    )
    level = u(215.0, 250.0)
    border = u(*scanner.border)
    marked = rng.random() < scanner.markers
    letter = "L" if rng.random() < 0.5 else "R"
    corner = -1 if rng.random() < 0.5 else 1
    inverted = rng.random() < scanner.monochrome1
    return Detector(
        field_of_view=field_of_view,
        resolution=resolution,
        grain_correlation=correlation,
        collimation=collimation,
        collimation_level=level if any(collimation) else Detector.collimation_level,
        border=border,
        marker=letter if marked else "",
        marker_corner=corner if marked else Detector.marker_corner,
        monochrome1=bool(inverted),
    )


def _zoom_blob(blob: Blob, factor: float) -> Blob:
    return replace(
        blob,
        cx=0.5 + (blob.cx - 0.5) / factor,
        cy=0.5 + (blob.cy - 0.5) / factor,
        rx=blob.rx / factor,
        ry=blob.ry / factor,
    )


def in_field_of_view(spec: PatientSpec) -> PatientSpec:
    """The patient as its detector frames it: geometry scaled about the image centre.

    A field of view `f` shrinks everything in image coordinates by `1 / f` (the
    anatomy's centre and scale, the opacities, a nodule); body-unit shapes
    follow the anatomy. `f = 1` returns `spec` itself.
    """
    factor = spec.detector.field_of_view
    if factor == 1.0:
        return spec
    anatomy = replace(
        spec.anatomy,
        center_x=0.5 + (spec.anatomy.center_x - 0.5) / factor,
        center_y=0.5 + (spec.anatomy.center_y - 0.5) / factor,
        scale=spec.anatomy.scale / factor,
    )
    nodule = spec.findings.nodule
    findings = replace(spec.findings, nodule=None if nodule is None else _zoom_blob(nodule, factor))
    return replace(
        spec,
        anatomy=anatomy,
        findings=findings,
        opacities=tuple(_zoom_blob(blob, factor) for blob in spec.opacities),
    )


def resample(level: np.ndarray, resolution: float) -> np.ndarray:
    """Samples a `(S, S)` float32 image at `resolution` of its pixels and interpolates back."""
    if resolution >= 1.0:
        return level
    size = level.shape[0]
    coarse = max(8, round(size * resolution))
    image = Image.fromarray(level, mode="F").resize((coarse, coarse), Image.Resampling.BOX)
    return np.array(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def correlate(noise: np.ndarray, sigma: float) -> np.ndarray:
    """White noise `(S, S)` smoothed with a Gaussian of `sigma` pixels, back to unit std."""
    if sigma <= 0.0:
        return noise
    smooth = ndimage.gaussian_filter(noise, sigma, mode="wrap")
    return smooth / max(float(smooth.std()), 1e-6)


def collimate(level: np.ndarray, detector: Detector) -> np.ndarray:
    """Replaces the collimated margins with their bright level (soft 1.5-pixel penumbra)."""
    top, bottom, left, right = (share * level.shape[0] for share in detector.collimation)
    if not (top or bottom or left or right):
        return level
    size = level.shape[0]
    centres = np.arange(size, dtype=np.float32) + 0.5
    rows = np.minimum(centres - top, size - bottom - centres)[:, None]
    cols = np.minimum(centres - left, size - right - centres)[None, :]
    exposed = soft(np.minimum(rows, cols), 1.5)
    return level * exposed + detector.collimation_level * (1.0 - exposed)


def frame(level: np.ndarray, detector: Detector) -> np.ndarray:
    """Adds the padded black borders and the burned-in side marker to a `(S, S)` image."""
    size = level.shape[0]
    bar = round(detector.border * size)
    if bar:
        level = level.copy()
        level[:, :bar] = 0.0
        level[:, size - bar :] = 0.0
    if detector.marker:
        height = max(4, round(_MARKER_HEIGHT * size))
        mask = Image.new("L", (size, size), 0)
        font = ImageFont.load_default(size=height)
        inset = round(_MARKER_INSET * size) + bar
        x = inset if detector.marker_corner < 0 else size - inset - height
        # Bold strokes, like a lead letter's shadow.
        ImageDraw.Draw(mask).text(
            (x, round(_MARKER_INSET * size)),
            detector.marker,
            255,
            font,
            stroke_width=max(1, height // 10),
            stroke_fill=255,
        )
        alpha = np.asarray(mask, dtype=np.float32) / 255.0
        level = level * (1.0 - alpha) + 255.0 * alpha
    return level
