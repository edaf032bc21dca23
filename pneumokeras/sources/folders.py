"""Class folders → one labelled item per image (the `folders` layout).

`--images DIR` holds one sub-folder per class, named (any case) `normal`,
`negative` or `0` for label 0 and `pneumonia`, `positive` or `1` for label 1,
optionally one level below the data set's own `train|val|test` folders: the
Kaggle "Chest X-Ray Images (Pneumonia)" set (Kermany et al., Cell 2018) is
`train/NORMAL/IM-0115-0001.jpeg`, `test/PNEUMONIA/person1_virus_6.jpeg`. Folders
whose name starts with `.` or `__` (`__MACOSX`) are ignored; any other unknown
folder is an error. With `keep_splits` the split folders are the splits (all
three must exist); without, their images are pooled and split by `layouts.py`.

An image's id is its path relative to `--images` without its image suffix; its
patient is the first group of the patient pattern (default: Kermany's
`person12_...` → `person12`) searched in that path, else the image itself.
"""

from __future__ import annotations

from pathlib import Path

from pneumokeras.errors import UserError
from pneumokeras.io.formats import input_problem, is_hidden
from pneumokeras.sources.listing import (
    ImageItem,
    Listing,
    Skipped,
    compile_pattern,
    patient_of,
    without_image_suffix,
)
from pneumokeras.sources.splits import SPLITS

CLASS_FOLDERS = {"normal": 0, "negative": 0, "0": 0, "pneumonia": 1, "positive": 1, "1": 1}
FOLDERS_PATIENT_PATTERN = r"(?:^|/)(person\d+)_[^/]*$"  # Kermany: person12_virus_3.jpeg


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
    splits = [d for d in top if d.name.lower() in SPLITS]
    if not splits:
        if keep_splits:
            raise UserError(f"--keep-splits needs train/, val/ and test/ folders in {images_dir}")
        return {"": images_dir}
    roots: dict[str, Path] = {}
    for folder in top:
        name = folder.name.lower()
        if name not in SPLITS:
            raise UserError(
                f"folder {str(folder)!r} is neither a split (train, val, test) nor beside "
                "class folders only"
            )
        if name in roots:
            raise UserError(
                f"two {name} folders in {images_dir}: {roots[name].name}, {folder.name}"
            )
        roots[name] = folder
    missing = [s for s in SPLITS if s not in roots]
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

    Files anywhere below a class folder that are images by their suffix (`.png`,
    `.jpg`, `.jpeg`, `.dcm`, `.dicom`, any case) or by their content (a DICOM
    without suffix) are items; other files there (another image format, a
    dangling link, a text) and files outside class folders become skipped rows
    with the reason (`formats.input_problem`); hidden files and folders are
    ignored.

    Raises:
        UserError: no class folders, an unknown class or stray folder, a split
            folder missing with `keep_splits`, no image at all, or images of one
            class only (a classifier needs both).
    """
    pattern = compile_pattern(patient_pattern or FOLDERS_PATIENT_PATTERN)
    items: dict[str, ImageItem] = {}
    skipped: list[Skipped] = []
    mapping: dict[str, int] = {}
    for split, root in _split_roots(images_dir, keep_splits).items():
        for path in sorted(p for p in root.iterdir() if not p.is_dir()):
            if not path.name.startswith("."):
                row = (_image_id(images_dir, path), _relative(images_dir, path))
                skipped.append((*row, "file outside a class folder"))
        for class_dir in _subfolders(root):
            label = mapping.setdefault(class_dir.name, _class_label(class_dir))
            for path in sorted(class_dir.rglob("*")):
                if is_hidden(path.relative_to(class_dir)) or path.is_dir():
                    continue
                relative = _relative(images_dir, path)
                image_id = _image_id(images_dir, path)
                problem = input_problem(path)
                if problem:
                    skipped.append((image_id, relative, problem))
                elif image_id in items:
                    skipped.append((image_id, relative, "another file has the same name and id"))
                else:
                    patient = patient_of(pattern, relative, image_id)
                    items[image_id] = ImageItem(
                        image_id, path, relative, label, patient, split=split if keep_splits else ""
                    )
    if not items:
        raise UserError(f"no PNG/JPEG/DICOM files in the class folders of {images_dir}")
    _check_both_classes(images_dir, items, mapping)
    rule = "default" if patient_pattern is None else "--patient-pattern"
    return Listing(
        items=dict(sorted(items.items())),
        skipped=skipped,
        label_mapping={"class_folders": dict(sorted(mapping.items()))},
        grouping=f"first group of {pattern.pattern!r} ({rule}) in the relative path, "
        "else the image",
    )


def _check_both_classes(
    images_dir: Path, items: dict[str, ImageItem], mapping: dict[str, int]
) -> None:
    """Refuses a listing whose images are all of one class (as the findings layout does).

    Raises:
        UserError: naming the class found and the folder names the other takes.
    """
    labels = {item.label for item in items.values()}
    if len(labels) > 1:
        return
    (found,) = labels
    folders = sorted({n for n, v in mapping.items() if v == found})
    other = [n for n, v in CLASS_FOLDERS.items() if v != found]
    raise UserError(
        f"only label {found} images ({', '.join(folders)}: {len(items)}) in {images_dir}; "
        f"a classifier needs both classes: add a folder for label {1 - found} "
        f"({', '.join(other)}, any case)"
    )


def _relative(images_dir: Path, path: Path) -> str:
    return path.relative_to(images_dir).as_posix()


def _image_id(images_dir: Path, path: Path) -> str:
    return without_image_suffix(_relative(images_dir, path))
