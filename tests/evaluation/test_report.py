"""Tests for pneumokeras.evaluation.report: the Markdown report from a metrics.json dict.

The dicts are built with the same functions `evaluate_run` uses; no Keras (runs once).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from pneumokeras.evaluation import report, subgroups
from pneumokeras.evaluation.calibration import calibrate, calibration_record, fit_calibration
from pneumokeras.evaluation.metrics import metric_table
from pneumokeras.records.manifest import Manifest, SplitInfo
from pneumokeras.sources.attributes import Attributes


def _sample(n: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.05, 0.95, n)
    return (rng.random(n) < q).astype(int), calibrate(q, temperature)


def _result(
    val_seed: int = 5, val_temperature: float = 1 / 3, val_n: int = 2000, views: bool = True
) -> dict:
    """A metrics.json dict: validation and test drawn from a model with `val_temperature`."""
    val_labels, val_raw = _sample(val_n, val_temperature, val_seed)
    labels, raw = _sample(300, 1 / 3, seed=1)
    fit = fit_calibration(val_labels, val_raw)
    cal = calibration_record(fit, val_labels, np.arange(val_n), labels, raw, "test")
    probs = calibrate(raw, fit.temperature)
    metrics = metric_table(labels, probs, 0.5, groups=np.arange(300), resamples=30)
    tn, fp, fn, tp = (metrics[k]["value"] for k in ("tn", "fp", "fn", "tp"))
    return {
        "model": "runs/x/model.keras",
        "data_dir": "tfrecords/x",
        "data_source": "synthetic",
        "split": "test",
        "n": 300,
        "positives": int(labels.sum()),
        "patients": 300,
        "backend": "tensorflow",
        "threshold": {"value": 0.5, "method": "youden", "chosen_on": "val"},
        "temperature": fit.temperature,
        "metrics": metrics,
        "confusion_matrix": {"matrix": [[tn, fp], [fn, tp]]},
        "calibration": cal,
        "subgroups": subgroups.analyse(
            labels,
            probs,
            np.arange(300),
            0.5,
            [Attributes(view="AP" if i < 150 else ("PA" if i < 294 else "LL")) for i in range(300)],
            ["view"] if views else [],
            subgroups.Settings(resamples=30),
            {} if views else {"view": "unknown for every image"},
        ),
        "bootstrap": {
            "resamples": 30,
            "seed": 0,
            "level": 0.95,
            "unit": "patient",
            "method": "percentile",
        },
        "warnings": list(cal["warnings"]),
    }


def _row(text: str, label: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_report_embeds_plots_disclaimer_and_every_metric():
    result = _result()
    text = report.render_report(result)
    assert "not for diagnosis" in text
    assert text.count(report.DISCLAIMER) == 2
    for name in report.PLOTS:
        assert f"]({name})" in text
    for label in report.METRIC_LABELS.values():
        assert f"| {label} |" in text
    assert "tfrecords/x" in text
    assert "split **test**: 300 images of 300 patients" in text
    assert "### View position" in text
    assert "![Subgroup ROC-AUC](subgroups.png)" in text
    assert "maximising Youden's J on the validation split" in text


def test_report_says_which_interval_each_metric_has():
    result = _result()
    text = report.render_report(result)
    precision = _row(text, "Precision (PPV)")
    low, high = result["metrics"]["precision"]["ci95"]
    assert precision == [
        "Precision (PPV)",
        f"{result['metrics']['precision']['value']:.3f}",
        f"{low:.3f} – {high:.3f}",
        "Wilson score",
    ]
    assert _row(text, "ROC-AUC")[3] == "patient bootstrap"
    assert _row(text, "Brier score")[3] == "patient bootstrap"
    fp = _row(text, "False positives")
    assert fp[2:] == ["—", "none (a count)"]  # no "0 (0 – 0)"
    assert "Wilson score intervals for the proportions" in text
    assert "percentile bootstrap over patients (30 resamples, seed 0)" in text


def test_report_of_undefined_metrics_says_n_a():
    result = _result()
    result["metrics"]["roc_auc"].update(value=None, ci95=[None, None], resamples=0)
    assert _row(report.render_report(result), "ROC-AUC")[1:3] == ["n/a", "n/a"]


def test_report_of_a_helpful_calibration():
    result = _result()
    cal = result["calibration"]
    assert cal["applied"]
    assert cal["split_nll_after"] < cal["split_nll_before"]
    text = report.render_report(result)
    assert "## Metrics (calibrated probabilities)" in text
    assert "on the calibrated pneumonia probability" in text
    assert "**Warnings**" not in text
    assert (
        f"| validation split | {cal['val_nll_before']:.4f} | {cal['val_nll_after']:.4f} |" in text
    )
    assert f"| test split | {cal['split_nll_before']:.4f} | {cal['split_nll_after']:.4f} |" in text
    assert cal["explanation"] in text


def test_report_never_calls_a_harmful_calibration_calibrated():
    # 30 validation images from a calibrated model: T = 0.32 passes the test by
    # chance, and sharpening makes the test split of an overconfident model worse.
    result = _result(val_seed=11, val_temperature=1.0, val_n=30)
    cal = result["calibration"]
    assert cal["applied"]
    assert cal["split_nll_after"] > cal["split_nll_before"]
    text = report.render_report(result)
    # Every "calibrated" is "not better calibrated"; "uncalibrated" is a different word.
    for match in re.finditer(r"\bcalibrated\b", text):
        assert text[max(0, match.start() - 11) : match.start()] == "not better ", text
    assert "**Calibration made the test split worse**" in text
    assert (
        "## Metrics (temperature-scaled probabilities, T = 0.316; calibration made this "
        "split's NLL worse)" in text
    )
    assert "on the temperature-scaled pneumonia probability" in text
    assert "**Warnings**" in text
    assert "- calibration made the test split worse" in text
    assert "- the validation split is small (30 patients" in text


def test_report_of_a_temperature_kept_at_one():
    result = _result(val_seed=0, val_temperature=1.0, val_n=30)
    cal = result["calibration"]
    assert not cal["applied"]
    assert cal["temperature"] == 1.0
    text = report.render_report(result)
    assert "## Metrics (uncalibrated probabilities; temperature kept at 1)" in text
    assert "on the uncalibrated pneumonia probability" in text
    assert "kept at T = 1" in text
    assert "not significantly" in text
    assert re.search(r"\bcalibrated\b", text) is None
    assert cal["split_nll_after"] == pytest.approx(cal["split_nll_before"])


def test_report_without_views():
    text = report.render_report(_result(views=False))
    assert "No attribute has two or more known subgroups" in text
    assert "Not analysed: view: unknown for every image." in text
    assert "subgroups.png" not in text


def test_report_subgroup_table_gaps_and_small_subgroups():
    result = _result()
    text = report.render_report(result)
    analysis = result["subgroups"]["by"]["view"]
    ap = _row(text, "AP")
    auc = analysis["groups"]["AP"]["metrics"]["roc_auc"]
    low, high = auc["ci95"]
    assert ap[:4] == ["AP", "150", "150", str(analysis["groups"]["AP"]["positives"])]
    assert ap[4] == f"{auc['value']:.3f} ({low:.3f} – {high:.3f})"
    # Six lateral films: counts and the reason, no number.
    ll = _row(text, "LL")
    assert ll[:3] == ["LL", "6", "6"]
    assert ll[4].startswith("*too small") or ll[4].startswith("*no ")
    assert all(cell == "" for cell in ll[5:])
    gap = analysis["gaps"]["roc_auc"]
    line = next(x for x in text.splitlines() if x.startswith("- ROC-AUC: "))
    assert f"{gap['high']} − {gap['low']} = {gap['difference']:.3f}" in line
    assert ("excludes 0" in line) == gap["excludes_zero"]
    assert "treat patients as independent" in text
    words = report.gap_words({"attribute": "view", "metric": "sensitivity", **gap})
    assert words.startswith(f"sensitivity by view, {gap['high']} − {gap['low']} = ")


def test_report_without_a_subgroup_analysis():
    result = _result()
    result["subgroups"] = subgroups.analyse(
        np.array([0, 1]),
        np.array([0.2, 0.8]),
        np.arange(2),
        0.5,
        [],
        [],
        subgroups.Settings(resamples=10),
    )
    assert "No subgroup analysis was asked for (`--by none`)." in report.render_report(result)


def test_report_marks_a_zero_width_bootstrap_interval():
    result = _result()
    text = report.render_report(result)
    assert "¹" not in text
    result["metrics"]["f1"].update(value=0.0, ci95=[0.0, 0.0])
    text = report.render_report(result)
    assert _row(text, "F1")[2] == "0.000 – 0.000 ¹"
    assert "¹ zero width: every bootstrap resample gave the same value" in text


# ---------------------------------------------------------------- data sets, external data


def _external_result(refit: bool = True) -> dict:
    """`_result()` as an external evaluation: the card's own calibration, both data sets."""
    from pneumokeras.evaluation import external

    result = _result()
    labels, raw = _sample(300, 1 / 3, seed=1)
    patients = np.arange(300).astype(str)
    card_cal = {
        "fitted_on": "val",
        "data_dir": "/data/rsna",
        "n": 2000,
        "n_patients": 2000,
        "n_positive": 900,
        "n_negative": 1100,
        "fitted_temperature": 2.9,
        "applied": True,
        "decision": "applied",
        "p_value": 1e-9,
        "nll_before": 0.61,
        "nll_after": 0.55,
    }
    card_data = {
        "source": "stage_2_train_images",
        "data_dir": "/data/rsna",
        "fingerprint": "aaaa",
        "splits": {
            "train": {"count": 1600, "positives": 700},
            "val": {"count": 2000, "positives": 900},
        },
    }
    manifest = Manifest(
        image_size=64,
        splits={"train": SplitInfo(200, 0, ()), "test": SplitInfo(100, 0, ())},
        shards={},
        source="chest_xray",
        source_layout="folders",
    )
    result["calibration"] = external.own_calibration_record(card_cal, 2.9, labels, raw, "all")
    result.update(
        split="all",
        external=True,
        provenance="its manifest fingerprint bbbb differs from the training data's aaaa",
        data_sets={
            "trained_on": external.training_data(card_data, card_cal),
            "evaluated_on": external.evaluated_data(
                manifest, "tfrecords/kermany", "bbbb", "all", ["train", "test"], labels, patients
            ),
        },
        refit=external.refit_comparison(labels, patients, raw, 2.9, 0.5, 0.3, seed=0)
        if refit
        else None,
    )
    return result


