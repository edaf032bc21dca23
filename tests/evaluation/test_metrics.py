"""Tests for pneumokeras.evaluation.metrics: point metrics, intervals, threshold, calibration error.

Hand-computed toy cases and comparisons with scikit-learn; no Keras (runs once).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from pneumokeras.evaluation import metrics
from pneumokeras.evaluation.calibration import fit_temperature

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
PROBS = np.array([0.1, 0.3, 0.6, 0.2, 0.8, 0.4, 0.9, 0.7])


# ---------------------------------------------------------------- point metrics


def test_metrics_hand_computed():
    m = metrics.classification_metrics(LABELS, PROBS, threshold=0.5)
    # Negatives 0.1 0.3 0.6 0.2 → one false positive; positives 0.8 0.4 0.9 0.7 → one miss.
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (3, 1, 1, 3)
    for name in ("accuracy", "precision", "recall", "specificity", "f1"):
        assert m[name] == pytest.approx(0.75)
    # 15 of the 16 (positive, negative) pairs are ranked right (0.4 < 0.6).
    assert m["roc_auc"] == pytest.approx(15 / 16)
    # Ranked: P P P N P ...; AP = 0.25 * (1 + 1 + 1 + 4/5).
    assert m["pr_auc"] == pytest.approx(0.95)
    # Squared errors: negatives .01 .09 .36 .04, positives .04 .36 .01 .09.
    assert m["brier"] == pytest.approx(1.0 / 8)
    assert tuple(m) == metrics.METRIC_NAMES


def test_threshold_is_inclusive():
    m = metrics.classification_metrics(LABELS, PROBS, threshold=0.4)
    assert m["tp"] == 4
    assert m["fp"] == 1


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    probs = np.clip(0.3 * labels + rng.random(300) * 0.7, 0, 1)
    predicted = (probs >= 0.45).astype(int)
    m = metrics.classification_metrics(labels, probs, 0.45)
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert m["precision"] == pytest.approx(precision_score(labels, predicted))
    assert m["recall"] == pytest.approx(recall_score(labels, predicted))
    assert m["specificity"] == pytest.approx(recall_score(labels, predicted, pos_label=0))
    assert m["f1"] == pytest.approx(f1_score(labels, predicted))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(labels, probs))
    assert m["pr_auc"] == pytest.approx(average_precision_score(labels, probs))
    assert m["brier"] == pytest.approx(brier_score_loss(labels, probs))
    cm = confusion_matrix(labels, predicted).ravel()
    assert [m[k] for k in ("tn", "fp", "fn", "tp")] == cm.tolist()
    # The bootstrapped subset is the same numbers.
    ranking = metrics.ranking_metrics(labels, probs, 0.45)
    assert set(ranking) == set(metrics.BOOTSTRAPPED)
    for name, value in ranking.items():
        assert value == pytest.approx(m[name]), name


def test_metrics_with_one_class_are_nan_where_undefined():
    m = metrics.classification_metrics(np.zeros(4, int), np.array([0.1, 0.2, 0.7, 0.3]), 0.5)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(0.75)
    assert m["precision"] == 0.0  # one predicted positive, wrong
    for name in ("recall", "roc_auc", "pr_auc"):
        assert math.isnan(m[name])
    ranking = metrics.ranking_metrics(np.zeros(4, int), np.array([0.1, 0.2, 0.7, 0.3]), 0.5)
    assert math.isnan(ranking["roc_auc"])
    assert math.isnan(ranking["pr_auc"])


# ---------------------------------------------------------------- bootstrap


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    return labels, np.clip(0.35 * labels + 0.65 * rng.random(n), 0, 1)


def _auc(labels, probs):
    return (
        {"roc_auc": roc_auc_score(labels, probs)}
        if len(set(labels)) == 2
        else {"roc_auc": math.nan}
    )


def test_bootstrap_interval_contains_the_point_estimate():
    labels, probs = _toy(60, seed=0)
    point = metrics.classification_metrics(labels, probs, 0.5)
    cis = metrics.bootstrap_ci(
        lambda y, p: metrics.classification_metrics(y, p, 0.5),
        labels,
        probs,
        resamples=50,
        seed=0,
    )
    assert set(cis) == set(point)
    for name, value in point.items():
        assert cis[name].low <= value <= cis[name].high, name


def test_bootstrap_interval_narrows_with_more_data():
    widths = []
    for n in (60, 1200):
        labels, probs = _toy(n, seed=n)
        ci = metrics.bootstrap_ci(_auc, labels, probs, resamples=150, seed=0)["roc_auc"]
        assert ci.low <= roc_auc_score(labels, probs) <= ci.high
        widths.append(ci.high - ci.low)
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(n): 20× the data, ~4.5× narrower


def test_bootstrap_is_seeded():
    labels, probs = _toy(80, seed=1)
    first = metrics.bootstrap_ci(_auc, labels, probs, resamples=50, seed=7)
    assert metrics.bootstrap_ci(_auc, labels, probs, resamples=50, seed=7) == first
    assert metrics.bootstrap_ci(_auc, labels, probs, resamples=50, seed=8) != first


def test_bootstrap_resamples_patients_not_rows():
    # Every patient has two identical rows: resampling patients gives exactly the
    # same statistics as resampling the deduplicated rows with the same draws.
    labels, probs = _toy(50, seed=2)
    doubled = metrics.bootstrap_ci(
        _auc,
        np.repeat(labels, 2),
        np.repeat(probs, 2),
        groups=np.repeat(np.arange(50), 2),
        resamples=100,
        seed=3,
    )
    single = metrics.bootstrap_ci(_auc, labels, probs, resamples=100, seed=3)
    assert doubled["roc_auc"].low == pytest.approx(single["roc_auc"].low)
    assert doubled["roc_auc"].high == pytest.approx(single["roc_auc"].high)


def test_bootstrap_skips_one_class_resamples_for_auc():
    labels = np.array([0] * 9 + [1])
    probs = np.linspace(0.05, 0.95, 10)
    cis = metrics.bootstrap_ci(_auc, labels, probs, resamples=200, seed=0)
    # P(no positive in a resample) = 0.9^10 ≈ 35 %: those resamples are left out.
    assert 90 < cis["roc_auc"].resamples < 170
    assert cis["roc_auc"].low <= cis["roc_auc"].high


# ---------------------------------------------------------------- Wilson intervals


def test_wilson_interval_matches_the_formula_and_is_honest_at_the_boundary():
    z = 1.959963984540054
    for k, n in ((0, 47), (47, 47), (12, 40)):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        low, high = metrics.wilson_interval(k, n)
        assert (low, high) == (pytest.approx(centre - half), pytest.approx(centre + half))
        assert high - low > 0.05, (k, n)
    assert metrics.wilson_interval(47, 47)[0] == pytest.approx(0.9244, abs=1e-4)
    assert all(math.isnan(v) for v in metrics.wilson_interval(0, 0))


def test_precision_without_false_positives_gets_a_non_zero_width_interval():
    # 47 negatives all below the threshold, 13 positives above it: precision and
    # specificity are 1, which a percentile bootstrap reports as (1.000 – 1.000).
    labels = np.array([0] * 47 + [1] * 13)
    probs = np.where(labels == 1, 0.9, 0.1)
    boot = metrics.bootstrap_ci(
        lambda y, p: metrics.classification_metrics(y, p, 0.5), labels, probs, resamples=50
    )
    assert boot["precision"].low == boot["precision"].high == 1.0  # the defect
    table = metrics.metric_table(labels, probs, 0.5, resamples=50)
    for name, trials in (("precision", 13), ("specificity", 47), ("recall", 13)):
        entry = table[name]
        low, high = entry["ci95"]
        assert entry["value"] == 1.0, name
        assert entry["ci_method"] == "wilson", name
        assert high == pytest.approx(1.0), name
        assert low < 1.0, name
        assert (low, high) == pytest.approx(metrics.wilson_interval(trials, trials))
    assert table["fp"] == {"value": 0, "ci95": [None, None], "ci_method": "none", "resamples": None}


def test_metric_table_says_which_interval_each_metric_has():
    labels, probs = _toy(80, seed=9)
    table = metrics.metric_table(labels, probs, 0.5, groups=np.arange(80), resamples=40)
    point = metrics.classification_metrics(labels, probs, 0.5)
    assert tuple(table) == metrics.METRIC_NAMES
    for name, entry in table.items():
        expected = (
            "none"
            if name in metrics.COUNTS
            else "wilson"
            if name in metrics.PROPORTIONS
            else "bootstrap"
        )
        assert entry["ci_method"] == expected, name
        assert entry["value"] == pytest.approx(point[name]), name
        if expected == "bootstrap":
            assert 0 < entry["resamples"] <= 40
        else:
            assert entry["resamples"] is None
        if expected != "none":
            low, high = entry["ci95"]
            assert low <= entry["value"] <= high, name
    # Accuracy's trials are all images; its successes the diagonal.
    tn, _fp, _fn, tp = (point[k] for k in metrics.COUNTS)
    assert table["accuracy"]["ci95"] == pytest.approx(
        list(metrics.wilson_interval(int(tn + tp), 80))
    )


def test_metric_table_of_one_class_is_none_where_undefined():
    table = metrics.metric_table(
        np.zeros(5, int), np.array([0.1, 0.2, 0.7, 0.3, 0.4]), 0.5, resamples=20
    )
    for name in ("recall", "roc_auc", "pr_auc"):
        assert table[name]["value"] is None, name
        assert table[name]["ci95"] == [None, None], name
    assert table["roc_auc"]["resamples"] == 0
    assert table["specificity"]["value"] == pytest.approx(0.8)


# ---------------------------------------------------------------- threshold


def test_youden_picks_the_known_best_cut():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    probs = np.array([0.1, 0.2, 0.3, 0.65, 0.5, 0.6, 0.8, 0.9])
    # At 0.5: sensitivity 1, specificity 0.75 → J 0.75, the unique maximum.
    assert metrics.choose_threshold(labels, probs, "youden") == pytest.approx(0.5)


def test_f1_threshold_maximises_f1():
    labels, probs = _toy(200, seed=4)
    chosen = metrics.choose_threshold(labels, probs, "f1")
    best = max(f1_score(labels, (probs >= t).astype(int)) for t in np.unique(probs))
    assert f1_score(labels, (probs >= chosen).astype(int)) == pytest.approx(best)


def test_choose_threshold_rejects_unknown_method():
    with pytest.raises(ValueError, match="method"):
        metrics.choose_threshold(LABELS, PROBS, "median")


# ---------------------------------------------------------------- calibration error


def test_ece_of_a_perfectly_calibrated_model_is_near_zero():
    rng = np.random.default_rng(6)
    probs = rng.random(50_000)
    labels = (rng.random(50_000) < probs).astype(int)
    assert metrics.expected_calibration_error(labels, probs, bins=10) < 0.01
    assert fit_temperature(labels, probs) == pytest.approx(1.0, abs=0.05)


def test_ece_hand_computed():
    # One bin holds everything: mean probability 0.8, observed rate 0.5.
    labels = np.array([0, 1, 0, 1])
    assert metrics.expected_calibration_error(labels, np.full(4, 0.8)) == pytest.approx(0.3)
    # Two bins of 2: |0 - 0.1| and |1 - 0.9| → 0.1.
    labels, probs = np.array([0, 0, 1, 1]), np.array([0.1, 0.1, 0.9, 0.9])
    assert metrics.expected_calibration_error(labels, probs) == pytest.approx(0.1)


def test_reliability_matches_scikit_learn_calibration_curve():
    labels, probs = _toy(500, seed=8)
    probs[:5] = [0.0, 0.1, 0.2, 1.0, 0.5]  # exact bin edges go where sklearn puts them
    rel = metrics.reliability(labels, probs, bins=10)
    prob_true, prob_pred = calibration_curve(labels, probs, n_bins=10, strategy="uniform")
    filled = rel.counts > 0
    np.testing.assert_allclose(rel.fraction_positive[filled], prob_true)
    np.testing.assert_allclose(rel.mean_predicted[filled], prob_pred)
    assert rel.counts.sum() == 500


def test_reliability_counts_follow_calibration_curves_binning():
    # Per-bin counts are the one thing calibration_curve does not return; they use
    # its bins: (edges[i], edges[i+1]], the first also holding 0.
    probs = np.array([0.0, 0.1, 0.1, 0.15, 0.2, 0.2, 0.2, 0.55, 0.9, 1.0, 1.0])
    rel = metrics.reliability(np.ones(probs.size, int), probs, bins=10)
    # (0, .1] holds 0, .1, .1; (.1, .2] holds .15, .2, .2, .2; then .55; .9; 1, 1.
    assert rel.counts.tolist() == [3, 4, 0, 0, 0, 1, 0, 0, 1, 2]
    assert np.isnan(rel.mean_predicted[2])
    assert np.isnan(rel.fraction_positive[2])
    assert rel.mean_predicted[0] == pytest.approx(0.2 / 3)
    # One class (all normal) still gives bins, with observed rate 0.
    rel = metrics.reliability(np.zeros(probs.size, int), probs, bins=10)
    assert np.all(rel.fraction_positive[rel.counts > 0] == 0)


def test_metric_table_bootstrap_is_bootstrap_ci_vectorised():
    # Same seed, same resamples (patients drawn in the same order): the vectorised
    # intervals are the loop's, for every bootstrapped metric, with patient groups.
    labels, probs = _toy(300, seed=4)
    probs = np.round(probs, 2)  # ties
    groups = np.arange(300) // 3
    table = metrics.metric_table(labels, probs, 0.45, groups=groups, resamples=120, seed=9)
    loop = metrics.bootstrap_ci(
        lambda y, p: metrics.ranking_metrics(y, p, 0.45),
        labels,
        probs,
        groups=groups,
        resamples=120,
        seed=9,
    )
    for name in metrics.BOOTSTRAPPED:
        assert table[name]["ci95"] == pytest.approx([loop[name].low, loop[name].high], abs=1e-12)
        assert table[name]["resamples"] == loop[name].resamples
