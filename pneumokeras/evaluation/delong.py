"""DeLong's test for two or more correlated ROC-AUCs measured on the same images.

DeLong, DeLong & Clarke-Pearson (Biometrics 1988) estimate the covariance of the
AUCs of k scores on the same m positives and n negatives from their structural
components: for a positive X_i and score r,
`V10[r, i] = (1/n) Σ_j ψ(X_ri, Y_rj)`, for a negative `V01[r, j] = (1/m) Σ_i ψ(X_ri, Y_rj)`,
with `ψ(x, y) = 1` if x > y, ½ if x = y, 0 otherwise; then
`S = cov(V10) / m + cov(V01) / n` (sample covariances over images, k × k).

Sun & Xu (IEEE Signal Processing Letters 2014) compute the same components in
O(k (m + n) log(m + n)) from midranks instead of the O(k m n) pairs:
`V10[r, i] = (Tz_ri - Tx_ri) / n` and `V01[r, j] = 1 - (Tz_r,m+j - Ty_rj) / m`, where
Tx, Ty and Tz are the midranks (ties get the mean rank, SciPy's `rankdata`) of
the positives among the positives, the negatives among the negatives and of all
images together; `AUC_r = (Σ_i Tz_ri - m (m + 1) / 2) / (m n)`.

For the difference AUC_b - AUC_a, `var = S_aa + S_bb - 2 S_ab`, `z = Δ / sqrt(var)`
and the two-sided p-value is `2 Φ(-|z|)`. The test treats images as independent:
with several images per patient it is too liberal, which the patient-level paired
bootstrap (`bootstrap`) is not.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.stats import norm, rankdata

from pneumokeras.evaluation.metrics import CI_LEVEL


@dataclasses.dataclass(frozen=True)
class DeLong:
    """AUCs of k scores and their DeLong covariance.

    Attributes:
        aucs: (k,) ROC-AUC of each score.
        covariance: (k, k) DeLong covariance of the AUCs.
        positives: m, the number of positive images.
        negatives: n, the number of negative images.
    """

    aucs: np.ndarray
    covariance: np.ndarray
    positives: int
    negatives: int

    def interval(self, index: int, level: float = CI_LEVEL) -> tuple[float, float]:
        """Normal-approximation interval of one AUC, clipped to [0, 1] (NaN if variance 0)."""
        sd = math.sqrt(max(float(self.covariance[index, index]), 0.0))
        if sd == 0.0:
            return math.nan, math.nan
        half = float(norm.ppf(0.5 + level / 2)) * sd
        auc = float(self.aucs[index])
        return max(0.0, auc - half), min(1.0, auc + half)


@dataclasses.dataclass(frozen=True)
class DeLongTest:
    """DeLong's test of AUC_b - AUC_a = 0.

    Attributes:
        auc_a, auc_b: the two AUCs.
        difference: AUC_b - AUC_a.
        variance: its DeLong variance.
        z: difference / sqrt(variance); NaN when the variance is 0.
        p_value: two-sided; NaN when the variance is 0.
    """

    auc_a: float
    auc_b: float
    difference: float
    variance: float
    z: float
    p_value: float

    @property
    def estimable(self) -> bool:
        """False when the variance is 0 (identical or perfectly separating scores)."""
        return math.isfinite(self.z)


def structural_components(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sun & Xu's midrank computation of DeLong's structural components.

    Args:
        labels: (N,) int, 1 = positive; both classes present.
        scores: (k, N) or (N,) scores, larger = more positive.

    Returns:
        `(aucs (k,), V10 (k, m), V01 (k, n))`.

    Raises:
        ValueError: a class is absent.
    """
    labels = np.asarray(labels)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    positive = labels == 1
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        raise ValueError("DeLong's test needs both classes")
    x, y = scores[:, positive], scores[:, ~positive]
    tx = rankdata(x, axis=1)
    ty = rankdata(y, axis=1)
    tz = rankdata(np.concatenate([x, y], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return aucs, v10, v01


def delong(labels: np.ndarray, scores: np.ndarray) -> DeLong:
    """AUCs of k scores of the same images and their DeLong covariance (fast DeLong).

    Args:
        labels: (N,) int, 1 = positive; both classes, at least two of each.
        scores: (k, N) or (N,).

    Raises:
        ValueError: fewer than two images of a class (no covariance can be estimated).
    """
    aucs, v10, v01 = structural_components(labels, scores)
    m, n = v10.shape[1], v01.shape[1]
    if m < 2 or n < 2:
        raise ValueError("DeLong's variance needs at least two images of each class")
    covariance = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return DeLong(aucs, covariance, m, n)


def delong_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> DeLongTest:
    """DeLong's two-sided test that two correlated ROC-AUCs are equal.

    Args:
        labels: (N,) int, 1 = positive.
        scores_a, scores_b: (N,) scores of the same images by two models.

    Returns:
        A `DeLongTest` of AUC_b - AUC_a.
    """
    fit = delong(labels, np.vstack([scores_a, scores_b]))
    s = fit.covariance
    variance = float(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    difference = float(fit.aucs[1] - fit.aucs[0])
    # Round-off leaves a tiny variance for identical scores; below this it is zero.
    if variance <= 1e-15:
        z, p = math.nan, math.nan
    else:
        z = difference / math.sqrt(variance)
        p = float(2 * norm.sf(abs(z)))
    return DeLongTest(float(fit.aucs[0]), float(fit.aucs[1]), difference, max(variance, 0.0), z, p)
