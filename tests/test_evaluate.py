"""Tests for pneumokeras.evaluate: metrics, bootstrap, threshold, calibration, the run.

Metric functions are checked on hand-computed toy cases and against scikit-learn;
`evaluate_run` end to end on a tiny synthetic data set (synth → convert at 32 px)
with an untrained stand-in model (see `contract_model`), and on hand-written shards
for one-class cases.
Runs under KERAS_BACKEND=tensorflow and jax.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest
from model_fixtures import contract_model
from PIL import Image
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from pneumokeras import evaluate, tfrecords
from pneumokeras.config import from_dict
from pneumokeras.convert import convert, encode_png
from pneumokeras.errors import UserError
from pneumokeras.synth import generate

SIZE = 32
# Few resamples keep the end-to-end runs fast; the bootstrap itself is tested below.
FAST = from_dict({"evaluate": {"bootstrap": 10}, "data": {"batch_size": 8}})


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """40 synthetic patients converted at 32 px: 20 train, 10 val, 10 test (2+2 positive)."""
    root = tmp_path_factory.mktemp("data")
    generate(root / "raw", patients=40, size=64, seed=1, workers=0, progress=False)
    convert(
        root / "raw" / "stage_2_train_images",
        root / "raw" / "stage_2_train_labels.csv",
        root / "tf",
        size=SIZE,
        val_fraction=0.25,
        test_fraction=0.25,
        workers=0,
        progress=False,
    )
    return root / "tf"


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """An untrained contract model at 32 px saved as model.keras."""
    path = tmp_path_factory.mktemp("model") / "model.keras"
    contract_model(SIZE).save(path)
    return path


@pytest.fixture
def model_path(saved_model: Path, tmp_path: Path) -> Path:
    """A fresh copy of the model with its own model.json (tests update it)."""
    path = tmp_path / "run" / "model.keras"
    path.parent.mkdir()
    path.write_bytes(saved_model.read_bytes())
    meta = {
        "class_names": ["normal", "pneumonia"],
        "input_size": SIZE,
        "threshold": 0.5,
        "temperature": 1.0,
        "backend": "tensorflow",
        "validation": {"auc": 0.5},
    }
    (path.parent / "model.json").write_text(json.dumps(meta))
    return path


def _write_dataset(out: Path, labels: dict[str, list[int]], size: int = SIZE) -> Path:
    """Hand-written shards + manifest: one shard per split, random pixels, view AP."""
    rng = np.random.default_rng(0)
    splits, shards = {}, {}
    for split, split_labels in labels.items():
        name = tfrecords.shard_name(split, 0, 1)
        examples = [
            tfrecords.serialize_example(
                encode_png(rng.integers(0, 256, (size, size), dtype=np.uint8)),
                f"{split}-{i}",
                label,
                view="AP",
            )
            for i, label in enumerate(split_labels)
        ]
        count = tfrecords.write_shard(out / name, examples)
        splits[split] = {"count": count, "positives": sum(split_labels), "files": [name]}
        shards[name] = {"count": count, "bytes": (out / name).stat().st_size}
    manifest = {"image_size": size, "splits": splits, "shards": shards, "source": "hand"}
    (out / tfrecords.MANIFEST).write_text(json.dumps(manifest))
    return out


# ---------------------------------------------------------------- calibrate


def test_calibrate_identity_at_t1_and_softens_above():
    p = np.array([0.01, 0.2, 0.5, 0.7, 0.99])
    np.testing.assert_allclose(evaluate.calibrate(p, 1.0), p, atol=1e-12)
    soft = evaluate.calibrate(p, 2.0)
    assert np.all(np.abs(soft - 0.5) <= np.abs(p - 0.5))
    assert np.all(np.diff(soft) > 0)  # order (and so AUC) is kept
    # Two-class softmax of log-probabilities / T is the sigmoid of logit / T.
    logit = np.log(p / (1 - p))
    np.testing.assert_allclose(soft, 1 / (1 + np.exp(-logit / 2.0)), rtol=1e-12)
    # Saturated float32 outputs stay finite and move when T changes.
    assert 0.5 < evaluate.calibrate(np.float32(1.0), 2.0) < 1.0


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.nan, math.inf])
def test_calibrate_rejects_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        evaluate.calibrate([0.5], temperature)


# ---------------------------------------------------------------- metrics

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
PROBS = np.array([0.1, 0.3, 0.6, 0.2, 0.8, 0.4, 0.9, 0.7])


def test_metrics_hand_computed():
    m = evaluate.classification_metrics(LABELS, PROBS, threshold=0.5)
    # Negatives 0.1 0.3 0.6 0.2 → one false positive; positives 0.8 0.4 0.9 0.7 → one miss.
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (3, 1, 1, 3)
    for name in ("accuracy", "precision", "recall", "specificity", "f1"):
        assert m[name] == pytest.approx(0.75)
    # 15 of the 16 (positive, negative) pairs are ranked right (0.4 < 0.6).
    assert m["roc_auc"] == pytest.approx(15 / 16)
    # Ranked: P P P N P ...; AP = 0.25 * (1 + 1 + 1 + 4/5).
    assert m["pr_auc"] == pytest.approx(0.95)
    # Squared errors: negatives .01 .09 .36 .04, positives .04 .36 .01 .09.
    assert m["brier"] == pytest.approx(1.0 / 8)


def test_threshold_is_inclusive():
    m = evaluate.classification_metrics(LABELS, PROBS, threshold=0.4)
    assert m["tp"] == 4 and m["fp"] == 1  # 0.4 counts as pneumonia


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    probs = np.clip(0.3 * labels + rng.random(300) * 0.7, 0, 1)
    predicted = (probs >= 0.45).astype(int)
    m = evaluate.classification_metrics(labels, probs, 0.45)
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert m["precision"] == pytest.approx(precision_score(labels, predicted))
    assert m["recall"] == pytest.approx(recall_score(labels, predicted))
    assert m["specificity"] == pytest.approx(recall_score(labels, predicted, pos_label=0))
    assert m["f1"] == pytest.approx(f1_score(labels, predicted))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(labels, probs))
    assert m["pr_auc"] == pytest.approx(average_precision_score(labels, probs))
    assert m["brier"] == pytest.approx(brier_score_loss(labels, probs))
    cm = confusion_matrix(labels, predicted).ravel()
    assert [m[k] for k in ("tn", "fp", "fn", "tp")] == cm.tolist()


def test_metrics_with_one_class_are_nan_where_undefined():
    m = evaluate.classification_metrics(np.zeros(4, int), np.array([0.1, 0.2, 0.7, 0.3]), 0.5)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(0.75)
    assert m["precision"] == 0.0  # one predicted positive, wrong
    for name in ("recall", "roc_auc", "pr_auc"):
        assert math.isnan(m[name])


# ---------------------------------------------------------------- bootstrap


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    return labels, np.clip(0.35 * labels + 0.65 * rng.random(n), 0, 1)


def _auc(labels, probs):
    return (
        {"roc_auc": roc_auc_score(labels, probs)}
        if len(set(labels)) == 2
        else {"roc_auc": math.nan}
    )


def test_bootstrap_interval_contains_the_point_estimate():
    labels, probs = _toy(60, seed=0)
    point = evaluate.classification_metrics(labels, probs, 0.5)
    cis = evaluate.bootstrap_ci(
        lambda y, p: evaluate.classification_metrics(y, p, 0.5),
        labels,
        probs,
        resamples=50,
        seed=0,
    )
    assert set(cis) == set(point)
    for name, value in point.items():
        assert cis[name].low <= value <= cis[name].high, name


def test_bootstrap_interval_narrows_with_more_data():
    widths = []
    for n in (60, 1200):
        labels, probs = _toy(n, seed=n)
        ci = evaluate.bootstrap_ci(_auc, labels, probs, resamples=150, seed=0)["roc_auc"]
        assert ci.low <= roc_auc_score(labels, probs) <= ci.high
        widths.append(ci.high - ci.low)
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(n): 20× the data, ~4.5× narrower


def test_bootstrap_is_seeded():
    labels, probs = _toy(80, seed=1)
    first = evaluate.bootstrap_ci(_auc, labels, probs, resamples=50, seed=7)
    assert evaluate.bootstrap_ci(_auc, labels, probs, resamples=50, seed=7) == first
    assert evaluate.bootstrap_ci(_auc, labels, probs, resamples=50, seed=8) != first


def test_bootstrap_resamples_patients_not_rows():
    # Every patient has two identical rows: resampling patients gives exactly the
    # same statistics as resampling the deduplicated rows with the same draws.
    labels, probs = _toy(50, seed=2)
    doubled = evaluate.bootstrap_ci(
        _auc,
        np.repeat(labels, 2),
        np.repeat(probs, 2),
        groups=np.repeat(np.arange(50), 2),
        resamples=100,
        seed=3,
    )
    single = evaluate.bootstrap_ci(_auc, labels, probs, resamples=100, seed=3)
    assert doubled["roc_auc"].low == pytest.approx(single["roc_auc"].low)
    assert doubled["roc_auc"].high == pytest.approx(single["roc_auc"].high)


def test_bootstrap_skips_one_class_resamples_for_auc():
    labels = np.array([0] * 9 + [1])
    probs = np.linspace(0.05, 0.95, 10)
    cis = evaluate.bootstrap_ci(_auc, labels, probs, resamples=200, seed=0)
    # P(no positive in a resample) = 0.9^10 ≈ 35 %: those resamples are left out.
    assert 90 < cis["roc_auc"].resamples < 170
    assert cis["roc_auc"].low <= cis["roc_auc"].high


# ---------------------------------------------------------------- threshold


def test_youden_picks_the_known_best_cut():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    probs = np.array([0.1, 0.2, 0.3, 0.65, 0.5, 0.6, 0.8, 0.9])
    # At 0.5: sensitivity 1, specificity 0.75 → J 0.75, the unique maximum.
    assert evaluate.choose_threshold(labels, probs, "youden") == pytest.approx(0.5)


def test_f1_threshold_maximises_f1():
    labels, probs = _toy(200, seed=4)
    chosen = evaluate.choose_threshold(labels, probs, "f1")
    best = max(f1_score(labels, (probs >= t).astype(int)) for t in np.unique(probs))
    assert f1_score(labels, (probs >= chosen).astype(int)) == pytest.approx(best)


def test_choose_threshold_rejects_unknown_method():
    with pytest.raises(ValueError, match="method"):
        evaluate.choose_threshold(LABELS, PROBS, "median")


# ---------------------------------------------------------------- calibration


def _overconfident(n: int = 5000, sharpen: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """True risks q, labels ~ Bernoulli(q), reported p = q sharpened by T = 1/3."""
    rng = np.random.default_rng(5)
    q = rng.uniform(0.05, 0.95, n)
    labels = (rng.random(n) < q).astype(int)
    return labels, evaluate.calibrate(q, 1.0 / sharpen)


def test_temperature_scaling_fixes_an_overconfident_model():
    labels, probs = _overconfident()
    temperature = evaluate.fit_temperature(labels, probs)
    assert temperature == pytest.approx(3.0, rel=0.15)
    calibrated = evaluate.calibrate(probs, temperature)
    assert log_loss(labels, calibrated) < log_loss(labels, probs)
    assert evaluate.expected_calibration_error(
        labels, calibrated
    ) < evaluate.expected_calibration_error(labels, probs)


def test_ece_of_a_perfectly_calibrated_model_is_near_zero():
    rng = np.random.default_rng(6)
    probs = rng.random(50_000)
    labels = (rng.random(50_000) < probs).astype(int)
    assert evaluate.expected_calibration_error(labels, probs, bins=10) < 0.01
    assert evaluate.fit_temperature(labels, probs) == pytest.approx(1.0, abs=0.05)


def test_ece_hand_computed():
    # One bin holds everything: mean probability 0.8, observed rate 0.5.
    labels = np.array([0, 1, 0, 1])
    assert evaluate.expected_calibration_error(labels, np.full(4, 0.8)) == pytest.approx(0.3)
    # Two bins of 2: |0 - 0.1| and |1 - 0.9| → 0.1.
    labels, probs = np.array([0, 0, 1, 1]), np.array([0.1, 0.1, 0.9, 0.9])
    assert evaluate.expected_calibration_error(labels, probs) == pytest.approx(0.1)


def test_reliability_matches_scikit_learn_calibration_curve():
    labels, probs = _toy(500, seed=8)
    probs[:5] = [0.0, 0.1, 0.2, 1.0, 0.5]  # exact bin edges go where sklearn puts them
    rel = evaluate.reliability(labels, probs, bins=10)
    prob_true, prob_pred = calibration_curve(labels, probs, n_bins=10, strategy="uniform")
    filled = rel.counts > 0
    np.testing.assert_allclose(rel.fraction_positive[filled], prob_true)
    np.testing.assert_allclose(rel.mean_predicted[filled], prob_pred)
    assert rel.counts.sum() == 500


# ---------------------------------------------------------------- evaluate_run


def test_evaluate_run_writes_metrics_plots_report_and_model_json(dataset, model_path, tmp_path):
    out = tmp_path / "eval"
    result = evaluate.evaluate_run(model_path, dataset, out, FAST, progress=False)
    for name in ("metrics.json", "report.md", *evaluate.PLOTS):
        assert (out / name).stat().st_size > 0, name
    for name in evaluate.PLOTS:
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    assert not list(out.glob(".*tmp*"))  # atomic writes left no temporary files
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(result))

    assert result["split"] == "test" and result["n"] == 10 and result["positives"] == 2
    # Same numbers as the model on the shards' own images, in read_split order.
    records = tfrecords.read_split(dataset, "test")
    images = np.stack([np.array(Image.open(io.BytesIO(r["png"]))) for r in records])
    raw = keras.saving.load_model(model_path).predict(
        images[..., None].astype("float32"), verbose=0
    )[:, 1]
    expected = evaluate.classification_metrics(
        np.array([r["label"] for r in records]),
        evaluate.calibrate(raw, result["temperature"]),
        result["threshold"]["value"],
    )
    assert result["metrics"]["roc_auc"]["value"] == pytest.approx(expected["roc_auc"])
    assert result["metrics"]["brier"]["value"] == pytest.approx(expected["brier"], rel=1e-4)
    for name, _ in evaluate.METRICS:
        low, high = result["metrics"][name]["ci95"]
        assert low is None or low <= high, name
    matrix = result["confusion_matrix"]["matrix"]
    assert sum(map(sum, matrix)) == 10
    assert set(result["subgroups"]["view"]) <= {"AP", "PA"} and result["subgroups"]["view"]
    cal = result["calibration"]
    assert cal["temperature"] > 0 and cal["val_nll_after"] <= cal["val_nll_before"] + 1e-9
    assert sum(cal["after"]["bins"]["counts"]) == 10

    meta = json.loads(model_path.with_name("model.json").read_text())
    assert meta["threshold"] == result["threshold"]["value"]
    assert meta["temperature"] == result["temperature"]
    assert meta["threshold_method"] == "youden"
    assert meta["validation"] == {"auc": 0.5} and meta["backend"] == "tensorflow"  # kept

    report = (out / "report.md").read_text()
    assert "not for diagnosis" in report
    for name in evaluate.PLOTS:
        assert f"]({name})" in report
    assert str(dataset) in report and "ROC-AUC" in report and "### AP" in report


def test_evaluate_run_on_a_one_class_split_with_a_given_threshold(model_path, tmp_path, caplog):
    data = _write_dataset(tmp_path / "d", {"val": [0, 1, 0, 1], "test": [0, 0, 0]})
    result = evaluate.evaluate_run(
        model_path, data, tmp_path / "out", FAST, threshold=0.3, progress=False
    )
    # What can be computed is reported; what needs both classes is null, with a warning.
    metrics = result["metrics"]
    assert metrics["roc_auc"]["value"] is None and metrics["pr_auc"]["value"] is None
    assert metrics["recall"]["value"] is None
    assert metrics["accuracy"]["value"] is not None and metrics["specificity"]["value"] is not None
    assert any("only normal" in w for w in result["warnings"])
    assert "only normal" in caplog.text
    assert "n/a" in (tmp_path / "out" / "report.md").read_text()
    # The given threshold is used and stored.
    assert result["threshold"] == {"value": 0.3, "method": "manual", "chosen_on": "argument"}
    meta = json.loads(model_path.with_name("model.json").read_text())
    assert meta["threshold"] == 0.3 and meta["threshold_method"] == "manual"
    assert meta["temperature"] == result["temperature"]


def test_evaluate_run_needs_both_classes_in_validation(model_path, tmp_path):
    data = _write_dataset(tmp_path / "d", {"val": [0, 0, 0], "test": [0, 1]})
    with pytest.raises(UserError, match="validation split .* one class"):
        evaluate.evaluate_run(model_path, data, tmp_path / "out", FAST, progress=False)
    assert not (tmp_path / "out").exists()


def test_evaluate_run_missing_or_broken_model(tmp_path):
    data = _write_dataset(tmp_path / "d", {"val": [0, 1], "test": [0, 1]})
    with pytest.raises(UserError, match="does not exist"):
        evaluate.evaluate_run(tmp_path / "none.keras", data, tmp_path / "o", FAST)
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot load model"):
        evaluate.evaluate_run(bad, data, tmp_path / "o", FAST)


def test_evaluate_run_size_mismatch(model_path, tmp_path):
    data = _write_dataset(tmp_path / "d", {"val": [0, 1], "test": [0, 1]}, size=48)
    with pytest.raises(UserError, match="takes 32 px images but .* 48 px"):
        evaluate.evaluate_run(model_path, data, tmp_path / "o", FAST)


def test_evaluate_run_bad_split_and_threshold(model_path, tmp_path):
    data = _write_dataset(tmp_path / "d", {"val": [0, 1], "test": [0, 1]})
    with pytest.raises(UserError, match="no split 'holdout'"):
        evaluate.evaluate_run(model_path, data, tmp_path / "o", FAST, split="holdout")
    with pytest.raises(UserError, match="threshold"):
        evaluate.evaluate_run(model_path, data, tmp_path / "o", FAST, threshold=1.5)
