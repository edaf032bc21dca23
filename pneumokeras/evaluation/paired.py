"""Paired comparison of two or more models scored on the same images.

For every model: ROC-AUC with a patient-bootstrap interval and DeLong's
interval, and sensitivity and specificity at its own decision threshold with
Wilson intervals. For every pair (a, b), in the order the models were given:

- ΔAUC = AUC_b − AUC_a with DeLong's test for correlated ROC curves (`delong`:
  variance, z, two-sided p; p-values also Holm-adjusted over the pairs, Holm,
  Scand. J. Statistics 1979) and the percentile interval of a **paired**
  patient-level bootstrap (both models on the same resampled patients, `bootstrap`);
- Δsensitivity and Δspecificity (b − a) at each model's own threshold, with a
  paired bootstrap interval and McNemar's exact test on the paired decisions
  (McNemar, Psychometrika 1947): among the positives (sensitivity) or the
  negatives (specificity), the images one model gets right and the other wrong
  are the discordant pairs; under equal accuracy each is equally likely to favour
  either model, so the count favouring b is Binomial(discordant, ½)
  (`scipy.stats.binomtest`, two-sided).

DeLong and McNemar treat images as independent; with several images per patient
their p-values are too small, and the patient bootstrap intervals are the ones
to read. Pure functions returning JSON-ready values.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest

from pneumokeras.evaluation import bootstrap, delong
from pneumokeras.evaluation.metrics import CI_LEVEL, wilson_interval


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """McNemar's exact test on paired right/wrong decisions of two models.

    Args:
        correct_a, correct_b: (n,) bool, whether each model decided each image right.

    Returns:
        `{"a_only", "b_only", "discordant", "p_value"}`: images only a (only b) got
        right, their sum, and the two-sided exact p-value (1.0 with no discordant
        pair: nothing speaks for a difference).
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    discordant = a_only + b_only
    p = binomtest(b_only, discordant, 0.5).pvalue if discordant else 1.0
    return {"a_only": a_only, "b_only": b_only, "discordant": discordant, "p_value": float(p)}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given; NaN stays NaN)."""
    p = np.asarray(p_values, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(p))
    adjusted = np.full(p.shape, np.nan)
    order = finite[np.argsort(p[finite], kind="stable")]
    running, count = 0.0, order.size
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (count - rank) * p[index]))
        adjusted[index] = running
    return [float(v) for v in adjusted]


def _proportion(successes: int, trials: int, level: float) -> dict[str, Any]:
    if trials == 0:
        return {"value": None, "ci95": [None, None], "ci_method": "wilson"}
    low, high = wilson_interval(successes, trials, level)
    return {"value": successes / trials, "ci95": [low, high], "ci_method": "wilson"}


def _difference(
    value: float, samples: np.ndarray, level: float, test: dict[str, Any] | None = None
) -> dict[str, Any]:
    low, high, used = bootstrap.percentile_interval(samples, level)
    out: dict[str, Any] = {
        "difference": _number(value),
        "ci95": [_number(low), _number(high)],
        "resamples": used,
        "excludes_zero": bool(used and (low > 0 or high < 0)),
    }
    if test is not None:
        out.update(test)
    return out


def compare_models(
    labels: np.ndarray,
    patients: np.ndarray,
    probs: np.ndarray,
    thresholds: Sequence[float],
    names: Sequence[str],
    resamples: int = 1000,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> dict[str, Any]:
    """Each model's AUC, sensitivity and specificity, and every pair's differences.

    Args:
        labels: (N,) int, 1 = pneumonia; at least two images of each class.
        patients: (N,) patient id per image (the bootstrap's unit).
        probs: (M, N) calibrated pneumonia probabilities of M ≥ 2 models.
        thresholds: (M,) each model's own decision threshold.
        names: (M,) model names.
        resamples: paired bootstrap resamples.
        seed: bootstrap seed.
        level: interval coverage.

    Returns:
        JSON-ready `{"models": [...], "pairs": [...], "bootstrap": {...}}`.

    Raises:
        ValueError: fewer than two models, or fewer than two images of a class.
    """
    labels = np.asarray(labels).astype(int)
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    count = probs.shape[0]
    if count < 2 or len(thresholds) != count or len(names) != count:
        raise ValueError(f"need ≥ 2 models with a threshold and a name each; got {count}")
    decisions = probs >= np.asarray(thresholds, dtype=np.float64)[:, None]
    positive = labels == 1
    fit = delong.delong(labels, probs)
    resampled = bootstrap.resample_statistics(
        bootstrap.PatientBootstrap(patients, resamples, seed),
        labels,
        probs,
        decisions,
        [np.arange(labels.size)],
    )
    auc_samples = resampled["roc_auc"][:, :, 0]
    sens_samples = resampled["sensitivity"][:, :, 0]
    spec_samples = resampled["specificity"][:, :, 0]
    models = []
    for m, name in enumerate(names):
        low, high, used = bootstrap.percentile_interval(auc_samples[:, m], level)
        tp = int((decisions[m] & positive).sum())
        tn = int((~decisions[m] & ~positive).sum())
        models.append(
            {
                "name": name,
                "threshold": float(thresholds[m]),
                "roc_auc": {
                    "value": float(fit.aucs[m]),
                    "ci95": [_number(low), _number(high)],
                    "ci_method": "bootstrap",
                    "resamples": used,
                    "delong_ci95": [_number(v) for v in fit.interval(m, level)],
                },
                "sensitivity": _proportion(tp, int(positive.sum()), level),
                "specificity": _proportion(tn, int((~positive).sum()), level),
            }
        )
    right = decisions == positive  # (M, N): whether each model decided each image right
    sensitivity = right[:, positive].mean(axis=1)
    specificity = right[:, ~positive].mean(axis=1)
    pairs: list[dict[str, Any]] = []
    for a, b in itertools.combinations(range(count), 2):
        test = delong.delong_test(labels, probs[a], probs[b])
        pairs.append(
            {
                "a": names[a],
                "b": names[b],
                "roc_auc": _difference(
                    test.difference,
                    auc_samples[:, b] - auc_samples[:, a],
                    level,
                    {
                        "delong": {
                            "variance": test.variance,
                            "z": _number(test.z),
                            "p_value": _number(test.p_value),
                            "estimable": test.estimable,
                        }
                    },
                ),
                "sensitivity": _difference(
                    float(sensitivity[b] - sensitivity[a]),
                    sens_samples[:, b] - sens_samples[:, a],
                    level,
                    {"mcnemar": mcnemar_exact(right[a, positive], right[b, positive])},
                ),
                "specificity": _difference(
                    float(specificity[b] - specificity[a]),
                    spec_samples[:, b] - spec_samples[:, a],
                    level,
                    {"mcnemar": mcnemar_exact(right[a, ~positive], right[b, ~positive])},
                ),
            }
        )
    raw_p = [pair["roc_auc"]["delong"]["p_value"] for pair in pairs]
    adjusted = holm([math.nan if p is None else p for p in raw_p])
    for pair, p_holm in zip(pairs, adjusted, strict=True):
        pair["roc_auc"]["delong"]["p_holm"] = _number(p_holm)
    return {
        "models": models,
        "pairs": pairs,
        "bootstrap": {
            "resamples": resamples,
            "seed": seed,
            "level": level,
            "unit": "patient",
            "paired": True,
            "method": "percentile",
        },
    }
