"""Inputs the model was never meant for: checks against what it was trained on.

Pure functions. `train` records per-image intensity statistics of a sample of its
training images in the model card (`training_statistics`); `predict` compares
each image with them (`input_warnings`) and also looks at what a DICOM says it
is (modality, body part). A warning never replaces the prediction: the row keeps
its probability, with the warning beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

# Modalities of chest radiographs: computed and digital radiography.
RADIOGRAPHY_MODALITIES = ("CR", "DX")
# The recorded range is the training images' [0.5, 99.5] percentile range,
# widened by this fraction of its width on each side before an image is flagged.
PERCENTILES = (0.5, 99.5)
MARGIN = 0.25


def image_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image mean and standard deviation of grey levels.

    Args:
        images: `(N, S, S)` or `(N, S, S, 1)` pixels in [0, 255].

    Returns:
        `{"mean": (N,), "std": (N,)}` float64, grey levels.
    """
    flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    return {"mean": flat.mean(axis=1), "std": flat.std(axis=1)}


def training_statistics(images: np.ndarray) -> dict[str, Any]:
    """What the model card records about its training images' intensities.

    Returns:
        `{"images": N, "percentiles": [0.5, 99.5], "mean": [low, high],
        "std": [low, high]}` (grey levels), JSON-ready.
    """
    stats = image_statistics(images)
    summary: dict[str, Any] = {"images": len(images), "percentiles": list(PERCENTILES)}
    for name, values in stats.items():
        low, high = np.percentile(values, PERCENTILES)
        summary[name] = [round(float(low), 3), round(float(high), 3)]
    return summary


def intensity_warnings(pixels: np.ndarray, recorded: Mapping[str, Any]) -> list[str]:
    """Warnings for an image whose mean or spread lies far outside the training range.

    Args:
        pixels: `(S, S)` uint8 image as the model sees it.
        recorded: `training_statistics` of the training images ({} = no check).
    """
    if not recorded:
        return []
    stats = image_statistics(np.asarray(pixels)[None])
    warnings = []
    for name, label in (("mean", "mean grey level"), ("std", "contrast (grey-level SD)")):
        low, high = recorded[name]
        pad = MARGIN * (high - low)
        value = float(stats[name][0])
        if not low - pad <= value <= high + pad:
            warnings.append(
                f"{label} {value:.0f} is outside the training images' range {low:.0f}-{high:.0f}"
            )
    return warnings


def source_warnings(facts: Mapping[str, Any], input_size: int) -> list[str]:
    """Warnings from what a file says about itself.

    Args:
        facts: `modality`, `body_part` (DICOM tags, '' when absent), `rows`,
            `columns` (original size, pixels); missing keys are not checked.
        input_size: the model's input side, pixels.
    """
    warnings = []
    modality = str(facts.get("modality", "") or "").upper()
    if modality and modality not in RADIOGRAPHY_MODALITIES:
        warnings.append(
            f"modality {modality} is not a radiograph (CR/DX): the model was trained on "
            "chest X-rays"
        )
    body_part = str(facts.get("body_part", "") or "").upper()
    if body_part and "CHEST" not in body_part and "THORAX" not in body_part:
        warnings.append(f"body part {body_part} is not the chest")
    rows, columns = facts.get("rows"), facts.get("columns")
    if rows and columns and max(int(rows), int(columns)) < input_size:
        warnings.append(
            f"the image ({columns}x{rows} px) is smaller than the model's input "
            f"({input_size} px) and was enlarged"
        )
    return warnings


def image_warnings(
    pixels: np.ndarray, facts: Mapping[str, Any], input_size: int, recorded: Mapping[str, Any]
) -> str:
    """All warnings for one image, joined with '; ' ('' when none).

    Args:
        pixels: `(S, S)` uint8 image as the model sees it.
        facts: what the file says (see `source_warnings`).
        input_size: the model's input side, pixels.
        recorded: the card's `input_statistics` ({} = no intensity check).
    """
    return "; ".join(source_warnings(facts, input_size) + intensity_warnings(pixels, recorded))
