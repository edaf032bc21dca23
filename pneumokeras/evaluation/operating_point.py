"""Where an evaluation's decision threshold and temperature come from.

Three cases (`evaluate` picks one; `compare` always uses the third):

- **fitted here**: the temperature is fitted on the validation split
  (`calibration.fit_calibration`) and the threshold chosen on its calibrated
  probabilities (`metrics.choose_threshold`), unless the user gives one;
  `evaluate` then stores both in the model card (`card_calibration`).
- **kept from an out-of-fold fit**: a `cv` ensemble's members trained on the
  data's `val` patients, so its card's fit (on out-of-fold predictions) is kept
  (`kept_calibration`, `kept_record`).
- **the card's own** (external data, compare): the threshold and temperature the
  card holds, which must have been fitted (`check_own_calibration`, `own_threshold`).

The threshold is described by `{"value", "method", "chosen_on"}` (metrics.json's
`threshold`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pneumokeras.errors import UserError
from pneumokeras.evaluation import calibration, external, metrics
from pneumokeras.models import model_card


def manual_threshold(value: float) -> dict[str, Any]:
    """A threshold given by the user."""
    return {"value": float(value), "method": "manual", "chosen_on": "argument"}


def decide_threshold(
    val_labels: np.ndarray, val_calibrated: np.ndarray, threshold: float | None, method: str
) -> dict[str, Any]:
    """The given threshold, or one chosen on the calibrated validation probabilities."""
    if threshold is not None:
        return manual_threshold(threshold)
    value = metrics.choose_threshold(val_labels, val_calibrated, method)
    return {"value": value, "method": method, "chosen_on": "val"}


def own_threshold(card: model_card.ModelCard, threshold: float | None = None) -> dict[str, Any]:
    """The card's own threshold (unless one is given), fitted on its training data."""
    if threshold is not None:
        return manual_threshold(threshold)
    where = card.calibration.get("fitted_on", "val")
    return {
        "value": card.threshold,
        "method": card.threshold_method,
        "chosen_on": f"model card ({where} of the training data)",
    }


def kept_calibration(card: model_card.ModelCard) -> calibration.TemperatureFit | None:
    """The card's own fit when it was made on out-of-fold predictions (a `cv` ensemble).

    Such a model's members trained on the data's `val` patients (they are inside the
    folds), so refitting there would use data the model has seen.
    """
    facts = card.calibration
    if facts.get("fitted_on") != "oof":
        return None
    return calibration.TemperatureFit(
        temperature=card.temperature,
        fitted=float(facts["fitted_temperature"]),
        decision=str(facts["decision"]),
        nll_before=float(facts["nll_before"]),
        nll_fitted=float(facts["nll_after"]),
        nll_after=float(facts["nll_after"]),
        lr_statistic=float("nan"),
        p_value=float(facts["p_value"]),
        n=int(facts["n"]),
    )


def kept_record(facts: Mapping[str, Any]) -> dict[str, Any]:
    """metrics.json's description of a fit kept from the card (out-of-fold)."""
    return {
        "fitted_on": "oof",
        "explanation": f"kept from the model card: {facts.get('explanation', '')}",
        "val_n": facts["n"],
        "val_patients": facts["n_patients"],
        "val_positives": facts["n_positive"],
        "val_negatives": facts["n_negative"],
        "val_nll_before": facts["nll_before"],
        "val_nll_fitted": facts["nll_after"],
        "val_nll_after": facts["nll_after"],
    }


def card_calibration(record: Mapping[str, Any], data_dir: Path) -> dict[str, Any]:
    """The calibration facts the model card keeps (no reliability bins)."""
    return {
        "method": record["method"],
        "fitted_on": record["fitted_on"],
        "data_dir": str(data_dir),
        "n": record["val_n"],
        "n_patients": record["val_patients"],
        "n_positive": record["val_positives"],
        "n_negative": record["val_negatives"],
        "fitted_temperature": record["fitted_temperature"],
        "applied": record["applied"],
        "decision": record["decision"],
        "p_value": record["p_value"],
        "nll_before": record["val_nll_before"],
        "nll_after": record["val_nll_after"],
        "evaluated_on": record["split"],
        "evaluated_nll_before": record["split_nll_before"],
        "evaluated_nll_after": record["split_nll_after"],
        "warnings": list(record["warnings"]),
    }


def check_own_calibration(classifier: model_card.Classifier, reason: str) -> None:
    """An external evaluation uses the card's threshold and temperature: they must be fitted.

    `reason`: why the data counts as external (said in the error, with `--internal`,
    for a folder of the model's own data converted again).

    Raises:
        UserError: no card, or a card whose threshold and temperature were never fitted.
    """
    card, where = classifier.card, classifier.path
    if classifier.card_missing:
        raise UserError(
            f"{where} has no model card ({model_card.CARD_FILE}); an external evaluation "
            "uses the threshold and temperature the card holds"
        )
    missing = external.missing_calibration_facts(card.calibration)
    if not card.fitted or missing:
        raise UserError(
            f"the model card of {where} holds no fitted threshold and temperature "
            f"(threshold_method {card.threshold_method!r}), and the data is external "
            f"({reason}); evaluate the model on its own data set first, or pass --internal "
            "if this is its own data set"
        )
