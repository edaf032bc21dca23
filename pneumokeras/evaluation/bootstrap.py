"""A vectorised patient-level bootstrap: many resamples, subgroups and models at once.

A patient bootstrap resample draws the P patients with replacement and keeps all
images of each drawn patient (a cluster bootstrap; Efron & Tibshirani, "An
Introduction to the Bootstrap", 1993; Field & Welsh, JRSS B 2007). Drawing
patient `p` `k` times is the same as giving each of its images the weight `k`, so
a resample is a row of integer weights over the N images, and a block of B
resamples is a `(B, N)` weight matrix. Every statistic below is a weighted sum
over images, computed for the whole block with array operations instead of one
scikit-learn call per resample (`metrics.bootstrap_ci`): the subgroup analysis
and the paired comparison of 26,684 images with 2,000 resamples take seconds.

The same resamples serve every subgroup, attribute and model of one analysis, so
that differences between subgroups or models are paired: the interval of a
difference is the percentile interval of the per-resample differences.

Statistics (weights `w`, labels `y`, probabilities `p`, decisions `d`):

- ROC-AUC: the weighted Mann-Whitney statistic with ties counted one half,
  `Σ_pos Σ_neg w_i w_j (1[p_i > p_j] + ½ 1[p_i = p_j]) / (W_pos W_neg)`; with unit
  weights it is scikit-learn's `roc_auc_score`. Undefined (NaN) when a resample
  holds no positive or no negative.
- sensitivity `Σ w y d / Σ w y`, specificity `Σ w (1-y)(1-d) / Σ w (1-y)`, PPV
  `Σ w y d / Σ w d`: NaN when the denominator is 0.
- ECE over equal-width bins (`metrics.reliability`'s binning):
  `Σ_b |Σ_{i in b} w_i (y_i - p_i)| / Σ w`, which is `metrics.expected_calibration_error`
  with unit weights.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence

import numpy as np

from pneumokeras.evaluation.metrics import CI_LEVEL

# Weight-matrix entries per block (float64: 32 MB): the block size adapts to N.
BLOCK_ENTRIES = 4_000_000
STATISTICS = ("roc_auc", "sensitivity", "specificity", "ppv", "ece")


class PatientBootstrap:
    """Seeded patient-level resampling weights, produced in blocks.

    Args:
        patients: (N,) patient id of each image (the resampling unit).
        resamples: number of bootstrap resamples B.
        seed: seed of `numpy.random.default_rng`.
        block: resamples per block; None sizes blocks to `BLOCK_ENTRIES`.
    """

    def __init__(
        self, patients: np.ndarray, resamples: int, seed: int = 0, block: int | None = None
    ):
        if resamples < 1:
            raise ValueError(f"resamples must be ≥ 1. Received: resamples={resamples}")
        _, self.index = np.unique(np.asarray(patients), return_inverse=True)
        self.index = self.index.ravel()
        self.n_patients = int(self.index.max()) + 1 if self.index.size else 0
        self.resamples = int(resamples)
        self.seed = int(seed)
        size = max(1, self.index.size)
        self.block = block or max(1, min(self.resamples, BLOCK_ENTRIES // size))

    def blocks(self) -> Iterator[np.ndarray]:
        """Yields `(b, N)` float64 weights, b ≤ `block`, B rows in all (same for a seed)."""
        rng = np.random.default_rng(self.seed)
        done, patients = 0, self.n_patients
        while done < self.resamples:
            b = min(self.block, self.resamples - done)
            picks = rng.integers(0, patients, (b, patients))
            offsets = (np.arange(b) * patients)[:, None]
            counts = np.bincount((picks + offsets).ravel(), minlength=b * patients)
            yield counts.reshape(b, patients)[:, self.index].astype(np.float64)
            done += b


@dataclasses.dataclass(frozen=True)
class _Ranked:
    """One score vector's rows sorted by score, cut into blocks of tied scores."""

    rows: np.ndarray  # (n,) row indices into the full data, sorted by score
    positive: np.ndarray  # (n,) bool, label of each sorted row
    starts: np.ndarray  # (k,) start of each tie block in the sorted rows

    @classmethod
    def build(cls, rows: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> _Ranked:
        order = np.argsort(scores[rows], kind="stable")
        sorted_rows = rows[order]
        sorted_scores = scores[sorted_rows]
        starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
        return cls(sorted_rows, labels[sorted_rows] == 1, starts)


def weighted_auc(weights: np.ndarray, ranked: _Ranked) -> np.ndarray:
    """ROC-AUC of each weight row (see the module docstring); NaN where a class weighs 0."""
    w = weights[:, ranked.rows]
    if w.shape[1] == 0:
        return np.full(weights.shape[0], math.nan)
    pos = np.add.reduceat(np.where(ranked.positive, w, 0.0), ranked.starts, axis=1)
    neg = np.add.reduceat(np.where(ranked.positive, 0.0, w), ranked.starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negatives with a lower score than the block
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)
    auc[(total_pos == 0) | (total_neg == 0)] = math.nan
    return auc


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        out = numerator / denominator
    out[denominator == 0] = math.nan
    return out


def ece_bins(probs: np.ndarray, bins: int) -> np.ndarray:
    """(N,) equal-width bin index of each probability (`metrics.reliability`'s binning)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.searchsorted(edges[1:-1], np.asarray(probs, dtype=np.float64))


@dataclasses.dataclass(frozen=True)
class Resampled:
    """Statistics of every resample, model and group: arrays of shape `(B, M, G)`.

    `values[name]` holds one of `STATISTICS`; NaN where undefined on a resample.
    """

    values: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]


def resample_statistics(
    bootstrap: PatientBootstrap,
    labels: np.ndarray,
    probs: np.ndarray,
    decisions: np.ndarray,
    groups: Sequence[np.ndarray],
    bins: int = 10,
) -> Resampled:
    """`STATISTICS` of M models on G groups of images, on each bootstrap resample.

    Args:
        bootstrap: the resampling weights (its N = len(labels)).
        labels: (N,) int, 1 = pneumonia.
        probs: (M, N) or (N,) pneumonia probabilities of M models.
        decisions: same shape, bool or 0/1: predicted pneumonia.
        groups: G arrays of row indices (a subgroup each; all rows for one group).
        bins: ECE bins.

    Returns:
        A `Resampled` with (B, M, G) arrays.
    """
    labels = np.asarray(labels).astype(int)
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    decisions = np.atleast_2d(np.asarray(decisions)).astype(bool)
    if probs.shape != decisions.shape or probs.shape[1] != labels.size:
        raise ValueError(
            f"probs {probs.shape} and decisions {decisions.shape} must be (M, {labels.size})"
        )
    if bootstrap.index.size != labels.size:
        raise ValueError(f"the bootstrap has {bootstrap.index.size} rows, labels {labels.size}")
    models, count = probs.shape[0], len(groups)
    groups = [np.asarray(g, dtype=np.intp) for g in groups]
    ranked = [[_Ranked.build(g, labels, probs[m]) for g in groups] for m in range(models)]
    positive = labels == 1
    # Per model: the indicator vectors whose weighted sums give the proportions.
    tp = decisions & positive
    tn = ~decisions & ~positive
    residual = positive - probs  # y - p, for the ECE
    bin_of = [ece_bins(probs[m], bins) for m in range(models)]
    out = {name: np.empty((bootstrap.resamples, models, count)) for name in STATISTICS}
    done = 0
    for weights in bootstrap.blocks():
        b = weights.shape[0]
        rows = slice(done, done + b)
        for g, members in enumerate(groups):
            w = weights[:, members]
            total = w.sum(axis=1)
            n_pos = w @ positive[members]
            n_neg = total - n_pos
            for m in range(models):
                out["roc_auc"][rows, m, g] = weighted_auc(weights, ranked[m][g])
                out["sensitivity"][rows, m, g] = _ratio(w @ tp[m, members], n_pos)
                out["specificity"][rows, m, g] = _ratio(w @ tn[m, members], n_neg)
                out["ppv"][rows, m, g] = _ratio(w @ tp[m, members], w @ decisions[m, members])
                per_bin = np.zeros((b, bins))
                for k in np.unique(bin_of[m][members]):
                    in_bin = members[bin_of[m][members] == k]
                    per_bin[:, k] = weights[:, in_bin] @ residual[m, in_bin]
                out["ece"][rows, m, g] = _ratio(np.abs(per_bin).sum(axis=1), total)
        done += b
    return Resampled(out)


def percentile_interval(samples: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float, int]:
    """Percentile interval of the finite samples: `(low, high, how many were finite)`.

    `(nan, nan, 0)` when none is finite (as `metrics.bootstrap_ci`).
    """
    finite = np.asarray(samples, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return math.nan, math.nan, 0
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high), int(finite.size)
