"""The `evaluate` command: calibrate, choose a threshold, report metrics on a split.

`evaluate_run` follows one order, so that nothing is tuned on the data it reports:

1. load the model and its card (`model_card.load_classifier`; a run folder or
   `model.keras`), read the validation split and the evaluated split (labels,
   patients, attributes: `scoring.read_evaluated`) and predict each once (raw
   softmax, tf.data);
2. fit a calibration temperature on validation (temperature scaling, Guo et al.,
   ICML 2017), applied only when a likelihood-ratio test supports it (see
   `calibration`);
3. choose the decision threshold on the calibrated validation probabilities:
   Youden's J or the best F1, unless one is given (`operating_point`);
4. report the evaluated split's metrics at that threshold with 95 % intervals
   (Wilson for proportions, a patient bootstrap for AUCs, F1 and Brier; see
   `metrics`), calibration before and after (ECE, Brier, NLL on validation and
   on the evaluated split), and the subgroup analysis by sex, age band, view and
   source (`subgroups`; `by` chooses the attributes);
5. write metrics.json, predictions.csv, roc.png, pr.png, confusion.png,
   calibration.png, subgroups.png and report.md, then store the threshold, the
   temperature and the calibration facts in the model card (`model_card.write_card`).

External data (a converted folder the model was not trained on: its manifest
fingerprint differs from the card's training data, or `external_data=True`;
rules in `external`) skips steps 2, 3 and the card update: the card's own
threshold and temperature (fitted on the training data's validation split) are
applied, no `val` split is needed, `split` may be `all` (every split together),
and `refit_fraction` adds an own-vs-re-fitted comparison on a held-out part of
the patients (`external.refit_comparison`). The report names both data sets.
A `cv` ensemble keeps the card's out-of-fold fit on its own data, and gets the
same analysis.

Patients: an example's patient comes from the converted folder's `patients.csv`
(`tfrecords.read_patients`; folders and findings layouts store one example per
image, several per patient), else it is the example itself (RSNA). The bootstrap
resamples patients, the re-fit split never puts a patient on both sides, and
patient counts count patients, not images.

One-class data: the validation split must hold both classes (neither a temperature
nor a threshold can be fitted otherwise), else `UserError`. An evaluated split
with one class is still reported: metrics that need both classes are `null` in
metrics.json, and a warning says why.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pneumokeras.config import Config
from pneumokeras.errors import UserError
from pneumokeras.evaluation import (
    calibration,
    external,
    metrics,
    operating_point,
    plots,
    predictions,
    report,
    scoring,
    subgroups,
)
from pneumokeras.evaluation.scoring import SplitData
from pneumokeras.models import model_card
from pneumokeras.records.manifest import Manifest, load_manifest
from pneumokeras.utils.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

DISCLAIMER = report.DISCLAIMER
PLOTS = report.PLOTS
PREDICTIONS = "predictions.csv"


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What `evaluate_run` found and wrote.

    Attributes:
        out_dir: the output folder.
        external: evaluated as a data set the model did not train on.
        split: the evaluated split (`all`: every split of external data).
        n: evaluated images.
        patients: their patients.
        positives: images with pneumonia.
        threshold: the decision threshold applied.
        temperature: the calibration temperature applied.
        roc_auc: ROC-AUC, None when undefined (one class).
        sensitivity: sensitivity at the threshold, None when undefined.
        specificity: specificity at the threshold, None when undefined.
        largest_gap: the subgroup gap with the largest difference
            (`subgroups.largest_gap`), None when none was estimable.
        warnings: every warning of the run (also in the report and the log).
        metrics: the object written to metrics.json.
    """

    out_dir: Path
    external: bool
    split: str
    n: int
    patients: int
    positives: int
    threshold: float
    temperature: float
    roc_auc: float | None
    sensitivity: float | None
    specificity: float | None
    largest_gap: Mapping[str, Any] | None
    warnings: tuple[str, ...]
    metrics: Mapping[str, Any]

    @property
    def report(self) -> Path:
        """report.md."""
        return self.out_dir / "report.md"

    @property
    def predictions(self) -> Path:
        """predictions.csv."""
        return self.out_dir / PREDICTIONS


