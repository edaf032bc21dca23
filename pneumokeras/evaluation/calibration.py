"""Temperature scaling of the pneumonia probability (Guo et al., ICML 2017).

Pure functions of NumPy arrays; no Keras, no files. A 2-way softmax depends only
on the difference of its two logits, which is the log-odds `logit(p)` of the
pneumonia probability `p`, so dividing both logits by `T` gives
`expit(logit(p) / T)`. `T > 1` softens, `T < 1` sharpens, `T = 1` is the identity.

When a fitted temperature is used (`fit_calibration`). A temperature fitted on a
small validation split can make other data's probabilities worse (the demo once
fitted T = 0.43 on 60 patients and its test NLL rose from 0.236 to 0.334), so the
fit is applied only when the data support it, and kept at T = 1 otherwise:

- *significance*: T = 1 is nested in the one-parameter family, so by Wilks'
  theorem `2 N (NLL(1) - NLL(T̂))` is χ²(1) under "the model is already
  calibrated". T̂ is applied only when that likelihood-ratio test rejects at
  `SIGNIFICANCE` (5 %): on 60 validation images the NLL must fall by at least
  3.84 / 120 = 0.032 nats. The test counts images as independent trials (RSNA
  has one image per patient).
- *no interior minimum*: when the NLL keeps falling up to a bound of
  `TEMPERATURE_BOUNDS` (a validation split whose classes the model separates
  perfectly drives T towards 0), the data do not determine T, and T = 1 is kept.

No prior or tighter bound is added on top: the test already scales the evidence
needed with the split's size, and a prior's width would be one more number to
justify. What the test cannot see (a validation split unlike the test data) is
reported instead: `small_split_warning` (fewer than `MIN_PATIENTS` patients or
`MIN_PER_CLASS` of a class) and `worse_nll_warning` (the evaluated split's NLL
rose).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import chi2
from sklearn.metrics import brier_score_loss, log_loss

from pneumokeras.evaluation.metrics import expected_calibration_error, json_number, reliability
from pneumokeras.models.temperature import calibrate as calibrate
from pneumokeras.models.temperature import clip_probabilities

# Temperature search range: far wider than any trained network needs.
TEMPERATURE_BOUNDS = (0.05, 20.0)
# Level of the likelihood-ratio test that decides whether a fitted T is applied.
SIGNIFICANCE = 0.05
# A validation split smaller than this (patients, or patients of either class)
# gets a warning: a handful of confident mistakes then moves T a lot.
MIN_PATIENTS = 100
MIN_PER_CLASS = 20


def negative_log_likelihood(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy (nats) of pneumonia probabilities; lower is better."""
    return float(log_loss(labels, clip_probabilities(probs), labels=[0, 1]))


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> float:
    """Fits the temperature that minimises the negative log-likelihood (Guo et al., 2017).

    Bounded scalar search over log T (so T stays > 0) within `TEMPERATURE_BOUNDS`.

    Args:
        labels: (N,) int, 1 = pneumonia; both classes should be present.
        probs: (N,) raw pneumonia probabilities.

    Returns:
        T > 0.
    """

    def nll(log_t: float) -> float:
        return negative_log_likelihood(labels, calibrate(probs, math.exp(log_t)))

    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    result = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    return float(math.exp(result.x))


