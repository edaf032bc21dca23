"""Class folders and findings CSVs → one labelled item per image; splits by patient.

The layouts `convert` reads besides RSNA (`rsna.py`): `folders` (one sub-folder
per class, `folders.py`) and `findings` (a CSV with one row per image,
`findings.py`). `list_images` lists either, with `listing.LayoutOptions`.

Every image is one example. Its id, stored as `image/patient_id` and the key of
folds and out-of-fold predictions, is its path relative to `--images` (folders)
or the CSV's image cell (findings) without its image suffix (`.png`, `.jpg`,
`.jpeg`, `.dcm`, `.dicom`, any case; other names are kept whole): NIH
`00000001_000`, CheXpert `CheXpert-v1.0-small/train/patient00001/study1/view1_frontal`.

Which patient an image belongs to (`ImageItem.patient`): the patient column when
there is one (NIH `Patient ID`); else the first group of a regular expression
searched in the image's relative path (folders: `person12_...` → `person12`, the
Kermany convention; findings: `.../patient00001/...` → `patient00001`, CheXpert's);
else the image itself. Splits and folds are by patient: each patient is labelled
positive when any of their images is, the patients are split (stratified) by
`splits.split_patients` / `splits.assign_folds`, and every image follows its patient.

These modules read names and labels, never pixels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from pneumokeras.errors import UserError
from pneumokeras.sources import splits
from pneumokeras.sources.findings import read_findings
from pneumokeras.sources.folders import list_folders
from pneumokeras.sources.listing import ImageItem, LayoutOptions, Listing


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


def _patient_labels(
    items: Mapping[str, ImageItem], groups: Mapping[str, list[str]]
) -> dict[str, int]:
    """One label per patient, positive when any of their images is."""
    return {patient: max(items[i].label for i in ids) for patient, ids in groups.items()}


def split_items(
    items: Mapping[str, ImageItem],
    ids: list[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    views: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Splits image ids by patient (stratified by label and view, `splits.split_patients`).

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
    drawn = splits.split_patients(
        _patient_labels(items, groups), val_fraction, test_fraction, seed, patient_views
    )
    return {s: sorted(i for p in drawn[s] for i in groups[p]) for s in splits.SPLITS}


def kept_splits(items: Mapping[str, ImageItem], ids: list[str]) -> dict[str, list[str]]:
    """The data set's own splits (folders with `keep_splits`), image ids sorted."""
    return {s: sorted(i for i in ids if items[i].split == s) for s in splits.SPLITS}


def assign_folds(
    items: Mapping[str, ImageItem], ids: list[str], folds: int, seed: int
) -> dict[str, int]:
    """Stratified K folds over patients (`splits.assign_folds`): image id → fold."""
    groups = _groups(items, ids)
    fold_of = splits.assign_folds(_patient_labels(items, groups), list(groups), folds, seed)
    return dict(sorted((i, fold_of[p]) for p, members in groups.items() for i in members))


def patients_in_several_splits(
    items: Mapping[str, ImageItem], assignment: Mapping[str, list[str]]
) -> int:
    """How many patients have images in more than one split (0 unless splits were kept)."""
    seen: dict[str, set[str]] = {}
    for split, ids in assignment.items():
        for image_id in ids:
            seen.setdefault(items[image_id].patient, set()).add(split)
    return sum(len(s) > 1 for s in seen.values())
