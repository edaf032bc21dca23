"""The end-to-end demo on a small synthetic set: every stage runs, reports, and learns."""

import csv
import json
from pathlib import Path

import pytest

from pneumokeras.config import load_config
from pneumokeras.demo import run_demo
from pneumokeras.errors import UserError
from pneumokeras.evaluation.report import gap_words

ROOT = Path(__file__).resolve().parents[1]


# Runs once, in the TensorFlow pass (`make demo`'s default backend), not `backend`:
# each stage it chains (synth, convert, train, evaluate, explain in a spawned
# TensorFlow process) has its own tests, and those that touch Keras run under both
# backends; what this adds is the chaining, the summary and that the recipe learns.
@pytest.mark.slow
def test_demo_runs_every_stage_learns_and_summarises(tmp_path):
    # The demo recipe, thinner and shorter: 300 patients at 128 px seen at 64 px, by
    # ResNet10 (ResNet18's layers with half the blocks: half the tracing; ResNet18 is
    # built and checked in test_resnet.py) for 6 epochs.
    config = load_config(
        ROOT / "configs" / "demo.yaml",
        [
            "data.image_size=64",
            "data.batch_size=16",
            "model.name=resnet10",
            "model.filters=8",
            "train.epochs=6",
            "evaluate.bootstrap=20",
            "explain.limit=8",
            "train.xla=false",  # XLA compile would be most of this tiny run
        ],
    )
    lines = []
    summary = run_demo(
        tmp_path / "demo", config, patients=300, size=128, seed=3, workers=0, echo=lines.append
    )
    assert [line[:5] for line in lines if line.startswith("[")] == [
        "[1/5]",
        "[2/5]",
        "[3/5]",
        "[4/5]",
        "[5/5]",
    ]
    # It learnt: a model at chance scores about 0.5 on these 30 validation patients
    # (standard deviation ≈ 0.12); this recipe reached 0.94 in 6 epochs (0.87 with
    # ResNet18 in 10).
    card = json.loads((summary.out_dir / "run" / "model.json").read_text())
    assert card["validation"]["auc"] >= 0.8
    # The summary is what the stages wrote.
    metrics = json.loads((summary.out_dir / "evaluation" / "metrics.json").read_text())
    assert summary.test_roc_auc == metrics["metrics"]["roc_auc"]["value"]
    assert summary.sensitivity == metrics["metrics"]["recall"]["value"]
    assert card["threshold"] == metrics["threshold"]["value"]  # evaluate wrote the card
    gap = metrics["subgroups"]["largest_gap"]
    assert summary.largest_gap == (gap_words(gap) if gap else None)
    assert summary.report.read_text().startswith("# Pneumonia classifier evaluation")
    explained = json.loads((summary.overlays / "summary.json").read_text())
    assert 1 <= explained["count"] <= 8
    assert explained["layer"] == "stack4_block1_out"
    assert summary.pointing_game == explained["pointing_game"]
    with open(summary.overlays / "explain.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(row["true_label"] == "1" for row in rows)  # test positives only
    detected = [int(r["pointing_game"]) for r in rows if r["predicted_label"] == "1"]
    assert summary.pointing_game_detected == (sum(detected) / len(detected) if detected else None)
    assert len(list(summary.overlays.glob("*.png"))) == explained["count"] + 1  # + contact sheet


def test_demo_refuses_an_out_folder_holding_other_files(tmp_path):
    (tmp_path / "precious.txt").write_text("mine")
    config = load_config(ROOT / "configs" / "demo.yaml", [])
    with pytest.raises(UserError, match="holds files the demo did not write"):
        run_demo(tmp_path, config, patients=10, size=64, workers=0, echo=lambda _: None)
    assert (tmp_path / "precious.txt").read_text() == "mine"
    (tmp_path / "precious.txt").unlink()
    (tmp_path / "x").write_text("")
    with pytest.raises(UserError, match="is a file"):
        run_demo(tmp_path / "x", config, patients=10, size=64, workers=0, echo=lambda _: None)
