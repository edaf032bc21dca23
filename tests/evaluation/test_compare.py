"""Tests for pneumokeras.evaluation.compare: the `compare` command on hand-built folders.

Two converted folders hold the same 80 images (same example ids, labels and
patients) at 32 and 48 px; the images' brightness gives their label away, more
or less clearly, so that a fixed "brightness model" ranks them well and an
untrained stand-in does not. One run (marked `backend`) scores three models and
checks every output against an independent recomputation from compare.csv; the
refusals run once.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from model_fixtures import brightness_model, contract_model
from sklearn.metrics import roc_auc_score

from pneumokeras.config import from_dict
from pneumokeras.errors import UserError
from pneumokeras.evaluation import compare, delong, paired
from pneumokeras.records import tfrecords
from pneumokeras.records.convert import encode_png
from pneumokeras.records.manifest import MANIFEST, load_manifest

FAST = from_dict({"evaluate": {"bootstrap": 50}, "data": {"batch_size": 16}})


def _write_folder(
    out: Path, size: int, count: int = 80, seed: int = 0, flip: int | None = None
) -> Path:
    """`count` test images (and 8 val) whose brightness says their label, at `size` px.

    The same seed gives the same images, ids, labels and patients at any size;
    `flip` relabels one test image (a folder that disagrees).
    """
    rng = np.random.default_rng(seed)
    pixel_rng = np.random.default_rng([seed, size])  # labels and levels the same at any size
    out.mkdir(parents=True)
    splits, shards = {}, {}
    for split, n in (("val", 8), ("test", count)):
        labels = (rng.random(n) < 0.4).astype(int)
        levels = 0.35 + 0.2 * labels + rng.normal(0, 0.12, n)
        noise = pixel_rng.normal(0, 4, (n, size, size))
        if split == "test" and flip is not None:
            labels[flip] = 1 - labels[flip]
        name = tfrecords.shard_name(split, 0, 1)
        examples = [
            tfrecords.serialize_example(
                encode_png(np.clip(levels[i] * 255 + noise[i], 0, 255).astype(np.uint8)),
                f"{split}-{i}",
                int(labels[i]),
                view="AP" if i % 2 else "PA",
            )
            for i in range(n)
        ]
        tfrecords.write_shard(out / name, examples)
        splits[split] = {"count": n, "positives": int(labels.sum()), "files": [name]}
        shards[name] = {"count": n, "bytes": (out / name).stat().st_size}
    manifest = {"image_size": size, "splits": splits, "shards": shards, "source": "hand"}
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out


def _save(model: keras.Model, run: Path, card: dict | None) -> Path:
    run.mkdir(parents=True)
    model.save(run / "model.keras")
    if card is not None:
        (run / "model.json").write_text(json.dumps(card))
    return run


def _card(size: int, threshold: float, data: dict | None = None) -> dict:
    return {
        "class_names": ["normal", "pneumonia"],
        "input_size": size,
        "threshold": threshold,
        "threshold_method": "youden",
        "temperature": 1.0,
        "data": data or {},
    }


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    return _write_folder(root / "d32", 32), _write_folder(root / "d48", 48)


@pytest.fixture(scope="module")
def models(tmp_path_factory, folders):
    root = tmp_path_factory.mktemp("models")
    d32, _ = folders
    trained_here = {"fingerprint": load_manifest(d32).fingerprint, "source": "hand"}
    return {
        "bright": _save(brightness_model(32, 0.45), root / "bright", _card(32, 0.5, trained_here)),
        "untrained": _save(contract_model(32), root / "untrained", None),
        "big": _save(brightness_model(48, 0.45), root / "big" / "run", _card(48, 0.4)),
    }


@pytest.mark.backend
def test_compare_three_models_of_two_sizes(folders, models, tmp_path):
    d32, d48 = folders
    out = tmp_path / "out"
    result = compare.compare_run(
        [models["bright"], models["untrained"], models["big"]],
        [d32, d48],
        out,
        FAST,
        progress=False,
    )
    for name in compare.OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    assert result.names == ("bright", "untrained", "run")
    assert (result.n, result.patients) == (80, 80)
    record = json.loads((out / "compare.json").read_text())
    assert record == json.loads(json.dumps(result.record))
    assert [m["data_dir"] for m in record["models"]] == [str(d32), str(d32), str(d48)]

    # compare.csv: the same images in the same order, one probability column per model.
    lines = (out / "compare.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header == [
        "example_id", "patient", "label", "sex", "age", "view", "source",
        "probability_bright", "probability_untrained", "probability_run",
    ]  # fmt: skip
    rows = [line.split(",") for line in lines[1:]]
    assert [r[0] for r in rows] == [f"test-{i}" for i in range(80)]
    labels = np.array([int(r[2]) for r in rows])
    probs = np.array([[float(r[c]) for r in rows] for c in (7, 8, 9)])
    # The statistics redone from the CSV with independent tools.
    for m, model in enumerate(record["models"]):
        assert model["roc_auc"]["value"] == pytest.approx(roc_auc_score(labels, probs[m]))
    # The brightness model at 48 px scores the same images as at 32 px (another size of
    # the same pixels): nearly the same ranking.
    assert abs(record["models"][0]["roc_auc"]["value"] - result.roc_auc["run"]) < 0.05
    assert result.roc_auc["bright"] > 0.8
    pair = record["pairs"][0]
    assert (pair["a"], pair["b"]) == ("bright", "untrained")
    test = delong.delong_test(labels, probs[0], probs[1])
    assert pair["roc_auc"]["difference"] == pytest.approx(test.difference)
    assert pair["roc_auc"]["delong"]["z"] == pytest.approx(test.z)
    assert pair["roc_auc"]["delong"]["p_value"] == pytest.approx(test.p_value)
    right_a = probs[0][labels == 1] >= 0.5
    right_b = probs[1][labels == 1] >= 0.5  # no card: the default threshold
    assert pair["sensitivity"]["mcnemar"] == paired.mcnemar_exact(right_a, right_b)
    assert len(record["pairs"]) == 3
    # Warnings: the card-less model's threshold was never fitted; "run" records no data.
    assert any(w.startswith("model untrained: its threshold 0.500") for w in result.warnings)
    assert any("model run: its card records no training data" in w for w in result.warnings)
    assert record["models"][0]["provenance"] == "trained on this converted folder"
    text = (out / "compare.md").read_text()
    assert "# Paired comparison of 3 models" in text
    assert "| bright | untrained |" in text
    assert "![ROC curves of every model](roc.png)" in text
    assert "not for diagnosis" in text


def test_compare_refuses_what_cannot_be_compared(folders, models, tmp_path):
    d32, _ = folders
    out = tmp_path / "out"
    bright, chance, big = models["bright"], models["untrained"], models["big"]
    cases = [
        (([bright], [d32]), "two or more models"),
        (([bright, bright / "model.keras"], [d32]), "is given twice"),
        (([bright, big], [d32]), r"takes 48 px images and no --data folder holds them"),
        (([bright, chance], [d32, d32]), "is given twice"),
        (([bright, chance], [d32, _write_folder(tmp_path / "again32", 32)]), "both hold 32 px"),
        (([bright, chance], []), "needs a converted folder"),
    ]
    for (paths, dirs), message in cases:
        with pytest.raises(UserError, match=message):
            compare.compare_run(paths, dirs, out, FAST, progress=False)
    other = _write_folder(tmp_path / "other48", 48, count=79)
    with pytest.raises(UserError, match="do not hold the same images"):
        compare.compare_run([bright, big], [d32, other], out, FAST, progress=False)
    relabelled = _write_folder(tmp_path / "relabelled48", 48, flip=3)
    with pytest.raises(UserError, match="label some of the same images differently"):
        compare.compare_run([bright, big], [d32, relabelled], out, FAST, progress=False)
    # A model trained on another conversion of the same data set ("hand").
    card = _card(32, 0.5, {"fingerprint": "0123456789abcdef", "source": "hand"})
    elsewhere = _save(brightness_model(32, 0.45), tmp_path / "elsewhere", card)
    with pytest.raises(UserError, match="trained on another conversion of hand"):
        compare.compare_run([bright, elsewhere], [d32], out, FAST, progress=False)
    one_class = _write_folder(tmp_path / "one", 32, count=3, seed=5)
    plain = _save(brightness_model(32, 0.45), tmp_path / "plain", None)  # no card: no training data
    with pytest.raises(UserError, match="needs at least two of each"):
        compare.compare_run([plain, chance], [one_class], out, FAST, progress=False)
    with pytest.raises(UserError, match="no split 'holdout'"):
        compare.compare_run([bright, chance], [d32], out, FAST, split="holdout")
    assert not out.exists()


def test_model_names():
    assert compare.model_names([Path("runs/a/model.keras"), Path("cv/ensemble.keras")]) == [
        "a",
        "ensemble",
    ]
    assert compare.model_names([Path("x/a/run/model.keras"), Path("y/b/run/model.keras")]) == [
        "a/run",
        "b/run",
    ]
    assert compare.model_names([Path("m.keras"), Path("m.keras")]) == ["m-1", "m-2"]


def test_cli_compare_with_one_model_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    from pneumokeras.cli import main

    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    with pytest.raises(SystemExit) as done:
        main(["compare", "--model", "a.keras", "--data", "d", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert done.value.code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "two or more models" in err
    assert not (tmp_path / "o").exists()