def test_report_names_both_data_sets_and_where_calibration_comes_from():
    result = _external_result()
    text = report.render_report(result)
    assert (
        "- **trained on**: source **stage_2_train_images** (layout not recorded), "
        "`/data/rsna`: 3600 images (train 1600, val 2000), 1600 with pneumonia, "
        "patients: not recorded; manifest fingerprint aaaa" in text
    )
    assert (
        "- **tested on**: source **chest_xray** (layout folders), `tfrecords/kermany`, "
        "split **all** (train 200, test 100): 300 images of 300 patients" in text
    )
    assert (
        "**external validation**: the model did not train on this data (its manifest "
        "fingerprint bbbb differs" in text
    )
    assert (
        "**threshold and temperature come from the training data set**: the model card's "
        "own, fitted on the val split of `/data/rsna` (2000 patients); nothing was fitted on "
        "the tested data except in the re-fit comparison below." in text
    )
    assert (
        "the model's own from its card, maximising Youden's J on the validation split of "
        "its training data" in text
    )
    assert "Temperature from the model card — the model's own temperature T = 2.900" in text
    cal = result["calibration"]
    assert (
        f"| training data's validation split | {cal['val_nll_before']:.4f} | "
        f"{cal['val_nll_after']:.4f} |" in text
    )


