"""The `evaluate` command: calibrate, choose a threshold, report metrics on a split.

`evaluate_run` follows one order, so that nothing is tuned on the data it reports:

1. load the model and its card (`model_card.load_classifier`; a run folder or
   `model.keras`) and predict the validation split and the evaluated split once
   (raw softmax, tf.data);
2. fit a calibration temperature on validation (temperature scaling, Guo et al.,
   ICML 2017), applied only when a likelihood-ratio test supports it (see
   `calibration`);
3. choose the decision threshold on the calibrated validation probabilities:
   Youden's J or the best F1, unless one is given;
4. report the evaluated split's metrics at that threshold with 95 % intervals
   (Wilson for proportions, a patient bootstrap for AUCs, F1 and Brier; see
   `metrics`), calibration before and after (ECE, Brier, NLL on validation and
   on the evaluated split) and subgroups by view (AP/PA);
5. write metrics.json, roc.png, pr.png, confusion.png, calibration.png and
   report.md, then store the threshold, the temperature and the calibration
   facts in the model card (`model_card.write_card`).

External data (a converted folder the model was not trained on: its manifest
fingerprint differs from the card's training data, or `external_data=True`;
rules in `external`) skips steps 2, 3 and the card update: the card's own
threshold and temperature (fitted on the training data's validation split) are
applied, no `val` split is needed, `split` may be `all` (every split together),
and `refit_fraction` adds an own-vs-re-fitted comparison on a held-out part of
the patients (`external.refit_comparison`). The report names both data sets.

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
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pneumokeras.config import Config
from pneumokeras.errors import UserError
from pneumokeras.evaluation import calibration, external, metrics, plots, report
from pneumokeras.models import model_card
from pneumokeras.records import pipeline as data_lib
from pneumokeras.records import tfrecords
from pneumokeras.utils.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

DISCLAIMER = report.DISCLAIMER
PLOTS = report.PLOTS


@dataclasses.dataclass(frozen=True)
class SplitData:
    """Labels and patient information of one split, in `tfrecords.read_split` order."""

    labels: np.ndarray  # (N,) int, 1 = pneumonia
    patients: np.ndarray  # (N,) str: the patient (not the example id; see patients.csv)
    views: np.ndarray  # (N,) str, upper case, '' when unknown


def _read_split(data_dir: Path, split: str, patients: dict[str, str]) -> SplitData:
    """One split's labels, patients and views; `patients`: `tfrecords.read_patients`."""
    records = tfrecords.read_split(data_dir, split)
    if not records:
        raise UserError(f"split {split!r} of {data_dir} is empty")
    return SplitData(
        labels=np.array([r["label"] for r in records]),
        patients=np.array(tfrecords.patient_ids((r["patient_id"] for r in records), patients)),
        views=np.array([r["view"].upper() for r in records]),
    )


def _read_splits(data_dir: Path, split: str) -> tuple[dict[str, Any], SplitData, SplitData]:
    """Reads the manifest, the validation and the evaluated split (internal evaluation)."""
    manifest = tfrecords.load_manifest(data_dir)
    for needed in ("val", split):
        if needed not in manifest["splits"]:
            raise UserError(f"{data_dir} has no split {needed!r}")
    patients = tfrecords.read_patients(data_dir)
    val = _read_split(data_dir, "val", patients)
    test = val if split == "val" else _read_split(data_dir, split, patients)
    if np.unique(val.labels).size < 2:
        raise UserError(
            f"the validation split of {data_dir} holds one class only; the temperature "
            "and the threshold need both (convert with a larger --val)"
        )
    return manifest, val, test


