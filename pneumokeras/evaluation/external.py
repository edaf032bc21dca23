"""External validation: is the evaluated data new to the model, and what would re-fitting change.

Pure functions of the model card's facts, a manifest and NumPy arrays; no Keras,
no files. `evaluate` uses them when it evaluates a model on a converted folder
other than the one it was trained on (Zech et al., PLOS Medicine 2018: a
pneumonia model's performance drops on another hospital's images, so the check
that matters is on another data set, with the model's own threshold and
temperature).

- `detect`: the data is *external* when its manifest fingerprint differs from the
  one the model card recorded for its training data (`card.data.fingerprint`);
  a card without one (hand-written, or no card) counts as internal.
  `--external` / `--internal` override the rule.
- `training_data` / `evaluated_data`: what the report says about both data sets.
- `own_calibration_record`: metrics.json's `calibration` when the temperature is
  the card's own (fitted on its training data's validation split), not refitted.
- `refit_split` / `refit_comparison`: a patient-level, class-stratified, seeded
  part of the evaluated examples re-fits the temperature and threshold with the
  usual methods (`calibration.fit_calibration`, `metrics.choose_threshold`); the
  rest is scored with the model's own calibration and the re-fitted one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumokeras.errors import UserError
from pneumokeras.evaluation import calibration, metrics
from pneumokeras.models.model_card import CLASS_NAMES
from pneumokeras.records.manifest import Manifest

# The split name that means every split of a converted folder together.
ALL_SPLITS = "all"
# Card calibration facts an external evaluation reports (written by `evaluate`
# and by `cv`'s out-of-fold fit).
_CARD_FACTS = ("n", "n_patients", "n_positive", "n_negative", "nll_before", "nll_after")


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Whether the evaluated data is external to the model, and why.

    Attributes:
        external: True when the data is evaluated as a data set the model was not
            trained on.
        reason: one sentence saying how that was decided.
        warning: a caution about the decision (the same source name under another
            fingerprint; `--external` on the training data itself), or None.
        trained_here: the card's training fingerprint is this folder's: the model
            trained on (part of) this data, whatever `--external` says.
    """

    external: bool
    reason: str
    warning: str | None = None
    trained_here: bool = False


def detect(
    training: Mapping[str, Any],
    manifest: Manifest,
    fingerprint: str,
    forced: bool | None = None,
) -> Provenance:
    """Decides whether a converted folder is a data set the model was not trained on.

    Args:
        training: the model card's `data` (training data facts; may be empty).
        manifest: the evaluated folder's manifest.
        fingerprint: that manifest's fingerprint (`tfrecords.manifest_fingerprint`).
        forced: True (`--external`) or False (`--internal`) overrides the rule.

    Returns:
        A `Provenance`.
    """
    recorded = training.get("fingerprint")
    trained_here = bool(recorded) and recorded == fingerprint
    if forced is not None:
        flag = "--external" if forced else "--internal"
        warning = None
        if forced and trained_here:
            warning = (
                f"--external was given, but the model was trained on this converted folder "
                f"(its manifest fingerprint {fingerprint} is the training data's): the numbers "
                "are not an external validation, and every split but the test split holds "
                "images the model trained on or was tuned on"
            )
        return Provenance(forced, f"set by {flag}", warning, trained_here)
    if not recorded:
        return Provenance(
            False,
            "the model card records no training data, so the data is taken to be the "
            "model's own (pass --external to treat it as a new data set)",
        )
    if trained_here:
        return Provenance(
            False,
            f"the data is the converted folder the model was trained on "
            f"(manifest fingerprint {fingerprint})",
            trained_here=True,
        )
    reason = f"its manifest fingerprint {fingerprint} differs from the training data's {recorded}"
    # Manifests written before other layouts existed are RSNA conversions, as the
    # card records them; a card without a layout (older) matches any.
    source, layout = manifest.source, manifest.source_layout
    warning = None
    same_layout = training.get("source_layout") in (None, layout)
    if source and source == training.get("source") and same_layout:
        warning = (
            f"the evaluated data has the same source name ({source}) as the training data: "
            "if it holds the same images converted again (another seed, size or split), "
            "patients the model trained on may be in it and the results are not external "
            "(pass --internal to evaluate it as the model's own data set)"
        )
    return Provenance(True, reason, warning)


