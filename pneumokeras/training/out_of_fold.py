"""Out-of-fold predictions of a cross-validation, and the metrics computed from them.

Each fold's held-out examples are predicted by the model that did not train on
them (`out_of_fold`); pooled, they give one prediction per train+val example
(`oof.csv`), per-fold metrics at one threshold with their mean ± sd
(`fold_metrics`), and the calibration facts the ensemble's card keeps
(`calibration_facts`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumokeras.config import Config
from pneumokeras.errors import UserError
from pneumokeras.evaluation import calibration, metrics
from pneumokeras.models import model_card
from pneumokeras.records import pipeline as data_lib
from pneumokeras.records import tfrecords
from pneumokeras.records.manifest import MANIFEST, Manifest

OOF_COLUMNS = ("patient", "fold", "label", "probability", "calibrated")
# Per-fold metrics, in report order, and their labels.
FOLD_METRICS = {
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "recall": "Sensitivity",
    "specificity": "Specificity",
    "f1": "F1",
    "accuracy": "Accuracy",
}


@dataclasses.dataclass(frozen=True)
class OutOfFold:
    """Pooled out-of-fold predictions, in fold order, then file order (`(N,)` each)."""

    patients: np.ndarray  # str: example ids (`image/patient_id`)
    folds: np.ndarray  # int
    labels: np.ndarray  # int, 1 = pneumonia
    raw: np.ndarray  # float64, uncalibrated pneumonia probability of the held-out model
    # The patient of each example (patients.csv of folders/findings conversions,
    # where a patient may have several images); None: each example is a patient.
    groups: np.ndarray | None = None

    @property
    def patient_groups(self) -> np.ndarray:
        """`(N,)` patient of each example: what the bootstrap resamples."""
        return self.patients if self.groups is None else self.groups

    @property
    def patient_count(self) -> int:
        """Distinct patients among the examples."""
        return int(np.unique(self.patient_groups).size)


@dataclasses.dataclass(frozen=True)
class FoldMetrics:
    """One fold's held-out metrics at the pooled threshold (None where undefined)."""

    fold: int
    n: int
    positives: int
    metrics: Mapping[str, float | None]


@dataclasses.dataclass(frozen=True)
class Spread:
    """Mean ± sd of a metric over the folds where it is defined (`folds` of them)."""

    mean: float | None
    sd: float | None  # ddof = 1; None with fewer than two folds
    folds: int


def _fold_patients(data_dir: Path, manifest: Manifest) -> list[tuple[str, int]]:
    """(patient, label) of every train+val example in the pipeline's file order.

    Raises:
        UserError: the manifest's folds are not exactly the train+val patients, or
            a test patient has a fold (the test split must stay untouched).
    """
    rows = [
        (r["patient_id"], int(r["label"]))
        for split in ("train", "val")
        if split in manifest.splits
        for r in tfrecords.read_split(data_dir, split)
    ]
    folds = manifest.folds
    seen = {patient for patient, _ in rows}
    if seen != set(folds):
        raise UserError(
            f"the folds in {data_dir / MANIFEST} are not the train+val patients "
            f"({len(set(folds) - seen)} unknown, {len(seen - set(folds))} without a fold); "
            "re-run convert"
        )
    if "test" in manifest.splits:
        leaked = {r["patient_id"] for r in tfrecords.read_split(data_dir, "test")} & set(folds)
        if leaked:
            raise UserError(
                f"{len(leaked)} test patient(s) have a fold in {data_dir}: the test split "
                "must stay out of cross-validation; re-run convert"
            )
    return rows


def _member_config(config: Config, size: int) -> Config:
    return dataclasses.replace(config, data=dataclasses.replace(config.data, image_size=size))


