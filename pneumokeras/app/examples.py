"""Cases to look at without data at hand: synthetic phantoms, or a converted split's examples.

`synthetic_examples` renders RSNA-like DICOMs in memory (nothing written);
`split_examples` pages through a converted split's records; `localisation_summary`
sums up the pointing game over the positives shown.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pneumokeras.app.analysis import Result
from pneumokeras.io.png import decode_png


@dataclasses.dataclass(frozen=True)
class Example:
    """A case with known truth: a synthetic DICOM, or a converted split's example.

    Attributes:
        name: its title.
        truth: 1 = pneumonia (lung opacity), 0 = not.
        boxes: `(K, 4)` label boxes `x, y, w, h` as fractions of the image.
        description: one line about it.
        data: DICOM file bytes (synthetic examples), else b''.
        pixels: `(S, S)` uint8 as stored (split examples), else None.
    """

    name: str
    truth: int
    boxes: np.ndarray
    description: str = ""
    data: bytes = b""
    pixels: np.ndarray | None = None


def synthetic_examples(size: int = 256, seed: int = 7) -> list[Example]:
    """Four synthetic patients rendered in memory as RSNA-like DICOMs (nothing written).

    Two positives ("Lung Opacity", with their label boxes), one "Normal" and one
    "No Lung Opacity / Not Normal" negative, from `synth`'s generator.

    Args:
        size: DICOM side, pixels.
        seed: data seed (each patient is a pure function of seed and index).
    """
    from pneumokeras import synth

    classes = (synth.LUNG_OPACITY, synth.LUNG_OPACITY, synth.NORMAL, synth.NOT_NORMAL)
    examples = []
    for index, label_class in enumerate(classes):
        spec = synth.sample_patient(synth.patient_seed(seed, index), label_class)
        data = synth.encode_dicom(spec, synth.render_image(spec, size))
        boxes = np.asarray(synth.boxes(spec, size), dtype=np.float32).reshape(-1, 4) / size
        truth = int(label_class == synth.LUNG_OPACITY)
        kind = (
            f"positive, {len(boxes)} opacit{'y' if len(boxes) == 1 else 'ies'}"
            if truth
            else f"negative ({label_class})"
        )
        examples.append(
            Example(
                name=f"synthetic-{index + 1}.dcm",
                truth=truth,
                boxes=boxes,
                data=data,
                description=f"synthetic {spec.view} phantom, {kind}",
            )
        )
    return examples


def split_examples(
    records: Sequence[Mapping[str, Any]], start: int, count: int, positives_only: bool = False
) -> tuple[list[Example], int]:
    """A page of a converted split (`tfrecords.read_split` records).

    Args:
        records: the split's records (`png`, `label`, `boxes`, `patient_id`, `view`).
        start: index of the page's first example among those selected.
        count: examples per page.
        positives_only: select label-1 examples only.

    Returns:
        The page's examples and how many examples are selected in all.
    """
    selected = [r for r in records if r["label"] == 1] if positives_only else list(records)
    page = selected[max(start, 0) : max(start, 0) + count]
    examples = [
        Example(
            name=str(r["patient_id"]),
            truth=int(r["label"]),
            boxes=np.asarray(r["boxes"], dtype=np.float32).reshape(-1, 4),
            description=f"{r.get('view') or '?'} view, {r.get('class') or ''}".rstrip(", "),
            pixels=decode_png(r["png"]),
        )
        for r in page
    ]
    return examples, len(selected)


def localisation_summary(results: Sequence[Result]) -> str:
    """'pointing game 3 / 4 hits, energy in boxes 0.52' over scored positives, or ''."""
    scored = [r for r in results if r.pointing_game is not None]
    if not scored:
        return ""
    hits = sum(bool(r.pointing_game) for r in scored)
    energy = float(np.mean([r.energy_in_boxes for r in scored]))
    return (
        f"pointing game {hits} / {len(scored)} hits (heatmap maximum inside a box), "
        f"mean energy in boxes {energy:.2f}, over the positives with boxes shown"
    )
