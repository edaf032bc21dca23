"""Classification metrics, confidence intervals, threshold choice and calibration error.

Pure functions of NumPy arrays that return values; no Keras, no files, no plots.

A pneumonia probability `p` counts as positive when `p >= threshold` (scikit-learn's
`roc_curve` convention). Metrics come from scikit-learn; precision, recall
(sensitivity), specificity (recall of the negative class) and F1 come from one
`precision_recall_fscore_support` call, the function `precision_score`,
`recall_score` and `f1_score` wrap.

Intervals (`metric_table`), 95 % by default:

- proportions (accuracy, precision, recall, specificity) get the Wilson score
  interval (Wilson, JASA 1927; recommended by Brown, Cai & DasGupta, Statistical
  Science 2001) from `scipy.stats.binomtest(k, n).proportion_ci`. Unlike the
  percentile bootstrap it does not collapse to zero width at 0 or 1: 47 of 47
  negatives correct gives specificity 1.000 (0.924 – 1.000), not (1.000 – 1.000).
  It treats images as independent trials: exact for RSNA (one image per
  patient); with several images per patient (NIH follow-ups, Kermany's
  personN images) correlated images make it somewhat too narrow, while the
  bootstrap below resamples whole patients.
- ROC-AUC, PR-AUC, F1 and the Brier score get a percentile bootstrap over patients
  (`bootstrap_ci`, computed by `metric_table` in its vectorised form,
  `bootstrap.resample_statistics`: the same resamples and values); a resample on
  which a value is undefined (e.g. AUC of a one-class resample) is skipped.
- counts (tn, fp, fn, tp) get no interval: they describe this split, not a
  population rate.

Undefined values (AUCs with one class, precision with no predicted positive, ...)
are NaN from the functions and `None` in `metric_table`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import sklearn
from scipy.stats import binomtest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from tqdm import tqdm

from pneumokeras.evaluation.bootstrap import CI_LEVEL as CI_LEVEL
from pneumokeras.evaluation.bootstrap import (
    PatientBootstrap,
    percentile_interval,
    resample_statistics,
)

# Every metric of `classification_metrics`, in report order; counts last.
METRIC_NAMES = (
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "roc_auc",
    "pr_auc",
    "brier",
    "tn",
    "fp",
    "fn",
    "tp",
)
COUNTS = ("tn", "fp", "fn", "tp")
# Proportion metrics → (successes, trials) as sums of confusion-matrix cells.
PROPORTIONS = {
    "accuracy": (("tn", "tp"), ("tn", "fp", "fn", "tp")),
    "precision": (("tp",), ("tp", "fp")),
    "recall": (("tp",), ("tp", "fn")),
    "specificity": (("tn",), ("tn", "fp")),
}
BOOTSTRAPPED = ("f1", "roc_auc", "pr_auc", "brier")


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, threshold: float
) -> dict[str, float]:
    """Point metrics of pneumonia probabilities at a threshold (all from scikit-learn).

    Args:
        labels: (N,) int, 1 = pneumonia, N ≥ 1.
        probs: (N,) pneumonia probabilities.
        threshold: predict pneumonia when `p >= threshold`.

    Returns:
        `accuracy, precision, recall, specificity, f1, roc_auc, pr_auc, brier` as
        floats and `tn, fp, fn, tp` counts; NaN where undefined (AUCs with one
        class; precision with no predicted positive; recall without positives;
        specificity without negatives).
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    predicted = (probs >= threshold).astype(labels.dtype)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=[0, 1], zero_division=np.nan
    )
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    both_classes = np.unique(labels).size == 2
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "precision": float(precision[1]),
        "recall": float(recall[1]),
        "specificity": float(recall[0]),
        "f1": float(f1[1]),
        "roc_auc": float(roc_auc_score(labels, probs)) if both_classes else math.nan,
        "pr_auc": float(average_precision_score(labels, probs)) if both_classes else math.nan,
        "brier": float(brier_score_loss(labels, probs, labels=[0, 1])),
        "tn": float(tn),
        "fp": float(fp),
        "fn": float(fn),
        "tp": float(tp),
    }


