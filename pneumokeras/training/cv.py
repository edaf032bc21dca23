"""The `cv` command: K-fold cross-validation, out-of-fold metrics and a deep ensemble.

On data converted with `--folds K`, `cross_validate` trains one ordinary run
folder per fold (`train.train(..., fold=k)`: trained on the other folds, its
best epoch chosen on fold k) and, once every fold is finished, aggregates:

    fold-0/ … fold-<K-1>/   one run folder per fold (model.keras, model.json, run.json, …)
    oof.csv           every train+val example once, predicted by the model that
                      did not train on it: patient, fold, label, probability (raw),
                      calibrated (with the ensemble's temperature)
    cv_metrics.json   per-fold metrics, their mean ± sd, pooled out-of-fold
                      metrics with 95 % intervals, the calibration fit
                      (`CVResult.to_dict`)
    cv_roc.png        the K ROC curves and their mean
    report.md         the above in Markdown (`cv_report`)
    ensemble.keras    one functional model averaging the K members' probabilities
                      (`models.ensemble`)
    ensemble.json     its model card: temperature and threshold fitted on the
                      pooled out-of-fold predictions, `members`

Folds are trained in sequence, or one with `only_fold` (one fold per machine,
the folds sharing `out_dir` on a common file system: each writes only its own
folder). A rerun skips finished folds (run.json status `finished`), resumes an
unfinished one at its last epoch (train's resume), and aggregates when every
fold is finished. A fold another process is training (its run folder's lock) is
left to it: skipped, or refused with `only_fold`. The test split is never read
by any fold (checked).

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
"""

from __future__ import annotations

import dataclasses
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
from pneumokeras.models.ensemble import ENSEMBLE_FILE, build_ensemble, member_name
from pneumokeras.records import pipeline as data_lib
from pneumokeras.records.manifest import Manifest, load_manifest
from pneumokeras.training import train as train_lib
from pneumokeras.training.cv_report import render_report
from pneumokeras.training.out_of_fold import (
    FoldMetrics,
    OutOfFold,
    Spread,
    calibration_facts,
    fold_metrics,
    oof_csv,
    out_of_fold,
)
from pneumokeras.training.run_folder import (
    LOCK_FILE,
    RunInUseError,
    is_finished,
    listed,
    read_run_record,
    setting_differences,
)
from pneumokeras.utils.fileio import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from pneumokeras.utils.locking import LockedError, acquire, release

FOLD_PREFIX = "fold-"
OOF_FILE = "oof.csv"
METRICS_FILE = "cv_metrics.json"
ROC_FILE = "cv_roc.png"
REPORT_FILE = "report.md"


@dataclasses.dataclass(frozen=True)
class FoldResult:
    """One fold's held-out metrics at the pooled threshold, and its training's best epoch."""

    scores: FoldMetrics
    best_epoch: int | None
    val_auc: float | None  # the fold's own validation ROC-AUC at its best epoch


