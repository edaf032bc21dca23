"""Tests for pneumokeras.evaluation.delong: checked against an independent computation.

The reference below is DeLong, DeLong & Clarke-Pearson's (Biometrics 1988)
structural-components estimator written out over all m × n positive-negative
pairs, independent of the midrank algorithm (Sun & Xu 2014) under test; the
normal p-value is recomputed from the error function. Ties in the scores are
exercised by rounding. On large samples the DeLong variance of ΔAUC agrees with
the variance of a 2,000-resample image bootstrap.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumokeras.evaluation import bootstrap, delong


def _reference(labels: np.ndarray, scores: np.ndarray):
    """DeLong et al. (1988), eqs. for V10, V01 and S, over all pairs (O(k m n))."""
    x = scores[:, labels == 1]
    y = scores[:, labels == 0]
    m, n = x.shape[1], y.shape[1]
    psi = (x[:, :, None] > y[:, None, :]) + 0.5 * (x[:, :, None] == y[:, None, :])  # (k, m, n)
    aucs = psi.mean(axis=(1, 2))
    v10 = psi.mean(axis=2)  # (k, m)
    v01 = psi.mean(axis=1)  # (k, n)
    k = scores.shape[0]
    s10 = np.zeros((k, k))
    s01 = np.zeros((k, k))
    for r in range(k):
        for s in range(k):
            s10[r, s] = np.sum((v10[r] - aucs[r]) * (v10[s] - aucs[s])) / (m - 1)
            s01[r, s] = np.sum((v01[r] - aucs[r]) * (v01[s] - aucs[s])) / (n - 1)
    return aucs, v10, v01, s10 / m + s01 / n


def _two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2))


def _correlated_scores(rng, n: int, prevalence: float, shift_a: float, shift_b: float, rho: float):
    labels = (rng.random(n) < prevalence).astype(int)
    noise = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=n)
    a = noise[:, 0] + shift_a * labels
    b = noise[:, 1] + shift_b * labels
    return labels, a, b


@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_fast_delong_equals_the_pairwise_structural_components(decimals):
    rng = np.random.default_rng(3)
    labels, a, b = _correlated_scores(rng, 160, 0.3, 0.8, 1.2, 0.6)
    scores = np.vstack([a, b, rng.normal(size=a.size)])
    if decimals is not None:  # ties within and across the classes
        scores = np.round(scores, decimals)
        assert np.unique(scores[0]).size < scores.shape[1] / 2
    aucs, v10, v01 = delong.structural_components(labels, scores)
    ref_aucs, ref_v10, ref_v01, ref_cov = _reference(labels, scores)
    np.testing.assert_allclose(aucs, ref_aucs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(v10, ref_v10, rtol=0, atol=1e-12)
    np.testing.assert_allclose(v01, ref_v01, rtol=0, atol=1e-12)
    for r in range(3):
        assert aucs[r] == pytest.approx(roc_auc_score(labels, scores[r]), abs=1e-12)
    fit = delong.delong(labels, scores)
    np.testing.assert_allclose(fit.covariance, ref_cov, rtol=1e-10, atol=1e-15)

    test = delong.delong_test(labels, scores[0], scores[1])
    variance = ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1]
    z = (ref_aucs[1] - ref_aucs[0]) / math.sqrt(variance)
    assert test.difference == pytest.approx(ref_aucs[1] - ref_aucs[0], abs=1e-12)
    assert test.variance == pytest.approx(variance, rel=1e-10)
    assert test.z == pytest.approx(z, rel=1e-9)
    assert test.p_value == pytest.approx(_two_sided_p(z), rel=1e-9)
    assert test.estimable


def test_a_hand_computed_example():
    # Positives 0.9, 0.8, 0.4; negatives 0.7, 0.4, 0.2 (one tie across the classes).
    # Model a: psi rows (per positive): [1,1,1], [1,1,1], [0,.5,1] -> AUC 7.5/9.
    labels = np.array([1, 1, 1, 0, 0, 0])
    a = np.array([0.9, 0.8, 0.4, 0.7, 0.4, 0.2])
    b = np.array([0.9, 0.1, 0.6, 0.3, 0.5, 0.2])
    aucs, v10, v01 = delong.structural_components(labels, np.vstack([a, b]))
    assert aucs[0] == pytest.approx(7.5 / 9)
    np.testing.assert_allclose(v10[0], [1, 1, 0.5 / 3 + 1 / 3])
    np.testing.assert_allclose(v01[0], [2 / 3, 2.5 / 3, 1])
    # Model b: positives 0.9 > all; 0.1 < all; 0.6 > 0.3, 0.5, 0.2 -> AUC 6/9.
    assert aucs[1] == pytest.approx(6 / 9)


def test_identical_scores_are_not_estimable_and_one_class_is_refused():
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 20)
    scores = rng.random(40)
    test = delong.delong_test(labels, scores, scores)
    assert test.difference == 0
    assert not test.estimable
    assert math.isnan(test.p_value)
    with pytest.raises(ValueError, match="both classes"):
        delong.delong(np.zeros(5, dtype=int), rng.random(5))
    with pytest.raises(ValueError, match="two images of each class"):
        delong.delong(np.array([0, 0, 1]), rng.random(3))


def test_delong_interval_of_one_auc_is_clipped():
    labels = np.array([0] * 30 + [1] * 30)
    scores = np.r_[np.linspace(0, 0.5, 30), np.linspace(0.45, 1, 30)]
    fit = delong.delong(labels, scores)
    low, high = fit.interval(0)
    assert 0 < low < fit.aucs[0] <= high <= 1


def test_delong_variance_agrees_with_a_large_bootstrap():
    """Tolerance: the standard deviations of ΔAUC agree within 7 %.

    With 2,000 resamples the bootstrap SD has a Monte-Carlo error of about
    1/sqrt(2·2000) ≈ 1.6 %; on 6,000 images the DeLong estimator's own error is of
    the same order. The p-values (bootstrap SD in the normal approximation) agree within 0.01.
    """
    rng = np.random.default_rng(7)
    labels, a, b = _correlated_scores(rng, 6000, 0.225, 1.0, 1.06, 0.7)
    test = delong.delong_test(labels, a, b)
    boot = bootstrap.PatientBootstrap(np.arange(labels.size), resamples=2000, seed=1)
    decisions = np.zeros((2, labels.size), dtype=bool)
    resampled = bootstrap.resample_statistics(
        boot, labels, np.vstack([a, b]), decisions, [np.arange(labels.size)]
    )["roc_auc"][:, :, 0]
    differences = resampled[:, 1] - resampled[:, 0]
    boot_sd = float(np.std(differences, ddof=1))
    assert boot_sd == pytest.approx(math.sqrt(test.variance), rel=0.07)
    assert float(np.mean(differences)) == pytest.approx(test.difference, abs=0.5 * boot_sd)
    boot_p = _two_sided_p(test.difference / boot_sd)
    assert 0.01 < test.p_value < 0.2  # a moderate difference, where agreement matters
    assert boot_p == pytest.approx(test.p_value, abs=0.01)
