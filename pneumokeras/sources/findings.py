"""A findings CSV → one labelled item per image (the `findings` layout).

One row per image: NIH ChestX-ray14 `Data_Entry_2017.csv`, CheXpert `train.csv`.
Columns are found by name, with defaults from the header (`IMAGE_COLUMNS`,
`LABEL_COLUMNS`, `PATIENT_COLUMNS`, `VIEW_COLUMNS`). The label cell is read by
`parse_label`: `|`-separated findings (`Cardiomegaly|Pneumonia`) for a text
`positive`, a number (CheXpert 1 / 0 / -1 uncertain / blank) for a numeric one.

An image's id is its CSV cell without its image suffix (NIH `00000001_000`,
CheXpert `CheXpert-v1.0-small/train/patient00001/study1/view1_frontal`); its
patient is the patient column's value when there is one (NIH `Patient ID`), else
the first group of the patient pattern (default: CheXpert's `.../patient00001/...`)
searched in the cell, else the image itself. `_item` is the one place a row
becomes an `ImageItem`.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
from pathlib import Path, PurePosixPath

from pneumokeras.errors import UserError
from pneumokeras.sources.listing import (
    ImageItem,
    LayoutOptions,
    Listing,
    Skipped,
    compile_pattern,
    patient_of,
    without_image_suffix,
)

FINDINGS_PATIENT_PATTERN = r"(?:^|/)(patient\d+)/"  # CheXpert: train/patient00001/study1/...
IMAGE_COLUMNS = ("Image Index", "Path")  # NIH, CheXpert
LABEL_COLUMNS = ("Finding Labels", "Pneumonia")
PATIENT_COLUMNS = ("Patient ID",)
VIEW_COLUMNS = ("View Position", "AP/PA")
UNCERTAIN_VALUE = -1.0  # CheXpert's "uncertain"


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_label(cell: str, positive: str, uncertain: str = "drop") -> tuple[int | None, str]:
    """One label cell → `(label, '')`, or `(None, reason)` when the row is skipped.

    A numeric `positive` (CheXpert `1`) reads numbers: equal to it → 1; -1 →
    uncertain, mapped by `uncertain` (`drop` → skipped); blank → 0 (the finding
    was not mentioned); any other number → 0; text → skipped. A text `positive`
    (NIH `Pneumonia`) reads `|`-separated findings: 1 when it is one of them
    (any case), else 0 (`No Finding`, other findings, blank).
    """
    text = cell.strip()
    wanted = _number(positive)
    if wanted is None:
        findings = {f.strip().lower() for f in text.split("|")}
        return int(positive.strip().lower() in findings), ""
    if not text:
        return 0, ""
    value = _number(text)
    if value is None:
        return None, f"label {text!r} is not a number"
    if value == UNCERTAIN_VALUE and wanted != UNCERTAIN_VALUE:
        if uncertain == "drop":
            return None, "uncertain label (-1) dropped (--uncertain drop)"
        return int(uncertain == "positive"), ""
    return int(value == wanted), ""


def _read_rows(labels_csv: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with open(labels_csv, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            return list(reader.fieldnames or []), list(reader)
    except OSError as err:
        raise UserError(f"cannot read {labels_csv}: {err.strerror}") from err
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{labels_csv} is not a readable CSV file: {err}") from err


def _column(
    given: str | None, defaults: tuple[str, ...], columns: list[str], option: str, csv_path: Path
) -> str | None:
    """The column to use: `given` (must exist), else the first default present, else None."""
    if given is not None:
        if given not in columns:
            raise UserError(
                f"{option} {given!r} is not a column of {csv_path}; columns: {', '.join(columns)}"
            )
        return given
    return next((c for c in defaults if c in columns), None)


@dataclasses.dataclass(frozen=True)
class _Columns:
    """The CSV columns read: image and label always; patient and view when present."""

    image: str
    label: str
    patient: str | None
    view: str | None


def _find_columns(columns: list[str], options: LayoutOptions, labels_csv: Path) -> _Columns:
    """The columns to read (named by options, else the defaults found in the header).

    Raises:
        UserError: a named column that is absent, or no image or label column.
    """
    found = {
        key: _column(given, defaults, columns, option, labels_csv)
        for key, given, defaults, option in (
            ("image", options.image_column, IMAGE_COLUMNS, "--image-column"),
            ("label", options.label_column, LABEL_COLUMNS, "--label-column"),
            ("patient", options.patient_column, PATIENT_COLUMNS, "--patient-column"),
            ("view", options.view_column, VIEW_COLUMNS, "--view-column"),
        )
    }
    image, label = found["image"], found["label"]
    if image is None or label is None:
        key = "image" if image is None else "label"
        raise UserError(
            f"{labels_csv}: no {key} column found; name it with --{key}-column "
            f"(columns: {', '.join(columns)})"
        )
    return _Columns(image, label, found["patient"], found["view"])


class _FileFinder:
    """Finds an image cell's file under `--images`.

    Tries `images/cell`; `images/../cell` when the cell starts with the folder's
    own name (CheXpert `CheXpert-v1.0-small/train/...` with `--images` that
    folder); and for a bare file name (NIH `00000001_000.png`), the file of that
    name anywhere below `--images` (NIH ships `images_001/images/...`).
    """

    def __init__(self, images_dir: Path):
        self.images_dir = images_dir
        self._by_name: dict[str, Path] | None = None

    def __call__(self, cell: str) -> Path | None:
        relative = PurePosixPath(cell)
        candidates = [self.images_dir / relative]
        if len(relative.parts) > 1 and relative.parts[0] == self.images_dir.name:
            candidates.append(self.images_dir.parent / relative)
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        if len(relative.parts) == 1:
            if self._by_name is None:
                self._by_name = {}
                for path in sorted(self.images_dir.rglob("*")):
                    if path.is_file():
                        self._by_name.setdefault(path.name, path)
            return self._by_name.get(cell)
        return None


def _cell(row: dict[str, str], column: str | None) -> str:
    """A row's cell, stripped; '' when the column is absent or the cell missing."""
    return (row.get(column) or "").strip() if column else ""