@dataclasses.dataclass(frozen=True)
class CVResult:
    """What `aggregate` computed: the content of cv_metrics.json (`to_dict`).

    Attributes:
        data_dir: the converted folder.
        data_source: its manifest's source ('' when unknown).
        data_fingerprint: its manifest's fingerprint.
        num_folds: K.
        backend: the Keras backend that aggregated.
        examples: train+val examples predicted out of fold (one row each in oof.csv).
        patients: the patients they belong to (= examples unless a patient has
            several images).
        positives: positive examples among them.
        threshold: the pooled out-of-fold threshold (the ensemble's).
        threshold_method: how it was chosen (`youden` or `f1`).
        temperature: the ensemble's temperature.
        calibration: the calibration fit and its reliability summary.
        folds: per fold, in fold order.
        summary: mean ± sd over the folds, per `FOLD_METRICS` name.
        pooled: `metrics.metric_table` of the pooled out-of-fold predictions.
        bootstrap_resamples: resamples behind the pooled intervals.
        seed: their seed.
        members: the ensemble card's member entries.
    """

    data_dir: Path
    data_source: str
    data_fingerprint: str
    num_folds: int
    backend: str
    examples: int
    patients: int
    positives: int
    threshold: float
    threshold_method: str
    temperature: float
    calibration: Mapping[str, Any]
    folds: tuple[FoldResult, ...]
    summary: Mapping[str, Spread]
    pooled: Mapping[str, Mapping[str, Any]]
    bootstrap_resamples: int
    seed: int
    members: tuple[Mapping[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        """cv_metrics.json: JSON-ready, in the file's layout."""
        return {
            "data_dir": str(self.data_dir),
            "data_source": self.data_source,
            "data_fingerprint": self.data_fingerprint,
            "num_folds": self.num_folds,
            "backend": self.backend,
            "oof": {
                "n": self.examples,
                "patients": self.patients,
                "positives": self.positives,
                "file": OOF_FILE,
            },
            "threshold": {
                "value": self.threshold,
                "method": self.threshold_method,
                "chosen_on": "oof",
            },
            "temperature": self.temperature,
            "calibration": dict(self.calibration),
            "folds": [
                {
                    **dataclasses.asdict(fold.scores),
                    "best_epoch": fold.best_epoch,
                    "val_auc": fold.val_auc,
                }
                for fold in self.folds
            ],
            "summary": {name: dataclasses.asdict(spread) for name, spread in self.summary.items()},
            "fold_threshold": "pooled out-of-fold threshold (see cv.py)",
            "pooled": {name: dict(entry) for name, entry in self.pooled.items()},
            "bootstrap": {
                "resamples": self.bootstrap_resamples,
                "seed": self.seed,
                "level": metrics.CI_LEVEL,
                "unit": "patient",
                "method": "percentile",
            },
            "ensemble": {"model": ENSEMBLE_FILE, "members": [dict(m) for m in self.members]},
            "disclaimer": report.DISCLAIMER,
        }


@dataclasses.dataclass(frozen=True)
class CVSummary:
    """What a `cross_validate` call did.

    Attributes:
        out_dir: the cross-validation folder.
        num_folds: K.
        trained: folds trained (or resumed) by this call.
        skipped: folds already finished before this call.
        pending: folds not finished yet (another machine's, with `only_fold`).
        in_use: pending folds another process was training (left to it).
        result: the aggregation when every fold is finished, else None.
    """

    out_dir: Path
    num_folds: int
    trained: tuple[int, ...]
    skipped: tuple[int, ...]
    pending: tuple[int, ...]
    result: CVResult | None
    in_use: tuple[int, ...] = ()


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


def _check_only_fold(only_fold: int, num_folds: int, data_dir: Path) -> None:
    if not 0 <= only_fold < num_folds:
        raise UserError(
            f"--only-fold {only_fold} is out of range: {data_dir} has {num_folds} folds "
            f"(0..{num_folds - 1})"
        )


def _refuse_other_settings(where: Path, changed: list[str]) -> None:
    if changed:
        raise UserError(
            f"{where} was trained with other settings ({listed(changed)}); every fold needs "
            "the same settings: rerun with the folds' settings, or use a new --out"
        )


def _refuse_other_data(where: Path, recorded: str | None, current: str) -> None:
    if recorded != current:
        raise UserError(
            f"{where} was trained on another data set (manifest fingerprint {recorded}, "
            f"the data now has {current}); use a new --out for this data"
        )


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
        record = records[k] = read_run_record(where)
        if record is None:
            continue
        _refuse_other_data(where, record.get("data_fingerprint"), fingerprint)
        if record.get("fold") != k:
            raise UserError(f"{where} holds a run of fold {record.get('fold')}, not fold {k}")
        _refuse_other_settings(
            where, setting_differences(record.get("config", {}), config.to_dict())
        )
    return records


# ---------------------------------------------------------------- training


def train_folds(
    data_dir: Path,
    out_dir: Path,
    config: Config,
    records: Mapping[int, Mapping[str, Any] | None],
    folds: Sequence[int],
    verbose: int | str,
    say: Callable[[str], None],
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> tuple[list[int], list[int], list[int]]:
    """Trains the unfinished `folds`, in order; returns (trained, skipped, in use).

    A fold another process is training (its folder's lock) is left to it; when
    it is the only fold asked for, that is an error.

    Raises:
        UserError: the one fold asked for is in use.
    """
    trained, skipped, in_use = [], [], []
    for k in folds:
        where = fold_dir(out_dir, k)
        if is_finished(records[k]):
            say(f"fold {k}: finished already in {where}, skipped")
            skipped.append(k)
            continue
        resuming = records[k] is not None
        say(
            f"fold {k}/{len(records)}: {'resuming' if resuming else 'training'} "
            f"{config.model.name} in {where} (Keras {keras.backend.backend()})"
        )
        try:
            summary = train_lib.train(
                data_dir, where, config, fold=k, verbose=verbose, callbacks=callbacks
            )
        except RunInUseError as err:
            if len(folds) == 1:
                raise UserError(
                    f"fold {k} ({where}) is being trained by {err.who}; let it finish, or "
                    "train another fold with --only-fold K"
                ) from None
            say(f"fold {k}: being trained by {err.who}, left to it")
            in_use.append(k)
            continue
        say(
            f"fold {k}: best epoch {summary.best_epoch}, held-out ROC-AUC "
            f"{summary.best_val_auc:.3f} ({summary.seconds:.0f} s)"
        )
        trained.append(k)
    return trained, skipped, in_use


# ---------------------------------------------------------------- the ensemble


def _load_members(
    out_dir: Path, num_folds: int, config: Config, fingerprint: str
) -> list[model_card.Classifier]:
    """Every fold's classifier, checked to be one ensemble's member.

    Raises:
        UserError: a missing model or card, or cards saying other data, another
            fold, other settings or another image size.
    """
    members: list[model_card.Classifier] = []
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
        _refuse_other_settings(where, setting_differences(card.config, config.to_dict()))
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
        calibration=calibration_facts(fit, oof),
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
                "name": member_name(k),
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


def aggregate(data_dir: str | Path, out_dir: str | Path, config: Config) -> CVResult:
    """Out-of-fold metrics, the ROC plot, the report and the ensemble of finished folds.

    Returns:
        What cv_metrics.json holds.

    Raises:
        UserError: a fold unfinished or missing, members that do not belong
            together (see `_load_members`), out-of-fold labels of one class, or
            another process aggregating the same folder.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    manifest = load_manifest(data_dir)
    num_folds = _num_folds(manifest, data_dir)
    records = _check_fold_folders(out_dir, num_folds, config, manifest.fingerprint)
    unfinished = [k for k, record in records.items() if not is_finished(record)]
    if unfinished:
        raise UserError(
            f"fold(s) {', '.join(map(str, unfinished))} of {out_dir} are not finished; "
            "train them (cv, or cv --only-fold K) before aggregating"
        )
    lock = out_dir / LOCK_FILE
    try:
        fd = acquire(lock)
    except LockedError as err:
        raise UserError(
            f"{err.who} is aggregating {out_dir} now; its results will be there when it ends"
        ) from None
    try:
        return _aggregate(data_dir, out_dir, config, manifest, num_folds)
    finally:
        release(lock, fd)


def _aggregate(
    data_dir: Path, out_dir: Path, config: Config, manifest: Manifest, num_folds: int
) -> CVResult:
    members = _load_members(out_dir, num_folds, config, manifest.fingerprint)
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
    cal = calibration_facts(fit, oof)
    cal.update(
        calibration.calibration_summary(
            oof.labels, oof.raw, calibrated, config.evaluate.calibration_bins
        )
    )
    card = ensemble_card(members, config, threshold, method, fit, oof, pooled)
    result = CVResult(
        data_dir=data_dir,
        data_source=manifest.source or "",
        data_fingerprint=manifest.fingerprint,
        num_folds=num_folds,
        backend=keras.backend.backend(),
        examples=len(oof.labels),
        patients=oof.patient_count,
        positives=int(oof.labels.sum()),
        threshold=threshold,
        threshold_method=method,
        temperature=fit.temperature,
        calibration=cal,
        folds=tuple(
            FoldResult(scores, m.card.best_epoch, m.card.validation.get("auc"))
            for scores, m in zip(per_fold, members, strict=True)
        ),
        summary=summary,
        pooled=pooled,
        bootstrap_resamples=config.evaluate.bootstrap,
        seed=config.train.seed,
        members=card.members,
    )

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
    atomic_write_json(out_dir / METRICS_FILE, result.to_dict())
    atomic_write_text(out_dir / REPORT_FILE, render_report(result, ROC_FILE))
    return result


def cross_validate(
    data_dir: str | Path,
    out_dir: str | Path,
    config: Config,
    only_fold: int | None = None,
    verbose: int | str = "auto",
    say: Callable[[str], None] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
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
        callbacks: more Keras callbacks for each fold's `fit` (see `train.train`).

    Returns:
        A `CVSummary`; `result` is None while folds are pending.

    Raises:
        UserError: data without folds, a fold index out of range, fold folders
            from other data or with other settings, a missing member, the one
            fold asked for in use by another process; nothing is written over a
            finished fold.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    say = say or (lambda _: None)
    manifest = load_manifest(data_dir)
    num_folds = _num_folds(manifest, data_dir)
    if only_fold is not None:
        _check_only_fold(only_fold, num_folds, data_dir)
    data_lib.check_image_size(manifest, config, data_dir)
    records = _check_fold_folders(out_dir, num_folds, config, manifest.fingerprint)
    folds = list(range(num_folds)) if only_fold is None else [only_fold]
    trained, skipped, in_use = train_folds(
        data_dir, out_dir, config, records, folds, verbose, say, callbacks
    )
    records = {k: read_run_record(fold_dir(out_dir, k)) for k in range(num_folds)}
    pending = tuple(k for k, record in records.items() if not is_finished(record))
    result = None
    if pending:
        say(
            f"fold(s) {', '.join(map(str, pending))} not finished yet; rerun cv once they "
            "are to aggregate"
        )
    else:
        say(f"aggregating {num_folds} folds into {out_dir}")
        result = aggregate(data_dir, out_dir, config)
    busy = tuple(k for k in in_use if k in pending)  # those still at it
    return CVSummary(out_dir, num_folds, tuple(trained), tuple(skipped), pending, result, busy)
