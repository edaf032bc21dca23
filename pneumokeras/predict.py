"""Image files → calibrated pneumonia probabilities with a saved model.

Preprocessing equals the converter's, so the model sees at inference the pixels
it was trained on:

- DICOM (`*.dcm`): `dicom.read_dicom(path, size=S)`, the very call `convert`
  stores as PNG.
- PNG / JPEG: Pillow → 8-bit grayscale (`convert("L")`) → `dicom.resize_square`
  (centred on a black square, BOX resize). A 16-bit grayscale PNG is first scaled
  linearly from its [min, max] to [0, 255] (Pillow's `"L"` conversion would clip
  it), the rule `dicom.to_uint8` applies to DICOMs without a window.

The model's pneumonia probability is calibrated with model.json's temperature
(`evaluate.calibrate`) and compared with its threshold (`p >= threshold` is
pneumonia). Research and education only; not for diagnosis.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from PIL import Image, UnidentifiedImageError

from pneumokeras.dicom import DicomError, read_dicom, resize_square
from pneumokeras.errors import UserError
from pneumokeras.evaluate import CLASS_NAMES, calibrate, input_size, load_model, model_json_path
from pneumokeras.fileio import atomic_write_text

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".dcm", ".png", ".jpg", ".jpeg")
COLUMNS = ("path", "patient_id", "probability", "label", "class", "error")
TTA_COLUMNS = ("tta_mean", "tta_std")
DEFAULT_THRESHOLD = 0.5
DEFAULT_TEMPERATURE = 1.0
# Test-time augmentation: small, label-preserving perturbations.
TTA_ROTATION_DEGREES = 5.0
TTA_BRIGHTNESS = 0.05  # fraction of the [0, 255] range


class ImageError(ValueError):
    """A PNG/JPEG file that cannot give a grayscale image; the message says why."""


def find_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expands files and folders into the list of files to predict.

    Folders are searched recursively for `*.dcm, *.png, *.jpg, *.jpeg` (any case),
    sorted; files named explicitly are kept whatever their suffix (an unsupported
    one is reported on its row). Duplicates are dropped, first occurrence kept.

    Raises:
        UserError: a path that does not exist.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"input {path} does not exist")
    return list(dict.fromkeys(found))


def load_image(path: str | os.PathLike[str], size: int) -> tuple[np.ndarray, str]:
    """Reads one DICOM, PNG or JPEG exactly as `convert` would prepare it.

    Args:
        path: image file; the suffix (any case) picks the reader.
        size: side of the square output, pixels.

    Returns:
        `(pixels, patient_id)`: (size, size) uint8 and the DICOM PatientID tag
        ('' for PNG/JPEG or when absent).

    Raises:
        DicomError: unreadable DICOM.
        ImageError: unreadable PNG/JPEG or an unsupported suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".dcm":
        image = read_dicom(path, size=size)
        return image.pixels, image.patient_id
    if suffix not in IMAGE_SUFFIXES:
        raise ImageError(f"unsupported file type {suffix or '(no suffix)'}")
    try:
        with Image.open(path) as img:
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                pixels = _scale_to_uint8(np.asarray(img))
            else:
                pixels = np.asarray(img.convert("L"))
    except UnidentifiedImageError as err:
        raise ImageError("not a readable PNG/JPEG image") from err
    except OSError as err:
        raise ImageError(f"truncated or corrupt image ({err})") from err
    return resize_square(np.ascontiguousarray(pixels, dtype=np.uint8), size), ""


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Maps [min, max] linearly onto [0, 255], rounded; a constant image gives 0."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    return np.rint(scaled).astype(np.uint8)


