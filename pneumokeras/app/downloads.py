"""What the page offers for download: one row per analysed image, as CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pneumokeras.app.analysis import Result, method_title

RESEARCH_NOTICE = (
    "Research and education only. pneumokeras is not a medical device: do not use "
    "it for diagnosis or any clinical decision."
)
ROW_COLUMNS = (
    "name",
    "source",
    "patient_id",
    "probability",
    "label",
    "class",
    "threshold",
    "tta_count",
    "tta_mean",
    "tta_std",
    "member_std",
    "heatmap",
    "layer",
    "explained_class",
    "truth",
    "pointing_game",
    "energy_in_boxes",
    "format",
    "modality",
    "view",
    "photometric",
    "transfer_syntax",
    "width",
    "height",
    "warning",
    "error",
)


def result_row(result: Result) -> dict[str, Any]:
    """One JSON-ready row per image (columns `ROW_COLUMNS`; None where unknown)."""
    record = result.record
    count, mean, std = result.tta or (None, None, None)
    return {
        "name": result.name,
        "source": result.source,
        "patient_id": record.patient_id if record else "",
        "probability": result.probability,
        "label": result.label,
        "class": result.class_name or None,
        "threshold": result.threshold,
        "tta_count": count,
        "tta_mean": mean,
        "tta_std": std,
        "member_std": result.member_std,
        "heatmap": method_title(result.method) if result.ok and result.method else None,
        "layer": result.layer or None,
        "explained_class": result.explained or None,
        "truth": result.truth,
        "pointing_game": result.pointing_game,
        "energy_in_boxes": result.energy_in_boxes,
        "format": record.format if record else "",
        "modality": record.modality if record else "",
        "view": record.view if record else "",
        "photometric": record.photometric if record else "",
        "transfer_syntax": record.transfer_syntax_name if record else "",
        "width": record.width if record else None,
        "height": record.height if record else None,
        "warning": result.warning,
        "error": result.error,
    }


def results_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as CSV text (header `ROW_COLUMNS`; empty cells for None)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROW_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def results_json(rows: Sequence[Mapping[str, Any]], model: Mapping[str, Any]) -> str:
    """`{"notice", "model": {...}, "results": [rows]}` as JSON text."""
    payload = {"notice": RESEARCH_NOTICE, "model": dict(model), "results": list(rows)}
    return json.dumps(payload, indent=2) + "\n"
