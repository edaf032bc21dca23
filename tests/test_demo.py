"""The end-to-end demo on a tiny synthetic set: every stage runs and reports."""

import json
from pathlib import Path

from pneumokeras.config import load_config
from pneumokeras.demo import run_demo

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_every_stage_and_summarises(tmp_path):
    config = load_config(
        ROOT / "configs" / "demo.yaml",
        [
            "data.image_size=32",
            "data.batch_size=8",
            "model.filters=8",
            "train.epochs=1",
            "evaluate.bootstrap=20",
            "explain.layer=stack2_block2_out",
            "explain.limit=4",
        ],
    )
    lines = []
    summary = run_demo(
        tmp_path / "demo", config, patients=60, size=64, seed=3, workers=0, echo=lines.append
    )
    assert [line[:5] for line in lines if line.startswith("[")] == [
        "[1/5]",
        "[2/5]",
        "[3/5]",
        "[4/5]",
        "[5/5]",
    ]
    assert 0.0 <= summary.test_roc_auc <= 1.0
    assert 0.0 <= summary.sensitivity <= 1.0 and 0.0 <= summary.specificity <= 1.0
    assert summary.report.is_file()
    explained = json.loads((summary.overlays / "summary.json").read_text())
    assert 1 <= explained["count"] <= 4
    # The configured layer is used under either backend (JAX explains in a child).
    assert explained["layer"] == "stack2_block2_out"
    assert summary.pointing_game == explained["pointing_game"]
    assert 0.0 <= summary.pointing_game <= 1.0
    assert len(list(summary.overlays.glob("*.png"))) >= explained["count"]
    assert (summary.out_dir / "run" / "model.keras").is_file()