@dataclasses.dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature and whether it is applied (see the module docstring).

    Attributes:
        temperature: the temperature to apply: `fitted`, or 1.0 when kept.
        fitted: the temperature minimising the NLL within `TEMPERATURE_BOUNDS`.
        decision: `applied`, `not significant` or `no interior minimum`.
        nll_before: NLL at T = 1 (nats per image).
        nll_fitted: NLL at `fitted`.
        nll_after: NLL at `temperature`.
        lr_statistic: `2 N (nll_before - nll_fitted)`.
        p_value: χ²(1) tail probability of `lr_statistic`.
        n: images it was fitted on.
        significance: level of the test.
    """

    temperature: float
    fitted: float
    decision: str
    nll_before: float
    nll_fitted: float
    nll_after: float
    lr_statistic: float
    p_value: float
    n: int
    significance: float = SIGNIFICANCE

    @property
    def applied(self) -> bool:
        """Whether the fitted temperature is used (else T = 1)."""
        return self.decision == "applied"

    def explanation(self) -> str:
        """One sentence on the decision, for reports and logs."""
        gain = (
            f"the fitted T = {self.fitted:.3f} lowers the validation NLL from "
            f"{self.nll_before:.4f} to {self.nll_fitted:.4f}"
        )
        test = f"likelihood-ratio test p = {self.p_value:.3g}"
        if self.decision == "applied":
            return f"applied: {gain} ({test} < {self.significance})"
        if self.decision == "not significant":
            return f"kept at T = 1: {gain}, not significantly ({test} ≥ {self.significance})"
        if self.fitted < 1:
            why = "sharpening towards 0 and 1 (the model separates the validation classes?)"
        else:
            why = (
                "flattening every probability towards 0.5 (the model ranks the validation "
                "split no better than chance?)"
            )
        return (
            f"kept at T = 1: the validation NLL keeps falling up to the search bound "
            f"T = {self.fitted:.3g}, {why}, so the data do not determine a temperature"
        )


def fit_calibration(
    labels: np.ndarray, probs: np.ndarray, significance: float = SIGNIFICANCE
) -> TemperatureFit:
    """Fits a temperature and applies it only when the validation data support it.

    Args:
        labels: (N,) int, 1 = pneumonia; both classes should be present.
        probs: (N,) raw pneumonia probabilities.
        significance: level of the likelihood-ratio test against T = 1.

    Returns:
        A `TemperatureFit`; its `temperature` is 1.0 unless the decision is `applied`.
    """
    labels = np.asarray(labels)

    def nll(temperature: float) -> float:
        return negative_log_likelihood(labels, calibrate(probs, temperature))

    fitted = fit_temperature(labels, probs)
    nll_before, nll_fitted = nll(1.0), nll(fitted)
    # No interior minimum: a bound is at least as good as the optimiser's answer
    # (which stops short of the bound where the NLL flattens out towards it).
    bound = next((b for b in TEMPERATURE_BOUNDS if nll(b) <= nll_fitted), None)
    if bound is not None:
        fitted, nll_fitted = bound, nll(bound)
    # The NLL at the fitted T cannot exceed the NLL at 1 (1 is inside the bounds);
    # `max` only absorbs the optimiser's tolerance.
    statistic = max(0.0, 2 * labels.size * (nll_before - nll_fitted))
    p_value = float(chi2.sf(statistic, df=1))
    if bound is not None:
        decision = "no interior minimum"
    elif p_value < significance:
        decision = "applied"
    else:
        decision = "not significant"
    applied = decision == "applied"
    return TemperatureFit(
        temperature=fitted if applied else 1.0,
        fitted=fitted,
        decision=decision,
        nll_before=nll_before,
        nll_fitted=nll_fitted,
        nll_after=nll_fitted if applied else nll_before,
        lr_statistic=statistic,
        p_value=p_value,
        n=int(labels.size),
        significance=significance,
    )


def small_split_warning(n_patients: int, n_positive: int, n_negative: int) -> str | None:
    """A warning when the validation split is too small to trust a fitted temperature.

    Small means fewer than `MIN_PATIENTS` patients or fewer than `MIN_PER_CLASS`
    patients of either class; None otherwise.
    """
    if n_patients >= MIN_PATIENTS and min(n_positive, n_negative) >= MIN_PER_CLASS:
        return None
    return (
        f"the validation split is small ({n_patients} patients: {n_positive} with "
        f"pneumonia, {n_negative} without; fewer than {MIN_PATIENTS} patients or "
        f"{MIN_PER_CLASS} of a class): the temperature and threshold fitted on it may "
        "not carry over to new data"
    )


def worse_nll_warning(
    nll_before: float, nll_after: float, temperature: float, split: str
) -> str | None:
    """A warning when the temperature raised the evaluated split's NLL; None otherwise.

    T = 1 changes nothing (its NLL differs only by round-off of the logit round
    trip), and so do differences below 1e-9 nats.
    """
    if temperature == 1.0 or not nll_after > nll_before + 1e-9:
        return None
    return (
        f"calibration made the {split} split worse: temperature T = {temperature:.3f} "
        f"(fitted on validation) raised its NLL from {nll_before:.4f} to {nll_after:.4f}; "
        "its probabilities are temperature-scaled, not better calibrated"
    )


def calibration_summary(
    labels: np.ndarray, raw: np.ndarray, calibrated: np.ndarray, bins: int = 10
) -> dict[str, dict[str, Any]]:
    """ECE, Brier score, NLL and reliability bins before and after calibration.

    Args:
        labels: (N,) int, 1 = pneumonia.
        raw: (N,) uncalibrated pneumonia probabilities.
        calibrated: (N,) the same after temperature scaling.
        bins: equal-width reliability bins.

    Returns:
        `{"before" | "after": {"ece", "brier", "nll", "bins": {"counts",
        "mean_predicted", "fraction_positive"}}}`, JSON-ready (empty bins None).
    """

    def one(probs: np.ndarray) -> dict[str, Any]:
        rel = reliability(labels, probs, bins)
        return {
            "ece": expected_calibration_error(labels, probs, bins),
            "brier": float(brier_score_loss(labels, probs, labels=[0, 1])),
            "nll": negative_log_likelihood(labels, probs),
            "bins": {
                "counts": rel.counts.tolist(),
                "mean_predicted": [json_number(v) for v in rel.mean_predicted.tolist()],
                "fraction_positive": [json_number(v) for v in rel.fraction_positive.tolist()],
            },
        }

    return {"before": one(raw), "after": one(calibrated)}


def calibration_record(
    fit: TemperatureFit,
    val_labels: np.ndarray,
    val_patients: np.ndarray,
    labels: np.ndarray,
    raw: np.ndarray,
    split: str,
    bins: int = 10,
) -> dict[str, Any]:
    """Everything known about one calibration, JSON-ready (metrics.json's `calibration`).

    Args:
        fit: the temperature fitted on validation (`fit_calibration`).
        val_labels: (M,) int validation labels it was fitted on.
        val_patients: (M,) patient id per validation image.
        labels: (N,) int labels of the evaluated split.
        raw: (N,) its uncalibrated pneumonia probabilities.
        split: the evaluated split's name.
        bins: reliability bins.

    Returns:
        The fit (`temperature` applied, `fitted_temperature`, `applied`,
        `decision`, `explanation`, `p_value`, ...), the validation split's size
        (`val_n` images; `val_patients`, `val_positives`, `val_negatives` patients,
        a patient positive when any image is), validation and evaluated-split NLL
        before and after (`val_nll_*`, `split_nll_*`), `warnings` (small
        validation split, worse NLL on the evaluated split) and
        `calibration_summary`'s `before` / `after`.
    """
    val_labels = np.asarray(val_labels)
    _, patient_index = np.unique(np.asarray(val_patients), return_inverse=True)
    per_patient = np.zeros(patient_index.max() + 1, dtype=int)
    np.maximum.at(per_patient, patient_index, val_labels)
    positives = int(per_patient.sum())
    negatives = int(per_patient.size - positives)
    summary = calibration_summary(labels, raw, calibrate(raw, fit.temperature), bins)
    split_before, split_after = summary["before"]["nll"], summary["after"]["nll"]
    warnings = [
        w
        for w in (
            small_split_warning(per_patient.size, positives, negatives),
            worse_nll_warning(split_before, split_after, fit.temperature, split),
        )
        if w
    ]
    return {
        "method": "temperature scaling",
        "temperature": fit.temperature,
        "fitted_temperature": fit.fitted,
        "applied": fit.applied,
        "decision": fit.decision,
        "explanation": fit.explanation(),
        "significance": fit.significance,
        "lr_statistic": fit.lr_statistic,
        "p_value": fit.p_value,
        "fitted_on": "val",
        "val_n": fit.n,
        "val_patients": int(per_patient.size),
        "val_positives": positives,
        "val_negatives": negatives,
        "val_nll_before": fit.nll_before,
        "val_nll_fitted": fit.nll_fitted,
        "val_nll_after": fit.nll_after,
        "split": split,
        "split_nll_before": split_before,
        "split_nll_after": split_after,
        "warnings": warnings,
        **summary,
    }
