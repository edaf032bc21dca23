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
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from pneumokeras.errors import UserError
from pneumokeras.io.formats import file_problem, is_hidden
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

    A numeric `positive` (CheXpert `1`) reads numbers: equal to it → 1; 0 → 0;
    -1 → uncertain, mapped by `uncertain` (`drop` → skipped); blank → 0 (the
    finding was not mentioned); any other number (`2.0`, `0.5`) and text →
    skipped, with the reason. A text `positive`
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
    if value == wanted:
        return 1, ""
    if value == 0:
        return 0, ""
    if value == UNCERTAIN_VALUE:
        if uncertain == "drop":
            return None, "uncertain label (-1) dropped (--uncertain drop)"
        return int(uncertain == "positive"), ""
    return None, (
        f"label {text!r} is none of {positive} (positive), 0 (negative), -1 (uncertain), blank"
    )


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


def _inside(folder: Path, path: Path) -> bool:
    """Whether `path`, normalised lexically (`..` resolved, links not followed), is in `folder`."""
    return os.path.normpath(path).startswith(os.path.normpath(folder) + os.sep)


class _FileFinder:
    """Finds an image cell's file under `--images`.

    Tries `images/cell`; `images/../cell` when the cell starts with the folder's
    own name (CheXpert `CheXpert-v1.0-small/train/...` with `--images` that
    folder); and for a bare file name (NIH `00000001_000.png`), the file of that
    name anywhere below `--images` (NIH ships `images_001/images/...`), which
    must be the only one of that name. A cell leading outside `--images` (an
    absolute path elsewhere, `../`) is refused.
    """

    def __init__(self, images_dir: Path):
        self.images_dir = images_dir
        self._by_name: dict[str, list[Path]] | None = None

    def __call__(self, cell: str) -> tuple[Path | None, str]:
        """`(the file, '')`, or `(None, why not)`."""
        relative = PurePosixPath(cell)
        candidates = [self.images_dir / relative]
        if len(relative.parts) > 1 and relative.parts[0] == self.images_dir.name:
            candidates.append(self.images_dir.parent / relative)
        inside = [c for c in candidates if _inside(self.images_dir, c)]
        if not inside:
            return None, "path outside --images"
        for candidate in inside:
            if candidate.is_file():
                return candidate, ""
            if candidate.is_symlink():
                return None, file_problem(candidate)
        if len(relative.parts) == 1:
            return self._by_bare_name(cell)
        return None, "image file not found"

    def _by_bare_name(self, name: str) -> tuple[Path | None, str]:
        if self._by_name is None:
            self._by_name = {}
            for path in sorted(self.images_dir.rglob("*")):
                if path.is_file() and not is_hidden(path.relative_to(self.images_dir)):
                    self._by_name.setdefault(path.name, []).append(path)
        found = self._by_name.get(name, [])
        if len(found) > 1:
            shown = [p.relative_to(self.images_dir).as_posix() for p in found]
            more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
            return None, f"file name found in {len(found)} places: {', '.join(shown[:3])}{more}"
        return (found[0], "") if found else (None, "image file not found")


def _cell(row: dict[str, str], column: str | None) -> str:
    """A row's cell, stripped; '' when the column is absent or the cell missing."""
    return (row.get(column) or "").strip() if column else ""


@dataclasses.dataclass(frozen=True)
class _Row:
    """One CSV row of an image, as read."""

    line: int
    cell: str
    row: dict[str, str]
    label: int | None
    reason: str  # why the label was not read; ''


def _item(
    row: _Row, label: int, columns: _Columns, image_id: str, path: Path, pattern: re.Pattern[str]
) -> ImageItem:
    """The one place a CSV row becomes an `ImageItem` (patient and view from its cells)."""
    return ImageItem(
        image_id,
        path,
        row.cell,
        label,
        _cell(row.row, columns.patient) or patient_of(pattern, row.cell, image_id),
        view=_cell(row.row, columns.view).upper(),
    )