@dataclasses.dataclass(frozen=True)
class _Scored:
    """One evaluation's numbers before the subgroup analysis and the outputs."""

    test: SplitData
    raw: np.ndarray
    calibrated: np.ndarray
    chosen: dict[str, Any]
    calibration: dict[str, Any]
    fields: dict[str, Any]  # metrics.json keys of this kind of evaluation
    warnings: list[str]
    attributes: list[str]
    not_analysed: dict[str, str]


def _load_classifier(
    model_path: Path, data_dir: Path, manifest: Manifest, config: Config
) -> tuple[model_card.Classifier, Config]:
    """The classifier (card or not) and `config` with the model's image size."""
    classifier = model_card.load_classifier(model_path, require_card=False)
    size = classifier.input_size
    if manifest.image_size != size:
        raise UserError(
            f"{model_path} takes {size} px images but {data_dir} holds "
            f"{manifest.image_size} px images; convert the data with --size {size}"
        )
    if classifier.card_missing:
        logger.warning(
            "warning: %s has no model card (%s); evaluate writes one with the fitted "
            "threshold and temperature",
            classifier.path.parent,
            model_card.CARD_FILE,
        )
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, image_size=size))
    return classifier, config


def _one_class_warning(labels: np.ndarray, what: str) -> str | None:
    present = np.unique(labels)
    if present.size == 2:
        return None
    name = model_card.CLASS_NAMES[int(present[0])]
    return (
        f"{what} holds only {name} examples: ROC-AUC, PR-AUC and the metrics of the "
        "absent class are undefined (null)"
    )


def _split_warnings(split: str, manifest: Manifest, data_dir: Path, own_data: bool) -> list[str]:
    """Warnings about what the evaluated split may hold (own data only)."""
    shared = manifest.patients_in_several_splits
    if not own_data or not shared:
        return []
    return [
        f"{shared} patient(s) of {data_dir} have images in several splits (the data set's "
        "own splits were kept at conversion): the model may have trained on patients of "
        f"the {split} split, and its numbers may be optimistic"
    ]


def _log_all(warnings: list[str]) -> list[str]:
    for text in warnings:
        logger.warning("warning: %s", text)
    return warnings


def _choose_attributes(
    test: SplitData, by: Sequence[str] | None
) -> tuple[list[str], dict[str, str]]:
    """`subgroups.choose_attributes`, or nothing for `by=()` (`--by none`)."""
    if by is not None and not by:
        return [], {}
    return subgroups.choose_attributes(by, test.attributes)


def _score_internal(
    classifier: model_card.Classifier,
    data_dir: Path,
    manifest: Manifest,
    config: Config,
    split: str,
    threshold: float | None,
    by: Sequence[str] | None,
    progress: bool,
) -> tuple[_Scored, calibration.TemperatureFit | None]:
    """Steps 1-4 on the model's own data; returns the fit to store (None: keep the card's)."""
    if "val" not in manifest.splits:
        raise UserError(f"{data_dir} has no split 'val'")
    val = scoring.read_evaluated(data_dir, manifest, "val")
    test = val if split == "val" else scoring.read_evaluated(data_dir, manifest, split)
    if np.unique(val.labels).size < 2:
        raise UserError(
            f"the validation split of {data_dir} holds one class only; the temperature "
            "and the threshold need both (convert with a larger --val)"
        )
    chosen_attributes, not_analysed = _choose_attributes(test, by)
    val_raw = scoring.predict(classifier, data_dir, ["val"], config, progress)
    test_raw = (
        val_raw
        if split == "val"
        else scoring.predict(classifier, data_dir, [split], config, progress)
    )
    kept = operating_point.kept_calibration(classifier.card)
    fit = kept or calibration.fit_calibration(val.labels, val_raw)
    logger.info("temperature scaling: %s", fit.explanation())
    if kept and threshold is None:
        card = classifier.card
        chosen = {
            "value": card.threshold,
            "method": card.threshold_method,
            "chosen_on": card.calibration["fitted_on"],
        }
    else:
        chosen = operating_point.decide_threshold(
            val.labels,
            calibration.calibrate(val_raw, fit.temperature),
            threshold,
            config.evaluate.threshold_method,
        )
    cal = calibration.calibration_record(
        fit,
        val.labels,
        val.patients,
        test.labels,
        test_raw,
        split,
        bins=config.evaluate.calibration_bins,
    )
    if kept:
        cal.update(operating_point.kept_record(classifier.card.calibration))
    warnings = []
    if split == "val":
        warnings.append(
            "the evaluated split is the validation split that chose the threshold and "
            "temperature: the numbers are optimistic"
        )
    warnings += _split_warnings(split, manifest, data_dir, own_data=True)
    scored = _Scored(
        test=test,
        raw=test_raw,
        calibrated=calibration.calibrate(test_raw, fit.temperature),
        chosen=chosen,
        calibration=cal,
        fields={"external": False},
        warnings=warnings,
        attributes=chosen_attributes,
        not_analysed=not_analysed,
    )
    return scored, None if kept else fit