def _load_classifier(
    model_path: Path, data_dir: Path, manifest: dict[str, Any], config: Config
) -> tuple[model_card.Classifier, Config]:
    """The classifier (card or not) and `config` with the model's image size."""
    classifier = model_card.load_classifier(model_path, require_card=False)
    size = classifier.input_size
    if manifest["image_size"] != size:
        raise UserError(
            f"{model_path} takes {size} px images but {data_dir} holds "
            f"{manifest['image_size']} px images; convert the data with --size {size}"
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


def _predict(
    classifier: model_card.Classifier,
    data_dir: Path,
    split: str,
    count: int,
    config: Config,
    progress: bool,
) -> np.ndarray:
    """(N,) float64 raw pneumonia probabilities of a split, in shard order.

    Through `Classifier.forward`, the compiled forward pass every command shares.
    """
    dataset = data_lib.evaluation_dataset(data_dir, split, config)
    bar = keras.utils.Progbar(count) if progress else None
    outputs = [np.zeros(0, dtype=np.float32)]
    for images, _ in dataset.as_numpy_iterator():
        outputs.append(classifier.forward(images)[:, 1])
        if bar is not None:
            bar.add(len(images))
    probs = np.concatenate(outputs)
    if len(probs) != count:
        raise RuntimeError(f"split {split!r}: {len(probs)} predictions for {count} examples")
    if not np.all(np.isfinite(probs)):
        raise RuntimeError(f"the model outputs non-finite probabilities on split {split!r}")
    return probs.astype(np.float64)


def _decide_threshold(
    val: SplitData, val_calibrated: np.ndarray, threshold: float | None, config: Config
) -> dict[str, Any]:
    """`{"value", "method", "chosen_on"}`: the given threshold, or one chosen on validation."""
    if threshold is not None:
        return {"value": threshold, "method": "manual", "chosen_on": "argument"}
    method = config.evaluate.threshold_method
    value = metrics.choose_threshold(val.labels, val_calibrated, method)
    return {"value": value, "method": method, "chosen_on": "val"}


def _kept_calibration(card: model_card.ModelCard) -> calibration.TemperatureFit | None:
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


def _kept_record(facts: dict[str, Any]) -> dict[str, Any]:
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


def _one_class_warning(labels: np.ndarray, what: str) -> str | None:
    present = np.unique(labels)
    if present.size == 2:
        return None
    name = model_card.CLASS_NAMES[int(present[0])]
    return (
        f"{what} holds only {name} examples: ROC-AUC, PR-AUC and the metrics of the "
        "absent class are undefined (null)"
    )


def _metric_table(
    labels: np.ndarray,
    probs: np.ndarray,
    patients: np.ndarray,
    threshold: float,
    config: Config,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    return metrics.metric_table(
        labels,
        probs,
        threshold,
        groups=patients,
        resamples=config.evaluate.bootstrap,
        seed=config.train.seed,
        progress=progress,
    )


def _subgroups(
    test: SplitData, calibrated: np.ndarray, threshold: float, config: Config, progress: bool
) -> tuple[dict[str, Any], list[str]]:
    """Metrics per view position (AP/PA), and one-class warnings of those views."""
    groups, warnings = {}, []
    for view in sorted({v for v in test.views if v}):
        rows = test.views == view
        warning = _one_class_warning(test.labels[rows], f"view {view}")
        if warning:
            warnings.append(warning)
        groups[view] = {
            "n": int(rows.sum()),
            "positives": int(test.labels[rows].sum()),
            "metrics": _metric_table(
                test.labels[rows],
                calibrated[rows],
                test.patients[rows],
                threshold,
                config,
                progress,
            ),
        }
    return groups, warnings


def _warnings(
    split: str,
    test: SplitData,
    view_warnings: list[str | None],
    cal: dict[str, Any],
    fitted_here: bool = True,
) -> list[str]:
    """All warnings of a run (optimistic split, one class, calibration), each logged.

    `fitted_here`: the threshold and temperature were fitted on this data's `val`.
    """
    warnings = []
    if split == "val" and fitted_here:
        warnings.append(
            "the evaluated split is the validation split that chose the threshold and "
            "temperature: the numbers are optimistic"
        )
    warnings.append(_one_class_warning(test.labels, f"split {split!r}"))
    warnings = [w for w in [*warnings, *view_warnings, *cal["warnings"]] if w]
    for text in warnings:
        logger.warning("warning: %s", text)
    return warnings


def _result(
    model_path: Path,
    data_dir: Path,
    manifest: dict[str, Any],
    test: SplitData,
    config: Config,
    chosen: dict[str, Any],
    table: dict[str, dict[str, Any]],
    cal: dict[str, Any],
) -> dict[str, Any]:
    """The metrics.json dict, less subgroups, warnings and disclaimer."""
    tn, fp, fn, tp = (table[k]["value"] for k in metrics.COUNTS)
    return {
        "model": str(model_path),
        "data_dir": str(data_dir),
        "data_source": manifest.get("source", ""),
        "split": cal["split"],
        "n": len(test.labels),
        "positives": int(test.labels.sum()),
        "patients": int(np.unique(test.patients).size),
        "backend": keras.backend.backend(),
        "class_names": list(model_card.CLASS_NAMES),
        "threshold": chosen,
        "temperature": cal["temperature"],
        "metrics": table,
        "confusion_matrix": {
            "rows": "true [normal, pneumonia]",
            "columns": "predicted [normal, pneumonia]",
            "matrix": [[tn, fp], [fn, tp]],
        },
        "calibration": cal,
        "bootstrap": {
            "resamples": config.evaluate.bootstrap,
            "seed": config.train.seed,
            "level": metrics.CI_LEVEL,
            "unit": "patient",
            "method": "percentile",
            "metrics": list(metrics.BOOTSTRAPPED),
        },
    }


def _card_calibration(record: dict[str, Any], data_dir: Path) -> dict[str, Any]:
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


def _write_outputs(
    out_dir: Path,
    result: dict[str, Any],
    test: SplitData,
    raw: np.ndarray,
    calibrated: np.ndarray,
) -> None:
    """metrics.json, the four PNGs and report.md, each written atomically."""
    threshold = result["threshold"]["value"]
    point = {name: entry["value"] for name, entry in result["metrics"].items()}
    figures = {
        "roc.png": plots.roc_figure(test.labels, calibrated, threshold, point),
        "pr.png": plots.pr_figure(test.labels, calibrated, threshold, point),
        "confusion.png": plots.confusion_figure(result["confusion_matrix"]["matrix"], threshold),
        "calibration.png": plots.calibration_figure(
            test.labels, raw, calibrated, result["calibration"]
        ),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
        atomic_write_bytes(out_dir / name, plots.to_png(figure))
    atomic_write_json(out_dir / "metrics.json", result)
    atomic_write_text(out_dir / "report.md", report.render_report(result))


def _read_evaluated(
    data_dir: Path, manifest: dict[str, Any], split: str
) -> tuple[list[str], SplitData]:
    """The splits an external evaluation reads (`all`: every non-empty one) and their data."""
    known = manifest["splits"]
    if split == external.ALL_SPLITS:
        names = [name for name, info in known.items() if int(info["count"]) > 0]
        if not names:
            raise UserError(f"{data_dir} holds no examples")
    elif split not in known:
        raise UserError(f"{data_dir} has no split {split!r} (known: {', '.join(known)}, all)")
    else:
        names = [split]
    patients = tfrecords.read_patients(data_dir)
    parts = [_read_split(data_dir, name, patients) for name in names]
    return names, SplitData(
        *(
            np.concatenate([getattr(p, f.name) for p in parts])
            for f in dataclasses.fields(SplitData)
        )
    )


def _check_own_calibration(classifier: model_card.Classifier, reason: str) -> None:
    """An external evaluation uses the card's threshold and temperature: they must be fitted.

    `reason`: why the data counts as external (said in the error, with `--internal`,
    for a folder of the model's own data converted again).
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


def _evaluate_external(
    classifier: model_card.Classifier,
    paths: tuple[Path, Path, Path],
    manifest: dict[str, Any],
    config: Config,
    split: str,
    threshold: float | None,
    refit_fraction: float | None,
    provenance: external.Provenance,
    progress: bool,
) -> dict[str, Any]:
    """Evaluates on a data set the model was not trained on; the card is left as it is.

    The threshold (unless given) and temperature are the card's own; nothing is
    fitted on the evaluated data, except in the optional re-fit comparison
    (`external.refit_comparison`), which reports its numbers beside the model's own.
    """
    model_path, data_dir, out_dir = paths
    card = classifier.card
    _check_own_calibration(classifier, provenance.reason)
    names, test = _read_evaluated(data_dir, manifest, split)
    if refit_fraction is not None:  # fails before predicting when a part lacks a class
        external.refit_split(test.labels, test.patients, refit_fraction, config.train.seed)
    test_raw = np.concatenate(
        [
            _predict(
                classifier,
                data_dir,
                name,
                int(manifest["splits"][name]["count"]),
                config,
                progress,
            )
            for name in names
        ]
    )
    chosen = (
        {"value": threshold, "method": "manual", "chosen_on": "argument"}
        if threshold is not None
        else {
            "value": card.threshold,
            "method": card.threshold_method,
            "chosen_on": f"model card ({card.calibration.get('fitted_on', 'val')} of the "
            "training data)",
        }
    )
    calibrated = calibration.calibrate(test_raw, card.temperature)
    cal = external.own_calibration_record(
        card.calibration,
        card.temperature,
        test.labels,
        test_raw,
        split,
        bins=config.evaluate.calibration_bins,
    )
    table = _metric_table(test.labels, calibrated, test.patients, chosen["value"], config, progress)
    subgroups, view_warnings = _subgroups(test, calibrated, chosen["value"], config, progress)
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
    extra = [provenance.warning, *(refit["warnings"] if refit else [])]
    warnings = _warnings(split, test, [*view_warnings, *extra], cal, fitted_here=False)
    result = _result(model_path, data_dir, manifest, test, config, chosen, table, cal)
    result.update(
        external=True,
        provenance=provenance.reason,
        data_sets=_data_sets(card, manifest, data_dir, split, names, test),
        refit=refit,
        subgroups={"view": subgroups},
        warnings=warnings,
        disclaimer=DISCLAIMER,
    )
    _write_outputs(out_dir, result, test, test_raw, calibrated)
    return result


def _data_sets(
    card: model_card.ModelCard,
    manifest: dict[str, Any],
    data_dir: Path,
    split: str,
    names: list[str],
    test: SplitData,
) -> dict[str, Any]:
    """metrics.json's `data_sets`: the training data (from the card) and the evaluated data."""
    return {
        "trained_on": external.training_data(card.data, card.calibration),
        "evaluated_on": external.evaluated_data(
            manifest,
            str(data_dir),
            tfrecords.manifest_fingerprint(manifest),
            split,
            names,
            test.labels,
            test.patients,
        ),
    }


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
) -> dict[str, Any]:
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
        out_dir: output folder for metrics.json, the four PNGs and report.md.
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

    Returns:
        The dict written to metrics.json.

    Raises:
        UserError: missing/unloadable model or card, size mismatch, unknown or
            empty split, a validation split with one class, a threshold outside
            [0, 1], `all` or a re-fit fraction on internal data, a card without
            a fitted threshold and temperature on external data, a re-fit
            fraction outside (0, 1) or leaving a part with one class.
    """
    model_path, data_dir, out_dir = Path(model_path), Path(data_dir), Path(out_dir)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UserError(f"threshold must be in [0, 1]; got {threshold}")
    if refit_fraction is not None and not 0.0 < refit_fraction < 1.0:
        raise UserError(f"--refit-fraction must be in (0, 1); got {refit_fraction}")
    manifest = tfrecords.load_manifest(data_dir)
    classifier, config = _load_classifier(model_path, data_dir, manifest, config)
    provenance = external.detect(
        classifier.card.data, manifest, tfrecords.manifest_fingerprint(manifest), external_data
    )
    logger.info("%s data: %s", "external" if provenance.external else "internal", provenance.reason)
    if provenance.external:
        return _evaluate_external(
            classifier,
            (model_path, data_dir, out_dir),
            manifest,
            config,
            split,
            threshold,
            refit_fraction,
            provenance,
            progress,
        )
    if split == external.ALL_SPLITS or refit_fraction is not None:
        option = "--split all" if split == external.ALL_SPLITS else "--refit-fraction"
        raise UserError(
            f"{option} is for a data set the model was not trained on, and {data_dir} is its "
            f"own ({provenance.reason}); pass --external to evaluate it as external data"
        )
    manifest, val, test = _read_splits(data_dir, split)
    val_raw = _predict(classifier, data_dir, "val", len(val.labels), config, progress)
    test_raw = (
        val_raw
        if split == "val"
        else _predict(classifier, data_dir, split, len(test.labels), config, progress)
    )

    kept = _kept_calibration(classifier.card)
    fit = kept or calibration.fit_calibration(val.labels, val_raw)
    logger.info("temperature scaling: %s", fit.explanation())
    chosen = _decide_threshold(
        val, calibration.calibrate(val_raw, fit.temperature), threshold, config
    )
    if kept and threshold is None:
        chosen = {
            "value": classifier.card.threshold,
            "method": classifier.card.threshold_method,
            "chosen_on": classifier.card.calibration["fitted_on"],
        }
    calibrated = calibration.calibrate(test_raw, fit.temperature)
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
        cal.update(_kept_record(classifier.card.calibration))
    table = _metric_table(test.labels, calibrated, test.patients, chosen["value"], config, progress)
    subgroups, view_warnings = _subgroups(test, calibrated, chosen["value"], config, progress)
    warnings = _warnings(split, test, view_warnings, cal)

    result = _result(model_path, data_dir, manifest, test, config, chosen, table, cal)
    result.update(
        external=False,
        provenance=provenance.reason,
        data_sets=_data_sets(classifier.card, manifest, data_dir, split, [split], test),
        subgroups={"view": subgroups},
        warnings=warnings,
        disclaimer=DISCLAIMER,
    )
    _write_outputs(out_dir, result, test, test_raw, calibrated)
    if kept:  # the card's out-of-fold fit stays; `val` was training data of the members
        return result
    model_card.write_card(
        classifier.path,
        classifier.card.replace(
            threshold=chosen["value"],
            threshold_method=chosen["method"],
            temperature=fit.temperature,
            calibration=_card_calibration(cal, data_dir),
        ),
    )
    return result
