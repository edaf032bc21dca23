"""Tests for pneumokeras.training.cv: K-fold training, out-of-fold metrics and the deep ensemble.

One 3-fold run (tiny ResNet10, one epoch per fold) is shared by most tests
(`cv3`); a 2-fold copy of the data checks `--only-fold`, a kill inside a fold
and the resume between folds. Error tests tamper with copies of the shared run.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from model_fixtures import predict_in_fresh_process

from pneumokeras.config import load_config
from pneumokeras.errors import UserError
from pneumokeras.evaluation import metrics, plots
from pneumokeras.evaluation.calibration import calibrate, fit_calibration
from pneumokeras.models.model_card import load_classifier, read_card
from pneumokeras.records import tfrecords
from pneumokeras.serving import predict
from pneumokeras.sources.splits import class_weights
from pneumokeras.training import cv, out_of_fold
from pneumokeras.training.run_folder import run_lock

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "data.image_size=64",
    "data.batch_size=8",
    "model.name=resnet10",  # ResNet18's layers with half the blocks: half the tracing
    "model.filters=8",
    "train.learning_rate=3e-3",
    "train.distribute=none",
    # No XLA compile under TensorFlow (most of a tiny run); one test keeps the default.
    "train.xla=false",
    "evaluate.bootstrap=50",
]
OUTPUTS = (
    "oof.csv",
    "cv_metrics.json",
    "cv_roc.png",
    "report.md",
    "ensemble.keras",
    "ensemble.json",
)


def _config(*overrides):
    return load_config(None, [*TINY, *overrides])


def _oof_rows(out):
    with open(out / "oof.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _patients(data_dir, *splits):
    return [r["patient_id"] for s in splits for r in tfrecords.read_split(data_dir, s)]


def _test_images(data_dir, count=4):
    import io

    from PIL import Image

    records = tfrecords.read_split(data_dir, "test")[:count]
    return np.stack([np.asarray(Image.open(io.BytesIO(r["png"]))) for r in records])[..., None]


def _snapshot(out):
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.glob("fold-*/*")) if p.is_file()}


@pytest.fixture(scope="module")
def cv3(converted_dir, tmp_path_factory):
    """A finished 3-fold cross-validation of the session's tiny data (one epoch per fold)."""
    out = tmp_path_factory.mktemp("cv3")
    lines = []
    summary = cv.cross_validate(
        converted_dir, out, _config("train.epochs=1"), verbose=0, say=lines.append
    )
    return out, summary, lines


# ---------------------------------------------------------------- pure parts


def test_cv_roc_figure_draws_each_fold_and_the_mean():
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 2, 40) for _ in range(3)] + [np.zeros(5, dtype=int)]
    probs = [np.clip(y * 0.3 + rng.uniform(0, 0.7, y.size), 0, 1) for y in labels]
    figure = plots.cv_roc_figure(labels, probs)
    texts = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert [t.split(" (")[0] for t in texts[:3]] == ["fold 0", "fold 1", "fold 2"]
    assert "fold 3: one class, no curve" in texts
    assert any(t.startswith("mean (AUC") for t in texts)
    aucs = [
        metrics.classification_metrics(y, p, 0.5)["roc_auc"]
        for y, p in zip(labels[:3], probs[:3], strict=True)
    ]
    assert f"mean (AUC {np.mean(aucs):.3f} ± {np.std(aucs, ddof=1):.3f})" in texts
    assert plots.to_png(figure)[:4] == b"\x89PNG"


def test_out_of_fold_patients_are_the_grouped_patients_when_there_are_some():
    labels, raw = np.array([0, 1, 1, 0]), np.array([0.2, 0.7, 0.6, 0.4])
    images = np.array(["a/1", "a/2", "b/1", "c/1"])
    plain = out_of_fold.OutOfFold(images, np.array([0, 0, 1, 1]), labels, raw)
    assert list(plain.patient_groups) == list(images)  # RSNA: one image per patient
    grouped = out_of_fold.OutOfFold(
        images, plain.folds, labels, raw, np.array(["a", "a", "b", "c"])
    )
    fit = fit_calibration(labels, raw)
    assert out_of_fold.calibration_facts(fit, grouped)["n_patients"] == 3
    assert out_of_fold.calibration_facts(fit, plain)["n_patients"] == 4
    assert (grouped.patient_count, plain.patient_count) == (3, 4)


