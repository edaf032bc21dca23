"""Synthetic RSNA-shaped data set: chest phantoms as JPEG-Baseline DICOMs plus label CSVs.

The folder that `generate` writes has the layout of the RSNA Pneumonia Detection
Challenge (`stage_2_train_images/<patientId>.dcm`, `stage_2_train_labels.csv`,
`stage_2_detailed_class_info.csv`), so every later step runs on it unchanged.

Each patient is a pure function of `(seed, index)` and its class: `sample_patient`
draws a `PatientSpec` (anatomy, exposure, findings, opacities) from its own seed
sequence, `render_image` turns the spec into pixels and `encode_dicom` into file
bytes. Nothing depends on global random state, wall-clock time or worker order, so
the same arguments give byte-identical folders for any number of workers.

Images are built in an "attenuation" map (0 = air, ~1 = mediastinum) in
normalised coordinates, then mapped to grey levels by a per-patient exposure
curve. Positives get 1-4 soft opacities, each drawn within one lung field and
placed so that most of it (`_MIN_SHARE_IN_LUNG` of its mass) lies in that lung;
a label box is the bounding box of the visible part of its opacity, so it
encloses the opacity and stays inside the lung field. The exposure, contrast and
lung-aeration distributions are the same for every class and wide, so global
intensity statistics do not give the label away: a classifier has to find the
local opacities.
"""

from __future__ import annotations

import csv
import io
import math
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, generate_uid
from scipy import ndimage
from tqdm import tqdm

from pneumokeras.errors import UserError
from pneumokeras.utils.fileio import atomic_open, atomic_write_bytes
from pneumokeras.utils.workers import WorkerPool, resolve

IMAGES_DIR = "stage_2_train_images"
LABELS_CSV = "stage_2_train_labels.csv"
CLASS_INFO_CSV = "stage_2_detailed_class_info.csv"

LUNG_OPACITY = "Lung Opacity"
NOT_NORMAL = "No Lung Opacity / Not Normal"
NORMAL = "Normal"
CLASSES = (LUNG_OPACITY, NOT_NORMAL, NORMAL)

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"

# Share of negatives that carry other findings ("Not Normal"); RSNA's is 57 %, but
# "Normal" stays the common negative here.
NOT_NORMAL_FRACTION = 0.3
# Boxes per positive patient in RSNA stage 2: 2,614 / 3,266 / 119 / 13 patients.
BOX_COUNT_P = (0.435, 0.543, 0.020, 0.002)
# Probability of an AP view; RSNA positives are AP more often than negatives.
AP_PROBABILITY = {LUNG_OPACITY: 0.65, NOT_NORMAL: 0.45, NORMAL: 0.45}
# Geometry is drawn at most this many pixels a side and upsampled; it is smooth.
_MAX_BASE = 256
# Random texture fields are drawn at this fixed resolution so that a patient looks
# the same at every output size.
_TEXTURE_SIZE = 128
# Pixel spacing of a 1024-pixel image, mm (RSNA images are 0.14-0.17 mm).
_SPACING_1024_MM = 0.143
# Width of the soft edges of anatomical shapes, body units.
_EDGE = 0.006
# An opacity is drawn again (at most `_PLACEMENT_TRIES` times, keeping the best)
# until this share of its mass lies in its lung field, so that little of it is cut
# away by the lung's edge and its label box stays in the lung.
_MIN_SHARE_IN_LUNG = 0.85
_PLACEMENT_TRIES = 25


@dataclass(frozen=True)
class SynthSummary:
    """What `generate` wrote.

    Attributes:
        out_dir: the data set folder.
        patients: number of patients (one DICOM each).
        positives: patients with Target 1 ("Lung Opacity").
        size: image side, pixels.
        seconds: wall-clock time taken.
    """

    out_dir: Path
    patients: int
    positives: int
    size: int
    seconds: float


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
_UNIT = Blob(0.0, 0.0, 1.0, 1.0, 0.0, 1.0)


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


def patient_seed(seed: int, index: int) -> np.random.SeedSequence:
    """Returns the seed sequence of patient `index` of a data set."""
    return np.random.SeedSequence(seed, spawn_key=(0, index))


def _patient_id(seq: np.random.SeedSequence) -> str:
    return str(uuid.UUID(bytes=_child(seq, 0).bytes(16), version=4))


