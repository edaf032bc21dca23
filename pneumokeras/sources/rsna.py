"""RSNA label files → one record per patient.

The RSNA Pneumonia Detection Challenge labels (`stage_2_train_labels.csv`) have one
row per bounding box for a positive patient and a single row with empty box fields
for a negative one; box units are pixels of the original (1024 px) image. The
optional `stage_2_detailed_class_info.csv` adds one of three classes per row.

Splits and folds over these patients are `splits.py`'s.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

from pneumokeras.errors import UserError

LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
CLASS_COLUMNS = ("patientId", "class")
RSNA_CLASSES = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")

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
        """Boxes as `(x, y, w, h)` fractions of the stored square image.

        An image `width` × `height` pixels is stored padded to a centred square of
        side `max(width, height)` (`io.dicom.resize_square`); the boxes move with it,
        so they stay on the same anatomy whatever the image's shape.
        """
        side = max(width, height)
        left, top = (side - width) // 2, (side - height) // 2
        return tuple(
            ((x + left) / side, (y + top) / side, w / side, h / side)
            for x, y, w, h in self.boxes_px
        )


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
            x, y, width, height = (
                _parse_float(labels_csv, line, c, t)
                for c, t in zip(("x", "y", "width", "height"), box_fields, strict=True)
            )
            if width <= 0 or height <= 0:
                raise UserError(f"{labels_csv}:{line}: box width and height must be > 0")
            patient_boxes.append((x, y, width, height))
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
