"""RSNA label files → one record per patient, and patient-level splits.

The RSNA Pneumonia Detection Challenge labels (`stage_2_train_labels.csv`) have one
row per bounding box for a positive patient and a single row with empty box fields
for a negative one; box units are pixels of the original (1024 px) image. The
optional `stage_2_detailed_class_info.csv` adds one of three classes per row.

Splits are by patient, never by file or box, so no patient is in two splits.

scikit-learn is imported inside the functions that use it: convert's worker
processes import this module and should start fast.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from numbers import Integral
from pathlib import Path

import numpy as np

from pneumokeras.errors import UserError

LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
CLASS_COLUMNS = ("patientId", "class")
RSNA_CLASSES = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")
SPLITS = ("train", "val", "test")

Box = tuple[float, float, float, float]


@dataclasses.dataclass(frozen=True)
class PatientRecord:
    """Labels of one patient.

    Attributes:
        patient_id: RSNA patientId (the DICOM file name without `.dcm`).
        label: 1 = pneumonia (lung opacity), 0 = not.
        boxes_px: `(x, y, width, height)` per box, pixels of the original image.
        detailed_class: one of `RSNA_CLASSES`, or '' when no class file was given.
    """

    patient_id: str
    label: int
    boxes_px: tuple[Box, ...] = ()
    detailed_class: str = ""

    def normalised_boxes(self, width: int, height: int) -> tuple[Box, ...]:
        """Boxes as `(x, y, w, h)` fractions of an image `width` × `height` pixels."""
        return tuple((x / width, y / height, w / width, h / height) for x, y, w, h in self.boxes_px)


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [c for c in required if c not in columns]
            if missing:
                raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
            return list(reader)
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from err
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{path} is not a readable CSV file: {err}") from err


def _parse_float(path: Path, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{path}:{line}: {column} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise UserError(f"{path}:{line}: {column} is not finite: {text!r}")
    return value


def read_labels(
    labels_csv: str | Path, class_info_csv: str | Path | None = None
) -> dict[str, PatientRecord]:
    """Reads RSNA label (and optional detailed-class) CSVs into per-patient records.

    Args:
        labels_csv: `patientId,x,y,width,height,Target`; one row per box.
        class_info_csv: optional `patientId,class`.

    Returns:
        Records keyed by patientId, in the order patients first appear.

    Raises:
        UserError: unreadable file, missing columns, a Target outside {0, 1},
            Targets that disagree across one patient's rows, a positive row
            without a box, or an unknown detailed class.
    """
    labels_csv = Path(labels_csv)
    rows = _read_csv(labels_csv, LABEL_COLUMNS)
    if not rows:
        raise UserError(f"{labels_csv} has no label rows")
    labels: dict[str, int] = {}
    boxes: dict[str, list[Box]] = {}
    for line, row in enumerate(rows, start=2):
        patient = (row["patientId"] or "").strip()
        if not patient:
            raise UserError(f"{labels_csv}:{line}: empty patientId")
        target_text = (row["Target"] or "").strip()
        if target_text not in ("0", "1"):
            raise UserError(f"{labels_csv}:{line}: Target must be 0 or 1; got {target_text!r}")
        target = int(target_text)
        if labels.setdefault(patient, target) != target:
            raise UserError(f"{labels_csv}:{line}: Targets disagree for patient {patient}")
        box_fields = [(row[c] or "").strip() for c in ("x", "y", "width", "height")]
        patient_boxes = boxes.setdefault(patient, [])
        if target == 1:
            if not all(box_fields):
                raise UserError(f"{labels_csv}:{line}: positive row without a box")
            box = tuple(
                _parse_float(labels_csv, line, c, t)
                for c, t in zip(("x", "y", "width", "height"), box_fields, strict=True)
            )
            if box[2] <= 0 or box[3] <= 0:
                raise UserError(f"{labels_csv}:{line}: box width and height must be > 0")
            patient_boxes.append(box)  # type: ignore[arg-type]
        elif any(box_fields):
            raise UserError(f"{labels_csv}:{line}: negative row with a box")

    classes: dict[str, str] = {}
    if class_info_csv is not None:
        class_info_csv = Path(class_info_csv)
        for line, row in enumerate(_read_csv(class_info_csv, CLASS_COLUMNS), start=2):
            patient = (row["patientId"] or "").strip()
            name = (row["class"] or "").strip()
            if name not in RSNA_CLASSES:
                raise UserError(f"{class_info_csv}:{line}: unknown class {name!r}")
            if classes.setdefault(patient, name) != name:
                raise UserError(f"{class_info_csv}:{line}: classes disagree for patient {patient}")
            if patient in labels and (name == "Lung Opacity") != (labels[patient] == 1):
                raise UserError(
                    f"{class_info_csv}:{line}: class {name!r} contradicts "
                    f"Target={labels[patient]} for patient {patient}"
                )

    return {
        patient: PatientRecord(
            patient_id=patient,
            label=label,
            boxes_px=tuple(boxes[patient]),
            detailed_class=classes.get(patient, ""),
        )
        for patient, label in labels.items()
    }


SEED_LIMIT = 2**32  # scikit-learn's and NumPy's legacy seeds are 32-bit


def check_seed(seed: int) -> None:
    """Raises UserError unless `seed` is an integer in [0, 2**32)."""
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed < SEED_LIMIT:
        raise UserError(f"--seed must be an integer from 0 to {SEED_LIMIT - 1}; got {seed!r}")


def _can_stratify(strata: list[str], held: int) -> bool:
    """Whether scikit-learn can place every stratum on both sides of a split.

    Its conditions (`StratifiedShuffleSplit`): each stratum has ≥ 2 members, and
    each side is at least as large as the number of strata.
    """
    counts = Counter(strata)
    return min(counts.values()) >= 2 and min(held, len(strata) - held) >= len(counts)


def _stratified_split(
    ids: list[str], strata: list[str], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Splits `ids` into (rest, held) with `fraction` held out, stratified when possible."""
    from sklearn.model_selection import train_test_split

    if fraction <= 0 or not ids:
        return list(ids), []
    held = max(1, round(len(ids) * fraction))
    if held >= len(ids):
        raise UserError(
            f"split fraction {fraction} leaves no patients for training ({len(ids)} in all)"
        )
    # Fall back from (label, view) to label-only to none when a stratum is too rare
    # for scikit-learn to place members on both sides. Checked up front, so any
    # error scikit-learn raises is a real one and surfaces.
    labels_only = [s.split("|")[0] for s in strata]
    stratify = next((s for s in (strata, labels_only) if _can_stratify(s, held)), None)
    rest, out = train_test_split(ids, test_size=held, random_state=seed, stratify=stratify)
    return rest, out