def test_report_of_own_vs_refit_calibration():
    result = _external_result()
    refit = result["refit"]
    text = report.render_report(result)
    assert "## Own vs re-fitted threshold and temperature" in text
    text = text[text.index("## Own vs re-fitted") :]  # its rows share labels with the metrics
    part, held = refit["refit_part"], refit["held_out"]
    assert (
        f"class-stratified 30% of the patients ({part['n']} images ({part['positives']} "
        f"positive) of {part['patients']} patients ({part['positive_patients']} with pneumonia))"
        in text
    )
    assert (
        f"scored on the other {held['n']} images ({held['positives']} positive) of "
        f"{held['patients']} patients ({held['positive_patients']} with pneumonia)." in text
    )
    for key, label in report.REFIT_ROWS.items():
        row = _row(text, label)
        assert len(row) == 3, key
    assert _row(text, "Temperature T") == [
        "Temperature T",
        "2.9000",
        f"{refit['refit']['temperature']:.4f}",
    ]
    assert _row(text, "ECE")[1:] == [f"{refit['own']['ece']:.4f}", f"{refit['refit']['ece']:.4f}"]
    without = report.render_report(_external_result(refit=False))
    assert "Own vs re-fitted" not in without
    assert "nothing was fitted on the tested data." in without


def test_report_of_an_internal_evaluation_says_it_is_the_models_own_data():
    result = _result()
    assert "## Data sets" not in report.render_report(result)  # an older metrics.json
    external_result = _external_result(refit=False)
    result.update(
        external=False,
        provenance="the data is the converted folder the model was "
        "trained on (manifest fingerprint aaaa)",
        data_sets=external_result["data_sets"],
    )
    text = report.render_report(result)
    assert "## Data sets" in text
    assert (
        "**internal evaluation**: the data is the converted folder the model was trained on" in text
    )
    assert "threshold and temperature are fitted on this data's validation split." in text
    assert "come from the training data set" not in text