def refuse_external_options(
    split: str, refit_fraction: float | None, data_dir: Path, provenance: Provenance
) -> None:
    """`--split all` and `--refit-fraction` are for external data only.

    On the folder the model trained on, `--external` is not suggested: it would
    score the training images (the report would then warn, see `detect`).

    Raises:
        UserError: either option on data taken to be the model's own.
    """
    if split != ALL_SPLITS and refit_fraction is None:
        return
    option = "--split all" if split == ALL_SPLITS else "--refit-fraction"
    if provenance.trained_here:
        raise UserError(
            f"{option} is for a data set the model was not trained on, and {data_dir} is the "
            f"folder it was trained on ({provenance.reason}): its splits other than test "
            "hold images the model trained on or was tuned on; evaluate --split test"
        )
    said = provenance.reason.startswith("set by") or "--external" in provenance.reason
    hint = "" if said else "; pass --external if the model never saw it"
    raise UserError(
        f"{option} is for a data set the model was not trained on, and {data_dir} is taken "
        f"to be its own ({provenance.reason}){hint}"
    )


def _split_counts(splits: Mapping[str, Any]) -> dict[str, int]:
    return {name: int(info.get("count", 0)) for name, info in splits.items()}


def training_data(
    card_data: Mapping[str, Any], card_calibration: Mapping[str, Any]
) -> dict[str, Any]:
    """What the model card says about the data the model was trained and calibrated on.

    Args:
        card_data: the card's `data` (`source`, `data_dir`, `fingerprint`,
            `splits.<name>.count|positives`; `source_layout`, `images` and
            `patients` when the card records them, else unknown).
        card_calibration: the card's `calibration` (where T was fitted).

    Returns:
        JSON-ready `{"recorded", "source", "layout", "data_dir", "fingerprint",
        "images", "positives", "patients", "splits", "calibrated_on"}`; unknown
        facts are None.
    """
    splits = card_data.get("splits") or {}
    images = card_data.get("images")
    if images is None and splits:
        images = sum(_split_counts(splits).values())
    positives = sum(int(s.get("positives", 0)) for s in splits.values()) if splits else None
    return {
        "recorded": bool(card_data),
        "source": card_data.get("source") or None,
        "layout": card_data.get("source_layout") or None,
        "data_dir": card_data.get("data_dir") or None,
        "fingerprint": card_data.get("fingerprint") or None,
        "images": images,
        "positives": positives,
        "patients": card_data.get("patients"),
        "splits": _split_counts(splits),
        "calibrated_on": {
            "data_dir": card_calibration.get("data_dir"),
            "fitted_on": card_calibration.get("fitted_on"),
            "images": card_calibration.get("n"),
            "patients": card_calibration.get("n_patients"),
        }
        if card_calibration
        else None,
    }


def evaluated_data(
    manifest: Manifest,
    data_dir: str,
    fingerprint: str,
    split: str,
    splits: Sequence[str],
    labels: np.ndarray,
    patients: np.ndarray,
) -> dict[str, Any]:
    """What the report says about the evaluated data set.

    Args:
        manifest: its manifest.
        data_dir: its folder.
        fingerprint: the manifest's fingerprint.
        split: the evaluated split's name (`all` for every split).
        splits: the splits read, in order.
        labels: (N,) int labels of the evaluated examples.
        patients: (N,) their patient ids.
    """
    return {
        "source": (manifest.source or None),
        "layout": (manifest.source_layout or None),
        "data_dir": data_dir,
        "fingerprint": fingerprint,
        "split": split,
        "splits": {name: int(manifest.splits[name].count) for name in splits},
        "images": len(labels),
        "positives": int(np.sum(labels)),
        "patients": int(np.unique(patients).size),
    }