def _score_external(
    classifier: model_card.Classifier,
    data_dir: Path,
    manifest: Manifest,
    config: Config,
    split: str,
    threshold: float | None,
    refit_fraction: float | None,
    provenance: external.Provenance,
    by: Sequence[str] | None,
    progress: bool,
) -> _Scored:
    """Steps 1 and 4 on data the model was not trained on, with the card's calibration.

    The threshold (unless given) and temperature are the card's own; nothing is
    fitted on the evaluated data, except in the optional re-fit comparison
    (`external.refit_comparison`), which reports its numbers beside the model's own.
    """
    card = classifier.card
    operating_point.check_own_calibration(classifier, provenance.reason)
    test = scoring.read_evaluated(data_dir, manifest, split)
    chosen_attributes, not_analysed = _choose_attributes(test, by)
    if refit_fraction is not None:  # fails before predicting when a part lacks a class
        external.refit_split(test.labels, test.patients, refit_fraction, config.train.seed)
    test_raw = scoring.predict(classifier, data_dir, test.splits, config, progress)
    chosen = operating_point.own_threshold(card, threshold)
    cal = external.own_calibration_record(
        card.calibration,
        card.temperature,
        test.labels,
        test_raw,
        split,
        bins=config.evaluate.calibration_bins,
    )
    refit = None
    if refit_fraction is not None:
        method = (
            card.threshold_method
            if card.threshold_method in ("youden", "f1")
            else config.evaluate.threshold_method
        )
        refit = external.refit_comparison(
            test.labels,
            test.patients,
            test_raw,
            card.temperature,
            chosen["value"],
            refit_fraction,
            config.train.seed,
            method,
            config.evaluate.calibration_bins,
        )
    warnings = [w for w in (provenance.warning,) if w]
    warnings += _split_warnings(split, manifest, data_dir, own_data=provenance.trained_here)
    warnings += refit["warnings"] if refit else []
    return _Scored(
        test=test,
        raw=test_raw,
        calibrated=calibration.calibrate(test_raw, card.temperature),
        chosen=chosen,
        calibration=cal,
        fields={"external": True, "refit": refit},
        warnings=warnings,
        attributes=chosen_attributes,
        not_analysed=not_analysed,
    )


