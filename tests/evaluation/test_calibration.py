"""Tests for pneumokeras.evaluation.calibration: temperature scaling, when it is applied, warnings.

Synthetic probabilities with known calibration; no Keras (runs once).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chi2
from sklearn.metrics import brier_score_loss, log_loss

from pneumokeras.evaluation import calibration
from pneumokeras.evaluation.calibration import calibrate, fit_calibration, fit_temperature
from pneumokeras.evaluation.metrics import expected_calibration_error

# ---------------------------------------------------------------- fitting


def _sample(n: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True risks q, labels ~ Bernoulli(q), reported p = q scaled by `temperature`.

    The temperature that calibrates p is `1 / temperature`.
    """
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.05, 0.95, n)
    labels = (rng.random(n) < q).astype(int)
    return labels, calibrate(q, temperature)


def test_temperature_scaling_fixes_an_overconfident_model():
    labels, probs = _sample(5000, 1.0 / 3.0, seed=5)
    temperature = fit_temperature(labels, probs)
    assert temperature == pytest.approx(3.0, rel=0.15)
    calibrated = calibrate(probs, temperature)
    assert log_loss(labels, calibrated) < log_loss(labels, probs)
    assert expected_calibration_error(labels, calibrated) < expected_calibration_error(
        labels, probs
    )


def test_fit_calibration_applies_a_significant_fit():
    labels, probs = _sample(2000, 1.0 / 3.0, seed=5)
    fit = fit_calibration(labels, probs)
    assert fit.applied
    assert fit.decision == "applied"
    assert fit.temperature == fit.fitted == pytest.approx(3.0, rel=0.15)
    assert fit.nll_after == fit.nll_fitted < fit.nll_before
    assert fit.n == 2000
    assert fit.lr_statistic == pytest.approx(2 * 2000 * (fit.nll_before - fit.nll_fitted))
    assert fit.p_value == pytest.approx(chi2.sf(fit.lr_statistic, 1))
    assert fit.p_value < 1e-6
    assert fit.explanation().startswith("applied: the fitted T = ")


def test_fit_calibration_keeps_t1_when_the_gain_is_not_significant():
    # A calibrated model, 30 validation images: the optimiser still finds T ≠ 1,
    # which would make a large test split from the same model worse.
    labels, probs = _sample(30, 1.0, seed=0)
    fit = fit_calibration(labels, probs)
    assert abs(math.log(fit.fitted)) > 0.1  # the noise fit is far from 1 ...
    assert fit.decision == "not significant"
    assert not fit.applied
    assert fit.temperature == 1.0
    assert fit.nll_after == fit.nll_before
    assert fit.nll_fitted <= fit.nll_before
    assert fit.p_value >= calibration.SIGNIFICANCE
    test_labels, test_probs = _sample(20_000, 1.0, seed=100)
    nll = calibration.negative_log_likelihood
    assert nll(test_labels, calibrate(test_probs, fit.fitted)) > nll(
        test_labels, calibrate(test_probs, fit.temperature)
    )  # ... and applying it would have hurt
    assert "kept at T = 1" in fit.explanation()
    assert "not significantly" in fit.explanation()


def test_fit_calibration_keeps_t1_without_an_interior_minimum():
    # Perfectly separated validation classes: the NLL falls towards T → 0.
    labels = np.array([0] * 30 + [1] * 30)
    probs = np.where(labels == 1, 0.7, 0.3)
    fit = fit_calibration(labels, probs)
    assert fit.fitted == pytest.approx(calibration.TEMPERATURE_BOUNDS[0], rel=1e-2)
    assert fit.decision == "no interior minimum"
    assert fit.temperature == 1.0
    assert fit.p_value < calibration.SIGNIFICANCE  # significant, and still not applied
    assert "search bound T = 0.05, sharpening" in fit.explanation()
    # An anti-informative model: the NLL falls as every probability goes to 0.5.
    fit = fit_calibration(labels, 1 - probs)
    assert fit.fitted == calibration.TEMPERATURE_BOUNDS[1]
    assert fit.temperature == 1.0
    assert fit.decision == "no interior minimum"
    assert "search bound T = 20, flattening" in fit.explanation()


def test_fit_calibration_significance_is_a_parameter():
    labels, probs = _sample(30, 1.0, seed=0)
    assert fit_calibration(labels, probs, significance=1.0).applied


# ---------------------------------------------------------------- warnings


@pytest.mark.parametrize(
    "patients, positives, small",
    [(100, 20, False), (400, 200, False), (99, 40, True), (100, 19, True), (100, 81, True)],
)
def test_small_split_warning_rule(patients, positives, small):
    warning = calibration.small_split_warning(patients, positives, patients - positives)
    assert (warning is not None) == small
    if small:
        assert f"{patients} patients" in warning
        assert "small" in warning