def own_calibration_record(
    card_calibration: Mapping[str, Any],
    temperature: float,
    labels: np.ndarray,
    raw: np.ndarray,
    split: str,
    bins: int = 10,
) -> dict[str, Any]:
    """metrics.json's `calibration` for the card's own temperature (nothing refitted).

    Same keys as `calibration.calibration_record`; the `val_*` facts are those of
    the training data's validation split as the card recorded them, `source` is
    `model card`. Warnings: a small training validation split, and a temperature
    that raised the evaluated split's NLL.

    Args:
        card_calibration: the card's `calibration` facts (must hold `_CARD_FACTS`).
        temperature: the card's temperature, applied.
        labels: (N,) int labels of the evaluated examples.
        raw: (N,) their raw pneumonia probabilities.
        split: the evaluated split's name.
        bins: reliability bins.
    """
    facts = card_calibration
    summary = calibration.calibration_summary(
        labels, raw, calibration.calibrate(raw, temperature), bins
    )
    before, after = summary["before"]["nll"], summary["after"]["nll"]
    small = calibration.small_split_warning(
        int(facts["n_patients"]), int(facts["n_positive"]), int(facts["n_negative"])
    )
    warnings = [
        w
        for w in (
            small and f"(training data) {small}",
            calibration.worse_nll_warning(before, after, temperature, split),
        )
        if w
    ]
    fitted = float(facts.get("fitted_temperature", temperature))
    decision = str(facts.get("decision", "applied" if temperature != 1.0 else "not recorded"))
    where = f"{facts.get('fitted_on', 'val')} split of {facts.get('data_dir') or 'its data'}"
    return {
        "method": "temperature scaling",
        "source": "model card",
        "temperature": temperature,
        "fitted_temperature": fitted,
        "applied": bool(facts.get("applied", temperature != 1.0)),
        "decision": decision,
        "explanation": (
            f"the model's own temperature T = {temperature:.3f} from its card (fitted "
            f"T = {fitted:.3f} on the {where}, {facts['n']} images; decision: {decision}); "
            "not refitted on this data"
        ),
        "significance": calibration.SIGNIFICANCE,
        "lr_statistic": None,
        "p_value": facts.get("p_value"),
        "fitted_on": facts.get("fitted_on", "val"),
        "fitted_data_dir": facts.get("data_dir"),
        "val_n": int(facts["n"]),
        "val_patients": int(facts["n_patients"]),
        "val_positives": int(facts["n_positive"]),
        "val_negatives": int(facts["n_negative"]),
        "val_nll_before": float(facts["nll_before"]),
        "val_nll_fitted": float(facts["nll_after"]),
        "val_nll_after": float(facts["nll_after"]),
        "split": split,
        "split_nll_before": before,
        "split_nll_after": after,
        "warnings": warnings,
        **summary,
    }


def missing_calibration_facts(card_calibration: Mapping[str, Any]) -> list[str]:
    """The calibration facts an external evaluation needs that the card lacks."""
    return [key for key in _CARD_FACTS if key not in card_calibration]


def _patient_labels(labels: np.ndarray, patients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P,) label per patient (positive when any image is) and (N,) patient index per image."""
    _, index = np.unique(np.asarray(patients), return_inverse=True)
    per_patient = np.zeros(index.max() + 1, dtype=int)
    np.maximum.at(per_patient, index, np.asarray(labels, dtype=int))
    return per_patient, index


def refit_split(labels: np.ndarray, patients: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A patient-level, class-stratified, seeded choice of the re-fitting part.

    Of each class's patients (a patient is positive when any image is),
    `round(fraction · count)` are drawn with `numpy.random.default_rng(seed)`.

    Args:
        labels: (N,) int, 1 = pneumonia.
        patients: (N,) patient id per image.
        fraction: share of patients that re-fit, in (0, 1).
        seed: random seed.

    Returns:
        (N,) bool: True for images in the re-fitting part, False for the held-out part.

    Raises:
        UserError: `fraction` outside (0, 1), or a part left without a class.
    """
    if not (isinstance(fraction, int | float) and 0.0 < fraction < 1.0):
        raise UserError(f"--refit-fraction must be in (0, 1); got {fraction}")
    per_patient, index = _patient_labels(labels, patients)
    rng = np.random.default_rng(seed)
    chosen = np.zeros(per_patient.size, dtype=bool)
    for cls, name in enumerate(CLASS_NAMES):
        ids = np.flatnonzero(per_patient == cls)
        take = math.floor(fraction * ids.size + 0.5)
        if take == 0 or take == ids.size:
            part = "re-fitting" if take == 0 else "held-out"
            raise UserError(
                f"--refit-fraction {fraction} leaves the {part} part without {name} "
                f"patients ({ids.size} in the evaluated data); both parts need both classes"
            )
        chosen[rng.permutation(ids)[:take]] = True
    return chosen[index]


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _scores(
    labels: np.ndarray, raw: np.ndarray, temperature: float, threshold: float, bins: int
) -> dict[str, float | None]:
    """Decision and calibration scores of one temperature and threshold on one part."""
    probs = calibration.calibrate(raw, temperature)
    point = metrics.classification_metrics(labels, probs, threshold)
    return {
        "temperature": float(temperature),
        "threshold": float(threshold),
        "sensitivity": _none_if_nan(point["recall"]),
        "specificity": _none_if_nan(point["specificity"]),
        "f1": _none_if_nan(point["f1"]),
        "ece": float(metrics.expected_calibration_error(labels, probs, bins)),
        "brier": float(point["brier"]),
        "nll": calibration.negative_log_likelihood(labels, probs),
        "roc_auc": _none_if_nan(point["roc_auc"]),
    }