def test_fold_metrics_mean_and_sd_over_folds():
    rng = np.random.default_rng(1)
    folds = np.repeat([0, 1, 2], 30)
    labels = rng.integers(0, 2, folds.size)
    raw = np.clip(labels * 0.4 + rng.uniform(0, 0.6, folds.size), 0, 1)
    oof = out_of_fold.OutOfFold(np.arange(folds.size).astype(str), folds, labels, raw)
    per_fold, summary = out_of_fold.fold_metrics(oof, raw, 0.5, 3)
    for name in out_of_fold.FOLD_METRICS:
        values = [
            metrics.classification_metrics(labels[folds == k], raw[folds == k], 0.5)[name]
            for k in range(3)
        ]
        assert [f.metrics[name] for f in per_fold] == pytest.approx(values)
        assert summary[name].mean == pytest.approx(np.mean(values))
        assert summary[name].sd == pytest.approx(np.std(values, ddof=1))
    assert [f.n for f in per_fold] == [30, 30, 30]


# ---------------------------------------------------------------- three folds


@pytest.mark.backend
@pytest.mark.slow
def test_three_folds_end_to_end(cv3, converted_dir):
    out, summary, lines = cv3
    assert (summary.trained, summary.skipped, summary.pending) == ((0, 1, 2), (), ())
    assert any(line.startswith("aggregating 3 folds") for line in lines)
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    for k in range(3):
        record = json.loads((out / f"fold-{k}" / "run.json").read_text())
        assert record["status"] == "finished"
        assert record["fold"] == k
        assert read_card(out / f"fold-{k}").fold == k
    # Every train+val patient once, by the model that held it out; no test patient.
    rows = _oof_rows(out)
    folds = json.loads((converted_dir / "manifest.json").read_text())["folds"]
    patients = [r["patient"] for r in rows]
    assert sorted(patients) == sorted(_patients(converted_dir, "train", "val"))
    assert len(set(patients)) == len(patients)
    assert not set(patients) & set(_patients(converted_dir, "test"))
    assert all(int(r["fold"]) == folds[r["patient"]] for r in rows)
    labels = {
        r["patient_id"]: r["label"]
        for s in ("train", "val")
        for r in tfrecords.read_split(converted_dir, s)
    }
    assert all(int(r["label"]) == labels[r["patient"]] for r in rows)
    # The metrics file agrees with oof.csv: per fold at the pooled threshold, pooled.
    result = json.loads((out / "cv_metrics.json").read_text())
    assert result == json.loads(json.dumps(summary.result.to_dict()))
    assert summary.result.threshold == result["threshold"]["value"]
    assert summary.result.examples == result["oof"]["n"] == len(rows)
    y = np.array([int(r["label"]) for r in rows])
    cal = np.array([float(r["calibrated"]) for r in rows])
    fold = np.array([int(r["fold"]) for r in rows])
    threshold = result["threshold"]["value"]
    for entry in result["folds"]:
        point = metrics.classification_metrics(
            y[fold == entry["fold"]], cal[fold == entry["fold"]], threshold
        )
        assert entry["metrics"]["roc_auc"] == pytest.approx(point["roc_auc"], abs=1e-6)
        assert entry["metrics"]["recall"] == pytest.approx(point["recall"])
    aucs = [f["metrics"]["roc_auc"] for f in result["folds"]]
    assert result["summary"]["roc_auc"]["mean"] == pytest.approx(np.mean(aucs))
    assert result["summary"]["roc_auc"]["sd"] == pytest.approx(np.std(aucs, ddof=1))
    pooled = result["pooled"]
    assert pooled["roc_auc"]["ci_method"] == "bootstrap"
    assert pooled["recall"]["ci_method"] == "wilson"
    assert pooled["tp"]["value"] + pooled["fn"]["value"] == int(y.sum())
    text = (out / "report.md").read_text()
    assert "mean ± sd" in text
    assert "](cv_roc.png)" in text
    assert "not for diagnosis" in text
    assert (out / "cv_roc.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.backend
def test_the_card_is_fitted_on_the_out_of_fold_predictions(cv3):
    out, _, _ = cv3
    card = read_card(out / "ensemble.keras")
    rows = _oof_rows(out)
    y = np.array([int(r["label"]) for r in rows])
    raw = np.array([float(r["probability"]) for r in rows])
    fit = fit_calibration(y, raw)
    assert card.temperature == pytest.approx(fit.temperature, rel=1e-3)
    assert card.calibration["fitted_on"] == "oof"
    assert card.calibration["n"] == len(rows)
    assert card.threshold_method == "youden"
    assert card.fitted
    expected = metrics.choose_threshold(y, calibrate(raw, card.temperature), "youden")
    assert card.threshold == pytest.approx(expected, abs=1e-6)
    assert [m["name"] for m in card.members] == ["member_0", "member_1", "member_2"]
    assert [m["fold"] for m in card.members] == [0, 1, 2]
    assert all(m["gradcam_layer"] == "stack4_block1_out" for m in card.members)
    assert card.fold is None
    assert card.input_size == 64


@pytest.mark.backend
@pytest.mark.slow
def test_the_ensemble_is_the_mean_of_its_members(cv3, converted_dir, tmp_path):
    out, _, _ = cv3
    images = _test_images(converted_dir).astype(np.float32)
    ensemble = keras.saving.load_model(out / "ensemble.keras")
    assert [layer.name for layer in ensemble.layers] == [
        "image",
        "member_0",
        "member_1",
        "member_2",
        "predictions",
    ]
    here = np.asarray(ensemble.predict(images, verbose=0))
    members = [keras.saving.load_model(out / f"fold-{k}" / "model.keras") for k in range(3)]
    mean = np.mean([np.asarray(m.predict(images, verbose=0)) for m in members], axis=0)
    np.testing.assert_allclose(here, mean, atol=1e-5)
    # Loads in safe mode, without pneumokeras, under JAX: in the TensorFlow pass only
    # (a JAX interpreter, ≈ 20 s). Models saved under JAX load under TensorFlow in
    # test_explain.py (TensorFlow pass) and test_export.py (JAX pass).
    if keras.backend.backend() == "tensorflow":
        np.save(tmp_path / "images.npy", images)
        there = predict_in_fresh_process(out / "ensemble.keras", tmp_path / "images.npy", "jax")
        np.testing.assert_allclose(there, here, atol=1e-4)


# Once: what predict and evaluate add for an ensemble (the members' spread, the
# out-of-fold card kept) is bookkeeping around the ensemble's forward pass, which
# test_the_ensemble_is_the_mean_of_its_members checks under both backends.
def test_predict_reports_the_members_spread(cv3, converted_dir, tmp_path):
    from PIL import Image

    out, _, _ = cv3
    images = _test_images(converted_dir, 3)
    files = []
    for i, image in enumerate(images):
        files.append(tmp_path / f"x{i}.png")
        Image.fromarray(image[..., 0]).save(files[-1])
    rows = predict.predict_files(out / "ensemble.keras", files, out_path=tmp_path / "p.csv")
    classifier = load_classifier(out / "ensemble.keras")
    members = np.stack(
        [
            classifier.calibrate(load_classifier(out / f"fold-{k}").raw_probabilities(images))
            for k in range(3)
        ]
    )
    np.testing.assert_allclose([r["member_std"] for r in rows], members.std(axis=0), atol=1e-5)
    np.testing.assert_allclose(
        [r["probability"] for r in rows], classifier.probabilities(images), atol=1e-6
    )
    assert "member_std" in (tmp_path / "p.csv").read_text().splitlines()[0].split(",")
    single = predict.predict_files(out / "fold-0", files[:1])
    assert "member_std" not in single[0]


def test_evaluate_accepts_the_ensemble(cv3, converted_dir, tmp_path):
    from pneumokeras.evaluation.evaluate import evaluate_run

    out, _, _ = cv3
    for name in ("ensemble.keras", "ensemble.json"):
        shutil.copy(out / name, tmp_path / name)
    before = (tmp_path / "ensemble.json").read_text()
    result = evaluate_run(
        tmp_path / "ensemble.keras", converted_dir, tmp_path / "eval", _config(), progress=False
    )
    assert result.n == len(_patients(converted_dir, "test"))
    assert result.report.is_file()
    assert "sex" in result.metrics["subgroups"]["attributes"]  # the same subgroup analysis
    # The members trained on `val`: the out-of-fold temperature and threshold are
    # used as they are, and the card is not rewritten.
    card = read_card(tmp_path / "ensemble.keras")
    assert (tmp_path / "ensemble.json").read_text() == before
    assert len(card.members) == 3
    assert result.temperature == card.temperature
    assert result.threshold == card.threshold
    chosen_on = result.metrics["threshold"]["chosen_on"]
    assert chosen_on == result.metrics["calibration"]["fitted_on"] == "oof"


@pytest.mark.backend
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf-keras-vis needs TF")
def test_explain_shows_the_mean_of_the_members_maps(cv3, converted_dir, tmp_path):
    from pneumokeras.explain.cam import EnsembleHeatmapExplainer, HeatmapExplainer, _normalize_maps
    from pneumokeras.explain.explain import explain_run

    out, _, _ = cv3
    summary = explain_run(
        out / "ensemble.keras",
        tmp_path / "explain",
        _config(),
        data_dir=converted_dir,
        split="test",
        limit=3,
        progress=False,
    )
    assert summary.count == 3
    assert summary.layer == "stack4_block1_out of each member"
    assert (tmp_path / "explain" / "contact_sheet.png").is_file()
    model = keras.saving.load_model(out / "ensemble.keras")
    images = _test_images(converted_dir, 3).astype(np.float32)
    names = [f"member_{k}" for k in range(3)]
    explainer = EnsembleHeatmapExplainer(model, names, "gradcam", ["stack4_block1_out"] * 3)
    maps = explainer(images, "pneumonia")
    each = [
        HeatmapExplainer(model.get_layer(n), "gradcam", "stack4_block1_out")(images) for n in names
    ]
    np.testing.assert_allclose(maps, _normalize_maps(np.mean(each, axis=0)), atol=1e-5)
    assert maps.shape == (3, 64, 64)


# ---------------------------------------------------------------- bad input


def _tamper(path, change):
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))


