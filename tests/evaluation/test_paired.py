"""Tests for pneumokeras.evaluation.paired: McNemar, Holm and the pairwise comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumokeras.evaluation import delong, paired


def test_mcnemar_exact_by_hand():
    # 10 discordant pairs, 1 favouring b: p = 2 (C(10,0) + C(10,1)) / 2^10.
    a = np.array([True] * 9 + [False] + [True] * 5 + [False] * 3)
    b = np.array([False] * 9 + [True] + [True] * 5 + [False] * 3)
    result = paired.mcnemar_exact(a, b)
    assert (result["a_only"], result["b_only"], result["discordant"]) == (9, 1, 10)
    assert result["p_value"] == pytest.approx(2 * 11 / 1024)
    same = paired.mcnemar_exact(a, a)
    assert same == {"a_only": 0, "b_only": 0, "discordant": 0, "p_value": 1.0}


def test_holm_by_hand():
    adjusted = paired.holm([0.01, 0.04, 0.03, math.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(adjusted[3])
    assert paired.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])


def _three_models(n: int = 2000, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.25).astype(int)
    shared = rng.normal(size=n)
    scores = []
    for separation in (0.8, 1.6, 0.8):
        logit = 0.7 * shared + 0.7 * rng.normal(size=n) + separation * labels - 1
        scores.append(1 / (1 + np.exp(-logit)))
    return labels, np.vstack(scores)


def test_compare_models_finds_the_better_model_and_agrees_with_delong():
    labels, probs = _three_models()
    patients = np.arange(labels.size).astype(str)
    result = paired.compare_models(
        labels, patients, probs, [0.3, 0.4, 0.3], ["a", "b", "c"], resamples=500, seed=1
    )
    assert [m["name"] for m in result["models"]] == ["a", "b", "c"]
    for m, model in enumerate(result["models"]):
        assert model["roc_auc"]["value"] == pytest.approx(roc_auc_score(labels, probs[m]))
        low, high = model["roc_auc"]["ci95"]
        assert low < model["roc_auc"]["value"] < high
        decided = probs[m] >= model["threshold"]
        assert model["sensitivity"]["value"] == pytest.approx(decided[labels == 1].mean())
    assert [(p["a"], p["b"]) for p in result["pairs"]] == [("a", "b"), ("a", "c"), ("b", "c")]
    better = result["pairs"][0]
    test = delong.delong_test(labels, probs[0], probs[1])
    auc = better["roc_auc"]
    assert auc["difference"] == pytest.approx(test.difference)
    assert auc["delong"]["variance"] == pytest.approx(test.variance)
    assert auc["delong"]["z"] == pytest.approx(test.z)
    assert auc["delong"]["p_value"] == pytest.approx(test.p_value)
    assert auc["difference"] > 0.05
    assert auc["delong"]["p_value"] < 1e-4
    assert auc["ci95"][0] > 0
    assert auc["excludes_zero"]
    same = result["pairs"][1]  # a and c: same separation, different noise
    assert same["roc_auc"]["ci95"][0] < 0 < same["roc_auc"]["ci95"][1]
    assert not same["roc_auc"]["excludes_zero"]
    adjusted = [p["roc_auc"]["delong"]["p_holm"] for p in result["pairs"]]
    raw = [p["roc_auc"]["delong"]["p_value"] for p in result["pairs"]]
    assert all(h >= r for h, r in zip(adjusted, raw, strict=True))
    # Sensitivity differences at each model's own threshold, with McNemar's counts.
    sens = better["sensitivity"]
    right_a = probs[0][labels == 1] >= 0.3
    right_b = probs[1][labels == 1] >= 0.4
    assert sens["difference"] == pytest.approx(right_b.mean() - right_a.mean())
    assert sens["mcnemar"]["a_only"] == int((right_a & ~right_b).sum())
    assert sens["mcnemar"]["b_only"] == int((~right_a & right_b).sum())
    assert result["bootstrap"]["paired"]
    assert result["bootstrap"]["unit"] == "patient"


def test_compare_models_refuses_one_model():
    labels, probs = _three_models(n=100)
    with pytest.raises(ValueError, match="≥ 2 models"):
        paired.compare_models(labels, np.arange(100), probs[:1], [0.5], ["a"])