def _child(seq: np.random.SeedSequence, key: int) -> np.random.Generator:
    # Derived without `seq.spawn`, which mutates `seq`: calling a function twice
    # with the same sequence must give the same result.
    return np.random.default_rng(
        np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, key))
    )


def assign_classes(seed: int, patients: int, positive_fraction: float) -> list[str]:
    """Draws the class of each patient.

    Exactly `round(patients * positive_fraction)` positives and
    `round(negatives * NOT_NORMAL_FRACTION)` "Not Normal" negatives, at positions
    given by a permutation seeded from `seed` alone.

    Returns:
        `patients` class names, one of `CLASSES` each, in patient order.
    """
    positives = round(patients * positive_fraction)
    not_normal = round((patients - positives) * NOT_NORMAL_FRACTION)
    order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,))).permutation(
        patients
    )
    classes = [NORMAL] * patients
    for rank, index in enumerate(order.tolist()):
        if rank < positives:
            classes[index] = LUNG_OPACITY
        elif rank < positives + not_normal:
            classes[index] = NOT_NORMAL
    return classes


def _sample_anatomy(rng: np.random.Generator, sex: str) -> Anatomy:
    u = rng.uniform
    base = u(0.17, 0.25)
    return Anatomy(
        center_x=0.5 + rng.normal(0.0, 0.015),
        center_y=0.5 + rng.normal(0.0, 0.02),
        scale=u(0.92, 1.12),
        rotation=math.radians(rng.normal(0.0, 1.5)),
        body_half_width=u(0.40, 0.50),
        lung_top=u(-0.40, -0.34),
        lung_base=(base - u(0.0, 0.03), base),
        dome_height=u(0.05, 0.10),
        lung_lateral=u(0.32, 0.37),
        lung_medial=u(0.035, 0.055),
        heart=(u(0.05, 0.08), u(0.13, 0.16), u(0.15, 0.18), u(0.11, 0.13), u(-0.45, -0.15)),
        mediastinum_half_width=u(0.05, 0.075),
        spine_curve=(u(0.0, 0.008), u(0.0, 2 * math.pi)),
        rib_top=u(-0.43, -0.39),
        rib_spacing=u(0.058, 0.068),
        rib_density=u(0.08, 0.15),
        tissue_density=u(0.65, 0.85),
        lung_air=u(0.38, 0.62),
        breast_density=u(0.04, 0.14) if sex == "F" else 0.0,
        gastric_bubble=bool(rng.random() < 0.6),
    )


def _sample_exposure(rng: np.random.Generator) -> Exposure:
    u = rng.uniform
    return Exposure(
        offset=u(0.0, 30.0),
        gain=u(260.0, 340.0),
        gamma=math.exp(u(-0.25, 0.25)),
        blur=u(0.0008, 0.0025),
        mottle=u(0.004, 0.01),
        grain=u(3.0, 8.0),
    )