def _disagreement(rows: list[_Row], columns: _Columns) -> str:
    """Why rows for one image disagree ('' when they agree): the label, patient or view."""
    fields: dict[str, set[Any]] = {
        "the label": {(r.label, r.reason) for r in rows},
        "the patient": {_cell(r.row, columns.patient) for r in rows},
        "the view": {_cell(r.row, columns.view).upper() for r in rows},
    }
    differ = [name for name, values in fields.items() if len(values) > 1]
    if not differ:
        return ""
    lines = ", ".join(str(r.line) for r in rows)
    return f"{len(rows)} rows disagree on {' and '.join(differ)} (lines {lines}); image dropped"


def read_findings(images_dir: Path, labels_csv: Path, options: LayoutOptions) -> Listing:
    """Lists a findings-CSV layout (see the module docstring and `parse_label`).

    Rows are skipped (with a reason) for an empty image cell, a missing file, a
    path outside `images_dir`, a bare file name found in several folders, an
    unreadable or dropped uncertain label. Rows for one image that agree (label,
    patient, view) count once, the others are "repeated row" rows; rows that
    disagree drop the image, with a reason naming what differs.

    Raises:
        UserError: unreadable CSV, no rows, a named column that does not exist, no
            image/label column found in the header, or images of one class only.
    """
    header, rows = _read_rows(labels_csv)
    if not rows:
        raise UserError(f"{labels_csv} has no rows")
    columns = _find_columns(header, options, labels_csv)
    positive = options.positive or ("Pneumonia" if columns.label == "Finding Labels" else "1")
    pattern = compile_pattern(options.patient_pattern or FINDINGS_PATIENT_PATTERN)
    finder = _FileFinder(images_dir)
    skipped: list[Skipped] = []
    by_image: dict[str, list[_Row]] = {}
    for line, row in enumerate(rows, start=2):
        cell = _cell(row, columns.image).replace("\\", "/")
        if not cell:
            skipped.append(("", "", f"{labels_csv.name} line {line}: empty {columns.image}"))
            continue
        label, reason = parse_label(_cell(row, columns.label), positive, options.uncertain)
        by_image.setdefault(without_image_suffix(cell), []).append(
            _Row(line, cell, row, label, reason)
        )
    items: dict[str, ImageItem] = {}
    for image_id, image_rows in by_image.items():
        first = image_rows[0]
        conflict = _disagreement(image_rows, columns)
        if conflict:
            skipped.append((image_id, first.cell, conflict))
            continue
        skipped += [(image_id, r.cell, "repeated row for this image") for r in image_rows[1:]]
        path, missing = finder(first.cell)
        if first.label is None or path is None:
            skipped.append((image_id, first.cell, first.reason or missing))
            continue
        items[image_id] = _item(first, first.label, columns, image_id, path, pattern)
    if not items:
        raise UserError(f"no row of {labels_csv} has an image file in {images_dir} and a label")
    if not any(item.label for item in items.values()):
        raise UserError(_one_class(rows, columns.label, positive, "positive"))
    if all(item.label for item in items.values()):
        raise UserError(_one_class(rows, columns.label, positive, "negative"))
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


def _one_class(rows: list[dict[str, str]], label_col: str, positive: str, missing: str) -> str:
    """Why a findings CSV gave images of one class only: the column's commonest values."""
    counts: dict[str, int] = {}
    for row in rows:
        cell = (row[label_col] or "").strip()
        counts[cell] = counts.get(cell, 0) + 1
    common = ", ".join(repr(c) for c in sorted(counts, key=lambda c: (-counts[c], c))[:5])
    if missing == "positive":
        return (
            f"no image is positive: no {label_col!r} cell means --positive {positive!r} "
            f"(commonest values: {common})"
        )
    return (
        f"every image is positive (--positive {positive!r} in {label_col!r}); a classifier "
        f"needs both classes (commonest values: {common})"
    )
