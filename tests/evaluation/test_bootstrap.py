"""Tests for pneumokeras.evaluation.bootstrap: weighted statistics and patient resampling.

A resample's integer weights must give the same numbers as the images repeated
that many times (scikit-learn's AUC and `metrics`' ECE on the repeated rows), and a
patient's images must always share one weight.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from pneumokeras.evaluation import bootstrap, metrics


def _data(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    probs = np.clip(0.3 * labels + rng.random(n) * 0.7, 0, 1)
    probs = np.round(probs, 2)  # ties
    return labels, probs


def _repeated_metrics(labels, probs, decisions, counts):
    y = np.repeat(labels, counts)
    p = np.repeat(probs, counts)
    d = np.repeat(decisions, counts)
    return {
        "roc_auc": roc_auc_score(y, p),
        "sensitivity": d[y == 1].mean(),
        "specificity": (~d[y == 0]).mean(),
        "ppv": y[d].mean(),
        "ece": metrics.expected_calibration_error(y, p, 10),
        "f1": 2 * (d & (y == 1)).sum() / (d.sum() + (y == 1).sum()),
        "pr_auc": average_precision_score(y, p),
        "brier": np.mean((p - y) ** 2),
    }


def test_weighted_statistics_equal_the_repeated_rows():
    labels, probs = _data()
    decisions = probs >= 0.5
    rng = np.random.default_rng(1)
    boot = bootstrap.PatientBootstrap(np.arange(labels.size), resamples=5, seed=2)
    result = bootstrap.resample_statistics(
        boot, labels, probs, decisions, [np.arange(300)], statistics=bootstrap.STATISTICS
    )
    weights = np.vstack(list(boot.blocks()))
    for r in range(5):
        expected = _repeated_metrics(labels, probs, decisions, weights[r].astype(int))
        for name in bootstrap.STATISTICS:
            assert result[name][r, 0, 0] == pytest.approx(expected[name], abs=1e-12), name
    # Unit weights: the plain metrics.
    ones = np.ones((1, labels.size))
    ranked = bootstrap._Ranked.build(np.arange(labels.size), labels, probs)
    assert bootstrap.weighted_auc(ones, ranked)[0] == pytest.approx(roc_auc_score(labels, probs))
    subset = rng.choice(labels.size, 120, replace=False)
    ranked = bootstrap._Ranked.build(subset, labels, probs)
    assert bootstrap.weighted_auc(ones, ranked)[0] == pytest.approx(
        roc_auc_score(labels[subset], probs[subset])
    )


def test_groups_and_models_and_undefined_values():
    labels = np.array([0, 0, 1, 1, 0, 0, 0])
    probs = np.array([[0.1, 0.2, 0.8, 0.9, 0.3, 0.4, 0.6], [0.9, 0.2, 0.1, 0.9, 0.3, 0.4, 0.6]])
    decisions = probs >= 0.5
    groups = [np.array([0, 1, 2, 3]), np.array([4, 5, 6])]  # the second: no positive
    boot = bootstrap.PatientBootstrap(np.arange(7), resamples=3, seed=0)
    result = bootstrap.resample_statistics(boot, labels, probs, decisions, groups)
    assert result["roc_auc"].shape == (3, 2, 2)
    assert np.isnan(result["roc_auc"][:, :, 1]).all()
    assert np.isnan(result["sensitivity"][:, :, 1]).all()
    assert np.isfinite(result["specificity"][:, :, 1]).all()
    with pytest.raises(ValueError, match="must be"):
        bootstrap.resample_statistics(boot, labels, probs, decisions[:1], groups)


def test_patient_weights_are_shared_by_a_patients_images_and_seeded():
    patients = np.array(["a", "a", "b", "c", "c", "c", "d"])
    boot = bootstrap.PatientBootstrap(patients, resamples=50, seed=4, block=7)
    weights = np.vstack(list(boot.blocks()))
    assert weights.shape == (50, 7)
    assert (weights[:, 0] == weights[:, 1]).all()
    assert (weights[:, 3] == weights[:, 4]).all()
    assert (weights[:, 4] == weights[:, 5]).all()
    # Four patients drawn four times in all per resample.
    per_patient = weights[:, [0, 2, 3, 6]]
    assert (per_patient.sum(axis=1) == 4).all()
    assert not (weights == weights[0]).all()  # resamples differ
    again = np.vstack(list(bootstrap.PatientBootstrap(patients, 50, seed=4, block=7).blocks()))
    np.testing.assert_array_equal(weights, again)
    other = np.vstack(list(bootstrap.PatientBootstrap(patients, 50, seed=5, block=7).blocks()))
    assert not np.array_equal(weights, other)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap.PatientBootstrap(patients, 0)


def test_percentile_interval():
    samples = np.r_[np.arange(101, dtype=float), np.nan]
    low, high, used = bootstrap.percentile_interval(samples)
    assert (low, high, used) == (pytest.approx(2.5), pytest.approx(97.5), 101)
    low, high, used = bootstrap.percentile_interval(np.array([np.nan]))
    assert math.isnan(low)
    assert math.isnan(high)
    assert used == 0


def test_f1_pr_auc_and_brier_equal_scikit_learn_with_sample_weights():
    from sklearn.metrics import average_precision_score, brier_score_loss, f1_score

    labels, probs = _data(seed=3)
    decisions = probs >= 0.45
    boot = bootstrap.PatientBootstrap(np.arange(labels.size), resamples=4, seed=5)
    result = bootstrap.resample_statistics(
        boot,
        labels,
        probs,
        decisions,
        [np.arange(labels.size)],
        statistics=("f1", "pr_auc", "brier"),
    )
    assert set(result.values) == {"f1", "pr_auc", "brier"}
    for r, weights in enumerate(np.vstack(list(boot.blocks()))):
        assert result["pr_auc"][r, 0, 0] == pytest.approx(
            average_precision_score(labels, probs, sample_weight=weights), abs=1e-12
        )
        assert result["f1"][r, 0, 0] == pytest.approx(
            f1_score(labels, decisions, sample_weight=weights), abs=1e-12
        )
        assert result["brier"][r, 0, 0] == pytest.approx(
            brier_score_loss(labels, probs, sample_weight=weights), abs=1e-12
        )
    with pytest.raises(ValueError, match="unknown statistic"):
        bootstrap.resample_statistics(
            boot, labels, probs, decisions, [np.arange(3)], statistics=("x",)
        )
