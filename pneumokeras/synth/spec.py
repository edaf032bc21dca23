"""What a synthetic patient is made of: frozen dataclasses, no randomness, no pixels.

`sampling` draws a `PatientSpec`; `render` turns it into pixels; `encoding` into
a DICOM file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LUNG_OPACITY = "Lung Opacity"
NOT_NORMAL = "No Lung Opacity / Not Normal"
NORMAL = "Normal"
CLASSES = (LUNG_OPACITY, NOT_NORMAL, NORMAL)


@dataclass(frozen=True)
class Blob:
    """An ellipse with a compact profile: a lesion, or a shape of the anatomy.

    Lesions (opacities, nodules) are in image-normalised coordinates: fractions of
    the image side from the top-left corner. Anatomical shapes are in the body
    units of `Anatomy`.

    Attributes:
        cx: centre, x.
        cy: centre, y (downwards).
        rx: semi-axis before rotation.
        ry: the other semi-axis.
        angle: rotation of the `rx` axis from the x axis, radians.
        amplitude: peak added attenuation (lungs are ~0.4-0.6 below soft tissue).
    """

    cx: float
    cy: float
    rx: float
    ry: float
    angle: float
    amplitude: float

    def bounds(self) -> tuple[float, float, float, float]:
        """Returns the axis-aligned bounding box `(x0, y0, x1, y1)`, normalised."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        hx = math.hypot(self.rx * c, self.ry * s)
        hy = math.hypot(self.rx * s, self.ry * c)
        return self.cx - hx, self.cy - hy, self.cx + hx, self.cy + hy


# A unit circle at the origin; `replace` it to place and size a shape.
UNIT_CIRCLE = Blob(0.0, 0.0, 1.0, 1.0, 0.0, 1.0)


@dataclass(frozen=True)
class Anatomy:
    """Patient geometry and tissue densities.

    Lengths are in "body units": fractions of the image side before the
    patient's `scale`; `x` grows to the image right (the patient's left, as in a
    PA view), `y` grows downwards, and the origin is the chest centre.

    Attributes:
        center_x: chest centre, fraction of the image width.
        center_y: chest centre, fraction of the image height.
        scale: body size relative to the image.
        rotation: in-plane rotation, radians.
        body_half_width: half-width of the torso.
        lung_top: y of the lung apices.
        lung_base: y of the costophrenic angles `(image left, image right)`.
        dome_height: rise of each hemidiaphragm dome above its angle.
        lung_lateral: |x| of the lateral lung edge at its widest.
        lung_medial: |x| of the medial lung edge.
        heart: heart ellipse `(x, y, rx, ry, angle)`.
        mediastinum_half_width: half-width of the upper mediastinum.
        spine_curve: scoliosis `(amplitude, phase)`; amplitude in body units.
        rib_top: y of the first rib's spine end.
        rib_spacing: vertical distance between posterior ribs.
        rib_density: attenuation added by a rib.
        tissue_density: soft-tissue attenuation at the thickest point.
        lung_air: attenuation removed inside the lungs (aeration).
        breast_density: attenuation of the breast shadows (0 for men).
        gastric_bubble: draw a gas bubble under the left hemidiaphragm.
    """

    center_x: float
    center_y: float
    scale: float
    rotation: float
    body_half_width: float
    lung_top: float
    lung_base: tuple[float, float]
    dome_height: float
    lung_lateral: float
    lung_medial: float
    heart: tuple[float, float, float, float, float]
    mediastinum_half_width: float
    spine_curve: tuple[float, float]
    rib_top: float
    rib_spacing: float
    rib_density: float
    tissue_density: float
    lung_air: float
    breast_density: float
    gastric_bubble: bool

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        """Maps body coordinates to image-normalised `(u, v)`."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        return (
            self.center_x + self.scale * (c * x - s * y),
            self.center_y + self.scale * (s * x + c * y),
        )


@dataclass(frozen=True)
class Exposure:
    """How attenuation becomes grey levels, and the image's blur and noise.

    Attributes:
        offset: level of air (attenuation 0) before the film curve, grey levels.
        gain: grey levels per unit of attenuation before the film curve.
        gamma: exponent applied to the film curve's [0, 1] output.
        blur: Gaussian blur sigma, fraction of the image side.
        mottle: std of low-frequency noise, attenuation units.
        grain: std of per-pixel noise of a 1024-pixel image, grey levels; smaller
            images get proportionally less (bigger pixels average it out).
    """

    offset: float
    gain: float
    gamma: float
    blur: float
    mottle: float
    grain: float


@dataclass(frozen=True)
class Detector:
    """What the scanner does besides the exposure curve: field, sampling, noise, frame, labels.

    The defaults change nothing (the image as `Exposure` alone makes it).

    Attributes:
        field_of_view: detector side relative to the default (1.2: a 20 % larger
            field, so the chest looks smaller and the pixel spacing grows).
        resolution: share of the output resolution the detector resolves (0.5:
            sampled at half the pixels and interpolated back); 1 = full.
        grain_correlation: correlation length of the per-pixel noise, pixels of
            a 1024-pixel image (Gaussian sigma); 0 = white noise.
        collimation: bright collimator margins `(top, bottom, left, right)`,
            shares of the image side.
        collimation_level: grey level of the collimated margins.
        border: black bars at the left and right edges (a non-square detector
            padded to a square), share of the image side each.
        marker: a burned-in side marker ("L" or "R"), or "" for none.
        marker_corner: -1 top-left, +1 top-right.
        monochrome1: stored with inverted polarity (PhotometricInterpretation
            MONOCHROME1: 0 is white); readers invert it back.
    """

    field_of_view: float = 1.0
    resolution: float = 1.0
    grain_correlation: float = 0.0
    collimation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    collimation_level: float = 235.0
    border: float = 0.0
    marker: str = ""
    marker_corner: int = -1
    monochrome1: bool = False


@dataclass(frozen=True)
class Findings:
    """Findings other than pneumonia; a "Normal" patient has at most electrodes.

    Attributes:
        heart_scale: cardiomegaly factor on the heart's size (1.0 = normal).
        effusion: pleural effusion `(side, height)`: side -1 image left, +1 image
            right; height of the fluid level above the costophrenic angle, body
            units; `None` when absent.
        nodule: a small dense nodule (image coordinates), or `None`.
        catheter: a line from the neck, `(x0, bend, y_end)` in body units, or `None`.
        electrodes: ECG electrode centres in body units.
    """

    heart_scale: float = 1.0
    effusion: tuple[int, float] | None = None
    nodule: Blob | None = None
    catheter: tuple[float, float, float] | None = None
    electrodes: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class PatientSpec:
    """Everything needed to render and describe one synthetic patient.

    Attributes:
        patient_id: UUID4-like RSNA patientId.
        label_class: one of `CLASSES`.
        view: "AP" or "PA".
        sex: "M" or "F".
        age: years.
        anatomy: geometry and densities.
        exposure: grey-level mapping, blur and noise.
        findings: other findings (any class may carry devices).
        opacities: pneumonia opacities; non-empty exactly for "Lung Opacity".
        texture_seed: seed of the patient's random texture and noise fields.
        detector: field of view, resolution, noise texture, collimation,
            borders, markers and polarity of the scanner.
    """

    patient_id: str
    label_class: str
    view: str
    sex: str
    age: int
    anatomy: Anatomy
    exposure: Exposure
    findings: Findings
    opacities: tuple[Blob, ...]
    texture_seed: int
    detector: Detector = Detector()