@pytest.mark.backend
def test_bad_input_is_refused_and_finished_folds_stay(cv3, converted_dir, tmp_path):
    out, _, _ = cv3
    before = _snapshot(out)
    with pytest.raises(
        UserError,
        match=r"fold-0 was trained with other settings "
        r"\(model.filters: 8 → 4\)",
    ):
        cv.cross_validate(converted_dir, out, _config("train.epochs=1", "model.filters=4"))
    with pytest.raises(
        UserError, match=r"^--only-fold 3 is out of range: .* has 3 folds \(0\.\.2\)$"
    ):
        cv.cross_validate(converted_dir, out, _config("train.epochs=1"), only_fold=3)
    with pytest.raises(UserError, match=r"data.image_size is 96"):
        cv.cross_validate(converted_dir, out, _config("train.epochs=1", "data.image_size=96"))
    assert _snapshot(out) == before

    def copy(name):
        target = tmp_path / name
        shutil.copytree(out, target)
        return target

    sizes = copy("sizes")
    _tamper(sizes / "fold-1" / "run.json", lambda r: r["config"]["data"].update(image_size=96))
    with pytest.raises(
        UserError,
        match=r"fold-1 was trained with other settings "
        r"\(data.image_size: 96 → 64\)",
    ):
        cv.cross_validate(converted_dir, sizes, _config("train.epochs=1"))
    other = copy("other-data")
    _tamper(other / "fold-2" / "run.json", lambda r: r.update(data_fingerprint="0123"))
    with pytest.raises(UserError, match="fold-2 was trained on another data set"):
        cv.cross_validate(converted_dir, other, _config("train.epochs=1"))
    card = copy("card")
    _tamper(card / "fold-2" / "model.json", lambda c: c["config"]["model"].update(filters=16))
    with pytest.raises(UserError, match=r"fold-2 was trained with other settings"):
        cv.aggregate(converted_dir, card, _config("train.epochs=1"))
    missing = copy("missing")
    (missing / "fold-1" / "model.keras").unlink()
    (missing / "ensemble.keras").unlink()
    with pytest.raises(UserError, match="member 1 is missing"):
        cv.cross_validate(converted_dir, missing, _config("train.epochs=1"))
    assert not (missing / "ensemble.keras").exists()
    beyond = copy("beyond")
    (beyond / "fold-3").mkdir()
    with pytest.raises(UserError, match="fold-3 is a fold the data does not have"):
        cv.cross_validate(converted_dir, beyond, _config("train.epochs=1"))
    with pytest.raises(UserError, match=r"fold\(s\) 0, 1, 2 .* are not finished"):
        cv.aggregate(converted_dir, tmp_path / "empty", _config())
    assert _snapshot(out) == before


