"""What a `folders` or `findings` layout lists: options, labelled images, the patient rule.

Shared by `folders.py` (class folders) and `findings.py` (findings CSVs);
`layouts.py` picks the layout and splits its images by patient. See `layouts.py`
for how an image's id and patient are found.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path, PurePosixPath
from typing import Any

from pneumokeras.errors import UserError

LAYOUTS = ("rsna", "folders", "findings")
UNCERTAIN_RULES = ("negative", "positive", "drop")
# Suffixes an example id drops (any case); other names are kept whole, so a
# DICOM named by its UID (`1.2.840.113619.2.55.3`) keeps every component.
ID_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")

Skipped = tuple[str, str, str]  # (example id, file as shown, reason): a skipped.csv row


@dataclasses.dataclass(frozen=True)
class LayoutOptions:
    """How `convert` reads its input folder (see `layouts.py`).

    Attributes:
        layout: `rsna`, `folders` or `findings`.
        keep_splits: folders: keep the data set's `train|val|test` folders.
        patient_pattern: regular expression whose first group is the patient id,
            searched in the image's path relative to `--images` (findings: the
            image cell); None = the layout's default.
        label_column, positive: findings: the label column and the value meaning
            pneumonia; None = from the header (`Finding Labels` → `Pneumonia`,
            `Pneumonia` → `1`).
        uncertain: findings, numeric labels: -1 becomes `negative`, `positive`, or is
            dropped (`drop`, a skipped.csv row).
        image_column, patient_column, view_column: findings; None = from the header.
    """

    layout: str = "rsna"
    keep_splits: bool = False
    patient_pattern: str | None = None
    label_column: str | None = None
    positive: str | None = None
    uncertain: str = "drop"
    image_column: str | None = None
    patient_column: str | None = None
    view_column: str | None = None

    def check(self) -> None:
        """Refuses unknown values and options of another layout (UserError)."""
        if self.layout not in LAYOUTS:
            raise UserError(f"--layout must be one of {', '.join(LAYOUTS)}; got {self.layout!r}")
        if self.uncertain not in UNCERTAIN_RULES:
            raise UserError(
                f"--uncertain must be one of {', '.join(UNCERTAIN_RULES)}; got {self.uncertain!r}"
            )
        findings_only = {
            "--label-column": self.label_column,
            "--positive": self.positive,
            "--image-column": self.image_column,
            "--patient-column": self.patient_column,
            "--view-column": self.view_column,
        }
        given = [name for name, value in findings_only.items() if value is not None]
        if self.layout != "findings" and given:
            raise UserError(f"{given[0]} applies to --layout findings only")
        if self.keep_splits and self.layout != "folders":
            raise UserError("--keep-splits applies to --layout folders only")
        if self.patient_pattern is not None:
            if self.layout == "rsna":
                raise UserError("--patient-pattern applies to --layout folders or findings")
            compile_pattern(self.patient_pattern)


@dataclasses.dataclass(frozen=True)
class ImageItem:
    """One labelled image.

    Attributes:
        image_id: the example's id (see `layouts.py`).
        path: the image file.
        file: how skipped.csv names it (relative path, or the CSV cell).
        label: 1 = pneumonia, 0 = not.
        patient: the patient it belongs to (splits and folds group by it).
        view: `AP`, `PA`, ... from the CSV, upper case; '' when unknown.
        split: folders with `keep_splits`: its data set's split; else ''.
    """

    image_id: str
    path: Path
    file: str
    label: int
    patient: str
    view: str = ""
    split: str = ""


@dataclasses.dataclass
class Listing:
    """A layout's labelled images and what was skipped while listing them.

    Attributes:
        items: by image id, sorted.
        skipped: `(image id, file, reason)` rows for skipped.csv.
        label_mapping: how labels were read (for the manifest).
        grouping: how images were grouped into patients, in words (for the manifest).
    """

    items: dict[str, ImageItem]
    skipped: list[Skipped]
    label_mapping: dict[str, Any]
    grouping: str


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """`--patient-pattern` compiled; UserError when it is no regex or has no group."""
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise UserError(
            f"--patient-pattern {pattern!r} is not a regular expression: {err}"
        ) from None
    if compiled.groups < 1:
        raise UserError(f"--patient-pattern {pattern!r} needs a group: (...) = the patient id")
    return compiled


def patient_of(pattern: re.Pattern[str], text: str, image_id: str) -> str:
    """First group of `pattern` searched in `text`; the image id when it does not match."""
    match = pattern.search(text)
    return match.group(1) if match and match.group(1) else image_id


def without_image_suffix(name: str) -> str:
    """`name` (a path in `/` form) without an image suffix (`ID_SUFFIXES`, any case)."""
    path = PurePosixPath(name)
    return path.with_suffix("").as_posix() if path.suffix.lower() in ID_SUFFIXES else name
