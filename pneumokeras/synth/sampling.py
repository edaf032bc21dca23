"""Drawing synthetic patients: classes, identity, anatomy, exposure, findings, opacities.

Each patient is a pure function of `(seed, index)` and its class: `sample_patient`
draws a `PatientSpec` from the patient's own seed sequence (`patient_seed`), one
child stream per part, so nothing depends on global random state or worker order,
and a patient's anatomy does not depend on its class.

Positives get 1-4 soft opacities, each drawn within one lung field and placed so
that most of it (`_MIN_SHARE_IN_LUNG` of its mass) lies in that lung. The
exposure, contrast and lung-aeration distributions are the same for every class
and wide, so global intensity statistics do not give the label away.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import replace

import numpy as np

from pneumokeras.synth.acquisition import (
    DEFAULT_SCANNER,
    Scanner,
    sample_detector,
    sample_exposure,
)
from pneumokeras.synth.geometry import lateral_edge, share_in_lung
from pneumokeras.synth.spec import (
    CLASSES,
    LUNG_OPACITY,
    NORMAL,
    NOT_NORMAL,
    Anatomy,
    Blob,
    Findings,
    PatientSpec,
)
from pneumokeras.synth.subgroups import SubgroupGap

# Share of negatives that carry other findings ("Not Normal"); RSNA's is 57 %, but
# "Normal" stays the common negative here.
NOT_NORMAL_FRACTION = 0.3
# Boxes per positive patient in RSNA stage 2: 2,614 / 3,266 / 119 / 13 patients.
BOX_COUNT_P = (0.435, 0.543, 0.020, 0.002)
# Probability of an AP view; RSNA positives are AP more often than negatives.
AP_PROBABILITY = {LUNG_OPACITY: 0.65, NOT_NORMAL: 0.45, NORMAL: 0.45}


# An opacity is drawn again (at most `_PLACEMENT_TRIES` times, keeping the best)
# until this share of its mass lies in its lung field, so that little of it is cut
# away by the lung's edge and its label box stays in the lung.
_MIN_SHARE_IN_LUNG = 0.85
_PLACEMENT_TRIES = 25


def patient_seed(seed: int, index: int) -> np.random.SeedSequence:
    """Returns the seed sequence of patient `index` of a data set."""
    return np.random.SeedSequence(seed, spawn_key=(0, index))


def patient_id_of(seq: np.random.SeedSequence) -> str:
    """The RSNA-style patientId (a UUID4) of a patient's seed sequence."""
    return str(uuid.UUID(bytes=child_rng(seq, 0).bytes(16), version=4))


def child_rng(seq: np.random.SeedSequence, key: int) -> np.random.Generator:
    """Generator of part `key` of a patient (0 identity, 1 metadata, 2 anatomy, ...)."""
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
    medial, lateral = anatomy.lung_medial, float(lateral_edge(anatomy, side, y))
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
            share = share_in_lung(anatomy, findings, blob)
            if best is None or share > best[0]:
                best = (share, blob)
            if share >= _MIN_SHARE_IN_LUNG:
                break
        assert best is not None  # _PLACEMENT_TRIES ≥ 1
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


def sample_patient(
    seq: np.random.SeedSequence,
    label_class: str,
    scanner: Scanner = DEFAULT_SCANNER,
    gap: SubgroupGap | None = None,
) -> PatientSpec:
    """Draws one patient.

    Each part (identity, metadata, anatomy, exposure, findings, opacities, texture,
    detector) has its own random stream, so a patient's anatomy does not depend
    on its class, and its anatomy, findings and opacities not on the scanner.

    Args:
        seq: the patient's seed sequence (see `patient_seed`); not modified.
        label_class: one of `CLASSES`.
        scanner: ranges of the acquisition (exposure and detector).
        gap: fainter opacities for one subgroup of patients, or None.

    Returns:
        The patient's spec.
    """
    if label_class not in CLASSES:
        raise ValueError(f"label_class must be one of {CLASSES}. Received: {label_class!r}")
    meta, anat, expo, find, opac, tex = (child_rng(seq, k) for k in range(1, 7))
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
    spec = PatientSpec(
        patient_id=patient_id_of(seq),
        label_class=label_class,
        view=view,
        sex=sex,
        age=age,
        anatomy=anatomy,
        exposure=sample_exposure(expo, scanner),
        findings=findings,
        opacities=opacities,
        texture_seed=int(tex.integers(2**63)),
        detector=sample_detector(child_rng(seq, 7), scanner),
    )
    return spec if gap is None else gap.apply(spec)
