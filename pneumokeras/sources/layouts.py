"""Class folders and findings CSVs → one labelled item per image; splits by patient.

The layouts `convert` reads besides RSNA (`rsna.py`):

- `folders`: `--images DIR` holds one sub-folder per class, named (any case)
  `normal`, `negative` or `0` for label 0 and `pneumonia`, `positive` or `1` for
  label 1, optionally one level below the data set's own `train|val|test`
  folders: the Kaggle "Chest X-Ray Images (Pneumonia)" set (Kermany et al., Cell
  2018) is `train/NORMAL/IM-0115-0001.jpeg`, `test/PNEUMONIA/person1_virus_6.jpeg`.
  Folders whose name starts with `.` or `__` (`__MACOSX`) are ignored; any other
  unknown folder is an error. With `keep_splits` the split folders are the
  splits (all three must exist); without, their images are pooled and split here.
- `findings`: a CSV with one row per image (NIH ChestX-ray14
  `Data_Entry_2017.csv`, CheXpert `train.csv`). Columns are found by name, with
  defaults from the header (`IMAGE_COLUMNS`, `LABEL_COLUMNS`, `PATIENT_COLUMNS`,
  `VIEW_COLUMNS`). The label cell is read by `parse_label`: `|`-separated
  findings (`Cardiomegaly|Pneumonia`) for a text `positive`, a number (CheXpert
  1 / 0 / -1 uncertain / blank) for a numeric one.

Every image is one example. Its id, stored as `image/patient_id` and the key of
folds and out-of-fold predictions, is its path relative to `--images` without
suffix (folders) or the CSV's image cell without suffix (findings: NIH
`00000001_000`, CheXpert `CheXpert-v1.0-small/train/patient00001/study1/view1_frontal`).

Which patient an image belongs to (`ImageItem.patient`): the patient column when
there is one (NIH `Patient ID`); else the first group of a regular expression
searched in the image's relative path (folders: `person12_...` → `person12`, the
Kermany convention; findings: `.../patient00001/...` → `patient00001`, CheXpert's);
else the image itself. Splits and folds are by patient: each patient is labelled
positive when any of their images is, the patients are split (stratified) by
`rsna.split_patients` / `rsna.assign_folds`, and every image follows its patient.

This module reads names and labels, never pixels.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import math
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from pneumokeras.errors import UserError
from pneumokeras.io.images import IMAGE_SUFFIXES
from pneumokeras.sources import rsna

LAYOUTS = ("rsna", "folders", "findings")
UNCERTAIN_RULES = ("negative", "positive", "drop")
CLASS_FOLDERS = {"normal": 0, "negative": 0, "0": 0, "pneumonia": 1, "positive": 1, "1": 1}
FOLDERS_PATIENT_PATTERN = r"(?:^|/)(person\d+)_[^/]*$"  # Kermany: person12_virus_3.jpeg
FINDINGS_PATIENT_PATTERN = r"(?:^|/)(patient\d+)/"  # CheXpert: train/patient00001/study1/...
IMAGE_COLUMNS = ("Image Index", "Path")  # NIH, CheXpert
LABEL_COLUMNS = ("Finding Labels", "Pneumonia")
PATIENT_COLUMNS = ("Patient ID",)
VIEW_COLUMNS = ("View Position", "AP/PA")
UNCERTAIN_VALUE = -1.0  # CheXpert's "uncertain"


@dataclasses.dataclass(frozen=True)
class LayoutOptions:
    """How `convert` reads its input folder (see the module docstring).

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
            _compile_pattern(self.patient_pattern)