def _item(
    row: dict[str, str],
    columns: _Columns,
    image_id: str,
    cell: str,
    path: Path,
    label: int,
    pattern: re.Pattern[str],
) -> ImageItem:
    """The one place a CSV row becomes an `ImageItem` (patient and view from its cells)."""
    return ImageItem(
        image_id,
        path,
        cell,
        label,
        _cell(row, columns.patient) or patient_of(pattern, cell, image_id),
        view=_cell(row, columns.view).upper(),
    )


def read_findings(images_dir: Path, labels_csv: Path, options: LayoutOptions) -> Listing:
    """Lists a findings-CSV layout (see the module docstring and `parse_label`).

    Rows are skipped (with a reason) for an empty image cell, a repeated image, a
    missing file, an unreadable or a dropped uncertain label.

    Raises:
        UserError: unreadable CSV, no rows, a named column that does not exist, or
            no image/label column found in the header.
    """
    header, rows = _read_rows(labels_csv)
    if not rows:
        raise UserError(f"{labels_csv} has no rows")
    columns = _find_columns(header, options, labels_csv)
    positive = options.positive or ("Pneumonia" if columns.label == "Finding Labels" else "1")
    pattern = compile_pattern(options.patient_pattern or FINDINGS_PATIENT_PATTERN)
    finder = _FileFinder(images_dir)
    items: dict[str, ImageItem] = {}
    skipped: list[Skipped] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        cell = _cell(row, columns.image).replace("\\", "/")
        if not cell:
            skipped.append(("", "", f"{labels_csv.name} line {line}: empty {columns.image}"))
            continue
        image_id = without_image_suffix(cell)
        label, reason = parse_label(_cell(row, columns.label), positive, options.uncertain)
        path = finder(cell)
        if image_id in seen:
            reason = "repeated row for this image"
        elif path is None:
            reason = "image file not found"
        seen.add(image_id)
        if reason or path is None or label is None:
            skipped.append((image_id, cell, reason))
            continue
        items[image_id] = _item(row, columns, image_id, cell, path, label, pattern)
    if not items:
        raise UserError(f"no row of {labels_csv} has an image file in {images_dir} and a label")
    if not any(item.label for item in items.values()):
        raise UserError(_no_positive(rows, columns.label, positive))
    grouping = (
        f"patient column {columns.patient!r}"
        if columns.patient
        else f"first group of {pattern.pattern!r} in the image cell, else the image"
    )
    return Listing(
        items=dict(sorted(items.items())),
        skipped=skipped,
        label_mapping={
            "column": columns.label,
            "positive": positive,
            "uncertain": options.uncertain,
            "image_column": columns.image,
            "view_column": columns.view,
        },
        grouping=grouping,
    )


def _no_positive(rows: list[dict[str, str]], label_col: str, positive: str) -> str:
    """Why a findings CSV gave no positive image: the column's commonest values."""
    counts: dict[str, int] = {}
    for row in rows:
        cell = (row[label_col] or "").strip()
        counts[cell] = counts.get(cell, 0) + 1
    common = sorted(counts, key=lambda c: (-counts[c], c))[:5]
    return (
        f"no image is positive: no {label_col!r} cell means --positive {positive!r} "
        f"(commonest values: {', '.join(repr(c) for c in common)})"
    )
