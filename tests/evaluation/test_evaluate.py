"""Tests for pneumokeras.evaluation.evaluate: the `evaluate` command end to end.

`evaluate_run` on a tiny synthetic data set (synth → convert at 32 px) with an
untrained stand-in model (see `contract_model`), and on hand-written shards for
one-class cases. The metrics, calibration, plots and report it assembles are
tested in test_metrics.py, test_calibration.py, test_plots.py and test_report.py.
Two runs are marked `backend` (TensorFlow and JAX): `evaluate_run` on a converted
split and an external evaluation, each loading and running a model. The others check
what evaluate does with the predictions (one-class splits, thresholds, calibration that
hurts, patient grouping, errors): the same model call, so they run once.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from pathlib import Path

import keras
import numpy as np
import pytest
from layout_fixtures import write_kermany, write_nih
from model_fixtures import brightness_model, contract_model
from PIL import Image

from pneumokeras.config import from_dict
from pneumokeras.errors import UserError
from pneumokeras.evaluation import calibration, evaluate, external, metrics, scoring
from pneumokeras.models import model_card
from pneumokeras.records import tfrecords
from pneumokeras.records.convert import ConvertOptions, convert, encode_png
from pneumokeras.records.manifest import MANIFEST, load_manifest
from pneumokeras.sources.listing import LayoutOptions
from pneumokeras.synth import generate

SIZE = 32
# Few resamples keep the end-to-end runs fast; the bootstrap is tested in test_metrics.
FAST = from_dict({"evaluate": {"bootstrap": 10}, "data": {"batch_size": 8}})


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """40 synthetic patients converted at 32 px: 20 train, 10 val, 10 test (2+2 positive)."""
    root = tmp_path_factory.mktemp("data")
    generate(root / "raw", patients=40, size=64, seed=1, workers=0, progress=False)
    convert(
        ConvertOptions(
            images=root / "raw" / "stage_2_train_images",
            out=root / "tf",
            labels=root / "raw" / "stage_2_train_labels.csv",
            size=SIZE,
            val_fraction=0.25,
            test_fraction=0.25,
            workers=0,
        ),
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
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out


# ---------------------------------------------------------------- evaluate_run


@pytest.mark.backend
def test_evaluate_run_writes_metrics_plots_report_and_model_json(
    dataset, model_path, tmp_path, caplog
):
    out = tmp_path / "eval"
    caplog.set_level(logging.INFO, logger="pneumokeras.evaluation.evaluate")
    result_run = evaluate.evaluate_run(model_path, dataset, out, FAST, progress=False)
    result = result_run.metrics
    for name in ("metrics.json", "report.md", *evaluate.PLOTS):
        assert (out / name).stat().st_size > 0, name
    for name in evaluate.PLOTS:
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    assert not list(out.glob(".*tmp*"))  # atomic writes left no temporary files
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(result))

    assert result["split"] == "test"
    assert result["n"] == 10
    assert result["positives"] == 2
    # Same numbers as the model on the shards' own images, in read_split order.
    records = tfrecords.read_split(dataset, "test")
    images = np.stack([np.array(Image.open(io.BytesIO(r["png"]))) for r in records])
    raw = keras.saving.load_model(model_path).predict(
        images[..., None].astype("float32"), verbose=0
    )[:, 1]
    expected = metrics.classification_metrics(
        np.array([r["label"] for r in records]),
        calibration.calibrate(raw, result["temperature"]),
        result["threshold"]["value"],
    )
    assert result["metrics"]["roc_auc"]["value"] == pytest.approx(expected["roc_auc"])
    assert result["metrics"]["brier"]["value"] == pytest.approx(expected["brier"], rel=1e-4)
    for name in metrics.METRIC_NAMES:
        low, high = result["metrics"][name]["ci95"]
        assert low is None or low <= high, name
        assert result["metrics"][name]["ci_method"] == (
            "none"
            if name in metrics.COUNTS
            else "wilson"
            if name in metrics.PROPORTIONS
            else "bootstrap"
        ), name
    matrix = result["confusion_matrix"]["matrix"]
    assert sum(map(sum, matrix)) == 10
    # The subgroup analysis by the attributes convert recorded from the DICOM tags
    # (attributes.csv); 10 images are too few for a number in any subgroup.
    analysis = result["subgroups"]
    assert "sex" in analysis["attributes"]
    assert analysis["not_analysed"]["source"].startswith("one value only")
    for name in analysis["attributes"]:
        groups = analysis["by"][name]["groups"]
        assert sum(group["n"] for group in groups.values()) == 10
        for group in groups.values():
            assert not group["estimable"]
            assert group["metrics"]["roc_auc"]["value"] is None
    assert result_run.largest_gap is None
    # The dataclass carries the headline numbers of metrics.json.
    assert result_run.roc_auc == result["metrics"]["roc_auc"]["value"]
    assert result_run.sensitivity == result["metrics"]["recall"]["value"]
    assert result_run.threshold == result["threshold"]["value"]
    assert (result_run.n, result_run.external, result_run.split) == (10, False, "test")
    assert result_run.report == out / "report.md"
    # predictions.csv: one row per test image, in read_split order, with the decision.
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "example_id,patient,label,sex,age,view,source,probability,decision"
    records_order = [r["patient_id"] for r in tfrecords.read_split(dataset, "test")]
    assert [row.split(",")[0] for row in rows[1:]] == records_order
    for row in rows[1:]:
        cells = row.split(",")
        assert cells[8] == str(int(float(cells[7]) >= result["threshold"]["value"]))
    cal = result["calibration"]
    assert cal["temperature"] > 0
    assert cal["val_nll_after"] <= cal["val_nll_before"] + 1e-9
    assert sum(cal["after"]["bins"]["counts"]) == 10
    # Validation and test NLL before/after; the temperature is the one applied.
    assert (cal["split"], cal["fitted_on"]) == ("test", "val")
    assert cal["split_nll_before"] == cal["before"]["nll"]
    assert cal["split_nll_after"] == cal["after"]["nll"]
    assert cal["temperature"] == (cal["fitted_temperature"] if cal["applied"] else 1.0)
    assert "temperature scaling: " in caplog.text
    # 10 validation patients: the small-split warning, in the result, log and report.
    assert (cal["val_patients"], cal["val_positives"]) == (10, 2)
    small = [w for w in result["warnings"] if "validation split is small (10 patients" in w]
    assert len(small) == 1
    assert small[0] in cal["warnings"]
    assert small[0] in caplog.text

    meta = json.loads(model_path.with_name("model.json").read_text())
    assert meta["threshold"] == result["threshold"]["value"]
    assert meta["temperature"] == result["temperature"]
    assert meta["threshold_method"] == "youden"
    assert meta["validation"] == {"auc": 0.5}
    assert meta["backend"] == "tensorflow"
    card = model_card.read_card(model_path)  # one reader: the card stays valid
    assert card.calibration["fitted_on"] == "val"
    assert card.calibration["n_patients"] == 10
    assert card.calibration["n_positive"] == 2
    assert card.calibration["n_negative"] == 8
    assert card.calibration["nll_before"] == cal["val_nll_before"]
    assert card.calibration["nll_after"] == cal["val_nll_after"]
    assert card.calibration["evaluated_nll_after"] == cal["split_nll_after"]
    assert card.calibration["warnings"] == cal["warnings"]
    assert card.calibration["data_dir"] == str(dataset)

    report = (out / "report.md").read_text()
    assert "not for diagnosis" in report
    for name in evaluate.PLOTS:
        assert f"]({name})" in report
    assert str(dataset) in report
    assert "ROC-AUC" in report
    assert "## Subgroups" in report
    assert "| CI method |" in report
    assert "Wilson score" in report
    assert small[0] in report
    assert (
        f"| test split | {cal['split_nll_before']:.4f} | {cal['split_nll_after']:.4f} |" in report
    )


def test_evaluate_run_on_a_one_class_split_with_a_given_threshold(model_path, tmp_path, caplog):
    data = _write_dataset(tmp_path / "d", {"val": [0, 1, 0, 1], "test": [0, 0, 0]})
    result_run = evaluate.evaluate_run(
        model_path, data, tmp_path / "out", FAST, threshold=0.3, progress=False
    )
    result = result_run.metrics
    # What can be computed is reported; what needs both classes is null, with a warning.
    table = result["metrics"]
    assert table["roc_auc"]["value"] is None
    assert table["pr_auc"]["value"] is None
    assert table["recall"]["value"] is None
    assert table["accuracy"]["value"] is not None
    assert table["specificity"]["value"] is not None
    assert any("only normal" in w for w in result["warnings"])
    assert "only normal" in caplog.text
    assert "n/a" in (tmp_path / "out" / "report.md").read_text()
    # The given threshold is used and stored.
    assert result["threshold"] == {"value": 0.3, "method": "manual", "chosen_on": "argument"}
    meta = json.loads(model_path.with_name("model.json").read_text())
    assert meta["threshold"] == 0.3
    assert meta["threshold_method"] == "manual"
    assert meta["temperature"] == result["temperature"]


def test_evaluate_run_needs_both_classes_in_validation(model_path, tmp_path):
    data = _write_dataset(tmp_path / "d", {"val": [0, 0, 0], "test": [0, 1]})
    with pytest.raises(UserError, match=r"validation split .* one class"):
        evaluate.evaluate_run(model_path, data, tmp_path / "out", FAST, progress=False)
    assert not (tmp_path / "out").exists()


def test_evaluate_run_missing_or_broken_model(tmp_path):
    data = _write_dataset(tmp_path / "d", {"val": [0, 1], "test": [0, 1]})
    with pytest.raises(UserError, match="does not exist"):
        evaluate.evaluate_run(tmp_path / "none.keras", data, tmp_path / "o", FAST)
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UserError, match=r"not a valid .keras file"):
        evaluate.evaluate_run(bad, data, tmp_path / "o", FAST)


def test_evaluate_run_size_mismatch(model_path, tmp_path):
    data = _write_dataset(tmp_path / "d", {"val": [0, 1], "test": [0, 1]}, size=48)
    with pytest.raises(UserError, match=r"takes 32 px images but .* 48 px"):
        evaluate.evaluate_run(model_path, data, tmp_path / "o", FAST)


def test_evaluate_run_bad_split_and_threshold(model_path, tmp_path):
    data = _write_dataset(tmp_path / "d", {"val": [0, 1], "test": [0, 1]})
    with pytest.raises(UserError, match="no split 'holdout'"):
        evaluate.evaluate_run(model_path, data, tmp_path / "o", FAST, split="holdout")
    with pytest.raises(UserError, match="threshold"):
        evaluate.evaluate_run(model_path, data, tmp_path / "o", FAST, threshold=1.5)


def test_evaluate_run_on_a_run_folder_without_a_card(saved_model, tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(saved_model.read_bytes())
    data = _write_dataset(tmp_path / "d", {"val": [0, 1, 0, 1], "test": [0, 1, 0, 1]})
    result_run = evaluate.evaluate_run(run, data, tmp_path / "out", FAST, progress=False)
    result = result_run.metrics
    assert "has no model card" in caplog.text
    card = model_card.read_card(run)
    assert card.input_size == SIZE
    assert card.threshold == result["threshold"]["value"]
    assert card.threshold_method == "youden"
    assert card.temperature == result["temperature"]
    assert card.calibration["n_patients"] == 4


def test_evaluate_run_says_when_calibration_hurts(model_path, tmp_path, caplog, monkeypatch):
    # Test labels on the wrong side of 0.5 for every image: any sharpening
    # temperature (as a fit on a small validation split can give) raises each
    # image's loss, so the test NLL gets worse.
    probe = _write_dataset(tmp_path / "probe", {"val": [0, 1, 0, 1], "test": [0] * 8})
    images = np.stack(
        [np.array(Image.open(io.BytesIO(r["png"]))) for r in tfrecords.read_split(probe, "test")]
    )
    raw = keras.saving.load_model(model_path).predict(
        images[..., None].astype("float32"), verbose=0
    )[:, 1]
    wrong = [int(p < 0.5) for p in raw]  # the same pixels are drawn again below
    fit_calibration = calibration.fit_calibration

    def sharpening_fit(labels, probs):
        fit = fit_calibration(labels, probs)
        return dataclasses.replace(fit, temperature=0.05, fitted=0.05, decision="applied")

    monkeypatch.setattr(calibration, "fit_calibration", sharpening_fit)
    data = _write_dataset(tmp_path / "d", {"val": [0, 1, 0, 1], "test": wrong})
    result_run = evaluate.evaluate_run(model_path, data, tmp_path / "out", FAST, progress=False)
    result = result_run.metrics
    cal = result["calibration"]
    assert result["temperature"] == 0.05
    assert cal["applied"]
    assert cal["split_nll_after"] > cal["split_nll_before"]
    worse = [w for w in result["warnings"] if "made the test split worse" in w]
    assert len(worse) == 1
    assert worse[0] in caplog.text
    report = (tmp_path / "out" / "report.md").read_text()
    assert worse[0] in report
    assert "**Calibration made the test split worse**" in report
    assert "calibrated probabilities" not in report
    assert worse[0] in model_card.read_card(model_path).calibration["warnings"]


# ---------------------------------------------------------------- external validation


@pytest.fixture(scope="module")
def other_dataset(tmp_path_factory) -> Path:
    """A Kermany-style class-folder set (`chest_xray`, layout `folders`) converted at 32 px.

    36 images (18 normal, 18 pneumonia) of several sizes, JPEG and PNG.
    """
    root = tmp_path_factory.mktemp("other")
    write_kermany(root / "chest_xray")
    convert(
        ConvertOptions(
            images=root / "chest_xray",
            out=root / "tf",
            layout=LayoutOptions("folders"),
            size=SIZE,
            val_fraction=0.2,
            test_fraction=0.4,
            seed=3,
            workers=0,
        ),
        progress=False,
    )
    return root / "tf"


@pytest.fixture(scope="module")
def trained_run(saved_model, dataset, tmp_path_factory) -> Path:
    """A run folder as training leaves it (card with the data facts), evaluated on its data.

    The internal evaluation fits its threshold and temperature on `dataset`'s
    validation split and writes them into the card, as a user would before
    validating it elsewhere.
    """
    from pneumokeras.training.train import training_card

    run = tmp_path_factory.mktemp("trained") / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(saved_model.read_bytes())
    config = dataclasses.replace(FAST, data=dataclasses.replace(FAST.data, image_size=SIZE))
    manifest = load_manifest(dataset)
    model_card.write_card(run, training_card(config, manifest, dataset, None, None, 1, {}))
    result_run = evaluate.evaluate_run(run, dataset, run / "eval", FAST, progress=False)
    result = result_run.metrics
    assert not result["external"]
    assert "trained on" in result["provenance"]
    assert (
        result["data_sets"]["trained_on"]["fingerprint"]
        == result["data_sets"]["evaluated_on"]["fingerprint"]
    )
    return run


@pytest.mark.backend
def test_external_evaluation_uses_the_cards_calibration_and_leaves_the_card(
    trained_run, dataset, other_dataset, tmp_path
):
    card_bytes = (trained_run / "model.json").read_bytes()
    card = model_card.read_card(trained_run)
    out = tmp_path / "ext"
    result_run = evaluate.evaluate_run(
        trained_run, other_dataset, out, FAST, split="all", refit_fraction=0.5, progress=False
    )
    result = result_run.metrics
    assert (trained_run / "model.json").read_bytes() == card_bytes  # not rewritten
    for name in ("metrics.json", "report.md", *evaluate.PLOTS):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(result))

    assert result["external"]
    assert "differs from the training data's" in result["provenance"]
    manifest = load_manifest(other_dataset).to_json()
    counts = {name: info["count"] for name, info in manifest["splits"].items()}
    assert result["split"] == "all"
    assert result["n"] == sum(counts.values()) == 36
    examples = [
        r["patient_id"] for name in counts for r in tfrecords.read_split(other_dataset, name)
    ]
    # Patients, not images: Kermany's personN_* images share a patient (patients.csv).
    patients = set(tfrecords.patient_ids(examples, tfrecords.read_patients(other_dataset)))
    assert result["patients"] == len(patients) < len(examples)
    assert result["positives"] == sum(info["positives"] for info in manifest["splits"].values())
    # The card's own threshold and temperature; nothing fitted on the new data.
    assert result["threshold"]["value"] == card.threshold
    assert result["threshold"]["method"] == card.threshold_method == "youden"
    assert result["temperature"] == card.temperature
    cal = result["calibration"]
    assert cal["source"] == "model card"
    assert cal["fitted_data_dir"] == str(dataset)
    assert (cal["val_n"], cal["split"]) == (card.calibration["n"], "all")
    assert sum(cal["after"]["bins"]["counts"]) == 36

    trained, tested = result["data_sets"]["trained_on"], result["data_sets"]["evaluated_on"]
    assert (trained["source"], trained["data_dir"]) == (
        "stage_2_train_images",
        str(dataset.resolve()),
    )
    assert trained["images"] == 40
    assert (tested["source"], tested["layout"]) == ("chest_xray", "folders")
    assert (tested["split"], tested["splits"]) == ("all", counts)
    assert tested["images"] == 36
    assert tested["patients"] == len(patients)

    refit = result["refit"]
    assert refit["refit_part"]["n"] + refit["held_out"]["n"] == 36
    # No patient on both sides of the re-fit split.
    assert refit["refit_part"]["patients"] + refit["held_out"]["patients"] == len(patients)
    assert refit["refit_part"]["positives"] + refit["held_out"]["positives"] == 18
    assert refit["own"]["threshold"] == card.threshold
    assert refit["own"]["temperature"] == card.temperature
    for side in ("own", "refit"):
        scores = refit[side]
        for key in ("sensitivity", "specificity", "f1", "ece", "brier"):
            assert scores[key] is None or 0.0 <= scores[key] <= 1.0, (side, key)
        assert scores["nll"] > 0
        assert scores["temperature"] > 0
    assert refit["own"]["roc_auc"] == pytest.approx(refit["refit"]["roc_auc"])

    report = (out / "report.md").read_text()
    assert "## Data sets" in report
    assert "**trained on**: source **stage_2_train_images**" in report
    assert "**tested on**: source **chest_xray** (layout folders)" in report
    assert "split **all**" in report
    assert str(dataset.resolve()) in report
    assert str(other_dataset) in report
    assert "threshold and temperature come from the training data set" in report
    assert "## Own vs re-fitted threshold and temperature" in report
    assert "| Sensitivity (recall) |" in report
    assert "| ECE |" in report
    assert "Temperature from the model card" in report


@pytest.fixture(scope="module")
def nih_dataset(tmp_path_factory) -> Path:
    """An NIH-like findings set converted at 32 px: 24 images of 12 patients (1-3 each)."""
    root = tmp_path_factory.mktemp("nih")
    images, labels = write_nih(root / "nih", patients=12)
    convert(
        ConvertOptions(
            images=images,
            out=root / "tf",
            labels=labels,
            layout=LayoutOptions("findings"),
            size=SIZE,
            val_fraction=0.25,
            test_fraction=0.25,
            seed=2,
            workers=0,
        ),
        progress=False,
    )
    return root / "tf"


def test_evaluated_data_reads_patients_not_images(nih_dataset):
    manifest = load_manifest(nih_dataset)
    test = scoring.read_evaluated(nih_dataset, manifest, "all")
    names = test.splits
    examples = [r["patient_id"] for name in names for r in tfrecords.read_split(nih_dataset, name)]
    assert list(test.patients) == [str(int(e.split("_")[0])) for e in examples]  # NIH Patient ID
    assert (test.labels.size, np.unique(test.patients).size) == (24, 12)
    # The re-fit split on those patients keeps each patient's follow-ups on one side;
    # on image ids it would not (the fixture's seed splits one patient's images).
    fit = external.refit_split(test.labels, test.patients, 0.5, seed=0)
    assert not set(test.patients[fit]) & set(test.patients[~fit])
    by_image = external.refit_split(test.labels, np.array(examples), 0.5, seed=0)
    assert set(test.patients[by_image]) & set(test.patients[~by_image])


def test_external_bootstrap_and_refit_group_images_by_patient(
    trained_run, nih_dataset, tmp_path, monkeypatch
):
    seen_groups, seen_refit = [], []
    table, split = metrics.metric_table, external.refit_split

    def spy_table(labels, probs, threshold, groups=None, **kwargs):
        seen_groups.append(np.asarray(groups))
        return table(labels, probs, threshold, groups=groups, **kwargs)

    def spy_split(labels, patients, fraction, seed):
        mask = split(labels, patients, fraction, seed)
        seen_refit.append((np.asarray(patients), mask))
        return mask

    monkeypatch.setattr(metrics, "metric_table", spy_table)
    monkeypatch.setattr(external, "refit_split", spy_split)
    result_run = evaluate.evaluate_run(
        trained_run,
        nih_dataset,
        tmp_path / "o",
        FAST,
        split="all",
        refit_fraction=0.5,
        progress=False,
    )
    result = result_run.metrics
    manifest = load_manifest(nih_dataset).to_json()
    examples = [
        r["patient_id"]
        for name in manifest["splits"]
        for r in tfrecords.read_split(nih_dataset, name)
    ]
    patients = tfrecords.patient_ids(examples, tfrecords.read_patients(nih_dataset))
    assert result["external"]
    assert (result["n"], result["patients"]) == (24, 12)
    # The bootstrap's resampling unit is the patient (first table: the whole split).
    assert list(seen_groups[0]) == patients
    assert result["bootstrap"]["unit"] == "patient"
    assert len(seen_refit) == 2  # the early check and the comparison
    for grouped, mask in seen_refit:
        assert list(grouped) == patients
        assert not set(grouped[mask]) & set(grouped[~mask])
    refit = result["refit"]
    assert refit["refit_part"]["patients"] + refit["held_out"]["patients"] == 12
    assert result["data_sets"]["evaluated_on"]["patients"] == 12


def test_external_evaluation_needs_no_val_split_and_can_be_forced(trained_run, dataset, tmp_path):
    card_bytes = (trained_run / "model.json").read_bytes()
    data = _write_dataset(tmp_path / "d", {"train": [0, 1, 1], "test": [0, 1, 0, 1]})
    result_run = evaluate.evaluate_run(
        trained_run, data, tmp_path / "all", FAST, split="all", progress=False
    )
    result = result_run.metrics
    assert result["external"]
    assert (result["n"], result["positives"]) == (7, 4)
    assert result["data_sets"]["evaluated_on"]["splits"] == {"train": 3, "test": 4}
    one_run = evaluate.evaluate_run(
        trained_run, data, tmp_path / "test", FAST, split="test", progress=False
    )
    one = one_run.metrics
    assert one["n"] == 4
    assert one["refit"] is None
    assert "Own vs re-fitted" not in (tmp_path / "test" / "report.md").read_text()
    # --external on the training data itself: the card's calibration, card unchanged.
    forced_run = evaluate.evaluate_run(
        trained_run, dataset, tmp_path / "forced", FAST, external_data=True, progress=False
    )
    forced = forced_run.metrics
    assert forced["external"]
    assert forced["provenance"] == "set by --external"
    assert forced["temperature"] == model_card.read_card(trained_run).temperature
    assert (trained_run / "model.json").read_bytes() == card_bytes


def test_external_evaluation_errors_write_nothing(
    trained_run, dataset, other_dataset, model_path, tmp_path
):
    card_bytes = (trained_run / "model.json").read_bytes()
    out = tmp_path / "o"
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in other_dataset.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    next(broken.glob("train-*.tfrecord")).unlink()
    with pytest.raises(UserError, match="missing"):
        evaluate.evaluate_run(trained_run, broken, out, FAST, split="all", progress=False)
    one_positive = _write_dataset(tmp_path / "d", {"test": [0, 0, 0, 1]})
    with pytest.raises(UserError, match="held-out part without pneumonia"):
        evaluate.evaluate_run(
            trained_run, one_positive, out, FAST, split="test", refit_fraction=0.5, progress=False
        )
    with pytest.raises(UserError, match="no split 'holdout'"):
        evaluate.evaluate_run(trained_run, other_dataset, out, FAST, split="holdout")
    with pytest.raises(UserError, match="--split all is for a data set the model was not"):
        evaluate.evaluate_run(trained_run, dataset, out, FAST, split="all")
    with pytest.raises(UserError, match="--refit-fraction is for a data set"):
        evaluate.evaluate_run(trained_run, dataset, out, FAST, refit_fraction=0.5)
    # A card whose threshold and temperature were never fitted cannot be validated.
    with pytest.raises(UserError, match="no fitted threshold and temperature"):
        evaluate.evaluate_run(model_path, other_dataset, out, FAST, external_data=True)
    assert not out.exists()
    assert (trained_run / "model.json").read_bytes() == card_bytes


@pytest.mark.parametrize("fraction", ["0", "1", "1.5"])
def test_cli_refit_fraction_outside_the_interval_is_one_line_exit_2(
    fraction, tmp_path, capsys, monkeypatch
):
    from pneumokeras.cli import main

    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    data = _write_dataset(tmp_path / "d", {"val": [0, 1], "test": [0, 1]})
    with pytest.raises(SystemExit) as done:
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "m.keras"),
                "--data",
                str(data),
                "--split",
                "all",
                "--refit-fraction",
                fraction,
                "--out",
                str(tmp_path / "o"),
            ]
        )
    err = capsys.readouterr().err
    assert done.value.code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "--refit-fraction must be in (0, 1)" in err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- subgroups, #24 items


def _write_gap_dataset(out: Path, seed: int = 0) -> Path:
    """Images whose brightness gives the label away for men and only weakly for women.

    As `synth --subgroup-gap sex=F` makes opacities fainter in one subgroup: the
    positives of women are only a little brighter than the negatives. An
    attributes.csv records sex, age and view (one image of a man has an age of 95,
    stored 90+); val: 40 images, test: 200 (100 men, 100 women, 40 % positive).
    """
    from pneumokeras.sources.attributes import Attributes, write_table

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True)
    splits, shards, table = {}, {}, {}
    for split, count in (("val", 40), ("test", 200)):
        name = tfrecords.shard_name(split, 0, 1)
        examples, labels = [], []
        for i in range(count):
            sex = "F" if i % 2 else "M"
            label = int(rng.random() < 0.4)
            shift = 0.3 if sex == "M" else 0.07
            level = 0.35 + (shift if label else 0.0) + rng.normal(0, 0.07)
            pixels = np.clip(level * 255 + rng.normal(0, 5, (SIZE, SIZE)), 0, 255)
            example_id = f"{split}-{i}"
            table[example_id] = Attributes(
                sex=sex, age="90+" if i == 0 else str(20 + i % 60), view="AP", source="hand"
            )
            examples.append(
                tfrecords.serialize_example(
                    encode_png(pixels.astype(np.uint8)), example_id, label, view="AP"
                )
            )
            labels.append(label)
        tfrecords.write_shard(out / name, examples)
        splits[split] = {"count": count, "positives": sum(labels), "files": [name]}
        shards[name] = {"count": count, "bytes": (out / name).stat().st_size}
    write_table(out / "attributes.csv", table)
    manifest = {
        "image_size": SIZE,
        "splits": splits,
        "shards": shards,
        "source": "hand",
        "attributes": "attributes.csv",
    }
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="module")
def brightness_model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bright") / "model.keras"
    brightness_model(SIZE, 0.5).save(path)
    return path


def test_a_planted_subgroup_gap_is_found_end_to_end(brightness_model_path, tmp_path):
    data = _write_gap_dataset(tmp_path / "gap")
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(brightness_model_path.read_bytes())
    config = from_dict({"evaluate": {"bootstrap": 100}, "data": {"batch_size": 64}})
    out = tmp_path / "eval"
    evaluated = evaluate.evaluate_run(run, data, out, config, progress=False)
    result = evaluated.metrics
    analysis = result["subgroups"]
    assert analysis["attributes"] == ["sex", "age"]  # view: AP only; source: one value
    assert analysis["not_analysed"] == {
        "view": "one value only (AP)",
        "source": "one value only (hand)",
    }
    sex = analysis["by"]["sex"]
    assert sex["groups"]["M"]["n"] == sex["groups"]["F"]["n"] == 100
    gap = sex["gaps"]["roc_auc"]
    assert (gap["high"], gap["low"]) == ("M", "F")
    assert gap["difference"] > 0.1
    assert gap["excludes_zero"]
    assert evaluated.largest_gap["attribute"] == "sex"
    assert evaluated.largest_gap["low"] == "F"
    # Age bands from the table; 90+ lands in the top band.
    assert "80+" in analysis["by"]["age"]["groups"]
    assert (out / "subgroups.png").read_bytes().startswith(b"\x89PNG")
    report = (out / "report.md").read_text()
    assert "### Sex" in report
    assert "| M | 100 | 100 |" in report
    assert "**the interval excludes 0**" in report
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[1].startswith("test-0,test-0,")
    assert ",M,90+,AP,hand," in rows[1]
    # --by picks the attributes; an attribute with one value is analysed when asked.
    only_view = evaluate.evaluate_run(
        run, data, tmp_path / "v", FAST, by=("view",), progress=False
    ).metrics["subgroups"]
    assert only_view["attributes"] == ["view"]
    assert only_view["by"]["view"]["gaps"]["roc_auc"]["reason"] == "one subgroup only (AP)"
    none = evaluate.evaluate_run(run, data, tmp_path / "n", FAST, by=(), progress=False)
    assert none.metrics["subgroups"]["attributes"] == []
    assert not (tmp_path / "n" / "subgroups.png").exists()


def test_by_an_attribute_the_data_lacks_fails_before_writing(model_path, tmp_path):
    data = _write_dataset(tmp_path / "d", {"val": [0, 1, 0, 1], "test": [0, 1, 0, 1]})
    out = tmp_path / "o"
    with pytest.raises(UserError, match="--by sex: no evaluated image has its sex recorded"):
        evaluate.evaluate_run(model_path, data, out, FAST, by=("sex",), progress=False)
    with pytest.raises(UserError, match="unknown attribute 'race'"):
        evaluate.evaluate_run(model_path, data, out, FAST, by=("race",), progress=False)
    assert not out.exists()


def test_patients_in_several_splits_are_warned_about(model_path, tmp_path):
    data = _write_dataset(tmp_path / "d", {"val": [0, 1, 0, 1], "test": [0, 1, 0, 1]})
    manifest = json.loads((data / MANIFEST).read_text())
    (data / MANIFEST).write_text(json.dumps({**manifest, "patients_in_several_splits": 3}))
    result = evaluate.evaluate_run(model_path, data, tmp_path / "o", FAST, progress=False)
    shared = [w for w in result.warnings if "3 patient(s)" in w]
    assert len(shared) == 1
    assert "several splits" in shared[0]
    assert shared[0] in (tmp_path / "o" / "report.md").read_text()


def test_split_all_on_the_training_folder_does_not_suggest_external(trained_run, dataset, tmp_path):
    with pytest.raises(UserError) as refused:
        evaluate.evaluate_run(trained_run, dataset, tmp_path / "o", FAST, split="all")
    message = str(refused.value)
    assert "the folder it was trained on" in message
    assert "--external" not in message
    assert "evaluate --split test" in message
    # Forced anyway: the report says it is not an external validation, with a warning.
    forced = evaluate.evaluate_run(
        trained_run, dataset, tmp_path / "f", FAST, split="all", external_data=True, progress=False
    )
    assert forced.external
    assert forced.metrics["trained_here"]
    warning = [w for w in forced.warnings if w.startswith("--external was given, but the model")]
    assert len(warning) == 1
    report = (tmp_path / "f" / "report.md").read_text()
    assert "this is not an external validation" in report
    assert "the model did not train on this data" not in report
    assert warning[0] in report


def test_an_ensemble_keeps_its_out_of_fold_fit_and_gets_the_subgroup_analysis(
    brightness_model_path, tmp_path
):
    # A `cv` ensemble's card: threshold and temperature fitted on out-of-fold
    # predictions, members listed. Its evaluation keeps them and analyses subgroups.
    data = _write_gap_dataset(tmp_path / "gap")
    cv = tmp_path / "cv"
    cv.mkdir()
    (cv / "ensemble.keras").write_bytes(brightness_model_path.read_bytes())
    card = {
        "class_names": ["normal", "pneumonia"],
        "input_size": SIZE,
        "threshold": 0.45,
        "threshold_method": "youden",
        "temperature": 1.0,
        "members": [{"name": "fold_0", "fold": 0}, {"name": "fold_1", "fold": 1}],
        "calibration": {
            "fitted_on": "oof",
            "fitted_temperature": 1.0,
            "decision": "not significant",
            "nll_before": 0.4,
            "nll_after": 0.4,
            "p_value": 0.5,
            "n": 200,
            "n_patients": 200,
            "n_positive": 80,
            "n_negative": 120,
            "explanation": "kept at T = 1",
        },
    }
    (cv / "ensemble.json").write_text(json.dumps(card))
    before = (cv / "ensemble.json").read_bytes()
    config = from_dict({"evaluate": {"bootstrap": 100}, "data": {"batch_size": 64}})
    result = evaluate.evaluate_run(
        cv / "ensemble.keras", data, tmp_path / "e", config, progress=False
    )
    assert (cv / "ensemble.json").read_bytes() == before  # the out-of-fold fit stays
    assert result.threshold == 0.45
    assert result.metrics["calibration"]["fitted_on"] == "oof"
    assert result.metrics["subgroups"]["attributes"] == ["sex", "age"]
    assert result.largest_gap["attribute"] == "sex"


@pytest.mark.parametrize(
    "by, message",
    [("race", "unknown attribute 'race'"), ("", "unknown attribute ''"), ("sex,,x", "'x'")],
)
def test_cli_by_with_an_unknown_attribute_is_one_line_exit_2(
    by, message, tmp_path, capsys, monkeypatch
):
    from pneumokeras.cli import main

    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    with pytest.raises(SystemExit) as done:
        main(
            [
                "evaluate",
                "--model",
                "m.keras",
                "--data",
                "d",
                "--by",
                by,
                "--out",
                str(tmp_path / "o"),
            ]
        )
    err = capsys.readouterr().err
    assert done.value.code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not (tmp_path / "o").exists()


def test_cli_by_parsing():
    from pneumokeras.cli.evaluation import _parse_by

    assert _parse_by(None, None, None) is None
    assert _parse_by(None, None, "none") == ()
    assert _parse_by(None, None, " Sex , AGE,view ") == ("sex", "age", "view")
