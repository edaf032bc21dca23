"""Tests for pneumokeras.evaluation.compare_report: compare.md from a compare.json object."""

from __future__ import annotations

import numpy as np

from pneumokeras.evaluation import compare_report, paired


def _record(identical: bool = False) -> dict:
    rng = np.random.default_rng(0)
    labels = (rng.random(200) < 0.3).astype(int)
    a = np.clip(0.3 * labels + 0.7 * rng.random(200), 0, 1)
    b = a if identical else np.clip(0.5 * labels + 0.5 * rng.random(200), 0, 1)
    stats = paired.compare_models(labels, np.arange(200), np.vstack([a, b]), [0.5, 0.4],
                                  ["a", "b"], resamples=40)  # fmt: skip
    facts = [
        {"path": f"runs/{n}/model.keras", "input_size": 32, "data_dir": "d", "temperature": 1.0,
         "fitted": n == "a", "members": 0, "provenance": "trained on this converted folder"}
        for n in ("a", "b")
    ]  # fmt: skip
    return {
        "split": "test",
        "data_dirs": {"32": "d"},
        "n": 200,
        "patients": 200,
        "positives": int(labels.sum()),
        "models": [{**f, **m} for f, m in zip(facts, stats["models"], strict=True)],
        "pairs": stats["pairs"],
        "bootstrap": stats["bootstrap"],
        "warnings": ["model b: its threshold was never fitted"],
    }


def _row(text: str, start: str) -> list[str]:
    """The first table row starting with `start` that is not a header (no Δ)."""
    line = next(x for x in text.splitlines() if x.startswith(start) and "Δ" not in x)
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_compare_report_tables():
    record = _record()
    text = compare_report.render(record)
    assert text.startswith("# Paired comparison of 2 models")
    assert "- model b: its threshold was never fitted" in text
    auc = record["pairs"][0]["roc_auc"]
    row = _row(text, "| a | b | ")  # the ΔAUC table's row comes first
    assert row[2] == f"{auc['difference']:+.3f}"
    assert row[4] == f"{auc['delong']['variance'] ** 0.5:.4f}"
    model_b = _row(text, "| b | 32 px |")
    assert model_b[2] == "0.4000 ²"
    assert "² threshold and temperature never fitted" in text
    assert "treat images as independent" in text
    assert text.count("not for diagnosis") == 2


def test_compare_report_identical_models_are_not_estimable():
    text = compare_report.render(_record(identical=True))
    row = _row(text, "| a | b | ")
    assert row[4] == "0 (not estimable)"
    assert row[6] == "n/a"
