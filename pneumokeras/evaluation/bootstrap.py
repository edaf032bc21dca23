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
- F1 at the threshold `2 TP / (2 TP + FP + FN)` (weighted counts; NaN when all are 0),
  PR-AUC as scikit-learn's `average_precision_score` with sample weights (the
  precision at each distinct score, weighted by the recall it adds; NaN with one
  class), and the Brier score `Σ w (p - y)² / Σ w`.

The resamples are drawn as `metrics.bootstrap_ci` draws them (one
`rng.integers(0, P, P)` per resample, in order), so the same seed gives the same
resamples and the same intervals.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence

import numpy as np

CI_LEVEL = 0.95
# Weight-matrix entries per block (float64: 32 MB): the block size adapts to N.
BLOCK_ENTRIES = 4_000_000
STATISTICS = ("roc_auc", "sensitivity", "specificity", "ppv", "ece", "f1", "pr_auc", "brier")


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
    """One score vector's positives and negatives in score order, and how they interleave.

    For positive j (in score order): `neg_below[j]` negatives score lower,
    `neg_upto[j]` score lower or the same, `pos_below[j]` positives score lower.
    """

    pos_rows: np.ndarray  # (m,) row indices of the positives, by ascending score
    neg_rows: np.ndarray  # (n,) row indices of the negatives, by ascending score
    neg_below: np.ndarray  # (m,)
    neg_upto: np.ndarray  # (m,)
    pos_below: np.ndarray  # (m,)

    @classmethod
    def build(cls, rows: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> _Ranked:
        rows = rows[np.argsort(scores[rows], kind="stable")]
        positive = labels[rows] == 1
        pos_rows, neg_rows = rows[positive], rows[~positive]
        pos_scores, neg_scores = scores[pos_rows], scores[neg_rows]
        return cls(
            pos_rows,
            neg_rows,
            np.searchsorted(neg_scores, pos_scores, side="left"),
            np.searchsorted(neg_scores, pos_scores, side="right"),
            np.searchsorted(pos_scores, pos_scores, side="left"),
        )


def _cumulative(weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(b, len(rows) + 1): 0, then the running sum of the weights of `rows` in order."""
    out = np.zeros((weights.shape[0], rows.size + 1))
    np.cumsum(weights[:, rows], axis=1, out=out[:, 1:])
    return out


def weighted_auc(weights: np.ndarray, ranked: _Ranked) -> np.ndarray:
    """ROC-AUC of each weight row (see the module docstring); NaN where a class weighs 0.

    Each positive counts the weight of the negatives below it and half of those
    tied with it: `(C[below] + C[upto]) / 2` of the negatives' running sum C.
    """
    negatives = _cumulative(weights, ranked.neg_rows)
    w_pos = weights[:, ranked.pos_rows]
    beaten = 0.5 * (negatives[:, ranked.neg_below] + negatives[:, ranked.neg_upto])
    total_pos, total_neg = w_pos.sum(axis=1), negatives[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (w_pos * beaten).sum(axis=1) / (total_pos * total_neg)
    auc[(total_pos == 0) | (total_neg == 0)] = math.nan
    return auc


def weighted_average_precision(weights: np.ndarray, ranked: _Ranked) -> np.ndarray:
    """`average_precision_score` of each weight row; NaN where a class weighs 0.

    Each positive adds its share of the recall at the precision of the threshold
    at its own score: true positives `P - Cpos[below]` over all called positive
    `(P - Cpos[below]) + (N - Cneg[below])`.
    """
    negatives = _cumulative(weights, ranked.neg_rows)
    positives = _cumulative(weights, ranked.pos_rows)
    total_pos, total_neg = positives[:, -1], negatives[:, -1]
    called_pos = total_pos[:, None] - positives[:, ranked.pos_below]
    called_neg = total_neg[:, None] - negatives[:, ranked.neg_below]
    w_pos = weights[:, ranked.pos_rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(w_pos > 0, called_pos / (called_pos + called_neg), 0.0)
        ap = (w_pos * precision).sum(axis=1) / total_pos
    ap[(total_pos == 0) | (total_neg == 0)] = math.nan
    return ap


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
    statistics: Sequence[str] = STATISTICS[:5],
) -> Resampled:
    """Statistics of M models on G groups of images, on each bootstrap resample.

    Args:
        bootstrap: the resampling weights (its N = len(labels)).
        labels: (N,) int, 1 = pneumonia.
        probs: (M, N) or (N,) pneumonia probabilities of M models.
        decisions: same shape, bool or 0/1: predicted pneumonia.
        groups: G arrays of row indices (a subgroup each; all rows for one group).
        bins: ECE bins.
        statistics: which of `STATISTICS` to compute (default: AUC, sensitivity,
            specificity, PPV, ECE).

    Returns:
        A `Resampled` with (B, M, G) arrays.
    """
    unknown = [name for name in statistics if name not in STATISTICS]
    if unknown:
        raise ValueError(f"unknown statistic {unknown[0]!r}; known: {', '.join(STATISTICS)}")
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
    wanted = set(statistics)
    # Per group: its own rows' sum columns for every model, and ranks in local rows.
    sums = [_sum_columns(labels[g], probs[:, g], decisions[:, g], bins) for g in groups]
    ranked = [
        [_Ranked.build(np.arange(g.size), labels[g], probs[m, g]) for m in range(models)]
        for g in groups
    ]
    out = {name: np.empty((bootstrap.resamples, models, count)) for name in statistics}
    done = 0
    for weights in bootstrap.blocks():
        b = weights.shape[0]
        rows = slice(done, done + b)
        for g, members in enumerate(groups):
            w = weights[:, members]
            # Every weighted sum of every model in one matrix product.
            total, n_pos, tp, tn, called, squared, *per_bin = np.moveaxis(
                (w @ sums[g]).reshape(b, models, _SUMS + bins), -1, 0
            )
            values = {
                "sensitivity": _ratio(tp, n_pos),
                "specificity": _ratio(tn, total - n_pos),
                "ppv": _ratio(tp, called),
                "f1": _ratio(2 * tp, called + n_pos),  # 2 TP + FP + FN = called + positives
                "brier": _ratio(squared, total),
                "ece": _ratio(np.abs(np.stack(per_bin)).sum(axis=0), total),
            }
            for name in statistics:
                if name in values:
                    out[name][rows, :, g] = values[name]
            for m in range(models):
                if "roc_auc" in wanted:
                    out["roc_auc"][rows, m, g] = weighted_auc(w, ranked[g][m])
                if "pr_auc" in wanted:
                    out["pr_auc"][rows, m, g] = weighted_average_precision(w, ranked[g][m])
        done += b
    return Resampled(out)


_SUMS = 6  # weighted sums per model before the ECE bins (see `_sum_columns`)


def _sum_columns(
    labels: np.ndarray, probs: np.ndarray, decisions: np.ndarray, bins: int
) -> np.ndarray:
    """(n, M · (6 + bins)) columns whose weighted sums give every proportion.

    Per model: 1 (the total weight), y (positives), y·d (true positives),
    (1-y)(1-d) (true negatives), d (called positive), (p - y)² (Brier), and
    (y - p) in each ECE bin.
    """
    models = probs.shape[0]
    positive = labels == 1
    columns = np.zeros((labels.size, models, _SUMS + bins))
    for m in range(models):
        residual = positive - probs[m]
        columns[:, m, :_SUMS] = np.stack(
            [
                np.ones(labels.size),
                positive,
                decisions[m] & positive,
                ~decisions[m] & ~positive,
                decisions[m],
                residual**2,
            ],
            axis=1,
        )
        columns[np.arange(labels.size), m, _SUMS + ece_bins(probs[m], bins)] = residual
    return columns.reshape(labels.size, -1)


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