def _part(labels: np.ndarray, patients: np.ndarray) -> dict[str, int]:
    """Images, patients, positive images and positive patients (any image positive)."""
    per_patient, _ = _patient_labels(labels, patients)
    return {
        "n": int(labels.size),
        "patients": int(per_patient.size),
        "positives": int(labels.sum()),
        "positive_patients": int(per_patient.sum()),
    }


def refit_comparison(
    labels: np.ndarray,
    patients: np.ndarray,
    raw: np.ndarray,
    own_temperature: float,
    own_threshold: float,
    fraction: float,
    seed: int,
    threshold_method: str = "youden",
    bins: int = 10,
) -> dict[str, Any]:
    """Own vs re-fitted temperature and threshold, scored on the held-out part.

    A `refit_split` part re-fits the temperature (`calibration.fit_calibration`:
    applied only when the likelihood-ratio test supports it) and then the
    threshold on its calibrated probabilities (`metrics.choose_threshold`); the
    other part is scored at the model's own temperature and threshold and at
    the re-fitted ones. ROC-AUC is the same for both (temperature scaling keeps
    the order), reported as a check.

    Args:
        labels: (N,) int, 1 = pneumonia.
        patients: (N,) patient id per image.
        raw: (N,) raw pneumonia probabilities.
        own_temperature: the model card's temperature.
        own_threshold: the threshold used for the main metrics (the card's).
        fraction: share of patients that re-fit, in (0, 1).
        seed: seed of the split.
        threshold_method: `youden` or `f1`.
        bins: ECE bins.

    Returns:
        JSON-ready `{"fraction", "seed", "threshold_method", "refit_part",
        "held_out", "fit", "warnings", "own", "refit"}`; `own` and `refit` hold
        `temperature, threshold, sensitivity, specificity, f1, ece, brier, nll,
        roc_auc` on the held-out part.

    Raises:
        UserError: see `refit_split`.
    """
    labels, patients = np.asarray(labels), np.asarray(patients)
    raw = np.asarray(raw, dtype=np.float64)
    fit_rows = refit_split(labels, patients, fraction, seed)
    held = ~fit_rows
    fit = calibration.fit_calibration(labels[fit_rows], raw[fit_rows])
    threshold = metrics.choose_threshold(
        labels[fit_rows], calibration.calibrate(raw[fit_rows], fit.temperature), threshold_method
    )
    per_patient, _ = _patient_labels(labels[fit_rows], patients[fit_rows])
    small = calibration.small_split_warning(
        per_patient.size, int(per_patient.sum()), int(per_patient.size - per_patient.sum())
    )
    return {
        "fraction": float(fraction),
        "seed": int(seed),
        "unit": "patient",
        "threshold_method": threshold_method,
        "refit_part": _part(labels[fit_rows], patients[fit_rows]),
        "held_out": _part(labels[held], patients[held]),
        "fit": {
            "fitted_temperature": fit.fitted,
            "applied": fit.applied,
            "decision": fit.decision,
            "p_value": fit.p_value,
            "explanation": fit.explanation()
            .replace("validation split", "re-fitting part")
            .replace("validation", "re-fitting part's"),
        },
        "warnings": [small.replace("validation split", "re-fitting part")] if small else [],
        "own": _scores(labels[held], raw[held], own_temperature, own_threshold, bins),
        "refit": _scores(labels[held], raw[held], fit.temperature, threshold, bins),
    }
