"""The `cv` command: K-fold cross-validation, out-of-fold metrics and a deep ensemble.

On data converted with `--folds K`, `cross_validate` trains one ordinary run
folder per fold (`train.train(..., fold=k)`: trained on the other folds, its
best epoch chosen on fold k) and, once every fold is finished, aggregates:

    fold-0/ … fold-<K-1>/   one run folder per fold (model.keras, model.json, run.json, …)
    oof.csv           every train+val patient once, predicted by the model that
                      did not train on it: patient, fold, label, probability (raw),
                      calibrated (with the ensemble's temperature)
    cv_metrics.json   per-fold metrics, their mean ± sd, pooled out-of-fold
                      metrics with 95 % intervals, the calibration fit
    cv_roc.png        the K ROC curves and their mean
    report.md         the above in Markdown
    ensemble.keras    one functional model averaging the K members' probabilities
    ensemble.json     its model card: temperature and threshold fitted on the
                      pooled out-of-fold predictions, `members`

Folds are trained in sequence, or one with `only_fold` (one fold per machine,
the folds sharing `out_dir` on a common file system: each writes only its own
folder). A rerun skips finished folds (run.json status `finished`), resumes an
unfinished one at its last epoch (train's resume), and aggregates when every
fold is finished. The test split is never read by any fold (checked).

Choices:

- Threshold of the per-fold metrics: the one pooled out-of-fold threshold
  (Youden's J or F1, `evaluate.threshold_method`, on the calibrated pooled
  predictions), the same for every fold; it is the ensemble's threshold. A
  threshold tuned on each fold's own held-out patients would make every fold
  look better than any model deployed at one threshold, and part of the spread
  between folds would be threshold tuning, not the models.
- Calibration: temperature scaling on the pooled out-of-fold raw probabilities,
  applied only when the likelihood-ratio test supports it
  (`calibration.fit_calibration`). An out-of-fold probability comes from one
  member, the ensemble averages K: averaging tends to soften probabilities, so
  the fitted temperature is a proxy for the ensemble's (said in the report).
- Settings: every fold must have been trained with the same settings, except
  `evaluate` and `explain` (read when aggregating), on the same data
  (manifest fingerprint), else `UserError` before anything is written.

The ensemble holds each member as a nested functional model named `member_<k>`
and `keras.layers.Average` of their softmax outputs: stock layers only, so it
loads with `keras.saving.load_model` in safe mode under TensorFlow or JAX
without this project, like `model.keras`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pneumokeras import __version__
from pneumokeras.config import Config
from pneumokeras.errors import UserError
from pneumokeras.evaluation import calibration, metrics, plots, report
from pneumokeras.models import model_card
from pneumokeras.records import pipeline as data_lib
from pneumokeras.records import tfrecords
from pneumokeras.records.manifest import MANIFEST, Manifest, load_manifest
from pneumokeras.training import train as train_lib
from pneumokeras.utils.fileio import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json_object,
)

FOLD_PREFIX = "fold-"
ENSEMBLE_FILE = "ensemble.keras"
OOF_FILE = "oof.csv"
METRICS_FILE = "cv_metrics.json"
ROC_FILE = "cv_roc.png"
REPORT_FILE = "report.md"
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
# Settings that do not change a trained model: read when aggregating, not compared.
UNTRAINED_SECTIONS = ("evaluate", "explain")
MEMBER_PREFIX = "member_"


@dataclasses.dataclass(frozen=True)
class CVSummary:
    """What a `cross_validate` call did.

    Attributes:
        out_dir: the cross-validation folder.
        num_folds: K.
        trained: folds trained (or resumed) by this call.
        skipped: folds already finished before this call.
        pending: folds not finished yet (another machine's, with `only_fold`).
        result: the cv_metrics.json dict when aggregated, else None.
    """

    out_dir: Path
    num_folds: int
    trained: tuple[int, ...]
    skipped: tuple[int, ...]
    pending: tuple[int, ...]
    result: dict[str, Any] | None


def fold_dir(out_dir: str | Path, fold: int) -> Path:
    """The run folder of fold `fold`: `out_dir/fold-<k>`."""
    return Path(out_dir) / f"{FOLD_PREFIX}{fold}"


# ---------------------------------------------------------------- checks


def _num_folds(manifest: Manifest, data_dir: Path) -> int:
    num_folds = manifest.num_folds
    if num_folds < 2 or not manifest.folds:
        raise UserError(
            f"{data_dir} was converted without folds; convert it with --folds K (K ≥ 2) "
            "to cross-validate"
        )
    return num_folds


def _trained_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings that shape a trained model (all but `UNTRAINED_SECTIONS`)."""
    return {k: v for k, v in settings.items() if k not in UNTRAINED_SECTIONS}


def _setting_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """`section.key: old → new` for each trained setting that differs."""
    old, new = _trained_settings(recorded), _trained_settings(current)
    out = []
    for section in sorted(set(old) | set(new)):
        before_section, after_section = old.get(section) or {}, new.get(section) or {}
        for name in sorted(set(before_section) | set(after_section)):
            before, after = before_section.get(name), after_section.get(name)
            if before != after:
                out.append(f"{section}.{name}: {before} → {after}")
    return out


def _refuse_other_settings(where: Path, changed: list[str]) -> None:
    if changed:
        listed = "; ".join(changed[:3]) + (" …" if len(changed) > 3 else "")
        raise UserError(
            f"{where} was trained with other settings ({listed}); every fold needs the "
            "same settings: rerun with the folds' settings, or use a new --out"
        )


def _refuse_other_data(where: Path, recorded: str | None, current: str) -> None:
    if recorded != current:
        raise UserError(
            f"{where} was trained on another data set (manifest fingerprint {recorded}, "
            f"the data now has {current}); use a new --out for this data"
        )


def _fold_record(run_dir: Path) -> dict[str, Any] | None:
    """The fold's run.json, or None when it has none."""
    path = run_dir / train_lib.RUN_RECORD
    if not path.is_file():
        return None
    return read_json_object(path, "run record")


def _check_fold_folders(
    out_dir: Path, num_folds: int, config: Config, fingerprint: str
) -> dict[int, dict[str, Any] | None]:
    """Run records of every fold folder, after checking they belong to this run.

    Raises:
        UserError: a fold folder beyond K, or one trained on other data, for
            another fold or with other settings (before anything is written).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder")
    if out_dir.is_dir():
        for path in sorted(out_dir.glob(f"{FOLD_PREFIX}*")):
            index = path.name[len(FOLD_PREFIX) :]
            if index.isdigit() and int(index) >= num_folds:
                raise UserError(
                    f"{path} is a fold the data does not have ({num_folds} folds, "
                    f"0..{num_folds - 1}): the folder holds another cross-validation; "
                    "use a new --out"
                )
    records = {}
    for k in range(num_folds):
        where = fold_dir(out_dir, k)
        record = records[k] = _fold_record(where)
        if record is None:
            continue
        _refuse_other_data(where, record.get("data_fingerprint"), fingerprint)
        if record.get("fold") != k:
            raise UserError(f"{where} holds a run of fold {record.get('fold')}, not fold {k}")
        _refuse_other_settings(
            where, _setting_differences(record.get("config", {}), config.to_dict())
        )
    return records


def _finished(record: Mapping[str, Any] | None) -> bool:
    return record is not None and record.get("status") == "finished"


# ---------------------------------------------------------------- training


def train_folds(
    data_dir: Path,
    out_dir: Path,
    config: Config,
    num_folds: int,
    records: Mapping[int, Mapping[str, Any] | None],
    only_fold: int | None,
    verbose: int | str,
    say: Callable[[str], None],
) -> tuple[list[int], list[int]]:
    """Trains the unfinished folds asked for, in order; returns (trained, skipped)."""
    trained, skipped = [], []
    for k in range(num_folds) if only_fold is None else [only_fold]:
        where = fold_dir(out_dir, k)
        if _finished(records[k]):
            say(f"fold {k}: finished already in {where}, skipped")
            skipped.append(k)
            continue
        resuming = records[k] is not None
        say(
            f"fold {k}/{num_folds}: {'resuming' if resuming else 'training'} "
            f"{config.model.name} in {where} (Keras {keras.backend.backend()})"
        )
        summary = train_lib.train(data_dir, where, config, fold=k, verbose=verbose)
        say(
            f"fold {k}: best epoch {summary.best_epoch}, held-out ROC-AUC "
            f"{summary.best_val_auc:.3f} ({summary.seconds:.0f} s)"
        )
        trained.append(k)
    return trained, skipped


# ---------------------------------------------------------------- out-of-fold predictions


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
    parts: list[tuple[np.ndarray, ...]] = []
    for k, member in enumerate(members):
        held = [(p, y) for p, y in rows if folds[p] == k]
        dataset = data_lib.evaluation_dataset(
            data_dir, "val", _member_config(config, member.input_size), fold=k
        )
        raw, labels = [], []
        for images, onehot in dataset:
            raw.append(member.raw_probabilities(np.asarray(images), config.data.batch_size))
            labels.append(np.argmax(np.asarray(onehot), axis=-1))
        raw_k = np.concatenate(raw) if raw else np.zeros(0)
        labels_k = np.concatenate(labels) if labels else np.zeros(0, dtype=int)
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
    """oof.csv text: `OOF_COLUMNS`, one row per patient."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(OOF_COLUMNS)
    for row in zip(oof.patients, oof.folds, oof.labels, oof.raw, calibrated, strict=True):
        patient, fold, label, raw, cal = row
        # Shortest exact decimals: the file reproduces every decision at the threshold.
        writer.writerow([patient, int(fold), int(label), repr(float(raw)), repr(float(cal))])
    return buffer.getvalue()


# ---------------------------------------------------------------- metrics


def _json_number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def fold_metrics(
    oof: OutOfFold, calibrated: np.ndarray, threshold: float, num_folds: int
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per-fold metrics at one threshold, and their mean ± sd over the folds.

    Returns:
        `([{"fold", "n", "positives", "metrics": {name: value}}], {name: {"mean",
        "sd", "folds"}})`; sd with ddof=1 over the folds where the value is defined
        (None when fewer than two are).
    """
    per_fold = []
    for k in range(num_folds):
        rows = oof.folds == k
        point = metrics.classification_metrics(oof.labels[rows], calibrated[rows], threshold)
        per_fold.append(
            {
                "fold": k,
                "n": int(rows.sum()),
                "positives": int(oof.labels[rows].sum()),
                "metrics": {name: _json_number(point[name]) for name in FOLD_METRICS},
            }
        )
    summary = {}
    for name in FOLD_METRICS:
        values = [f["metrics"][name] for f in per_fold if f["metrics"][name] is not None]
        summary[name] = {
            "mean": float(np.mean(values)) if values else None,
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "folds": len(values),
        }
    return per_fold, summary


def _calibration_facts(fit: calibration.TemperatureFit, oof: OutOfFold) -> dict[str, Any]:
    """The calibration the ensemble card keeps (evaluate's fields, `fitted_on: oof`)."""
    positives = int(oof.labels.sum())
    warnings = [
        w
        for w in [
            calibration.small_split_warning(len(oof.labels), positives, len(oof.labels) - positives)
        ]
        if w
    ]
    return {
        "method": "temperature scaling",
        "fitted_on": "oof",
        "n": fit.n,
        "n_patients": int(np.unique(oof.patient_groups).size),
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
        "warnings": warnings,
    }


# ---------------------------------------------------------------- the ensemble


def build_ensemble(members: Sequence[keras.Model], size: int) -> keras.Model:
    """One functional model averaging the members' softmax outputs (stock layers only).

    Args:
        members: K ≥ 1 models `(None, S, S, 1)` → `(None, 2)`.
        size: S, pixels.

    Returns:
        `(None, S, S, 1)` → `(None, 2)`: `Average` of the members, each a nested
        functional model named `member_<k>` (`k` = its index in `members`).
    """
    image = keras.Input((size, size, 1), name="image")
    outputs = [
        keras.Model(member.input, member.output, name=f"{MEMBER_PREFIX}{k}")(image)
        for k, member in enumerate(members)
    ]
    averaged = (
        keras.layers.Average(name="predictions")(outputs)
        if len(outputs) > 1
        else keras.layers.Identity(name="predictions")(outputs[0])
    )
    return keras.Model(image, averaged, name="ensemble")


def _load_members(
    out_dir: Path, num_folds: int, config: Config, fingerprint: str
) -> list[model_card.Classifier]:
    """Every fold's classifier, checked to be one ensemble's member.

    Raises:
        UserError: a missing model or card, or cards saying other data, another
            fold, other settings or another image size.
    """
    members = []
    for k in range(num_folds):
        where = fold_dir(out_dir, k)
        if not (where / model_card.MODEL_FILE).is_file():
            raise UserError(
                f"member {k} is missing: {where} has no {model_card.MODEL_FILE}; "
                f"retrain it with `cv --only-fold {k}` after removing {where}"
            )
        member = model_card.load_classifier(where, require_card=True)
        card = member.card
        _refuse_other_data(where, card.data.get("fingerprint"), fingerprint)
        if card.fold != k:
            raise UserError(f"{where}'s model card is of fold {card.fold}, not fold {k}")
        _refuse_other_settings(where, _setting_differences(card.config, config.to_dict()))
        if members and card.input_size != members[0].input_size:
            raise UserError(
                f"{where} takes {card.input_size} px images, fold 0 {members[0].input_size} px"
            )
        members.append(member)
    return members


def ensemble_card(
    members: Sequence[model_card.Classifier],
    config: Config,
    threshold: float,
    method: str,
    fit: calibration.TemperatureFit,
    oof: OutOfFold,
    pooled: Mapping[str, Mapping[str, Any]],
) -> model_card.ModelCard:
    """The ensemble's model card: the members' facts, the out-of-fold calibration."""
    first = members[0].card
    return model_card.ModelCard(
        input_size=first.input_size,
        threshold=threshold,
        threshold_method=method,
        temperature=fit.temperature,
        calibration=_calibration_facts(fit, oof),
        backend=keras.backend.backend(),
        keras_version=keras.__version__,
        project_version=__version__,
        model_name=first.model_name,
        gradcam_layer=first.gradcam_layer,
        config=config.to_dict(),
        data={**first.data, "cross_validation": {"folds": len(members), "oof_n": len(oof.labels)}},
        devices=first.devices,
        validation={
            name: entry["value"]
            for name, entry in pooled.items()
            if entry["value"] is not None and name not in metrics.COUNTS
        },
        input_statistics=first.input_statistics,
        members=tuple(
            {
                "name": f"{MEMBER_PREFIX}{k}",
                "fold": member.card.fold,
                "run_dir": f"{FOLD_PREFIX}{k}",
                "gradcam_layer": member.card.gradcam_layer,
                "best_epoch": member.card.best_epoch,
                "val_auc": member.card.validation.get("auc"),
                "backend": member.card.backend,
            }
            for k, member in enumerate(members)
        ),
    )


# ---------------------------------------------------------------- aggregation


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def render_report(result: Mapping[str, Any]) -> str:
    """report.md of a cross-validation, from the cv_metrics.json dict."""
    threshold, cal = result["threshold"], result["calibration"]
    lines = [
        f"# Cross-validation: {result['num_folds']} folds",
        "",
        f"> **{report.DISCLAIMER}**",
        "",
        f"- data: `{result['data_dir']}` (source {result['data_source'] or 'unknown'}); "
        f"{result['oof']['n']} train+val patients, {result['oof']['positives']} with "
        "pneumonia, each predicted once by the fold model that did not train on it; the "
        "test split was not used",
        f"- threshold **{threshold['value']:.4f}** ({threshold['method']}, chosen on the "
        "pooled out-of-fold predictions), the same for every fold",
        f"- temperature {result['temperature']:.3f} — {cal['explanation']}",
        "",
        "## Per fold (held-out fold, pooled threshold)",
        "",
        "| fold | n | positives | " + " | ".join(FOLD_METRICS.values()) + " |",
        "|---" * (3 + len(FOLD_METRICS)) + "|",
    ]
    for fold in result["folds"]:
        values = " | ".join(_fmt(fold["metrics"][name]) for name in FOLD_METRICS)
        lines.append(f"| {fold['fold']} | {fold['n']} | {fold['positives']} | {values} |")
    summary = result["summary"]
    lines.append(
        "| **mean ± sd** | | | "
        + " | ".join(f"{_fmt(summary[n]['mean'])} ± {_fmt(summary[n]['sd'])}" for n in FOLD_METRICS)
        + " |"
    )
    lines += [
        "",
        f"![ROC curves of the folds]({ROC_FILE})",
        "",
        "## Pooled out-of-fold metrics (95 % intervals)",
        "",
        *report.metric_table(result["pooled"]),
        "",
        "## Ensemble",
        "",
        f"`{ENSEMBLE_FILE}` averages the {result['num_folds']} fold models' probabilities; "
        f"its card `{Path(ENSEMBLE_FILE).with_suffix('.json')}` holds the threshold and "
        "temperature above. They were fitted on single-model out-of-fold predictions: the "
        "ensemble's own test-split figures come from `evaluate`.",
        "",
        f"*{report.DISCLAIMER}*",
        "",
    ]
    return "\n".join(lines)


def aggregate(data_dir: str | Path, out_dir: str | Path, config: Config) -> dict[str, Any]:
    """Out-of-fold metrics, the ROC plot, the report and the ensemble of finished folds.

    Returns:
        The dict written to cv_metrics.json.

    Raises:
        UserError: a fold unfinished or missing, members that do not belong
            together (see `_load_members`), or out-of-fold labels of one class.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    manifest = load_manifest(data_dir)
    num_folds = _num_folds(manifest, data_dir)
    fingerprint = manifest.fingerprint
    records = _check_fold_folders(out_dir, num_folds, config, fingerprint)
    unfinished = [k for k, record in records.items() if not _finished(record)]
    if unfinished:
        raise UserError(
            f"fold(s) {', '.join(map(str, unfinished))} of {out_dir} are not finished; "
            "train them (cv, or cv --only-fold K) before aggregating"
        )
    members = _load_members(out_dir, num_folds, config, fingerprint)
    oof = out_of_fold(data_dir, manifest, members, config)
    if np.unique(oof.labels).size < 2:
        raise UserError("the out-of-fold labels hold one class; nothing to calibrate")

    fit = calibration.fit_calibration(oof.labels, oof.raw)
    calibrated = calibration.calibrate(oof.raw, fit.temperature)
    method = config.evaluate.threshold_method
    threshold = metrics.choose_threshold(oof.labels, calibrated, method)
    per_fold, summary = fold_metrics(oof, calibrated, threshold, num_folds)
    pooled = metrics.metric_table(
        oof.labels,
        calibrated,
        threshold,
        groups=oof.patient_groups,
        resamples=config.evaluate.bootstrap,
        seed=config.train.seed,
    )
    cal = _calibration_facts(fit, oof)
    cal.update(
        calibration.calibration_summary(
            oof.labels, oof.raw, calibrated, config.evaluate.calibration_bins
        )
    )
    card = ensemble_card(members, config, threshold, method, fit, oof, pooled)
    result = {
        "data_dir": str(data_dir),
        "data_source": manifest.source,
        "data_fingerprint": fingerprint,
        "num_folds": num_folds,
        "backend": keras.backend.backend(),
        "oof": {"n": len(oof.labels), "positives": int(oof.labels.sum()), "file": OOF_FILE},
        "threshold": {"value": threshold, "method": method, "chosen_on": "oof"},
        "temperature": fit.temperature,
        "calibration": cal,
        "folds": [
            {**fold, "best_epoch": m.card.best_epoch, "val_auc": m.card.validation.get("auc")}
            for fold, m in zip(per_fold, members, strict=True)
        ],
        "summary": summary,
        "fold_threshold": "pooled out-of-fold threshold (see cv.py)",
        "pooled": pooled,
        "bootstrap": {
            "resamples": config.evaluate.bootstrap,
            "seed": config.train.seed,
            "level": metrics.CI_LEVEL,
            "unit": "patient",
            "method": "percentile",
        },
        "ensemble": {"model": ENSEMBLE_FILE, "members": list(card.members)},
        "disclaimer": report.DISCLAIMER,
    }

    ensemble = build_ensemble([m.model for m in members], card.input_size)
    with atomic_path(out_dir / ENSEMBLE_FILE, suffix=".keras") as tmp:
        ensemble.save(tmp)
    model_card.write_card(out_dir / ENSEMBLE_FILE, card)
    atomic_write_text(out_dir / OOF_FILE, oof_csv(oof, calibrated))
    figure = plots.cv_roc_figure(
        [oof.labels[oof.folds == k] for k in range(num_folds)],
        [calibrated[oof.folds == k] for k in range(num_folds)],
    )
    atomic_write_bytes(out_dir / ROC_FILE, plots.to_png(figure))
    atomic_write_json(out_dir / METRICS_FILE, result)
    atomic_write_text(out_dir / REPORT_FILE, render_report(result))
    return result


def cross_validate(
    data_dir: str | Path,
    out_dir: str | Path,
    config: Config,
    only_fold: int | None = None,
    verbose: int | str = "auto",
    say: Callable[[str], None] | None = None,
) -> CVSummary:
    """Trains the folds (all, or `only_fold`) and aggregates once every fold is finished.

    Args:
        data_dir: converted folder with folds (`convert --folds K`).
        out_dir: cross-validation folder (see the module docstring).
        config: validated settings, the same for every fold.
        only_fold: train this fold only (one fold per machine); None = every
            unfinished fold, in order.
        verbose: Keras `fit` verbosity (see `train.train`).
        say: receives one line per step (None = silent).

    Returns:
        A `CVSummary`; `result` is None while folds are pending.

    Raises:
        UserError: data without folds, a fold index out of range, fold folders
            from other data or with other settings, a missing member; nothing is
            written over a finished fold.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    say = say or (lambda _: None)
    manifest = load_manifest(data_dir)
    num_folds = _num_folds(manifest, data_dir)
    if only_fold is not None:
        data_lib.check_fold(manifest, only_fold, data_dir)
    data_lib.check_image_size(manifest, config, data_dir)
    fingerprint = manifest.fingerprint
    records = _check_fold_folders(out_dir, num_folds, config, fingerprint)
    trained, skipped = train_folds(
        data_dir, out_dir, config, num_folds, records, only_fold, verbose, say
    )
    records = {k: _fold_record(fold_dir(out_dir, k)) for k in range(num_folds)}
    pending = tuple(k for k, record in records.items() if not _finished(record))
    result = None
    if pending:
        say(
            f"fold(s) {', '.join(map(str, pending))} not finished yet; rerun cv once they "
            "are to aggregate"
        )
    else:
        say(f"aggregating {num_folds} folds into {out_dir}")
        result = aggregate(data_dir, out_dir, config)
    return CVSummary(out_dir, num_folds, tuple(trained), tuple(skipped), pending, result)