def split_patients(
    records: Mapping[str, PatientRecord],
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    views: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Assigns every patient to exactly one of train/val/test.

    Stratified by label and, when `views` is given, by view position (falling back
    to label only, then none, when a group is too small). Deterministic for a seed
    and independent of the input order.

    Returns:
        `{"train": [...], "val": [...], "test": [...]}`, each list sorted.

    Raises:
        UserError: a fraction outside [0, 1), fractions that leave no training
            patients, or a seed outside [0, 2**32).
    """
    check_seed(seed)
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1:
        raise UserError("--val and --test must be in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise UserError("--val plus --test must be < 1 so that training data remains")
    views = views or {}
    ids = sorted(records)
    strata = [f"{records[p].label}|{views.get(p, '')}" for p in ids]
    rest, test = _stratified_split(ids, strata, test_fraction, seed)
    rest_strata = [f"{records[p].label}|{views.get(p, '')}" for p in rest]
    # The validation share is of the whole, so rescale it to the remainder.
    val_of_rest = val_fraction / (1 - test_fraction) if rest else 0.0
    # The validation draw's seed wraps so that every valid seed gives a valid one.
    train, val = _stratified_split(rest, rest_strata, val_of_rest, (seed + 1) % SEED_LIMIT)
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def assign_folds(
    records: Mapping[str, PatientRecord], patient_ids: Iterable[str], folds: int, seed: int = 0
) -> dict[str, int]:
    """Stratified K folds over `patient_ids` (by label): patient → fold index.

    Raises:
        UserError: fewer than 2 folds, a class with fewer members than folds, or a
            seed outside [0, 2**32).
    """
    from sklearn.model_selection import StratifiedKFold

    check_seed(seed)
    ids = sorted(patient_ids)
    if folds < 2:
        raise UserError(f"--folds must be ≥ 2; got {folds}")
    labels = np.array([records[p].label for p in ids])
    smallest = int(min(np.sum(labels == 0), np.sum(labels == 1)))
    if smallest < folds:
        raise UserError(
            f"--folds {folds} needs at least {folds} patients of each class "
            f"(the rarer class has {smallest})"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    assignment: dict[str, int] = {}
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(ids)), labels)):
        for index in held:
            assignment[ids[index]] = fold
    return dict(sorted(assignment.items()))


def class_weights(labels: Iterable[int]) -> dict[int, float]:
    """Class weights n / (2 · n_class): scikit-learn's 'balanced' rule.

    Raises:
        UserError: when a class is absent (its weight would be infinite).
    """
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(list(labels), dtype=np.int64)
    counts = np.bincount(labels, minlength=2)
    if (counts == 0).any():
        raise UserError(
            f"training split needs both classes; got {counts[0]} negative, {counts[1]} positive"
        )
    weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    return {0: float(weights[0]), 1: float(weights[1])}