def _lateral_edge(anatomy: Anatomy, side: int, y: np.ndarray | float) -> np.ndarray | float:
    """|x| of a lung's lateral edge at height `y`: narrow at the apex, widest at the base."""
    base = anatomy.lung_base[(side + 1) // 2]
    t = np.clip((y - anatomy.lung_top) / (base - anatomy.lung_top), 0.0, 1.0)
    return anatomy.lung_medial + (anatomy.lung_lateral - anatomy.lung_medial) * t**0.6


def _sample_blob_in_lung(
    rng: np.random.Generator,
    anatomy: Anatomy,
    side: int,
    height: tuple[float, float],
    radius: tuple[float, float],
    elongation: tuple[float, float],
    amplitude: float,
) -> Blob:
    """Draws a lesion centred in one lung; `height` is a range of fractions apex→base."""
    top, dome = anatomy.lung_top, anatomy.lung_base[(side + 1) // 2] - anatomy.dome_height
    y = top + rng.uniform(*height) * (dome - top)
    medial, lateral = anatomy.lung_medial, float(_lateral_edge(anatomy, side, y))
    xs = medial + rng.uniform(0.3, 0.75) * (lateral - medial)
    cx, cy = anatomy.to_image(side * xs, y)
    rx = rng.uniform(*radius) * anatomy.scale
    return Blob(
        cx=cx,
        cy=cy,
        rx=rx,
        ry=rx * rng.uniform(*elongation),
        angle=rng.uniform(-0.35, 0.35) + anatomy.rotation,
        amplitude=amplitude,
    )


def _sample_opacities(
    rng: np.random.Generator, anatomy: Anatomy, findings: Findings
) -> tuple[Blob, ...]:
    count = 1 + int(rng.choice(4, p=BOX_COUNT_P))
    first = int(rng.choice((-1, 1)))
    # Two opacities are usually bilateral, as in RSNA; more alternate sides.
    sides = [first, -first] if count == 2 and rng.random() < 0.85 else [first] * min(count, 2)
    sides += [-s for s in sides][: count - len(sides)]
    blobs = []
    for k, side in enumerate(sides):
        # Lower zones are more often involved; several in one lung are stacked.
        band = (
            (0.25, 0.9)
            if sides.count(side) == 1
            else ((0.15, 0.45), (0.55, 0.9))[sides[:k].count(side) % 2]
        )
        best: tuple[float, Blob] | None = None
        for _ in range(_PLACEMENT_TRIES):
            blob = _sample_blob_in_lung(
                rng,
                anatomy,
                side,
                band,
                # Boxes near RSNA's size (median 21 % × 29 % of the image side): with
                # the placement rule, median 18 % × 25 %. Larger opacities would move
                # the global statistics (see test_global_statistics_do_not_give_the_label).
                radius=(0.07, 0.125),
                elongation=(1.0, 1.9),
                amplitude=anatomy.lung_air * rng.uniform(0.6, 0.95),
            )
            share = _share_in_lung(anatomy, findings, blob)
            if best is None or share > best[0]:
                best = (share, blob)
            if share >= _MIN_SHARE_IN_LUNG:
                break
        blobs.append(best[1])
    return tuple(blobs)


def _sample_findings(rng: np.random.Generator, anatomy: Anatomy, present: bool) -> Findings:
    """Draws findings; only electrodes when `present` is false.

    Every draw happens whatever `present` is, so the electrodes (which any class
    may have) do not depend on the class.
    """
    count = 2 if rng.random() < 0.3 else 1
    kinds = set(rng.permutation(["heart", "effusion", "nodule", "catheter"])[:count].tolist())
    side = int(rng.choice((-1, 1)))
    heart_scale = rng.uniform(1.3, 1.55)
    effusion = (side, rng.uniform(0.05, 0.14))
    nodule = _sample_blob_in_lung(
        rng, anatomy, -side, (0.2, 0.8), (0.012, 0.02), (1.0, 1.15), rng.uniform(0.5, 0.7)
    )
    catheter = (rng.uniform(0.02, 0.1) * side, rng.uniform(0.05, 0.25), rng.uniform(-0.15, 0.05))
    # ECG electrodes appear in every class alike (monitoring is common in the ICU).
    electrodes = tuple(
        (rng.uniform(-0.35, 0.35), rng.uniform(-0.35, 0.15)) for _ in range(rng.integers(2, 5))
    )
    with_electrodes = bool(rng.random() < 0.2)
    return Findings(
        heart_scale=heart_scale if present and "heart" in kinds else 1.0,
        effusion=effusion if present and "effusion" in kinds else None,
        nodule=nodule if present and "nodule" in kinds else None,
        catheter=catheter if present and "catheter" in kinds else None,
        electrodes=electrodes if with_electrodes else (),
    )


def sample_patient(seq: np.random.SeedSequence, label_class: str) -> PatientSpec:
    """Draws one patient.

    Each part (identity, metadata, anatomy, exposure, findings, opacities, texture)
    has its own random stream, so a patient's anatomy does not depend on its class.

    Args:
        seq: the patient's seed sequence (see `patient_seed`); not modified.
        label_class: one of `CLASSES`.

    Returns:
        The patient's spec.
    """
    if label_class not in CLASSES:
        raise ValueError(f"label_class must be one of {CLASSES}. Received: {label_class!r}")
    meta, anat, expo, find, opac, tex = (_child(seq, k) for k in range(1, 7))
    view = "AP" if meta.random() < AP_PROBABILITY[label_class] else "PA"
    sex = "M" if meta.random() < 0.57 else "F"
    age = int(np.clip(round(meta.normal(48.0, 16.5)), 1, 92))
    anatomy = _sample_anatomy(anat, sex)
    scoliosis, extra_findings = find.random() < 0.2, find.random() < 0.3
    curve, twist = find.uniform(0.02, 0.04), math.radians(find.uniform(-6, 6))
    if label_class == NOT_NORMAL and scoliosis:
        anatomy = replace(
            anatomy,
            spine_curve=(curve, anatomy.spine_curve[1]),
            rotation=anatomy.rotation + twist,
        )
    # Positives carry other findings too, so a finding alone does not mean "negative".
    with_findings = label_class == NOT_NORMAL or (label_class == LUNG_OPACITY and extra_findings)
    findings = _sample_findings(find, anatomy, with_findings)
    opacities = _sample_opacities(opac, anatomy, findings) if label_class == LUNG_OPACITY else ()
    return PatientSpec(
        patient_id=_patient_id(seq),
        label_class=label_class,
        view=view,
        sex=sex,
        age=age,
        anatomy=anatomy,
        exposure=_sample_exposure(expo),
        findings=findings,
        opacities=opacities,
        texture_seed=int(tex.integers(2**63)),
    )


def boxes(spec: PatientSpec, size: int) -> list[tuple[float, float, float, float]]:
    """Returns the label boxes `(x, y, width, height)` of a patient, pixels.

    `x, y` is the top-left corner. Each box is the bounding box, in whole pixels,
    of the visible part of one opacity: the cells of `render_image`'s geometry
    grid where the opacity is non-zero within its own lung field. So a box
    encloses every pixel its opacity changes (plus resampling's one or two
    pixels above 256 px) and lies within the bounding box of that lung.
    """
    n = min(size, _MAX_BASE)
    scale = size / n
    out = []
    for blob in spec.opacities:
        win, profile, lung = _opacity_in_lung(spec.anatomy, spec.findings, blob, n)
        rows, cols = np.nonzero((profile > 0) & (lung > 0))
        r0, r1 = win[0].start + rows.min(), win[0].start + rows.max() + 1
        c0, c1 = win[1].start + cols.min(), win[1].start + cols.max() + 1
        x0, y0 = math.floor(c0 * scale), math.floor(r0 * scale)
        x1, y1 = math.ceil(c1 * scale), math.ceil(r1 * scale)
        out.append((float(x0), float(y0), float(x1 - x0), float(y1 - y0)))
    return out


def _soft(d: np.ndarray, width: float) -> np.ndarray:
    """Smooth step from 0 (d ≤ -width) to 1 (d ≥ width)."""
    t = d * (0.5 / width)
    t += 0.5
    np.clip(t, 0.0, 1.0, out=t)
    return t * t * (3 - 2 * t)


def _resize(field: np.ndarray, n: int) -> np.ndarray:
    if field.shape[0] == n:
        return field
    image = Image.fromarray(field.astype(np.float32), mode="F")
    return np.array(image.resize((n, n), Image.Resampling.BICUBIC), dtype=np.float32)


def _texture(rng: np.random.Generator, n: int, correlation: float) -> np.ndarray:
    """Smooth noise of unit std, correlation length a fraction of the side; (n, n)."""
    white = rng.standard_normal((_TEXTURE_SIZE, _TEXTURE_SIZE), dtype=np.float32)
    field = ndimage.gaussian_filter(white, correlation * _TEXTURE_SIZE, mode="wrap")
    return _resize(field / field.std(), n)


def _ellipse_r2(
    u: np.ndarray, v: np.ndarray, cx: float, cy: float, rx: float, ry: float, angle: float
) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    du, dv = u - cx, v - cy
    return ((c * du + s * dv) / rx) ** 2 + ((-s * du + c * dv) / ry) ** 2


def _blob(u: np.ndarray, v: np.ndarray, blob: Blob, power: float = 2.0) -> np.ndarray:
    """Profile `(1 - r²)^power` inside the ellipse, exactly 0 outside."""
    r2 = _ellipse_r2(u, v, blob.cx, blob.cy, blob.rx, blob.ry, blob.angle)
    return np.maximum(1.0 - r2, 0.0) ** power


def _body_xy(a: Anatomy, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image-normalised `(u, v)` → body coordinates `(x, y)` (inverse of `to_image`)."""
    c, s = math.cos(a.rotation), math.sin(a.rotation)
    du, dv = (u - a.center_x) / a.scale, (v - a.center_y) / a.scale
    return c * du + s * dv, -s * du + c * dv


def _heart(a: Anatomy, f: Findings, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Soft heart mask in [0, 1] (cardiomegaly included) on body coordinates."""
    hx, hy, hrx, hry, hangle = a.heart
    scale = f.heart_scale
    heart_r2 = _ellipse_r2(x, y, hx, hy, hrx * scale, hry * (1 + (scale - 1) / 3), hangle)
    return _soft(1 - heart_r2, 0.12)


def _lung_fields(
    a: Anatomy,
    heart: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    edges: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """The (image-left, image-right) lung fields in [0, 1]: the lungs less the heart.

    The heart displaces the lungs, so it shows as a dense silhouette.
    """
    left, right = _lung_masks(a, x, y, edges, _EDGE)
    return left * (1 - heart), right * (1 - heart)


def _side(a: Anatomy, blob: Blob) -> int:
    """The lung an opacity (image coordinates) is centred in: -1 image left, +1 right."""
    x, _ = _body_xy(a, blob.cx, blob.cy)
    return 1 if x > 0 else -1


def _opacity_in_lung(
    a: Anatomy, f: Findings, blob: Blob, n: int
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """An opacity on an n×n grid: its window, its profile there and its lung's field there.

    The grid is `render_image`'s, so the profile is non-zero and the field positive
    on exactly the cells that the opacity changes.
    """
    win = _window(None, blob, n)
    grid = (np.arange(n, dtype=np.float32) + 0.5) / n
    u, v = np.meshgrid(grid[win[1]], grid[win[0]])
    x, y = _body_xy(a, u, v)
    edges = (_lateral_edge(a, -1, y), _lateral_edge(a, 1, y))
    fields = _lung_fields(a, _heart(a, f, x, y), x, y, edges)
    return win, _blob(u, v, blob, 1.5), fields[_side(a, blob) > 0]


def _share_in_lung(a: Anatomy, f: Findings, blob: Blob) -> float:
    """Share of an opacity's mass inside its lung field (drawn at `_TEXTURE_SIZE`)."""
    _, profile, lung = _opacity_in_lung(a, f, blob, _TEXTURE_SIZE)
    return float((profile * lung).sum() / profile.sum())


def _lung_masks(
    a: Anatomy, x: np.ndarray, y: np.ndarray, edges: tuple[np.ndarray, np.ndarray], eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Soft masks of the image-left and image-right lung, each (n, n) in [0, 1].

    `edges` are the lateral edges (`_lateral_edge`) of both lungs on the grid.
    """
    masks = []
    for side, edge in zip((-1, 1), edges, strict=True):
        xs = side * x
        mid, half = (a.lung_medial + a.lung_lateral) / 2, (a.lung_lateral - a.lung_medial) / 2
        dome_rise = np.clip(1 - ((xs - mid) / (1.15 * half)) ** 2, 0, 1)
        dome = a.lung_base[(side + 1) // 2] - a.dome_height * dome_rise
        inside = np.minimum(xs - a.lung_medial, edge - xs)
        masks.append(_soft(np.minimum(np.minimum(inside, dome - y), y - a.lung_top), eps))
    return masks[0], masks[1]


def _window(anatomy: Anatomy | None, blob: Blob, n: int) -> tuple[slice, slice]:
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


def _band(distance: np.ndarray, half_width: float, eps: float) -> np.ndarray:
    """1 where |distance| < half_width, with soft edges of width `eps`."""
    return _soft(half_width - np.abs(distance), eps)


def _ribs(
    a: Anatomy, x: np.ndarray, y: np.ndarray, edges: tuple[np.ndarray, np.ndarray], eps: float
) -> np.ndarray:
    """Rib cage: posterior ribs (dense, falling laterally), anterior ribs (faint)."""
    q = np.clip(np.abs(x) / a.lung_lateral, 0, 1.2)
    phase = (y - a.rib_top + 0.02 * q - 0.18 * q * q * np.sqrt(q)) / a.rib_spacing
    frac = phase - np.floor(phase)
    # Cortical bone makes a rib's edges denser than its middle.
    posterior = _band(frac - 0.22, 0.18, eps / a.rib_spacing) * (
        0.65 + 0.35 * ((frac - 0.22) / 0.18) ** 2
    )
    posterior *= _soft(phase, 0.1) * _soft(9.5 - phase, 0.3)
    phase_a = (y - a.rib_top - 0.12 - 0.14 * (1 - q)) / (1.25 * a.rib_spacing)
    frac_a = phase_a - np.floor(phase_a)
    anterior = _band(frac_a - 0.3, 0.12, eps / a.rib_spacing) * _soft(phase_a, 0.1)
    anterior *= _soft(5.5 - phase_a, 0.3) * _soft(q - 0.3, 0.05)
    edge = np.where(x < 0, *edges)
    cage = _soft(edge + 0.035 - np.abs(x), eps) * _soft(np.abs(x) - 0.03, eps)
    return a.rib_density * cage * (posterior + 0.45 * anterior)


def _attenuation(
    spec: PatientSpec, u: np.ndarray, v: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Anatomy and findings without opacities, (n, n), and the (left, right) lung fields."""
    a, f = spec.anatomy, spec.findings
    n = u.shape[0]
    x, y = _body_xy(a, u, v)
    eps = _EDGE

    # Soft tissue: thickness ∝ chord length of a cylinder, narrowing to the shoulders.
    half = a.body_half_width * (0.6 + 0.4 * _soft(y + 0.42, 0.08))
    chord = np.sqrt(np.clip(1 - (x / half) ** 2, 0, 1))
    att = a.tissue_density * (0.3 + 0.7 * chord) * _soft(half - np.abs(x), eps)
    for side in (-1, 1) if a.breast_density else ():
        breast = replace(_UNIT, cx=side * 0.2, cy=a.lung_base[0] - 0.03, rx=0.17, ry=0.13)
        win = _window(a, breast, n)
        cut = _soft(y[win] - (a.lung_base[0] - 0.12), 0.03)
        att[win] += a.breast_density * _blob(x[win], y[win], breast, 1.0) * cut

    hy = a.heart[1]
    heart = _heart(a, f, x, y)
    edges = (_lateral_edge(a, -1, y), _lateral_edge(a, 1, y))
    left, right = _lung_fields(a, heart, x, y, edges)
    lungs = np.maximum(left, right)
    att -= a.lung_air * lungs * (0.7 + 0.3 * chord)
    # Vessel markings, denser towards the hila.
    hila = np.exp(-((np.abs(x) - 0.1) ** 2 + (y + 0.02) ** 2) / 0.02)
    att += 0.015 * lungs * (0.4 + hila) * _texture(rng, n, 0.005)

    spine_x = a.spine_curve[0] * np.sin(2.2 * y + a.spine_curve[1])
    upper = _soft(hy - y, 0.04)
    att += 0.22 * upper * _band(x - spine_x, a.mediastinum_half_width, eps)
    att -= 0.1 * _soft(-0.18 - y, eps) * _band(x - spine_x, 0.012, 0.004)
    knob = replace(_UNIT, cx=0.055, cy=-0.2, rx=0.035, ry=0.032)
    win = _window(a, knob, n)
    att[win] += 0.18 * _blob(x[win], y[win], knob, 0.5)
    vertebrae = 0.75 + 0.25 * np.cos(2 * np.pi * y / 0.055)
    att += 0.12 * vertebrae * _band(x - spine_x, 0.03, eps)
    # Below the diaphragm the heart merges with the abdomen's soft tissue.
    att += 0.14 * heart * _soft(a.lung_base[1] - 0.7 * a.dome_height - y, 0.03)

    att += _ribs(a, x, y, edges, eps)
    for side in (-1, 1):
        along = side * x
        line = -0.34 - 0.1 * (along - 0.05) / 0.3
        span = _soft(along - 0.05, eps) * _soft(0.36 - along, eps)
        att += 0.16 * span * _band(y - line, 0.013, eps)

    if a.gastric_bubble:
        bubble = replace(_UNIT, cx=0.17, cy=a.lung_base[1] + 0.04, rx=0.05, ry=0.028)
        win = _window(a, bubble, n)
        att[win] -= 0.2 * _blob(x[win], y[win], bubble, 0.5)
    if f.effusion is not None:
        side, height = f.effusion
        mask = right if side == 1 else left
        lateral = np.clip(side * x / a.lung_lateral, 0, 1)
        # A meniscus: the fluid climbs the lateral chest wall.
        level = a.lung_base[(side + 1) // 2] - height - 0.08 * lateral**3
        att += 0.9 * a.lung_air * mask * _soft(y - level, 0.015)
    if f.catheter is not None:
        x0, bend, y_end = f.catheter
        path = x0 - bend * (y + 0.6) ** 2 * np.sign(x0)
        att += 0.5 * _band(x - path, 0.004, 0.002) * _soft(y + 0.6, eps) * _soft(y_end - y, eps)
    for ex, ey in f.electrodes:
        win = _window(a, replace(_UNIT, cx=ex, cy=ey, rx=0.025, ry=0.025), n)
        ring = np.sqrt((x[win] - ex) ** 2 + (y[win] - ey) ** 2)
        att[win] += 0.5 * _band(ring - 0.018, 0.004, 0.002)
    if f.nodule is not None:
        # Sampled in image coordinates, like the opacities.
        win = _window(None, f.nodule, n)
        att[win] += f.nodule.amplitude * _blob(u[win], v[win], f.nodule, 0.5)
    return att, (left, right)


def render_image(spec: PatientSpec, size: int) -> np.ndarray:
    """Renders a patient as an 8-bit MONOCHROME2 radiograph.

    Geometry is drawn at `min(size, 256)` pixels and upsampled (it is smooth);
    per-pixel grain is drawn at full size. Opacities are added after the blur,
    within their own lung and with compact support, so they change pixels only
    inside their boxes (plus one or two pixels of resampling).

    Args:
        spec: the patient.
        size: output side, pixels.

    Returns:
        uint8 array of shape `(size, size)`; larger values are denser (brighter).
    """
    n = min(size, _MAX_BASE)
    rng = np.random.default_rng(spec.texture_seed)
    grid = (np.arange(n, dtype=np.float32) + 0.5) / n
    u, v = np.meshgrid(grid, grid)
    att, lungs = _attenuation(spec, u, v, rng)
    ex = spec.exposure
    att = ndimage.gaussian_filter(att, ex.blur * n, truncate=3.0)
    att += ex.mottle * _texture(rng, n, 0.004)
    opacity_texture = _texture(rng, n, 0.015)
    for blob in spec.opacities:
        win = _window(None, blob, n)
        texture = np.clip(1 + 0.35 * opacity_texture[win], 0.2, 1.8)
        lung = lungs[_side(spec.anatomy, blob) > 0][win]  # an opacity stays in its lung
        att[win] += blob.amplitude * _blob(u[win], v[win], blob, 1.5) * lung * texture
    # A film-like curve: linear for thin parts, saturating softly for dense ones.
    level = np.tanh(np.maximum(ex.offset + ex.gain * att, 0.0) / 255.0) ** ex.gamma * 255.0
    level = _resize(level, size)
    level += rng.standard_normal((size, size), dtype=np.float32) * (ex.grain * size / 1024)
    return np.clip(np.rint(level), 0, 255).astype(np.uint8)


def encode_dicom(spec: PatientSpec, image: np.ndarray) -> bytes:
    """Encodes an image as an RSNA-like CR DICOM file with a JPEG Baseline frame.

    UIDs derive from the patient id and dates are fixed, so the bytes depend only
    on `spec` and `image`.

    Args:
        spec: the patient (identity and metadata).
        image: uint8 array of shape `(size, size)`.

    Returns:
        The complete DICOM file (preamble, file meta, data set).
    """
    size = image.shape[0]
    jpeg = io.BytesIO()
    Image.fromarray(image, mode="L").save(jpeg, format="JPEG", quality=95)
    sop_uid = generate_uid(entropy_srcs=[spec.patient_id, "sop"])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "19010101"
    ds.StudyTime = "000000.00"
    ds.AccessionNumber = ""
    ds.Modality = "CR"
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = f"view: {spec.view}"
    ds.StudyDescription = "synthetic chest phantom (pneumokeras)"
    ds.PatientName = spec.patient_id
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = spec.sex
    # RSNA writes ages as bare numbers ("62"), not as the standard's "062Y".
    ds.add(DataElement(0x00101010, "AS", str(spec.age), validation_mode=pydicom.config.IGNORE))
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = spec.view
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[spec.patient_id, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[spec.patient_id, "series"])
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    spacing = round(_SPACING_1024_MM * 1024 / size, 6)
    ds.PixelSpacing = [spacing, spacing]
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = encapsulate([jpeg.getvalue()])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _make_patient(
    task: tuple[int, int, str, int, str],
) -> tuple[str, str, list[tuple[float, float, float, float]]]:
    """Renders and writes one patient; returns (patientId, class, boxes)."""
    seed, index, label_class, size, images_dir = task
    spec = sample_patient(patient_seed(seed, index), label_class)
    data = encode_dicom(spec, render_image(spec, size))
    atomic_write_bytes(Path(images_dir) / f"{spec.patient_id}.dcm", data)
    return spec.patient_id, label_class, boxes(spec, size)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(
    patients: int, size: int, positive_fraction: float, seed: int, workers: int | None
) -> None:
    if not _is_int(patients) or patients < 1:
        raise UserError(f"patients must be an integer ≥ 1, got {patients!r}")
    if not _is_int(size) or not 64 <= size <= 4096:
        raise UserError(f"size must be an integer from 64 to 4096 pixels, got {size!r}")
    if not isinstance(positive_fraction, int | float) or not 0 <= positive_fraction <= 1:
        raise UserError(f"positive_fraction must be in [0, 1], got {positive_fraction!r}")
    if not _is_int(seed) or seed < 0:
        raise UserError(f"seed must be an integer ≥ 0, got {seed!r}")
    resolve(workers)


def generate(
    out_dir: str | Path,
    patients: int = 1000,
    size: int = 1024,
    positive_fraction: float = 0.225,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> SynthSummary:
    """Writes a synthetic RSNA-shaped data set.

    Files: `stage_2_train_images/<patientId>.dcm` (CR, JPEG Baseline, `size`²
    pixels), `stage_2_train_labels.csv` (`patientId,x,y,width,height,Target`, one
    row per box, boxes in pixels; one row with empty box fields per negative) and
    `stage_2_detailed_class_info.csv` (`patientId,class`, one row per label row).
    The CSVs are written last, so their presence means the images are complete.
    Running again with the same arguments rewrites the same bytes.

    Worker processes are spawned (see `pneumokeras.utils.workers`), so a script that
    calls this with workers needs the usual `if __name__ == "__main__":` guard.

    Args:
        out_dir: folder to write; created when missing.
        patients: number of patients, ≥ 1.
        size: image side, pixels, 64-4096.
        positive_fraction: share of "Lung Opacity" patients; exactly
            `round(patients * positive_fraction)` are positive.
        seed: seed of the whole data set, ≥ 0.
        workers: processes; None = every core, 0 = in this process, N = N
            worker processes (as for `convert`).
        progress: show a progress bar on stderr.

    Returns:
        A summary of what was written.

    Raises:
        UserError: on invalid arguments, or when the images folder already holds
            DICOMs of another data set.
    """
    _validate(patients, size, positive_fraction, seed, workers)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    images_dir = out_dir / IMAGES_DIR
    classes = assign_classes(seed, patients, positive_fraction)
    _check_no_foreign_images(images_dir, seed, patients)
    images_dir.mkdir(parents=True, exist_ok=True)

    tasks = [(seed, i, cls, size, str(images_dir)) for i, cls in enumerate(classes)]
    bar = {"total": patients, "desc": "synth", "unit": "img", "disable": not progress}
    with WorkerPool(resolve(workers, tasks=patients)) as pool:
        results = list(tqdm(pool.imap(_make_patient, tasks, chunksize=4), **bar))

    with (
        atomic_open(out_dir / LABELS_CSV, "w", newline="") as labels,
        atomic_open(out_dir / CLASS_INFO_CSV, "w", newline="") as info,
    ):
        label_writer = csv.writer(labels, lineterminator="\n")
        info_writer = csv.writer(info, lineterminator="\n")
        label_writer.writerow(["patientId", "x", "y", "width", "height", "Target"])
        info_writer.writerow(["patientId", "class"])
        for patient_id, label_class, patient_boxes in results:
            rows = [[f"{value:.1f}" for value in box] + ["1"] for box in patient_boxes]
            for row in rows or [["", "", "", "", "0"]]:
                label_writer.writerow([patient_id, *row])
                info_writer.writerow([patient_id, label_class])
    return SynthSummary(
        out_dir=out_dir,
        patients=patients,
        positives=classes.count(LUNG_OPACITY),
        size=size,
        seconds=time.perf_counter() - start,
    )


def _check_no_foreign_images(images_dir: Path, seed: int, patients: int) -> None:
    """Refuses to mix data sets: a stale DICOM would be an unlabelled extra image."""
    if not images_dir.is_dir():
        return
    existing = {p.stem for p in images_dir.glob("*.dcm")}
    if not existing:
        return
    ours = {_patient_id(patient_seed(seed, i)) for i in range(patients)}
    foreign = existing - ours
    if foreign:
        raise UserError(
            f"{images_dir} already holds {len(foreign)} DICOMs of another data set; "
            "choose an empty folder"
        )