def ranking_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float]:
    """The bootstrapped subset of `classification_metrics`: F1, ROC-AUC, PR-AUC, Brier."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    predicted = (probs >= threshold).astype(labels.dtype)
    _, _, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=[1], zero_division=np.nan
    )
    both_classes = np.unique(labels).size == 2
    return {
        "f1": float(f1[0]),
        "roc_auc": float(roc_auc_score(labels, probs)) if both_classes else math.nan,
        "pr_auc": float(average_precision_score(labels, probs)) if both_classes else math.nan,
        "brier": float(brier_score_loss(labels, probs, labels=[0, 1])),
    }


# ---------------------------------------------------------------- intervals


class Interval(NamedTuple):
    """A bootstrap confidence interval; `resamples` counts those where it was defined."""

    low: float
    high: float
    resamples: int


def bootstrap_ci(
    statistic: Callable[[np.ndarray, np.ndarray], Mapping[str, float]],
    labels: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray | None = None,
    resamples: int = 1000,
    seed: int = 0,
    level: float = CI_LEVEL,
    progress: bool = False,
) -> dict[str, Interval]:
    """Percentile bootstrap intervals of every value `statistic` returns.

    Resamples groups (patients) with replacement, keeping all rows of a drawn
    group together (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993).
    A value that is NaN on a resample (e.g. ROC-AUC of a one-class resample) skips
    that resample; a value never defined gets `(nan, nan, 0)`.

    Args:
        statistic: `(labels, probs) -> {name: value}`.
        labels: (N,) int labels.
        probs: (N,) probabilities.
        groups: (N,) group id per row; None = each row its own group.
        resamples: number of bootstrap resamples.
        seed: random seed.
        level: central coverage, e.g. 0.95.
        progress: show a progress bar on stderr.

    Returns:
        `{name: Interval(low, high, resamples used)}`.
    """
    labels, probs = np.asarray(labels), np.asarray(probs)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    rows_of_group = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    # Inputs were validated once by the caller; skipping scikit-learn's per-call
    # checks makes the loop several times faster.
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        for _ in tqdm(range(resamples), desc="bootstrap", disable=not progress, leave=False):
            picks = rng.integers(0, len(rows_of_group), len(rows_of_group))
            rows = np.concatenate([rows_of_group[g] for g in picks])
            for name, value in statistic(labels[rows], probs[rows]).items():
                values.setdefault(name, []).append(value)
    tail = 100 * (1 - level) / 2
    intervals = {}
    for name, samples in values.items():
        finite = np.asarray(samples, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        if finite.size == 0:
            intervals[name] = Interval(math.nan, math.nan, 0)
        else:
            low, high = np.percentile(finite, [tail, 100 - tail])
            intervals[name] = Interval(float(low), float(high), int(finite.size))
    return intervals


def wilson_interval(successes: int, trials: int, level: float = CI_LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion `successes / trials`.

    Returns:
        `(low, high)` in [0, 1], of non-zero width for every `trials ≥ 1` (also
        at 0 and 1 successes); `(nan, nan)` when `trials` is 0 (undefined).
    """
    if trials == 0:
        return math.nan, math.nan
    ci = binomtest(int(successes), int(trials)).proportion_ci(
        confidence_level=level, method="wilson"
    )
    return float(ci.low), float(ci.high)


def json_number(value: float) -> float | None:
    """A number for JSON: a float, or None for NaN and ±inf (JSON has neither)."""
    return float(value) if math.isfinite(value) else None


