"""Tests for pneumokeras.app.downloads: the results table as CSV and JSON."""

from __future__ import annotations

import csv
import io
import json

import keras
import pytest

from pneumokeras.app import analysis, downloads, model_panel

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="Grad-CAM (tf-keras-vis) needs TensorFlow"
)


def test_results_as_csv_and_json(classifier, explainer, examples):
    good = analysis.analyse_upload(classifier, explainer, "a.dcm", examples[1].data, 10)
    bad = analysis.analyse_upload(classifier, explainer, "b.png", b"", 10)
    rows = [downloads.result_row(good), downloads.result_row(bad)]
    table = list(csv.DictReader(io.StringIO(downloads.results_csv(rows))))
    assert tuple(table[0]) == downloads.ROW_COLUMNS
    assert float(table[0]["probability"]) == pytest.approx(good.probability)
    assert table[0]["modality"] == "CR"
    assert table[0]["heatmap"] == "Grad-CAM"
    assert table[0]["member_std"] == ""  # a single model
    assert table[1]["probability"] == ""
    assert table[1]["heatmap"] == ""
    assert table[1]["error"] == "empty file"
    payload = json.loads(downloads.results_json(rows, model_panel.model_summary(classifier)))
    assert payload["notice"] == downloads.RESEARCH_NOTICE
    assert payload["model"]["threshold"] == 0.45
    assert payload["model"]["temperature"] == 1.7
    assert payload["model"]["calibrated"] is True
    assert payload["results"][0]["label"] == good.label
    assert payload["results"][1]["probability"] is None