@dataclasses.dataclass(frozen=True)
class ImageItem:
    """One labelled image.

    Attributes:
        image_id: the example's id (see the module docstring).
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
    skipped: list[tuple[str, str, str]]
    label_mapping: dict[str, Any]
    grouping: str


def list_images(
    images_dir: str | Path, labels_csv: str | Path | None, options: LayoutOptions
) -> Listing:
    """Lists a `folders` or `findings` input (labels_csv only for findings)."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise UserError(f"--images {images_dir} is not a folder")
    if options.layout == "folders":
        if labels_csv is not None:
            raise UserError("--labels is not used with --layout folders (the folders are labels)")
        return list_folders(images_dir, options.keep_splits, options.patient_pattern)
    if options.layout == "findings":
        if labels_csv is None:
            raise UserError("--layout findings needs --labels CSV")
        return read_findings(images_dir, Path(labels_csv), options)
    raise ValueError(f"list_images reads folders or findings. Received: {options.layout!r}")


def _compile_pattern(pattern: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise UserError(
            f"--patient-pattern {pattern!r} is not a regular expression: {err}"
        ) from None
    if compiled.groups < 1:
        raise UserError(f"--patient-pattern {pattern!r} needs a group: (...) = the patient id")
    return compiled


def _patient_of(pattern: re.Pattern[str], text: str, image_id: str) -> str:
    """First group of `pattern` searched in `text`; the image id when it does not match."""
    match = pattern.search(text)
    return match.group(1) if match and match.group(1) else image_id


def _subfolders(folder: Path) -> list[Path]:
    """Sub-folders, sorted, without hidden ones and `__MACOSX`-like ones."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def _class_label(folder: Path) -> int:
    label = CLASS_FOLDERS.get(folder.name.lower())
    if label is None:
        names = (
            [n for n, v in CLASS_FOLDERS.items() if v == 0],
            [n for n, v in CLASS_FOLDERS.items() if v == 1],
        )
        raise UserError(
            f"unknown class folder {str(folder)!r}; accepted names (any case): "
            f"{', '.join(names[0])} (label 0), {', '.join(names[1])} (label 1)"
        )
    return label


def _split_roots(images_dir: Path, keep_splits: bool) -> dict[str, Path]:
    """`{split: folder}` for split folders, or `{"": images_dir}` for class folders only."""
    top = _subfolders(images_dir)
    if not top:
        raise UserError(f"{images_dir} has no class folders (e.g. NORMAL/ and PNEUMONIA/)")
    splits = [d for d in top if d.name.lower() in rsna.SPLITS]
    if not splits:
        if keep_splits:
            raise UserError(f"--keep-splits needs train/, val/ and test/ folders in {images_dir}")
        return {"": images_dir}
    roots: dict[str, Path] = {}
    for folder in top:
        name = folder.name.lower()
        if name not in rsna.SPLITS:
            raise UserError(
                f"folder {str(folder)!r} is neither a split (train, val, test) nor beside "
                "class folders only"
            )
        if name in roots:
            raise UserError(
                f"two {name} folders in {images_dir}: {roots[name].name}, {folder.name}"
            )
        roots[name] = folder
    missing = [s for s in rsna.SPLITS if s not in roots]
    if keep_splits and missing:
        raise UserError(
            f"--keep-splits needs train/, val/ and test/ in {images_dir}; missing: "
            f"{', '.join(missing)} (without --keep-splits the images are split by patient)"
        )
    return roots


def list_folders(
    images_dir: Path, keep_splits: bool = False, patient_pattern: str | None = None
) -> Listing:
    """Lists a class-folder layout (see the module docstring).

    Image files (`.png`, `.jpg`, `.jpeg`, `.dcm`, any case) anywhere below a class
    folder are items; other files there and files outside class folders become
    skipped rows; hidden files are ignored.

    Raises:
        UserError: no class folders, an unknown class or stray folder, or a split
            folder missing with `keep_splits`.
    """
    pattern = _compile_pattern(patient_pattern or FOLDERS_PATIENT_PATTERN)
    items: dict[str, ImageItem] = {}
    skipped: list[tuple[str, str, str]] = []
    mapping: dict[str, int] = {}
    for split, root in _split_roots(images_dir, keep_splits).items():
        for path in sorted(p for p in root.iterdir() if p.is_file()):
            if not path.name.startswith("."):
                skipped.append(
                    (
                        _image_id(images_dir, path),
                        _relative(images_dir, path),
                        "file outside a class folder",
                    )
                )
        for class_dir in _subfolders(root):
            label = mapping.setdefault(class_dir.name, _class_label(class_dir))
            for path in sorted(p for p in class_dir.rglob("*") if p.is_file()):
                relative = _relative(images_dir, path)
                image_id = _image_id(images_dir, path)
                if any(part.startswith(".") for part in path.relative_to(class_dir).parts):
                    continue
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    skipped.append((image_id, relative, f"not an image file ({path.suffix})"))
                elif image_id in items:
                    skipped.append((image_id, relative, "another file has the same name and id"))
                else:
                    patient = _patient_of(pattern, relative, image_id)
                    items[image_id] = ImageItem(
                        image_id, path, relative, label, patient, split=split if keep_splits else ""
                    )
    if not items:
        raise UserError(f"no PNG/JPEG/DICOM files in the class folders of {images_dir}")
    rule = "default" if patient_pattern is None else "--patient-pattern"
    return Listing(
        items=dict(sorted(items.items())),
        skipped=skipped,
        label_mapping={"class_folders": dict(sorted(mapping.items()))},
        grouping=f"first group of {pattern.pattern!r} ({rule}) in the relative path, "
        "else the image",
    )


def _relative(images_dir: Path, path: Path) -> str:
    return path.relative_to(images_dir).as_posix()


def _image_id(images_dir: Path, path: Path) -> str:
    return path.relative_to(images_dir).with_suffix("").as_posix()


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


def _find_columns(
    columns: list[str], options: LayoutOptions, labels_csv: Path
) -> dict[str, str | None]:
    """`{image, label, patient, view}` → column (None: absent; image and label required)."""
    found = {
        key: _column(given, defaults, columns, option, labels_csv)
        for key, given, defaults, option in (
            ("image", options.image_column, IMAGE_COLUMNS, "--image-column"),
            ("label", options.label_column, LABEL_COLUMNS, "--label-column"),
            ("patient", options.patient_column, PATIENT_COLUMNS, "--patient-column"),
            ("view", options.view_column, VIEW_COLUMNS, "--view-column"),
        )
    }
    for key in ("image", "label"):
        if found[key] is None:
            raise UserError(
                f"{labels_csv}: no {key} column found; name it with --{key}-column "
                f"(columns: {', '.join(columns)})"
            )
    return found


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


def read_findings(images_dir: Path, labels_csv: Path, options: LayoutOptions) -> Listing:
    """Lists a findings-CSV layout (see the module docstring and `parse_label`).

    Rows are skipped (with a reason) for an empty image cell, a repeated image, a
    missing file, an unreadable or a dropped uncertain label.

    Raises:
        UserError: unreadable CSV, no rows, a named column that does not exist, or
            no image/label column found in the header.
    """
    columns, rows = _read_rows(labels_csv)
    if not rows:
        raise UserError(f"{labels_csv} has no rows")
    found = _find_columns(columns, options, labels_csv)
    image_col, label_col = found["image"], found["label"]
    positive = options.positive or ("Pneumonia" if label_col == "Finding Labels" else "1")
    pattern = _compile_pattern(options.patient_pattern or FINDINGS_PATIENT_PATTERN)
    finder = _FileFinder(images_dir)
    items: dict[str, ImageItem] = {}
    skipped: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        cell = (row[image_col] or "").strip().replace("\\", "/")
        if not cell:
            skipped.append(("", "", f"{labels_csv.name} line {line}: empty {image_col}"))
            continue
        image_id = PurePosixPath(cell).with_suffix("").as_posix()
        label, reason = parse_label(row[label_col] or "", positive, options.uncertain)
        path = finder(cell)
        if image_id in seen:
            reason = "repeated row for this image"
        elif path is None:
            reason = "image file not found"
        seen.add(image_id)
        if reason:
            skipped.append((image_id, cell, reason))
            continue
        patient = (row[found["patient"]] or "").strip() if found["patient"] else ""
        items[image_id] = ImageItem(
            image_id,
            path,
            cell,
            int(label),
            patient or _patient_of(pattern, cell, image_id),
            view=(row[found["view"]] or "").strip().upper() if found["view"] else "",
        )
    if not items:
        raise UserError(f"no row of {labels_csv} has an image file in {images_dir} and a label")
    if not any(item.label for item in items.values()):
        raise UserError(_no_positive(rows, label_col, positive))
    grouping = (
        f"patient column {found['patient']!r}"
        if found["patient"]
        else f"first group of {pattern.pattern!r} in the image cell, else the image"
    )
    return Listing(
        items=dict(sorted(items.items())),
        skipped=skipped,
        label_mapping={
            "column": label_col,
            "positive": positive,
            "uncertain": options.uncertain,
            "image_column": image_col,
            "view_column": found["view"],
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


def mixed_order(ids: list[str]) -> list[str]:
    """`ids` in a fixed pseudo-random order (by SHA-256 of the id), classes mixed.

    The order the encode pass takes images in, and so which ones `--limit N`
    converts: sorted paths would give class folder after class folder.
    """
    return sorted(ids, key=lambda i: (hashlib.sha256(i.encode()).digest(), i))


def _groups(items: Mapping[str, ImageItem], ids: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for image_id in sorted(ids):
        groups.setdefault(items[image_id].patient, []).append(image_id)
    return groups


def _patient_records(
    items: Mapping[str, ImageItem], groups: Mapping[str, list[str]]
) -> dict[str, rsna.PatientRecord]:
    """One record per patient, positive when any of their images is."""
    return {
        patient: rsna.PatientRecord(patient, max(items[i].label for i in ids))
        for patient, ids in groups.items()
    }


def split_items(
    items: Mapping[str, ImageItem],
    ids: list[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    views: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Splits image ids by patient (stratified by label and view, `rsna.split_patients`).

    Args:
        items: every listed image, by id.
        ids: the images to split (those that decoded).
        views: image id → view; a patient's view is theirs when all their images
            share it, else ''.

    Returns:
        `{"train": [...], "val": [...], "test": [...]}` image ids, each sorted.
    """
    groups = _groups(items, ids)
    views = views or {}
    patient_views = {}
    for patient, members in groups.items():
        seen = {views.get(i, "") for i in members}
        patient_views[patient] = seen.pop() if len(seen) == 1 else ""
    splits = rsna.split_patients(
        _patient_records(items, groups), val_fraction, test_fraction, seed, patient_views
    )
    return {s: sorted(i for p in splits[s] for i in groups[p]) for s in rsna.SPLITS}


def kept_splits(items: Mapping[str, ImageItem], ids: list[str]) -> dict[str, list[str]]:
    """The data set's own splits (folders with `keep_splits`), image ids sorted."""
    return {s: sorted(i for i in ids if items[i].split == s) for s in rsna.SPLITS}


def assign_folds(
    items: Mapping[str, ImageItem], ids: list[str], folds: int, seed: int
) -> dict[str, int]:
    """Stratified K folds over patients (`rsna.assign_folds`): image id → fold."""
    groups = _groups(items, ids)
    fold_of = rsna.assign_folds(_patient_records(items, groups), list(groups), folds, seed)
    return dict(sorted((i, fold_of[p]) for p, members in groups.items() for i in members))


def patients_in_several_splits(
    items: Mapping[str, ImageItem], splits: Mapping[str, list[str]]
) -> int:
    """How many patients have images in more than one split (0 unless splits were kept)."""
    seen: dict[str, set[str]] = {}
    for split, ids in splits.items():
        for image_id in ids:
            seen.setdefault(items[image_id].patient, set()).add(split)
    return sum(len(s) > 1 for s in seen.values())