def _result(
    model_path: Path,
    data_dir: Path,
    manifest: Manifest,
    card: model_card.ModelCard,
    config: Config,
    split: str,
    provenance: external.Provenance,
    scored: _Scored,
) -> dict[str, Any]:
    """The metrics.json object."""
    test, chosen = scored.test, scored.chosen
    table = metrics.metric_table(
        test.labels,
        scored.calibrated,
        chosen["value"],
        groups=test.patients,
        resamples=config.evaluate.bootstrap,
        seed=config.train.seed,
    )
    analysis = subgroups.analyse(
        test.labels,
        scored.calibrated,
        test.patients,
        chosen["value"],
        test.attributes,
        scored.attributes,
        subgroups.Settings(
            age_bands=config.evaluate.age_bands,
            min_class_count=config.evaluate.min_subgroup_class_count,
            resamples=config.evaluate.bootstrap,
            seed=config.train.seed,
            bins=config.evaluate.calibration_bins,
        ),
        scored.not_analysed,
    )
    one_class = _one_class_warning(test.labels, f"split {split!r}")
    warnings = [
        *scored.warnings,
        *([one_class] if one_class else []),
        *scored.calibration["warnings"],
    ]
    tn, fp, fn, tp = (table[k]["value"] for k in metrics.COUNTS)
    return {
        "model": str(model_path),
        "data_dir": str(data_dir),
        "data_source": manifest.source,
        "split": scored.calibration["split"],
        "n": len(test),
        "positives": int(test.labels.sum()),
        "patients": int(np.unique(test.patients).size),
        "backend": keras.backend.backend(),
        "class_names": list(model_card.CLASS_NAMES),
        "threshold": chosen,
        "temperature": scored.calibration["temperature"],
        "metrics": table,
        "confusion_matrix": {
            "rows": "true [normal, pneumonia]",
            "columns": "predicted [normal, pneumonia]",
            "matrix": [[tn, fp], [fn, tp]],
        },
        "calibration": scored.calibration,
        "bootstrap": {
            "resamples": config.evaluate.bootstrap,
            "seed": config.train.seed,
            "level": metrics.CI_LEVEL,
            "unit": "patient",
            "method": "percentile",
            "metrics": list(metrics.BOOTSTRAPPED),
        },
        **scored.fields,
        "provenance": provenance.reason,
        "trained_here": provenance.trained_here,
        "data_sets": {
            "trained_on": external.training_data(card.data, card.calibration),
            "evaluated_on": external.evaluated_data(
                manifest,
                str(data_dir),
                manifest.fingerprint,
                split,
                list(test.splits),
                test.labels,
                test.patients,
            ),
        },
        "subgroups": analysis,
        "predictions": PREDICTIONS,
        "warnings": _log_all(warnings),
        "disclaimer": DISCLAIMER,
    }


