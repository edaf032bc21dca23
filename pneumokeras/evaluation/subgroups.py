"""Subgroup performance: metrics per sex, age band, view and source, and the largest gaps.

For each attribute, the images are grouped by its value (`unknown` where the
source does not say; age in bands, `evaluate.age_bands`). Each subgroup gets its
number of images, patients, positives and negatives and, at the model's own
decision threshold,

- ROC-AUC and ECE with percentile intervals of a patient-level bootstrap
  (`bootstrap`; the resamples draw patients from the whole evaluated set, so a
  patient whose images fall into several subgroups, such as an AP and a PA film,
  is drawn with all of them);
- sensitivity, specificity and PPV with Wilson score intervals (as `metrics`).

A subgroup with fewer positive or fewer negative images than
`evaluate.min_subgroup_class_count` is **too small**: its counts are shown and
its metrics are null, never a misleading 1.000 from three images.

**The gap**: for each attribute and each of ROC-AUC, sensitivity and
specificity, the two known subgroups large enough for a number with the highest
and the lowest value, their difference (high − low) and the percentile interval
of the same difference over the bootstrap resamples (the two subgroups fixed,
each resample paired); `excludes_zero` says whether the interval lies above 0.
The pair is chosen as the most extreme of several, so with many subgroups the gap
is biased upwards and its interval is not corrected for the choice; read it as a
flag for a closer look, not as a test. "unknown" images are shown but never make
a gap. An attribute with one subgroup only, or fewer than two large enough, has
no gap ("not estimable", with the reason).

Intervals treat patients as independent of each other (the bootstrap resamples
patients); images of one patient are kept together.

Pure functions of arrays returning JSON-ready values; nothing is drawn or written.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from pneumokeras.errors import UserError
from pneumokeras.evaluation import bootstrap
from pneumokeras.evaluation.metrics import CI_LEVEL, expected_calibration_error, wilson_interval
from pneumokeras.sources.attributes import NAMES, Attributes, age_band_labels, age_bands

UNKNOWN = "unknown"
GAP_METRICS = ("roc_auc", "sensitivity", "specificity")
METRICS = ("roc_auc", "sensitivity", "specificity", "ppv", "ece")
BOOTSTRAPPED = ("roc_auc", "ece")
METRIC_WORDS = {
    "roc_auc": "an ROC-AUC",
    "sensitivity": "a sensitivity",
    "specificity": "a specificity",
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the subgroup analysis runs.

    Attributes:
        age_bands: ages where a new band starts (`evaluate.age_bands`).
        min_class_count: fewest positives and negatives for a subgroup's metrics.
        resamples: bootstrap resamples.
        seed: bootstrap seed.
        bins: ECE bins.
        level: interval coverage.
    """

    age_bands: tuple[int, ...] = (18, 40, 60, 80)
    min_class_count: int = 10
    resamples: int = 1000
    seed: int = 0
    bins: int = 10
    level: float = CI_LEVEL


# ---------------------------------------------------------------- groups


def group_labels(
    attributes: Sequence[Attributes], names: Sequence[str], bands: Sequence[int]
) -> dict[str, np.ndarray]:
    """Each image's subgroup per attribute: `{name: (N,) str}`, `unknown` where empty.

    Age is cut into bands (`sources.attributes.age_band_labels`).
    """
    out = {}
    for name in names:
        values = [item.get(name) for item in attributes]
        if name == "age":
            values = age_bands(values, bands)
        out[name] = np.array([v or UNKNOWN for v in values], dtype=object)
    return out


def _ordered(name: str, values: np.ndarray, bands: Sequence[int]) -> list[str]:
    """The subgroups in reading order: age bands young to old, others sorted; unknown last."""
    present = set(values.tolist())
    if name == "age":
        known = [label for label in age_band_labels(bands) if label in present]
    else:
        known = sorted(present - {UNKNOWN})
    return known + ([UNKNOWN] if UNKNOWN in present else [])