def _tta_augmenter(seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """Seeded random horizontal flip, rotation (±5°) and brightness (±5 %)."""
    layers = [
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(
            TTA_ROTATION_DEGREES / 360.0, fill_mode="constant", seed=seed + 1
        ),
        keras.layers.RandomBrightness(TTA_BRIGHTNESS, value_range=(0.0, 255.0), seed=seed + 2),
    ]

    def augment(images: np.ndarray) -> np.ndarray:
        for layer in layers:
            images = layer(images, training=True)
        return keras.ops.convert_to_numpy(images)

    return augment


def _setting(meta: dict[str, Any], key: str, default: float, meta_path: Path) -> float:
    if key not in meta:
        logger.warning("warning: %s has no %s; using %s", meta_path, key, default)
        return default
    return float(meta[key])


def predict_files(
    model_path: str | os.PathLike[str],
    inputs: list[str],
    out_path: str | os.PathLike[str] | None = None,
    fmt: str = "csv",
    batch_size: int = 32,
    tta: int = 0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Predicts pneumonia for image files and folders.

    Test-time augmentation (`tta=N`) runs the model on N randomly perturbed copies
    of each image (horizontal flip, ±5° rotation, ±5 % brightness; seeded) and
    reports the mean and standard deviation of the calibrated probability. The
    spread measures how sensitive the prediction is to small input perturbations;
    it is NOT a calibrated (Bayesian) uncertainty, not a confidence interval, and
    a small spread does not mean the prediction is right. `probability` and
    `label` always come from the unperturbed image.

    Args:
        model_path: model.keras; model.json beside it gives the threshold and the
            temperature (0.5 and 1.0, with a warning, when absent).
        inputs: files and/or folders (searched recursively, see `find_inputs`).
        out_path: where to write the rows (atomically); None writes nothing.
        fmt: `csv` or `json` (see `format_rows`).
        batch_size: images per model call.
        tta: number of test-time augmentations (0 = none).
        seed: seed of the augmentations.

    Returns:
        One dict per file, in input order: `path`, `patient_id` (DICOM tag, else
        ''), `probability` (calibrated pneumonia probability), `label` (1 =
        pneumonia at the threshold, 0 = normal), `class` (its name), `error` (''
        or why the file was not predicted; then probability/label/class are
        None); with `tta` also `tta_mean`, `tta_std`.

    Raises:
        UserError: bad arguments, missing model, no input files, or no file
            that could be predicted.
    """
    if fmt not in ("csv", "json"):
        raise UserError(f"format must be csv or json; got {fmt!r}")
    if batch_size < 1:
        raise UserError(f"batch size must be ≥ 1; got {batch_size}")
    if tta < 0:
        raise UserError(f"--tta must be ≥ 0; got {tta}")
    paths = find_inputs(inputs)
    if not paths:
        raise UserError(
            f"no image files (*.dcm, *.png, *.jpg, *.jpeg) in {', '.join(map(str, inputs))}"
        )
    model, meta = load_model(model_path)
    meta_path = model_json_path(model_path)
    size = input_size(model)
    threshold = _setting(meta, "threshold", DEFAULT_THRESHOLD, meta_path)
    temperature = _setting(meta, "temperature", DEFAULT_TEMPERATURE, meta_path)
    class_names = meta.get("class_names", list(CLASS_NAMES))
    augment = _tta_augmenter(seed) if tta else None

    rows: list[dict[str, Any]] = []
    for start in range(0, len(paths), batch_size):
        batch_rows, images = [], []
        for path in paths[start : start + batch_size]:
            row: dict[str, Any] = {"path": str(path), "patient_id": "", "probability": None,
                                   "label": None, "class": None, "error": ""}
            if tta:
                row.update(tta_mean=None, tta_std=None)
            try:
                pixels, row["patient_id"] = load_image(path, size)
                images.append(pixels)
                batch_rows.append(row)
            except (DicomError, ImageError) as err:
                row["error"] = str(err)
            rows.append(row)
        if not images:
            continue
        x = np.stack(images)[..., None].astype(np.float32)
        probs = calibrate(np.asarray(model.predict_on_batch(x))[:, 1], temperature)
        for row, prob in zip(batch_rows, probs, strict=True):
            label = int(prob >= threshold)
            row.update(probability=float(prob), label=label, **{"class": class_names[label]})
        if augment is not None:
            samples = np.stack(
                [calibrate(np.asarray(model.predict_on_batch(augment(x)))[:, 1], temperature)
                 for _ in range(tta)]
            )
            for row, mean, std in zip(
                batch_rows, samples.mean(axis=0), samples.std(axis=0), strict=True
            ):
                row.update(tta_mean=float(mean), tta_std=float(std))

    failed = [row for row in rows if row["error"]]
    if len(failed) == len(rows):
        raise UserError(
            f"none of the {len(rows)} input file(s) could be read; first: "
            f"{failed[0]['path']}: {failed[0]['error']}"
        )
    if out_path is not None:
        atomic_write_text(out_path, format_rows(rows, fmt))
    return rows


def format_rows(rows: list[dict[str, Any]], fmt: str) -> str:
    """Prediction rows as CSV text (columns `COLUMNS`, then the TTA ones) or a JSON list."""
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    columns = list(COLUMNS) + [c for c in TTA_COLUMNS if rows and c in rows[0]]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
