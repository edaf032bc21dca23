"""Tests for pneumokeras.evaluation.predictions: predictions.csv and compare.csv."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from pneumokeras.evaluation import predictions
from pneumokeras.evaluation.scoring import SplitData
from pneumokeras.sources.attributes import Attributes


def _data() -> SplitData:
    return SplitData(
        example_ids=np.array(["a,1", "b"], dtype=object),
        labels=np.array([1, 0]),
        patients=np.array(["p1", "p2"], dtype=object),
        views=np.array(["AP", ""], dtype=object),
        attributes=(Attributes("F", "90+", "AP", "rsna"), Attributes(source="rsna")),
        splits=("test",),
    )


def test_predictions_csv_round_trips_exactly():
    probs = np.array([0.1 + 0.2, 1 / 3])
    rows = list(csv.DictReader(io.StringIO(predictions.predictions_csv(_data(), probs, 0.32))))
    assert list(rows[0]) == [*predictions.LEADING, "probability", "decision"]
    assert rows[0]["example_id"] == "a,1"  # quoted
    assert (rows[0]["sex"], rows[0]["age"], rows[1]["sex"]) == ("F", "90+", "")
    assert [float(r["probability"]) for r in rows] == list(probs)  # shortest repr: exact
    assert [r["decision"] for r in rows] == ["0", "1"]
    with pytest.raises(ValueError, match="1 probabilities for 2"):
        predictions.predictions_csv(_data(), probs[:1], 0.5)


def test_compare_csv_one_column_per_model():
    text = predictions.compare_csv(_data(), {"a": np.array([0.2, 0.4]), "b/run": np.ones(2)})
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0])[-2:] == ["probability_a", "probability_b/run"]
    assert rows[1]["probability_a"] == "0.4"
    with pytest.raises(ValueError, match="model a"):
        predictions.compare_csv(_data(), {"a": np.ones(3)})