def _unfolded(converted_dir, target):
    shutil.copytree(converted_dir, target)
    _tamper(
        target / "manifest.json", lambda m: m.update(num_folds=0, folds={}, fold_class_weights=[])
    )
    return target


def test_data_without_folds_is_one_line_and_exit_2(converted_dir, tmp_path, capsys):
    from pneumokeras.cli import main

    unfolded = _unfolded(converted_dir, tmp_path / "unfolded")
    with pytest.raises(UserError, match="converted without folds"):
        cv.cross_validate(unfolded, tmp_path / "cv", _config())
    with pytest.raises(SystemExit) as done:
        main(
            [
                "cv",
                "--data",
                str(unfolded),
                "--out",
                str(tmp_path / "cv"),
                *[a for o in TINY for a in ("--set", o)],
            ]
        )
    stderr = capsys.readouterr().err
    assert done.value.code == 2
    assert stderr.strip().splitlines() == [stderr.strip()]
    assert "without folds" in stderr
    assert not (tmp_path / "cv").exists()


# ---------------------------------------------------------------- two folds, kill and resume


def _two_folds(converted_dir, target):
    """A copy of the data whose 3 stratified folds are merged into 2 (0+2, 1)."""
    shutil.copytree(converted_dir, target)
    labels = {
        r["patient_id"]: r["label"]
        for s in ("train", "val")
        for r in tfrecords.read_split(converted_dir, s)
    }

    def merge(manifest):
        folds = {p: f % 2 for p, f in manifest["folds"].items()}
        weights = [
            {
                str(c): w
                for c, w in class_weights([labels[p] for p, f in folds.items() if f != k]).items()
            }
            for k in range(2)
        ]
        manifest.update(folds=folds, num_folds=2, fold_class_weights=weights)

    _tamper(target / "manifest.json", merge)
    return target


