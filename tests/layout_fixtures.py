"""Tiny generated inputs of the `folders` and `findings` layouts (Kermany, NIH, CheXpert).

Images are 20-60 px, made with NumPy and written with Pillow; no Keras involved.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = ("train", "val", "test")


def radiograph(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth gray picture with noise, (height, width) uint8."""
    rows = np.linspace(40, 200, height)[:, None]
    cols = np.linspace(0, 50, width)[None, :]
    noise = rng.normal(0, 8, (height, width))
    return np.clip(rows + cols + noise, 0, 255).astype(np.uint8)


def _shape(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(20, 61)), int(rng.integers(20, 61))


def write_kermany(root: Path, seed: int = 0) -> dict[str, Path]:
    """`root/{train,val,test}/{NORMAL,PNEUMONIA}/` as in Kermany's set.

    Per split: 6 NORMAL images (JPEG `IM-xxxx-0001.jpeg`, PNG `NORMAL2-IM-...png`)
    and 6 PNEUMONIA JPEGs of 3 patients (`personN_bacteria_1`, `personN_virus_2`),
    person numbers distinct across splits; grayscale, non-square, several sizes.
    Returns a few of the paths by role.
    """
    rng = np.random.default_rng(seed)
    paths: dict[str, Path] = {}
    for s, split in enumerate(SPLITS):
        normal, pneumonia = root / split / "NORMAL", root / split / "PNEUMONIA"
        normal.mkdir(parents=True)
        pneumonia.mkdir(parents=True)
        for i in range(6):
            name = f"IM-{s}{i:03d}-0001.jpeg" if i % 2 else f"NORMAL2-IM-{s}{i:03d}-0001.png"
            Image.fromarray(radiograph(rng, *_shape(rng))).save(normal / name)
        for person in range(3 * s + 1, 3 * s + 4):
            for kind in ("bacteria", "virus"):
                path = pneumonia / f"person{person}_{kind}_{person + 1}.jpeg"
                Image.fromarray(radiograph(rng, *_shape(rng))).save(path, quality=90)
        paths[f"{split}_person"] = path
    paths["normal_png"] = root / "train" / "NORMAL" / "NORMAL2-IM-0000-0001.png"
    return paths


def add_odd_files(root: Path, seed: int = 1) -> dict[str, Path]:
    """Adds to `root/train`: a 16-bit PNG, an RGB JPEG of a gray picture, a colour
    PNG, a corrupt (truncated) JPEG, a text file and a hidden file."""
    rng = np.random.default_rng(seed)
    normal, pneumonia = root / "train" / "NORMAL", root / "train" / "PNEUMONIA"
    paths = {
        "png16": normal / "IM-9000-0001.png",
        "gray_rgb": pneumonia / "person1_virus_9.jpeg",
        "colour": normal / "IM-9001-0001.png",
        "corrupt": normal / "IM-9002-0001.jpeg",
        "text": normal / "notes.txt",
    }
    deep = (radiograph(rng, 30, 44).astype(np.uint16) * 200 + 500).astype(np.uint16)
    Image.fromarray(deep).save(paths["png16"])
    gray = radiograph(rng, 40, 28)
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(paths["gray_rgb"], quality=95)
    colour = np.stack([gray, 255 - gray, gray // 2], axis=-1)
    Image.fromarray(colour).save(paths["colour"])
    Image.fromarray(radiograph(rng, 50, 50)).save(paths["corrupt"])
    paths["corrupt"].write_bytes(paths["corrupt"].read_bytes()[:300])
    paths["text"].write_text("not an image")
    (normal / ".DS_Store").write_bytes(b"\0")
    return paths


NIH_COLUMNS = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
    "OriginalImagePixelSpacing[x",
    "y]",
]


def write_nih(root: Path, patients: int = 12, seed: int = 2) -> tuple[Path, Path]:
    """NIH ChestX-ray14-like: `root/images_001/images/<pppppppp>_<fff>.png` and
    `root/Data_Entry_2017.csv`; 1-3 follow-ups per patient (patient % 3 + 1);
    patients with 3 have Pneumonia in the first (4 of 12 patients, 4 of 24
    images); one extra row whose file is missing.

    Returns:
        (images folder = root, CSV path).
    """
    rng = np.random.default_rng(seed)
    images = root / "images_001" / "images"
    images.mkdir(parents=True)
    rows = []
    for patient in range(1, patients + 1):
        for follow_up in range(1 + patient % 3):
            name = f"{patient:08d}_{follow_up:03d}.png"
            Image.fromarray(radiograph(rng, *_shape(rng))).save(images / name)
            if patient % 3 == 2 and follow_up == 0:
                findings = "Cardiomegaly|Pneumonia"
            elif follow_up == 1:
                findings = "Effusion"
            else:
                findings = "No Finding"
            view = "PA" if patient % 2 else "AP"
            rows.append([name, findings, follow_up, patient, 50, "M", view, 40, 40, 0.1, 0.1])
    rows.append(["99999999_000.png", "Pneumonia", 0, 999, 60, "F", "PA", 40, 40, 0.1, 0.1])
    labels = root / "Data_Entry_2017.csv"
    with open(labels, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(NIH_COLUMNS)
        writer.writerows(rows)
    return root, labels


CHEXPERT_VALUES = ["1.0", "0.0", "-1.0", "", "1.0", "-1.0", "", "0.0", "1.0", "", "1.0", "0.0"]


def write_chexpert(root: Path, seed: int = 3) -> tuple[Path, Path]:
    """CheXpert-like: `root/CheXpert-v1.0-small/train/patientNNNNN/studyK/view1_frontal.jpg`
    and `root/CheXpert-v1.0-small/train.csv` (`Path`, `AP/PA`, `Pneumonia` of
    1.0 / 0.0 / -1.0 / blank); patients have 1 or 2 studies.

    Returns:
        (images folder = root, CSV path).
    """
    rng = np.random.default_rng(seed)
    base = root / "CheXpert-v1.0-small"
    rows = []
    for index, value in enumerate(CHEXPERT_VALUES):
        patient, study = index // 2 + 1, index % 2 + 1
        relative = f"CheXpert-v1.0-small/train/patient{patient:05d}/study{study}/view1_frontal.jpg"
        (root / relative).parent.mkdir(parents=True)
        Image.fromarray(radiograph(rng, *_shape(rng))).save(root / relative)
        rows.append([relative, "Female", 60, "Frontal", "AP", "", value])
    labels = base / "train.csv"
    with open(labels, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Pneumonia"]
        )
        writer.writerows(rows)
    return root, labels