def out_of_fold(
    data_dir: Path,
    manifest: Manifest,
    members: Sequence[model_card.Classifier],
    config: Config,
) -> OutOfFold:
    """Each fold's held-out patients predicted by that fold's model (raw probabilities).

    The held-out batches come from `data.evaluation_dataset(..., fold=k)` (the
    pipeline the fold was validated with); their labels are checked against the
    records', so a patient can never be paired with another's prediction.
    """
    rows = _fold_patients(data_dir, manifest)
    folds = manifest.folds
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for k, member in enumerate(members):
        held = [(p, y) for p, y in rows if folds[p] == k]
        dataset = data_lib.evaluation_dataset(
            data_dir, "val", _member_config(config, member.input_size), fold=k
        )
        raw_batches, label_batches = [], []
        for images, onehot in dataset:
            raw_batches.append(member.raw_probabilities(np.asarray(images), config.data.batch_size))
            label_batches.append(np.argmax(np.asarray(onehot), axis=-1))
        raw_k = np.concatenate(raw_batches) if raw_batches else np.zeros(0)
        labels_k = np.concatenate(label_batches) if label_batches else np.zeros(0, dtype=int)
        if not np.array_equal(labels_k, [y for _, y in held]):
            raise RuntimeError(f"fold {k}: held-out predictions do not line up with patients")
        if not np.all(np.isfinite(raw_k)):
            raise RuntimeError(f"the model of fold {k} outputs non-finite probabilities")
        patients = np.array([p for p, _ in held], dtype=str)
        parts.append((patients, np.full(len(held), k), labels_k.astype(int), raw_k))
    examples, fold_of, labels, raw = (np.concatenate([part[i] for part in parts]) for i in range(4))
    groups = np.array(tfrecords.patient_ids(examples, tfrecords.read_patients(data_dir)), dtype=str)
    return OutOfFold(examples, fold_of, labels, raw, groups)


def oof_csv(oof: OutOfFold, calibrated: np.ndarray) -> str:
    """oof.csv text: `OOF_COLUMNS`, one row per example."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(OOF_COLUMNS)
    for row in zip(oof.patients, oof.folds, oof.labels, oof.raw, calibrated, strict=True):
        patient, fold, label, raw, cal = row
        # Shortest exact decimals: the file reproduces every decision at the threshold.
        writer.writerow([patient, int(fold), int(label), repr(float(raw)), repr(float(cal))])
    return buffer.getvalue()


def fold_metrics(
    oof: OutOfFold, calibrated: np.ndarray, threshold: float, num_folds: int
) -> tuple[list[FoldMetrics], dict[str, Spread]]:
    """Per-fold metrics at one threshold, and their mean ± sd over the folds.

    Returns:
        `(per fold, {metric: Spread})` for the `FOLD_METRICS`; sd with ddof=1 over
        the folds where the value is defined (None when fewer than two are).
    """
    per_fold = []
    for k in range(num_folds):
        rows = oof.folds == k
        point = metrics.classification_metrics(oof.labels[rows], calibrated[rows], threshold)
        per_fold.append(
            FoldMetrics(
                fold=k,
                n=int(rows.sum()),
                positives=int(oof.labels[rows].sum()),
                metrics={name: metrics.json_number(point[name]) for name in FOLD_METRICS},
            )
        )
    summary = {}
    for name in FOLD_METRICS:
        values = [v for f in per_fold if (v := f.metrics[name]) is not None]
        summary[name] = Spread(
            mean=float(np.mean(values)) if values else None,
            sd=float(np.std(values, ddof=1)) if len(values) > 1 else None,
            folds=len(values),
        )
    return per_fold, summary


def calibration_facts(fit: calibration.TemperatureFit, oof: OutOfFold) -> dict[str, Any]:
    """The calibration the ensemble card keeps (evaluate's fields, `fitted_on: oof`)."""
    positives = int(oof.labels.sum())
    warning = calibration.small_split_warning(
        len(oof.labels), positives, len(oof.labels) - positives
    )
    return {
        "method": "temperature scaling",
        "fitted_on": "oof",
        "n": fit.n,
        "n_patients": oof.patient_count,
        "n_positive": positives,
        "n_negative": int(len(oof.labels) - positives),
        "fitted_temperature": fit.fitted,
        "applied": fit.applied,
        "decision": fit.decision,
        "explanation": fit.explanation().replace("validation", "out-of-fold"),
        "p_value": fit.p_value,
        "nll_before": fit.nll_before,
        "nll_after": fit.nll_after,
        "note": "fitted on single-member out-of-fold probabilities; the ensemble averages "
        "its members, so this temperature approximates the ensemble's",
        "warnings": [warning] if warning else [],
    }
