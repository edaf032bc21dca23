"""Tests for pneumokeras.evaluation.external: detection, data set facts, re-fit split, comparison.

Pure functions of dicts and NumPy arrays (no Keras; run once). `evaluate` on
external data end to end is in test_evaluate.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pneumokeras.errors import UserError
from pneumokeras.evaluation import calibration, external, metrics
from pneumokeras.records.manifest import Manifest, SplitInfo

TRAINING = {
    "source": "stage_2_train_images",
    "fingerprint": "aaaa",
    "data_dir": "/d/rsna",
    "splits": {"train": {"count": 80, "positives": 20}, "val": {"count": 10, "positives": 3}},
}
CARD_CAL = {
    "fitted_on": "val",
    "data_dir": "/d/rsna",
    "n": 10,
    "n_patients": 10,
    "n_positive": 3,
    "n_negative": 7,
    "fitted_temperature": 1.7,
    "applied": True,
    "decision": "applied",
    "p_value": 0.01,
    "nll_before": 0.6,
    "nll_after": 0.5,
}


def _manifest(source="", layout="rsna", counts=None):
    """A converted folder's manifest with these facts (nothing else matters here)."""
    splits = {name: SplitInfo(count, 0, ()) for name, count in (counts or {}).items()}
    return Manifest(image_size=64, splits=splits, shards={}, source=source, source_layout=layout)


# ---------------------------------------------------------------- detect


def test_detect_compares_the_manifest_fingerprint_with_the_cards():
    other = _manifest("chest_xray", "folders")
    found = external.detect(TRAINING, other, "bbbb")
    assert found.external
    assert "bbbb" in found.reason
    assert "aaaa" in found.reason
    assert found.warning is None
    same = external.detect(TRAINING, _manifest("stage_2_train_images"), "aaaa")
    assert not same.external
    assert "trained on" in same.reason


def test_detect_without_a_training_record_is_internal_and_flags_override():
    assert not external.detect({}, _manifest("x"), "bbbb").external
    assert external.detect({}, _manifest(), "bbbb", forced=True).external
    forced = external.detect(TRAINING, _manifest(), "bbbb", forced=False)
    assert not forced.external
    assert forced.reason == "set by --internal"
    assert external.detect(TRAINING, _manifest(), "aaaa", forced=True).reason == "set by --external"


def test_detect_knows_the_training_folder_whatever_the_flags_say():
    assert external.detect(TRAINING, _manifest(), "aaaa").trained_here
    forced = external.detect(TRAINING, _manifest(), "aaaa", forced=True)
    assert forced.external
    assert forced.trained_here
    assert forced.warning.startswith("--external was given, but the model was trained on")
    assert not external.detect(TRAINING, _manifest(), "bbbb", forced=True).trained_here
    assert external.detect(TRAINING, _manifest(), "bbbb", forced=True).warning is None


def test_detect_warns_when_another_fingerprint_has_the_training_source_name():
    found = external.detect(TRAINING, _manifest("stage_2_train_images"), "cccc")
    assert found.external
    assert "same source name" in found.warning
    assert "--internal" in found.warning
    # A card without a layout matches any; a recorded other layout does not.
    rsna = _manifest("stage_2_train_images", "rsna")
    assert external.detect(TRAINING, rsna, "cccc").warning
    folders = {**TRAINING, "source_layout": "folders"}
    assert external.detect(folders, rsna, "cccc").warning is None
    # A manifest without a layout is an RSNA conversion from before the other layouts.
    old_rsna = Manifest.from_json(
        {"image_size": 64, "splits": {}, "shards": {}, "source": "stage_2_train_images"}
    )
    assert external.detect({**TRAINING, "source_layout": "rsna"}, old_rsna, "cccc").warning
    assert external.detect(folders, old_rsna, "cccc").warning is None


# ---------------------------------------------------------------- data set facts