def choose_attributes(
    requested: Sequence[str] | None, attributes: Sequence[Attributes]
) -> tuple[list[str], dict[str, str]]:
    """The attributes to analyse, and why the others are not.

    Args:
        requested: `--by` names, or None for every attribute with two or more
            known values.
        attributes: every evaluated image's attributes.

    Returns:
        `(chosen names, {other name: reason})`.

    Raises:
        UserError: an unknown name, a name given twice, or a requested attribute
            that no image has.
    """
    known = {name: {a.get(name) for a in attributes} - {""} for name in NAMES}
    if requested is not None:
        for name in requested:
            if name not in NAMES:
                raise UserError(f"--by: unknown attribute {name!r}; known: {', '.join(NAMES)}")
        if len(set(requested)) != len(requested):
            raise UserError(f"--by names an attribute twice: {','.join(requested)}")
        missing = [name for name in requested if not known[name]]
        if missing:
            raise UserError(
                f"--by {missing[0]}: no evaluated image has its {missing[0]} recorded (the "
                "data's attributes.csv does not say it, or the folder has no such table: "
                "convert again to record the attributes its source has)"
            )
        chosen = list(requested)
    else:
        chosen = [name for name in NAMES if len(known[name]) >= 2]
    skipped = {}
    for name in NAMES:
        if name in chosen:
            continue
        if not known[name]:
            skipped[name] = "unknown for every image"
        elif len(known[name]) == 1:
            skipped[name] = f"one value only ({next(iter(known[name]))})"
        else:
            skipped[name] = "not asked for (--by)"
    return chosen, skipped


# ---------------------------------------------------------------- metrics


def _entry(
    value: float | None, low: float | None, high: float | None, method: str, used: int | None
) -> dict[str, Any]:
    def number(x: float | None) -> float | None:
        return None if x is None or not math.isfinite(x) else float(x)

    return {
        "value": number(value),
        "ci95": [number(low), number(high)],
        "ci_method": method,
        "resamples": used,
    }


def _wilson(successes: int, trials: int, level: float) -> dict[str, Any]:
    if trials == 0:
        return _entry(None, None, None, "wilson", None)
    low, high = wilson_interval(successes, trials, level)
    return _entry(successes / trials, low, high, "wilson", None)


def _too_small(positives: int, negatives: int, minimum: int) -> str | None:
    """Why a subgroup gets no metric, or None."""
    if positives == 0 or negatives == 0:
        return f"no {'positive' if positives == 0 else 'negative'} images: one class only"
    small = [
        f"{count} {kind}"
        for count, kind in ((positives, "positive"), (negatives, "negative"))
        if count < minimum
    ]
    if small:
        return f"too small: {' and '.join(small)} images (fewer than {minimum})"
    return None


def _group(
    rows: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    decisions: np.ndarray,
    patients: np.ndarray,
    resampled: Mapping[str, np.ndarray],
    settings: Settings,
) -> dict[str, Any]:
    """One subgroup's counts and metrics (`resampled`: its (B,) bootstrap values)."""
    y, d = labels[rows], decisions[rows]
    positives, negatives = int(y.sum()), int(rows.size - y.sum())
    reason = _too_small(positives, negatives, settings.min_class_count)
    out: dict[str, Any] = {
        "n": int(rows.size),
        "patients": int(np.unique(patients[rows]).size),
        "positives": positives,
        "negatives": negatives,
        "estimable": reason is None,
        "reason": reason,
    }
    if reason is not None:
        out["metrics"] = {name: _entry(None, None, None, "none", None) for name in METRICS}
        return out
    tp, fn = int((d & (y == 1)).sum()), int((~d & (y == 1)).sum())
    tn, fp = int((~d & (y == 0)).sum()), int((d & (y == 0)).sum())
    point = {
        "roc_auc": float(roc_auc_score(y, probs[rows])),
        "ece": expected_calibration_error(y, probs[rows], settings.bins),
    }
    table = {
        "sensitivity": _wilson(tp, tp + fn, settings.level),
        "specificity": _wilson(tn, tn + fp, settings.level),
        "ppv": _wilson(tp, tp + fp, settings.level),
    }
    for name in BOOTSTRAPPED:
        low, high, used = bootstrap.percentile_interval(resampled[name], settings.level)
        table[name] = _entry(point[name], low, high, "bootstrap", used)
    out["metrics"] = {name: table[name] for name in METRICS}
    return out


def _gap(
    groups: Mapping[str, Mapping[str, Any]],
    resampled: Mapping[str, Mapping[str, np.ndarray]],
    metric: str,
    level: float,
) -> dict[str, Any]:
    """The largest difference in `metric` between two known subgroups, with its interval."""
    values = {
        name: group["metrics"][metric]["value"]
        for name, group in groups.items()
        if name != UNKNOWN and group["estimable"] and group["metrics"][metric]["value"] is not None
    }
    known = [name for name in groups if name != UNKNOWN]
    if len(known) < 2:
        where = f" ({known[0]})" if known else ""
        return {"estimable": False, "reason": f"one subgroup only{where}"}
    if len(values) < 2:
        return {
            "estimable": False,
            "reason": f"fewer than two subgroups large enough for {METRIC_WORDS[metric]} "
            f"({len(values)} of {len(known)})",
        }
    high = max(values, key=lambda k: values[k])
    low = min(values, key=lambda k: values[k])
    difference = values[high] - values[low]
    samples = resampled[high][metric] - resampled[low][metric]
    ci_low, ci_high, used = bootstrap.percentile_interval(samples, level)
    return {
        "estimable": True,
        "high": high,
        "low": low,
        "difference": float(difference),
        "ci95": [ci_low if used else None, ci_high if used else None],
        "resamples": used,
        "excludes_zero": bool(used and ci_low > 0),
    }