def _write_outputs(out_dir: Path, result: dict[str, Any], scored: _Scored) -> None:
    """metrics.json, predictions.csv, the PNGs and report.md, each written atomically."""
    test, calibrated = scored.test, scored.calibrated
    threshold = result["threshold"]["value"]
    point = {name: entry["value"] for name, entry in result["metrics"].items()}
    figures = {
        "roc.png": plots.roc_figure(test.labels, calibrated, threshold, point),
        "pr.png": plots.pr_figure(test.labels, calibrated, threshold, point),
        "confusion.png": plots.confusion_figure(result["confusion_matrix"]["matrix"], threshold),
        "calibration.png": plots.calibration_figure(
            test.labels, scored.raw, calibrated, result["calibration"]
        ),
    }
    if result["subgroups"]["attributes"]:
        figures[report.SUBGROUP_PLOT] = plots.forest_figure(
            result["subgroups"], result["metrics"]["roc_auc"]["value"]
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
        atomic_write_bytes(out_dir / name, plots.to_png(figure))
    stale = out_dir / report.SUBGROUP_PLOT  # an earlier run's, when nothing was analysed now
    if report.SUBGROUP_PLOT not in figures and stale.is_file():
        stale.unlink()
    atomic_write_text(
        out_dir / PREDICTIONS, predictions.predictions_csv(test, calibrated, threshold)
    )
    atomic_write_json(out_dir / "metrics.json", result)
    atomic_write_text(out_dir / "report.md", report.render_report(result))


def evaluate_run(
    model_path: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    config: Config,
    split: str = "test",
    threshold: float | None = None,
    progress: bool = True,
    external_data: bool | None = None,
    refit_fraction: float | None = None,
    by: Sequence[str] | None = None,
) -> Evaluation:
    """Evaluates a saved model on a converted split; writes metrics, plots and a report.

    See the module docstring for the order of steps. The image size comes from the
    model (`config.data.image_size` is ignored); `config.data.batch_size`, the
    `evaluate` section and `train.seed` (bootstrap and re-fit split seed) are used.

    External data (`external.detect`: the folder's manifest fingerprint differs
    from the training data's in the card, or `external_data=True`): the card's own
    threshold and temperature are used, nothing is fitted on the data (except in
    the re-fit comparison, reported beside them), no `val` split is needed, and
    the card is not rewritten.

    Args:
        model_path: model.keras or its run folder; on internal data the model card
            beside it is updated (threshold, threshold_method, temperature,
            calibration; other fields kept) or created.
        data_dir: converted folder (manifest + shards); with a `val` split unless
            it is external.
        out_dir: output folder for metrics.json, predictions.csv, the PNGs and
            report.md.
        config: validated settings.
        split: split to report (`test`; `val` gives optimistic numbers); on
            external data also `all` (every split together).
        threshold: decision threshold on calibrated probabilities, in [0, 1];
            None chooses it on validation with `config.evaluate.threshold_method`
            (internal) or takes the card's (external).
        progress: show progress bars on stderr.
        external_data: True or False overrides the detection; None detects.
        refit_fraction: external only: share of patients, in (0, 1), that re-fit
            the temperature and threshold for the own-vs-refit comparison.
        by: attributes of the subgroup analysis (`sex`, `age`, `view`, `source`);
            None: every attribute with two or more known values; empty: none.

    Returns:
        An `Evaluation` (headline figures; `metrics` is metrics.json's object).

    Raises:
        UserError: missing/unloadable model or card, size mismatch, unknown or
            empty split, a validation split with one class, a threshold outside
            [0, 1], `all` or a re-fit fraction on internal data, a card without
            a fitted threshold and temperature on external data, a re-fit
            fraction outside (0, 1) or leaving a part with one class, an unknown
            attribute in `by` or one no evaluated image has.
    """
    model_path, data_dir, out_dir = Path(model_path), Path(data_dir), Path(out_dir)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UserError(f"threshold must be in [0, 1]; got {threshold}")
    if refit_fraction is not None and not 0.0 < refit_fraction < 1.0:
        raise UserError(f"--refit-fraction must be in (0, 1); got {refit_fraction}")
    manifest = load_manifest(data_dir)
    classifier, config = _load_classifier(model_path, data_dir, manifest, config)
    provenance = external.detect(
        classifier.card.data, manifest, manifest.fingerprint, external_data
    )
    logger.info("%s data: %s", "external" if provenance.external else "internal", provenance.reason)
    fit = None
    if provenance.external:
        scored = _score_external(
            classifier,
            data_dir,
            manifest,
            config,
            split,
            threshold,
            refit_fraction,
            provenance,
            by,
            progress,
        )
    else:
        external.refuse_external_options(split, refit_fraction, data_dir, provenance)
        scored, fit = _score_internal(
            classifier, data_dir, manifest, config, split, threshold, by, progress
        )
    result = _result(
        model_path,
        data_dir,
        manifest,
        classifier.card,
        config,
        split,
        provenance,
        scored,
    )
    _write_outputs(out_dir, result, scored)
    if fit is not None:  # internal, not a kept out-of-fold fit: the card learns T and threshold
        model_card.write_card(
            classifier.path,
            classifier.card.replace(
                threshold=scored.chosen["value"],
                threshold_method=scored.chosen["method"],
                temperature=fit.temperature,
                calibration=operating_point.card_calibration(scored.calibration, data_dir),
            ),
        )
    table = result["metrics"]
    return Evaluation(
        out_dir=out_dir,
        external=provenance.external,
        split=split,
        n=result["n"],
        patients=result["patients"],
        positives=result["positives"],
        threshold=float(scored.chosen["value"]),
        temperature=float(result["temperature"]),
        roc_auc=table["roc_auc"]["value"],
        sensitivity=table["recall"]["value"],
        specificity=table["specificity"]["value"],
        largest_gap=result["subgroups"]["largest_gap"],
        warnings=tuple(result["warnings"]),
        metrics=result,
    )