def test_training_data_facts_from_the_card_and_unknowns():
    facts = external.training_data({**TRAINING, "source_layout": "rsna"}, CARD_CAL)
    assert (facts["source"], facts["layout"], facts["images"], facts["positives"]) == (
        "stage_2_train_images",
        "rsna",
        90,
        23,
    )
    assert facts["patients"] is None
    assert facts["recorded"]
    assert facts["calibrated_on"] == {
        "data_dir": "/d/rsna",
        "fitted_on": "val",
        "images": 10,
        "patients": 10,
    }
    # A card written since external validation names the layout, images and patients.
    full = external.training_data(
        {**TRAINING, "source_layout": "findings", "images": 90, "patients": 41}, CARD_CAL
    )
    assert (full["layout"], full["images"], full["patients"]) == ("findings", 90, 41)
    old = external.training_data(TRAINING, CARD_CAL)  # older card: layout and patients unknown
    assert (old["layout"], old["images"], old["patients"]) == (None, 90, None)
    empty = external.training_data({}, {})
    assert not empty["recorded"]
    assert empty["images"] is None
    assert empty["calibrated_on"] is None


def test_evaluated_data_counts_images_patients_and_splits():
    manifest = _manifest("chest_xray", "folders", {"train": 3, "test": 2})
    facts = external.evaluated_data(
        manifest,
        "/d/k",
        "ffff",
        "all",
        ["train", "test"],
        np.array([0, 1, 1, 0, 1]),
        np.array(list("aabcd")),
    )
    assert facts["splits"] == {"train": 3, "test": 2}
    assert (facts["images"], facts["positives"], facts["patients"]) == (5, 3, 4)
    assert (facts["source"], facts["layout"], facts["split"]) == ("chest_xray", "folders", "all")


def test_own_calibration_record_keeps_the_cards_fit_and_scores_the_new_data():
    rng = np.random.default_rng(0)
    labels = (rng.random(200) < 0.4).astype(int)
    raw = np.clip(labels * 0.5 + rng.random(200) * 0.5, 0.01, 0.99)
    record = external.own_calibration_record(CARD_CAL, 1.7, labels, raw, "all", bins=10)
    assert record["source"] == "model card"
    assert record["temperature"] == 1.7
    assert (record["val_n"], record["val_positives"], record["val_nll_after"]) == (10, 3, 0.5)
    after = calibration.negative_log_likelihood(labels, calibration.calibrate(raw, 1.7))
    assert record["split_nll_after"] == pytest.approx(after)
    assert record["after"]["nll"] == record["split_nll_after"]
    assert "not refitted" in record["explanation"]
    assert any(
        w.startswith("(training data) the validation split is small") for w in record["warnings"]
    )
    assert external.missing_calibration_facts(CARD_CAL) == []
    assert external.missing_calibration_facts({"n": 3}) == [
        "n_patients",
        "n_positive",
        "n_negative",
        "nll_before",
        "nll_after",
    ]


# ---------------------------------------------------------------- re-fit split