def _resample(
    members: list[tuple[str, str, np.ndarray]],
    labels: np.ndarray,
    probs: np.ndarray,
    decisions: np.ndarray,
    patients: np.ndarray,
    settings: Settings,
) -> bootstrap.Resampled:
    """The bootstrap statistics of every subgroup (none drawn when there is none)."""
    if not members:
        return bootstrap.Resampled({})
    return bootstrap.resample_statistics(
        bootstrap.PatientBootstrap(patients, settings.resamples, settings.seed),
        labels,
        probs,
        decisions,
        [rows for _, _, rows in members],
        settings.bins,
    )


def analyse(
    labels: np.ndarray,
    probs: np.ndarray,
    patients: np.ndarray,
    threshold: float,
    attributes: Sequence[Attributes],
    names: Sequence[str],
    settings: Settings,
    skipped: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Metrics per subgroup of each attribute in `names`, and each attribute's gaps.

    Args:
        labels: (N,) int, 1 = pneumonia.
        probs: (N,) (calibrated) pneumonia probabilities.
        patients: (N,) patient id per image (the bootstrap's unit).
        threshold: the model's decision threshold (`p >= threshold` is pneumonia).
        attributes: (N,) each image's attributes.
        names: attributes to analyse (`choose_attributes`).
        settings: the analysis' settings.
        skipped: attributes not analysed → why (shown in the report).

    Returns:
        JSON-ready `{"attributes", "settings", "by": {name: {"groups": {value:
        {"n", "patients", "positives", "negatives", "estimable", "reason",
        "metrics": {metric: {"value", "ci95", "ci_method", "resamples"}}}},
        "gaps": {metric: {...}}}}, "not_analysed", "largest_gap"}`.
    """
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    patients = np.asarray(patients)
    decisions = probs >= threshold
    grouped = group_labels(attributes, names, settings.age_bands)
    members: list[tuple[str, str, np.ndarray]] = []
    for name in names:
        for value in _ordered(name, grouped[name], settings.age_bands):
            members.append((name, value, np.flatnonzero(grouped[name] == value)))
    resampled = _resample(members, labels, probs, decisions, patients, settings)
    by: dict[str, Any] = {name: {"groups": {}, "gaps": {}} for name in names}
    samples: dict[str, dict[str, dict[str, np.ndarray]]] = {name: {} for name in names}
    for g, (name, value, rows) in enumerate(members):
        values = {metric: array[:, 0, g] for metric, array in resampled.values.items()}
        samples[name][value] = values
        by[name]["groups"][value] = _group(
            rows, labels, probs, decisions, patients, values, settings
        )
    for name in names:
        for metric in GAP_METRICS:
            by[name]["gaps"][metric] = _gap(
                by[name]["groups"], samples[name], metric, settings.level
            )
    return {
        "attributes": list(names),
        "settings": {
            "age_bands": list(settings.age_bands),
            "age_band_labels": age_band_labels(settings.age_bands),
            "min_class_count": settings.min_class_count,
            "threshold": float(threshold),
            "resamples": settings.resamples,
            "seed": settings.seed,
            "unit": "patient",
            "level": settings.level,
            "ece_bins": settings.bins,
        },
        "by": by,
        "not_analysed": dict(skipped or {}),
        "largest_gap": largest_gap(by),
    }


def largest_gap(by: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The estimable gap with the largest difference over attributes and metrics, or None.

    Returns:
        `{"attribute", "metric", "high", "low", "difference", "ci95",
        "excludes_zero"}` or None when no gap is estimable.
    """
    best: dict[str, Any] | None = None
    for name, result in by.items():
        for metric, gap in result["gaps"].items():
            if gap["estimable"] and (best is None or gap["difference"] > best["difference"]):
                best = {"attribute": name, "metric": metric, **gap}
    if best is not None:
        best.pop("estimable")
        best.pop("resamples", None)
    return best
