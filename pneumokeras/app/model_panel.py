"""What the page says about the model: the panel, the decision rule, the headline's name.

Everything comes from the model card (`model.json`, or `ensemble.json` for `cv`'s
ensemble) and the model itself. The card says where the threshold and the
temperature were fitted (`calibration.fitted_on`: `val` for `evaluate`, `oof` for
cv's pooled out-of-fold predictions), and the page says so in those words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pneumokeras.models.model_card import Classifier, ModelCard

FITTED_ON_WORDS = {
    "val": "the validation split",
    "oof": "the pooled out-of-fold predictions",
}
FITTED_ON_SHORT = {"oof": "out-of-fold"}  # `val` stays `val`


def _fitted_on(card: ModelCard) -> str:
    return str((card.calibration or {}).get("fitted_on") or "val")


def threshold_words(card: ModelCard) -> str:
    """How the card's threshold was chosen, in words."""
    method = card.threshold_method
    where = FITTED_ON_WORDS.get(_fitted_on(card), f"the {_fitted_on(card)} data")
    if method == "youden":
        return f"Youden's J on {where}"
    if method == "f1":
        return f"best F1 on {where}"
    if method == "manual":
        return "set by hand"
    if method == "default":
        return "training's default, never fitted: run `evaluate` on the model"
    return method


def _number(value: Any, digits: int = 3) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return str(value)


def calibrated(classifier: Classifier) -> bool:
    """Whether the probabilities went through a calibration fitted on data (T may be 1)."""
    return not classifier.card_missing and classifier.card.fitted


def probability_label(classifier: Classifier) -> str:
    """The headline's name: `P(pneumonia), calibrated` only when a calibration was fitted."""
    return f"P(pneumonia), {'calibrated' if calibrated(classifier) else 'uncalibrated'}"


def decision_rule(classifier: Classifier) -> str:
    """One sentence: what the probability is and when the label is pneumonia."""
    card = classifier.card
    if classifier.card_missing:
        return (
            f"No model card: probabilities are uncalibrated and the label is pneumonia "
            f"when P ≥ {card.threshold:.2f} (a placeholder, not fitted)."
        )
    where = FITTED_ON_WORDS.get(_fitted_on(card), _fitted_on(card))
    if not card.fitted:
        calibration = "not calibrated (T = 1, never fitted)"
    elif (card.calibration or {}).get("applied") is False:
        calibration = (
            f"not rescaled (T = 1: the temperature fitted on {where} was not supported by the data)"
        )
    else:
        calibration = f"calibrated with temperature T = {card.temperature:.3g}"
    return (
        f"P(pneumonia) is the model's probability {calibration}; the label is pneumonia "
        f"when P ≥ {card.threshold:.3f} (threshold: {threshold_words(card)})."
    )


def _shown_path(path: Path) -> str:
    """`path` relative to the working folder when inside it (`demo_output/run/...`)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _members_fact(card: ModelCard) -> tuple[str, str]:
    names = [str(m.get("name", "?")) for m in card.members]
    aucs = [m.get("val_auc") for m in card.members]
    shown = ", ".join(_number(a) for a in aucs)
    return (
        "members",
        f"{len(names)} fold models ({', '.join(names)}), their probabilities averaged; "
        f"each one's held-out ROC-AUC {shown}",
    )


def model_facts(classifier: Classifier) -> list[tuple[str, str]]:
    """The model panel: `(what, value)` pairs from the model card and the model."""
    card = classifier.card
    model_cfg = dict(card.config.get("model", {})) if card.config else {}
    architecture = card.model_name or "not recorded"
    details = [f"{k} {model_cfg[k]}" for k in ("filters", "last_stride") if k in model_cfg]
    if details:
        architecture += f" ({', '.join(details)})"
    facts = [
        ("file", _shown_path(classifier.path)),
        ("architecture", f"{architecture}, {classifier.model.count_params():,} parameters"),
    ]
    if card.members:
        facts.append(_members_fact(card))
    facts += [
        ("input", f"{card.input_size} × {card.input_size} px grayscale, pixels 0-255"),
        (
            "trained under",
            f"Keras {card.keras_version or '(not recorded)'}, "
            f"{card.backend or '(not recorded)'} backend, pneumokeras "
            f"{card.project_version}",
        ),
    ]
    data = card.data or {}
    if data:
        splits = data.get("splits", {})
        counts = ", ".join(
            f"{name} {info.get('count')} ({info.get('positives')} positive)"
            for name, info in splits.items()
        )
        facts.append(
            (
                "trained on",
                f"{data.get('source') or data.get('data_dir', '(not recorded)')} at "
                f"{data.get('image_size', card.input_size)} px: {counts}",
            )
        )
    if card.fold is not None:
        facts.append(("held-out fold", str(card.fold)))
    if card.validation:
        shown = ", ".join(
            f"{k} {_number(v)}"
            for k, v in sorted(card.validation.items())
            if not k.endswith("loss")
        )  # training losses say little here
        if card.members:
            what = f"out-of-fold ({len(card.members)} folds pooled)"
        elif card.best_epoch is not None:
            what = f"validation (epoch {card.best_epoch})"
        else:
            what = "validation"
        facts.append((what, shown))
    calibration = card.calibration or {}
    cal_text = f"T = {card.temperature:.3g}"
    if calibration:
        fitted_on = _fitted_on(card)
        cal_text += (
            f", fitted on {calibration.get('n', '(not recorded)')} "
            f"{FITTED_ON_SHORT.get(fitted_on, fitted_on)} images; NLL "
            f"{_number(calibration.get('nll_before'))} → {_number(calibration.get('nll_after'))}"
        )
        if calibration.get("applied") is False:
            cal_text += " (fit not applied: not supported by the data)"
    elif not card.fitted:
        cal_text += " (never fitted)"
    facts.append(("calibration", cal_text))
    facts.append(("threshold", f"{card.threshold:.3f}: {threshold_words(card)}"))
    facts.append(("Grad-CAM layer (default)", default_layer_text(card)))
    return facts


def default_layer_text(card: ModelCard) -> str:
    """The card's Grad-CAM layer, said per member for an ensemble."""
    layer = card.gradcam_layer or "last spatial layer"
    return f"{layer} of each member" if card.members else layer


def model_summary(classifier: Classifier) -> dict[str, Any]:
    """What the results JSON says about the model."""
    card = classifier.card
    return {
        "path": str(classifier.path),
        "model_name": card.model_name,
        "input_size": card.input_size,
        "threshold": card.threshold,
        "threshold_method": card.threshold_method,
        "temperature": card.temperature,
        "calibrated": calibrated(classifier),
        "members": len(card.members),
        "card_missing": classifier.card_missing,
    }


def explainable_layers(classifier: Classifier) -> list[str]:
    """Layers a heatmap can target, in graph order: the model's, or an ensemble's members'.

    The members of an ensemble share one architecture (cv checks their settings),
    so the first member's layers name every member's.
    """
    from pneumokeras.explain.cam import spatial_layers

    if classifier.card.members:
        return spatial_layers(classifier.model.get_layer(classifier.card.members[0]["name"]))
    return spatial_layers(classifier.model)


def default_layer(classifier: Classifier, layers: Sequence[str]) -> str:
    """The card's Grad-CAM layer when the model has it, else the last spatial layer."""
    if classifier.card.gradcam_layer in layers:
        return classifier.card.gradcam_layer
    return layers[-1] if layers else ""
