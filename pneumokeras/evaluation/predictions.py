"""Per-example scores as CSV: `predictions.csv` (evaluate) and `compare.csv` (compare).

One row per evaluated image, in evaluation order: its example id, patient,
label, attributes (sex, age, view, source; empty when unknown) and the model's
calibrated pneumonia probability (evaluate: with its decision at the threshold;
compare: one column per model), so that anyone can redo the statistics in
another tool. Probabilities are written with Python's shortest round-trip
`repr`, so that ties and ranks are exactly those analysed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence

import numpy as np

from pneumokeras.evaluation.scoring import SplitData
from pneumokeras.sources.attributes import NAMES

LEADING = ("example_id", "patient", "label", *NAMES)


def _leading(data: SplitData, row: int) -> list[str]:
    item = data.attributes[row]
    return [
        str(data.example_ids[row]),
        str(data.patients[row]),
        str(int(data.labels[row])),
        *(item.get(name) for name in NAMES),
    ]


def _render(header: Sequence[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def predictions_csv(data: SplitData, probs: np.ndarray, threshold: float) -> str:
    """`predictions.csv`: `LEADING`, `probability`, `decision` (1 = pneumonia, `p >= threshold`).

    Args:
        data: the evaluated examples.
        probs: (N,) calibrated pneumonia probabilities, in `data`'s order.
        threshold: the decision threshold.
    """
    if len(probs) != len(data):
        raise ValueError(f"{len(probs)} probabilities for {len(data)} examples")
    rows = [
        [*_leading(data, i), repr(float(p)), str(int(p >= threshold))]
        for i, p in enumerate(np.asarray(probs, dtype=np.float64))
    ]
    return _render([*LEADING, "probability", "decision"], rows)


def compare_csv(data: SplitData, probs: Mapping[str, np.ndarray]) -> str:
    """`compare.csv`: `LEADING`, then `probability_<model>` per model (calibrated).

    Args:
        data: the evaluated examples.
        probs: model name → (N,) calibrated pneumonia probabilities in `data`'s order.
    """
    for name, values in probs.items():
        if len(values) != len(data):
            raise ValueError(f"model {name}: {len(values)} probabilities for {len(data)} examples")
    columns = [np.asarray(v, dtype=np.float64) for v in probs.values()]
    rows = [
        [*_leading(data, i), *(repr(float(column[i])) for column in columns)]
        for i in range(len(data))
    ]
    return _render([*LEADING, *(f"probability_{name}" for name in probs)], rows)