def _patients(n_neg: int, n_pos: int, images: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """`images` images per patient; a positive patient has one positive image."""
    labels, patients = [], []
    for p in range(n_neg + n_pos):
        for i in range(images):
            labels.append(int(p >= n_neg and i == 0))
            patients.append(f"p{p:03d}")
    return np.array(labels), np.array(patients)


def test_refit_split_is_patient_level_stratified_and_seeded():
    labels, patients = _patients(30, 10)
    mask = external.refit_split(labels, patients, 0.3, seed=4)
    for pid in np.unique(patients):  # a patient's images stay together
        assert np.unique(mask[patients == pid]).size == 1
    chosen = np.unique(patients[mask])
    positives = {p for p, y in zip(patients, labels, strict=True) if y}
    assert len(chosen) == 12
    assert len(set(chosen) & positives) == 3
    assert np.array_equal(mask, external.refit_split(labels, patients, 0.3, seed=4))
    assert not np.array_equal(mask, external.refit_split(labels, patients, 0.3, seed=5))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_refit_split_refuses_a_fraction_outside_the_open_interval(fraction):
    labels, patients = _patients(10, 10)
    with pytest.raises(UserError, match=r"must be in \(0, 1\)"):
        external.refit_split(labels, patients, fraction, seed=0)


def test_refit_split_refuses_a_part_without_a_class():
    labels, patients = _patients(10, 1)
    with pytest.raises(UserError, match="held-out part without pneumonia patients"):
        external.refit_split(labels, patients, 0.5, seed=0)
    labels, patients = _patients(10, 4)
    with pytest.raises(UserError, match="re-fitting part without pneumonia patients"):
        external.refit_split(labels, patients, 0.1, seed=0)


# ---------------------------------------------------------------- own vs refit


def test_refit_parts_count_images_and_patients_apart():
    # Three images per patient, one of them positive for a positive patient.
    labels, patients = _patients(12, 8, images=3)
    raw = np.where(labels == 1, 0.8, 0.3)
    out = external.refit_comparison(labels, patients, raw, 1.0, 0.5, fraction=0.5, seed=0)
    part, held = out["refit_part"], out["held_out"]
    assert (part["n"], part["patients"]) == (30, 10)
    assert (part["positives"], part["positive_patients"]) == (4, 4)
    assert (held["n"], held["patients"], held["positive_patients"]) == (30, 10, 4)
    labels[12 * 3 + 1] = 1  # a second positive image of patient 12: one patient still
    out = external.refit_comparison(labels, patients, raw, 1.0, 0.5, fraction=0.5, seed=0)
    both = out["refit_part"]["positives"] + out["held_out"]["positives"]
    assert both == 9
    assert out["refit_part"]["positive_patients"] + out["held_out"]["positive_patients"] == 8


def test_refit_comparison_scores_both_on_the_held_out_part():
    # An overconfident model on the new data: raw log-odds 3x the true ones.
    rng = np.random.default_rng(1)
    labels, patients = _patients(300, 300, images=1)
    truth = rng.uniform(0.05, 0.95, labels.size)
    labels = (rng.random(labels.size) < truth).astype(int)
    raw = calibration.calibrate(truth, 1 / 3)
    out = external.refit_comparison(
        labels, patients, raw, own_temperature=1.0, own_threshold=0.9, fraction=0.5, seed=0, bins=10
    )
    mask = external.refit_split(labels, patients, 0.5, seed=0)
    held = ~mask
    assert out["refit_part"]["n"] + out["held_out"]["n"] == labels.size
    assert out["held_out"]["positives"] == labels[held].sum()
    fit = calibration.fit_calibration(labels[mask], raw[mask])
    assert out["refit"]["temperature"] == fit.temperature
    assert fit.applied
    assert out["refit"]["temperature"] == pytest.approx(3.0, rel=0.25)
    threshold = metrics.choose_threshold(
        labels[mask], calibration.calibrate(raw[mask], fit.temperature)
    )
    assert out["refit"]["threshold"] == threshold
    own = metrics.classification_metrics(labels[held], raw[held], 0.9)
    assert out["own"]["sensitivity"] == pytest.approx(own["recall"])
    assert out["own"]["specificity"] == pytest.approx(own["specificity"])
    assert (out["own"]["temperature"], out["own"]["threshold"]) == (1.0, 0.9)
    # Re-fitting the overconfident model improves its calibration on the held-out part.
    for key in ("ece", "nll", "brier"):
        assert out["refit"][key] < out["own"][key], key
    assert out["refit"]["roc_auc"] == pytest.approx(out["own"]["roc_auc"])  # order kept
    assert out["warnings"] == []
    assert "re-fitting part" in out["fit"]["explanation"]


def test_split_all_and_refit_are_refused_on_the_models_own_data():
    own = external.Provenance(False, "the data is the converted folder ...", trained_here=True)
    unknown = external.Provenance(False, "the model card records no training data, ...")
    forced = external.Provenance(False, "set by --internal")
    external.refuse_external_options("test", None, Path("d"), own)  # nothing to refuse
    with pytest.raises(UserError) as refused:
        external.refuse_external_options("all", None, Path("d"), own)
    assert "--external" not in str(refused.value)
    assert "evaluate --split test" in str(refused.value)
    with pytest.raises(UserError, match="pass --external if the model never saw it"):
        external.refuse_external_options("test", 0.3, Path("d"), unknown)
    told = external.detect({}, _manifest(), "bbbb")  # its reason already names --external
    with pytest.raises(UserError) as refused:
        external.refuse_external_options("all", None, Path("d"), told)
    assert str(refused.value).count("--external") == 1
    with pytest.raises(UserError) as refused:
        external.refuse_external_options("all", None, Path("d"), forced)
    assert "--external" not in str(refused.value)