def metric_table(
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    groups: np.ndarray | None = None,
    resamples: int = 1000,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> dict[str, dict[str, Any]]:
    """Every metric at `threshold` with its interval, JSON-ready, in `METRIC_NAMES` order.

    Args:
        labels: (N,) int, 1 = pneumonia.
        probs: (N,) pneumonia probabilities.
        threshold: predict pneumonia when `p >= threshold`.
        groups: (N,) patient id per row, the bootstrap's resampling unit.
        resamples: as in `bootstrap_ci`.
        seed: as in `bootstrap_ci`.
        level: as in `bootstrap_ci`.

    Returns:
        `{metric: {"value", "ci95": [low, high], "ci_method", "resamples"}}`;
        `ci_method` is `wilson`, `bootstrap` or `none` (counts: `ci95` is
        `[None, None]`); `resamples` counts the bootstrap resamples on which the
        value was defined (None for the other methods); undefined values are None.
        Counts are ints.
    """
    point = classification_metrics(labels, probs, threshold)
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    # The vectorised form of `bootstrap_ci(ranking_metrics)`: the same resamples
    # (same seed, same draws) and values, without a scikit-learn call per resample.
    resampled = resample_statistics(
        PatientBootstrap(np.arange(labels.size) if groups is None else groups, resamples, seed),
        labels,
        probs,
        probs >= threshold,
        [np.arange(labels.size)],
        statistics=BOOTSTRAPPED,
    )
    boot = {
        name: Interval(*percentile_interval(resampled[name][:, 0, 0], level))
        for name in BOOTSTRAPPED
    }
    table: dict[str, dict[str, Any]] = {}
    for name in METRIC_NAMES:
        if name in COUNTS:
            entry = {
                "value": int(point[name]),
                "ci95": [None, None],
                "ci_method": "none",
                "resamples": None,
            }
        elif name in PROPORTIONS:
            successes, trials = (int(sum(point[c] for c in cells)) for cells in PROPORTIONS[name])
            low, high = wilson_interval(successes, trials, level)
            entry = {
                "value": json_number(point[name]),
                "ci95": [json_number(low), json_number(high)],
                "ci_method": "wilson",
                "resamples": None,
            }
        else:
            interval = boot[name]
            entry = {
                "value": json_number(point[name]),
                "ci95": [json_number(interval.low), json_number(interval.high)],
                "ci_method": "bootstrap",
                "resamples": interval.resamples,
            }
        table[name] = entry
    return table


# ---------------------------------------------------------------- threshold


def choose_threshold(labels: np.ndarray, probs: np.ndarray, method: str = "youden") -> float:
    """Decision threshold maximising Youden's J (sensitivity + specificity - 1) or F1.

    Candidates are the distinct probabilities (scikit-learn's curve thresholds);
    ties go to the highest threshold. Youden's J: Youden, Cancer 1950.

    Args:
        labels: (N,) int, both classes present.
        probs: (N,) pneumonia probabilities.
        method: `youden` or `f1`.

    Returns:
        Threshold in [0, 1]; predict pneumonia when `p >= threshold`.

    Raises:
        ValueError: unknown method.
    """
    if method == "youden":
        fpr, tpr, thresholds = roc_curve(labels, probs, drop_intermediate=False)
        best = thresholds[np.argmax(tpr - fpr)]  # J = tpr - fpr; [0] is inf: none positive
    elif method == "f1":
        precision, recall, thresholds = precision_recall_curve(labels, probs)
        # The curve's last point (recall 0) has no threshold. F1 is the harmonic
        # mean of the curve's precision and recall at each threshold.
        precision, recall = precision[:-1], recall[:-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = 2 * precision * recall / (precision + recall)
        best_f1 = np.nanmax(f1)
        best = thresholds[np.flatnonzero(f1 == best_f1)[-1]]  # thresholds ascend
    else:
        raise ValueError(f"method must be 'youden' or 'f1'. Received: method={method!r}")
    return float(min(best, 1.0))


# ---------------------------------------------------------------- calibration error


@dataclasses.dataclass(frozen=True)
class Reliability:
    """Equal-width bins of predicted pneumonia probability.

    Attributes:
        edges: (bins + 1,) bin edges from 0 to 1.
        counts: (bins,) examples per bin.
        mean_predicted: (bins,) mean probability per bin, NaN when empty.
        fraction_positive: (bins,) observed pneumonia rate per bin, NaN when empty.
    """

    edges: np.ndarray
    counts: np.ndarray
    mean_predicted: np.ndarray
    fraction_positive: np.ndarray


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> Reliability:
    """Reliability bins from `sklearn.calibration.calibration_curve(strategy="uniform")`.

    Bin i holds `edges[i] < p <= edges[i+1]` (the first bin also holds 0). Empty
    bins are kept, as NaN, so that every array has one entry per bin.
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    prob_true, prob_pred = calibration_curve(labels, probs, n_bins=bins, strategy="uniform")
    # calibration_curve returns the rate and mean of the filled bins only, not how
    # many examples each holds; the ECE weights bins by that count and the diagram
    # shows it, so it is counted here with calibration_curve's own binning
    # (`searchsorted` on the inner edges; a test checks the two agree).
    counts = np.bincount(np.searchsorted(edges[1:-1], probs), minlength=bins)
    filled = counts > 0
    mean_predicted = np.full(bins, np.nan)
    fraction_positive = np.full(bins, np.nan)
    mean_predicted[filled], fraction_positive[filled] = prob_pred, prob_true
    return Reliability(edges, counts, mean_predicted, fraction_positive)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """ECE of the pneumonia probability over equal-width bins (Naeini et al., AAAI 2015).

    `sum_b (n_b / N) * |observed pneumonia rate_b - mean probability_b|`; 0 is
    perfectly calibrated, in [0, 1].
    """
    bins_ = reliability(labels, probs, bins)
    filled = bins_.counts > 0
    gaps = np.abs(bins_.fraction_positive[filled] - bins_.mean_predicted[filled])
    return float(np.sum(bins_.counts[filled] * gaps) / np.sum(bins_.counts))