def _cli_cv(data_dir, out_dir, *extra, hooks=()):
    """`cli.py cv` in a new process; `hooks`: options of tests/training_hooks.py."""
    program = [str(ROOT / "tests" / "training_hooks.py"), *hooks, "--"] if hooks else []
    args = [
        sys.executable,
        *(program or [str(ROOT / "cli.py")]),
        "cv",
        "--data",
        str(data_dir),
        "--out",
        str(out_dir),
        *[a for o in TINY for a in ("--set", o)],
        *extra,
    ]
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _epochs(run_dir):
    with open(run_dir / "history.csv", newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


# Not `backend`: what it checks (skipping finished folds, resuming the killed one,
# aggregating once all are there) is cv's own bookkeeping; resuming a killed training
# run under each backend is test_train.py's test_resume_after_kill.
@pytest.mark.slow
def test_two_folds_one_per_machine_killed_and_resumed(converted_dir, tmp_path):
    data = _two_folds(converted_dir, tmp_path / "data")
    out = tmp_path / "cv"
    config = _config("train.epochs=2")
    # One machine trains fold 0 only: nothing to aggregate yet.
    first = cv.cross_validate(data, out, config, only_fold=0, verbose=0)
    assert (first.trained, first.pending, first.result) == ((0,), (1,), None)
    assert not (out / "ensemble.keras").exists()
    fold0 = _snapshot(out)
    # The plain command skips fold 0 and is killed at the end of fold 1's first epoch.
    process = _cli_cv(data, out, "--set", "train.epochs=2", hooks=("--kill-after-epoch", "1"))
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == -signal.SIGKILL, stderr[-2000:]
    assert "fold 0: finished already" in stderr
    assert json.loads((out / "fold-1" / "run.json").read_text())["status"] == "running"
    assert _epochs(out / "fold-1") == [1]
    # Rerunning resumes fold 1 at epoch 2, then aggregates; fold 0 is left as it was.
    done = cv.cross_validate(data, out, config, verbose=0)
    assert (done.trained, done.skipped, done.pending) == ((1,), (0,), ())
    assert _epochs(out / "fold-1") == [1, 2]
    assert {k: v for k, v in _snapshot(out).items() if k.parts[0] == "fold-0"} == fold0
    rows = _oof_rows(out)
    assert sorted(r["patient"] for r in rows) == sorted(_patients(data, "train", "val"))
    assert {r["fold"] for r in rows} == {"0", "1"}
    assert len(read_card(out / "ensemble.keras").members) == 2
    assert len(done.result.folds) == 2
    # Once everything is finished, a rerun trains nothing and aggregates the same.
    again = cv.cross_validate(data, out, config, verbose=0)
    assert (again.trained, again.skipped) == ((), (0, 1))
    assert again.result.summary == done.result.summary


def test_a_fold_another_process_trains_is_left_to_it(converted_dir, tmp_path):
    data = _two_folds(converted_dir, tmp_path / "data")
    out = tmp_path / "cv"
    config = _config("train.epochs=1")
    with run_lock(cv.fold_dir(out, 0)), run_lock(cv.fold_dir(out, 1)):
        # The fold asked for is refused in cv's words, naming the process.
        with pytest.raises(UserError) as info:
            cv.cross_validate(data, out, config, only_fold=1)
        message = str(info.value)
        assert message.startswith(f"fold 1 ({out / 'fold-1'}) is being trained by another process")
        assert f"pid {os.getpid()}" in message
        assert message.endswith("let it finish, or train another fold with --only-fold K")
        assert "--overwrite" not in message
        # Without --only-fold, cv leaves both to it and waits for them.
        lines = []
        summary = cv.cross_validate(data, out, config, say=lines.append)
        assert (summary.trained, summary.in_use, summary.pending) == ((), (0, 1), (0, 1))
        assert summary.result is None
        assert any(line.startswith("fold 0: being trained by another process") for line in lines)


def test_report_counts_images_and_patients_apart():
    from pneumokeras.training.cv_report import render_report

    spread = out_of_fold.Spread(0.8, 0.05, 2)
    scores = out_of_fold.FoldMetrics(0, 10, 3, dict.fromkeys(out_of_fold.FOLD_METRICS, 0.8))
    result = cv.CVResult(
        data_dir=Path("/data/kermany"),
        data_source="chest_xray",
        data_fingerprint="f",
        num_folds=2,
        backend="tensorflow",
        examples=20,
        patients=12,
        positives=6,
        threshold=0.4,
        threshold_method="youden",
        temperature=1.0,
        calibration={"explanation": "kept at 1"},
        folds=(cv.FoldResult(scores, 1, 0.8), cv.FoldResult(scores, 2, 0.7)),
        summary=dict.fromkeys(out_of_fold.FOLD_METRICS, spread),
        pooled=metrics.metric_table(
            np.array([0, 1] * 10), np.linspace(0.1, 0.9, 20), 0.4, resamples=10, seed=0
        ),
        bootstrap_resamples=10,
        seed=0,
        members=(),
    )
    text = render_report(result, "cv_roc.png")
    assert "20 train+val images (6 with pneumonia) of 12 patients, each predicted once" in text
    same = dataclasses.replace(result, patients=20)
    assert "20 train+val patients, 6 with pneumonia, each predicted once" in render_report(
        same, "cv_roc.png"
    )
    assert result.to_dict()["oof"] == {"n": 20, "patients": 12, "positives": 6, "file": "oof.csv"}