def test_worse_nll_warning():
    assert calibration.worse_nll_warning(0.3, 0.3, 1.0, "test") is None
    # T = 1 (not applied): round-off of the logit round trip is no worsening.
    assert calibration.worse_nll_warning(0.49209631242598200, 0.49209631242598206, 1.0, "t") is None
    assert calibration.worse_nll_warning(0.3, 0.3 + 1e-12, 0.9, "test") is None
    assert calibration.worse_nll_warning(0.336, 0.236, 0.43, "test") is None
    warning = calibration.worse_nll_warning(0.236, 0.334, 0.43, "test")
    assert "made the test split worse" in warning
    assert "0.2360 to 0.3340" in warning
    assert "T = 0.430" in warning


# ---------------------------------------------------------------- summary


def test_calibration_summary():
    labels, raw = _sample(400, 1.0 / 3.0, seed=7)
    calibrated = calibrate(raw, 3.0)
    summary = calibration.calibration_summary(labels, raw, calibrated, bins=10)
    assert set(summary) == {"before", "after"}
    for key, probs in (("before", raw), ("after", calibrated)):
        part = summary[key]
        assert part["ece"] == pytest.approx(expected_calibration_error(labels, probs, 10))
        assert part["brier"] == pytest.approx(brier_score_loss(labels, probs))
        assert part["nll"] == pytest.approx(log_loss(labels, probs))
        assert sum(part["bins"]["counts"]) == 400
        assert len(part["bins"]["counts"]) == 10
    assert summary["after"]["nll"] < summary["before"]["nll"]
    # Empty bins are None (JSON has no NaN): a model that sharpens leaves the middle
    # bins nearly empty; one that outputs 0.1 and 0.9 only fills two.
    two = calibration.calibration_summary(
        np.array([0, 1]), np.array([0.1, 0.9]), np.array([0.1, 0.9]), bins=10
    )
    assert two["before"]["bins"]["mean_predicted"].count(None) == 8


def test_calibration_record_of_a_fit_that_hurts_the_test_split():
    # The demo's case: a small validation split on which a sharpening T passes the
    # test by chance (5 % of the time for a calibrated model), and a test split
    # from the same calibrated model whose NLL it raises. Both warnings fire.
    val_labels, val_probs = _sample(30, 1.0, seed=11)
    fit = fit_calibration(val_labels, val_probs)
    assert fit.applied
    assert fit.temperature < 0.5
    labels, raw = _sample(2000, 1.0, seed=100)
    record = calibration.calibration_record(
        fit, val_labels, np.arange(30), labels, raw, "test", bins=10
    )
    assert record["temperature"] == fit.temperature == record["fitted_temperature"]
    assert record["applied"]
    assert record["decision"] == "applied"
    assert record["val_nll_before"] == fit.nll_before
    assert record["val_nll_after"] == fit.nll_after
    assert record["split_nll_before"] == pytest.approx(log_loss(labels, raw))
    assert record["split_nll_after"] == pytest.approx(
        log_loss(labels, calibrate(raw, fit.temperature))
    )
    assert record["split_nll_after"] > record["split_nll_before"]
    assert record["split_nll_after"] == record["after"]["nll"]
    assert (record["val_n"], record["val_patients"]) == (30, 30)
    assert record["val_positives"] + record["val_negatives"] == 30
    assert record["val_positives"] == val_labels.sum()
    assert len(record["warnings"]) == 2
    assert "validation split is small (30 patients" in record["warnings"][0]
    assert "made the test split worse" in record["warnings"][1]
    assert record["explanation"] == fit.explanation()
    assert sum(record["before"]["bins"]["counts"]) == 2000


def test_calibration_record_counts_patients_and_warns_about_nothing_on_a_large_split():
    val_labels = np.array([0, 0, 1, 1, 0, 1] * 40)
    val_patients = np.repeat(np.arange(120), 2)  # two images per patient
    val_probs = np.where(val_labels == 1, 0.6, 0.4) + np.tile([0.3, -0.3, 0.0], 80)
    fit = fit_calibration(val_labels, val_probs)
    record = calibration.calibration_record(
        fit, val_labels, val_patients, val_labels, val_probs, "val"
    )
    # Patients [0,0] [1,1] [0,1] → normal, pneumonia, pneumonia (any image positive).
    assert (record["val_n"], record["val_patients"]) == (240, 120)
    assert (record["val_positives"], record["val_negatives"]) == (80, 40)
    assert fit.applied
    assert record["split_nll_after"] < record["split_nll_before"]
    assert record["warnings"] == []
