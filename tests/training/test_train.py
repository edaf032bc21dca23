import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from pneumokeras.config import load_config
from pneumokeras.errors import UserError
from pneumokeras.records.manifest import Manifest, load_manifest
from pneumokeras.training import callbacks, run_folder, train

pytestmark = pytest.mark.backend

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "data.image_size=64",
    "data.batch_size=8",
    # ResNet10: ResNet18's layers with half the blocks (the same code, one block per
    # stage), so half the tracing. ResNet18 itself is built, saved and loaded in
    # test_resnet.py and trains in test_bench_train.py's --gpu run (JAX).
    "model.name=resnet10",
    "model.filters=8",
    "train.learning_rate=3e-3",
    "train.distribute=none",
    # No XLA compile under TensorFlow (most of a tiny run); one test keeps the default.
    "train.xla=false",
]


def _config(*overrides):
    return load_config(None, [*TINY, *overrides])


def _history(run_dir):
    with open(Path(run_dir) / "history.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def short_run(converted_dir, tmp_path_factory):
    """A finished 4-epoch run: (its folder, its config, its summary)."""
    config = _config(
        "train.epochs=4",
        "train.xla=true",  # the XLA path once (`auto` picks graphs on CPUs; GPUs get XLA)
        "augment.rotation_degrees=0",
        "augment.flip=false",
        "augment.brightness=0",
        "augment.contrast=0",
    )
    run = tmp_path_factory.mktemp("short") / "run"
    return run, config, train.train(converted_dir, run, config, verbose=0)


@pytest.mark.slow
def test_short_training_lowers_the_loss_and_writes_the_run(short_run):
    run, _, summary = short_run
    rows = _history(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert {"auc", "precision", "recall", "accuracy", "val_auc", "learning_rate"} <= set(rows[0])
    # The rate of each epoch's first step: the peak first, then cosine decay, never 0.
    rates = [float(r["learning_rate"]) for r in rows]
    assert rates[0] == pytest.approx(3e-3)
    assert rates == sorted(rates, reverse=True)
    assert rates[-1] > 0
    meta = json.loads((run / "model.json").read_text())
    assert meta["class_names"] == ["normal", "pneumonia"]
    assert meta["input_size"] == 64
    assert meta["backend"] == keras.backend.backend()
    # One epoch numbering: the card, the summary and history.csv count from 1.
    assert meta["best_epoch"] == summary.best_epoch
    best_row = rows[summary.best_epoch - 1]
    assert float(best_row["val_auc"]) == pytest.approx(summary.best_val_auc, abs=1e-5)
    assert meta["validation"]["auc"] == pytest.approx(summary.best_val_auc)
    assert meta["threshold_method"] == "default"
    assert meta["temperature"] == 1.0
    assert meta["data"]["splits"]["train"]["count"] > 0
    assert meta["data"]["fingerprint"]
    low, high = meta["input_statistics"]["mean"]
    assert 0 < low < high < 255
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished"
    assert meta["gradcam_layer"] == "stack4_block1_out"  # ResNet10's last block
    assert (run / "model.keras").is_file()
    assert any((run / "logs").rglob("*"))
    assert not (run / "backup").exists()


def test_clear_errors(converted_dir, tmp_path):
    with pytest.raises(UserError, match=r"no manifest.json"):
        train.train(tmp_path, tmp_path / "run", _config())
    with pytest.raises(UserError, match=r"data.image_size is 96"):
        train.train(converted_dir, tmp_path / "run", _config("data.image_size=96"))
    broken = tmp_path / "broken"
    shutil.copytree(converted_dir, broken)
    next(broken.glob("train-*.tfrecord")).unlink()
    with pytest.raises(UserError, match="missing"):
        train.train(broken, tmp_path / "run", _config())


# One training for the options that change the model or the loss (a box head,
# last stride 1, focal loss, warm-up) and a fold: each training is a trace (and
# under JAX a compile) of its own, so they share one.
@pytest.mark.slow
def test_fold_training_box_supervision_last_stride_one_focal_loss_and_warmup(
    converted_dir, tmp_path
):
    config = _config(
        "train.epochs=2",
        "train.box_loss_weight=2.0",
        "model.last_stride=1",
        "train.loss=focal",
        "train.warmup_epochs=0.5",
    )
    summary = train.train(converted_dir, tmp_path / "run", config, fold=2, verbose=0)
    rows = _history(tmp_path / "run")
    # Plain metric names, as without the head; the loss parts are logged too.
    assert {"auc", "val_auc", "predictions_loss", "box_map_loss", "val_box_map_loss"} <= set(
        rows[0]
    )
    assert float(rows[-1]["box_map_loss"]) < float(rows[0]["box_map_loss"])
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["fold"] == 2
    assert summary.epochs_run == 2
    assert meta["validation"]["auc"] == pytest.approx(summary.best_val_auc)
    assert meta["config"]["train"]["box_loss_weight"] == 2.0
    assert meta["config"]["train"]["loss"] == "focal"
    assert meta["gradcam_layer"] == "stack4_block1_out"  # ResNet10's last block
    # The saved model is the plain classifier: one output, no box layers.
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert model.output_shape == (None, 2)
    assert not [layer.name for layer in model.layers if layer.name.startswith("box_")]
    fresh = build_model_like(config)
    assert len(model.weights) == len(fresh.weights)
    assert model.get_layer("stack4_block1_out").output.shape[1:3] == (4, 4)  # 64 px / 16
    bad = _config("model.name=densenet121", "model.last_stride=1")
    with pytest.raises(UserError, match="resnet18 and resnet10 only"):
        train.train(converted_dir, tmp_path / "bad", bad, verbose=0)


def build_model_like(config):
    from pneumokeras.models import resnet

    return resnet.build_model(config.model, config.data.image_size)


def test_standard_logs_drop_the_output_prefix_of_metrics_only():
    logs = {"loss": 1, "predictions_loss": 2, "box_map_loss": 3, "predictions_auc": 4}
    logs |= {"val_predictions_auc": 5, "val_box_map_loss": 6, "val_predictions_loss": 7}
    assert callbacks.standard_logs(logs) == {
        "loss": 1,
        "predictions_loss": 2,
        "box_map_loss": 3,
        "auc": 4,
        "val_auc": 5,
        "val_box_map_loss": 6,
        "val_predictions_loss": 7,
    }
    assert callbacks.standard_logs({"val_auc": 1, "auc": 2}) == {"val_auc": 1, "auc": 2}


def _cli_train(converted_dir, run_dir, *extra, hooks=()):
    """`cli.py train` in a new process; `hooks`: options of tests/training_hooks.py."""
    program = [str(ROOT / "tests" / "training_hooks.py"), *hooks, "--"] if hooks else []
    args = [
        sys.executable,
        *(program or [str(ROOT / "cli.py")]),
        "train",
        "--data",
        str(converted_dir),
        "--out",
        str(run_dir),
        *[a for o in TINY for a in ("--set", o)],
        *extra,
    ]
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# In the TensorFlow pass: under JAX, resuming killed processes from their backup is
# test_distributed.py's killed_and_resumed (two processes killed, restarted, finished).
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="resumed under JAX in test_distributed.py"
)
@pytest.mark.slow
def test_resume_after_kill_and_plain_output_to_a_pipe(converted_dir, tmp_path, capsys):
    from pneumokeras.cli import main

    run = tmp_path / "run"
    extra = ("--set", "train.epochs=2")
    # The process kills itself at the end of epoch 1, after that epoch's backup.
    process = _cli_train(converted_dir, run, *extra, hooks=("--kill-after-epoch", "1"))
    killed_stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == -signal.SIGKILL, stderr[-2000:]
    assert [int(r["epoch"]) for r in _history(run)] == [1]
    assert json.loads((run / "run.json").read_text())["status"] == "running"
    # Its output went to a pipe: plain lines, one per epoch, no progress bars.
    assert "\r" not in killed_stdout
    assert "\x1b[" not in killed_stdout
    assert [line for line in killed_stdout.splitlines() if line.startswith("Epoch ")] == [
        "Epoch 1/2"
    ]
    # The same command again resumes (run here, through the command line: a
    # TensorFlow start spared); its output is captured, not a terminal either.
    main(
        [
            "train",
            "--data",
            str(converted_dir),
            "--out",
            str(run),
            *[a for o in TINY for a in ("--set", o)],
            *extra,
        ]
    )
    stdout = capsys.readouterr().out
    assert [int(r["epoch"]) for r in _history(run)] == [1, 2]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert "\r" not in stdout
    assert "\x1b[" not in stdout
    assert "Epoch 2/2" in stdout
    assert "Epoch 1/2" not in stdout
    meta = json.loads((run / "model.json").read_text())
    assert (
        stdout.strip()
        .splitlines()[-1]
        .startswith(f"best epoch {meta['best_epoch']}: validation ROC-AUC")
    )


# Data parallelism over two JAX devices in one process: test_distributed.py's
# reference run (one process, two devices), compared there with two processes.


def test_cli_unknown_setting_is_one_line(tmp_path):
    process = _cli_train(tmp_path, tmp_path / "run", "--set", "no.such_key=1")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert stderr.strip().splitlines() == [stderr.strip()]
    assert "no.such_key" in stderr


# Once, in the TensorFlow pass: what it checks (refusing a finished run, --overwrite,
# a folder of other files) is the run folder's bookkeeping, not the backend's; its
# training (another model width) would be one more cold XLA compile under JAX. The
# finished run is a copy of `short_run`'s.
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="run-folder bookkeeping")
@pytest.mark.slow
def test_a_run_folder_describes_one_run(converted_dir, short_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(short_run[0], run)
    config = short_run[1]
    before = (run / "model.keras").read_bytes(), (run / "history.csv").read_text()
    # A finished run is refused, whatever the settings; nothing changes.
    for again in (config, _config("train.epochs=1", "model.filters=4")):
        with pytest.raises(UserError, match=r"holds a finished run.*--overwrite"):
            train.train(converted_dir, run, again, verbose=0)
    assert ((run / "model.keras").read_bytes(), (run / "history.csv").read_text()) == before
    # --overwrite replaces it: a new card, a new history, a new model.
    train.train(
        converted_dir, run, _config("train.epochs=1", "model.filters=4"), verbose=0, overwrite=True
    )
    meta = json.loads((run / "model.json").read_text())
    assert meta["config"]["model"]["filters"] == 4
    assert len(_history(run)) == 1
    # A folder with other files is not taken for a run folder.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        train.train(converted_dir, other, config, verbose=0)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_an_unfinished_run_resumes_only_with_its_own_settings(converted_dir, tmp_path):
    run = tmp_path / "run"
    config = _config("train.epochs=2")
    manifest = load_manifest(converted_dir)
    run_folder.prepare_run_dir(run, config, manifest, None, overwrite=False)  # as a killed run
    with pytest.raises(UserError, match=r"other settings \(train.epochs: 2 → 3\)"):
        train.train(converted_dir, run, _config("train.epochs=3"), verbose=0)
    with pytest.raises(UserError, match="fold: None → 1"):
        train.train(converted_dir, run, config, fold=1, verbose=0)
    assert run_folder.prepare_run_dir(run, config, manifest, None, overwrite=False) is True
    # A run record cut short (a disk that filled up) is one line, not a traceback.
    (run / run_folder.RUN_RECORD).write_text('{"status": "runn')
    with pytest.raises(UserError, match=r"run record .*run.json is unreadable"):
        run_folder.prepare_run_dir(run, config, manifest, None, overwrite=False)


def test_fold_errors_name_the_folds(converted_dir, tmp_path):
    with pytest.raises(UserError, match=r"has 3 folds \(0\.\.2\)"):
        train.train(converted_dir, tmp_path / "run", _config(), fold=3)
    with pytest.raises(UserError, match=r"has 3 folds"):
        train.train(converted_dir, tmp_path / "run", _config(), fold=-1)
    unfolded = tmp_path / "unfolded"
    shutil.copytree(converted_dir, unfolded)
    manifest = json.loads((unfolded / "manifest.json").read_text())
    manifest.update(num_folds=0, folds={}, fold_class_weights=[])
    (unfolded / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="converted without --folds"):
        train.train(unfolded, tmp_path / "run", _config(), fold=0)
    assert not (tmp_path / "run").exists()


def test_training_card_names_the_layout_images_and_patients(tmp_path):
    config = _config()
    splits = {
        "train": {"count": 30, "positives": 9, "files": []},
        "val": {"count": 6, "positives": 2, "files": []},
    }
    folders = {
        "image_size": 64,
        "splits": splits,
        "shards": {},
        "source": "chest_xray",
        "source_layout": "folders",
        "grouping": {"file": "patients.csv", "patients": 21, "images": 36},
    }
    card = train.training_card(config, Manifest.from_json(folders), tmp_path, None, None, 1, {})
    assert (card.data["source"], card.data["source_layout"]) == ("chest_xray", "folders")
    assert (card.data["images"], card.data["patients"]) == (36, 21)
    # A manifest from before the other layouts: RSNA, one DICOM per patient.
    old = {key: value for key, value in folders.items() if key not in ("source_layout", "grouping")}
    card = train.training_card(config, Manifest.from_json(old), tmp_path, None, None, 1, {})
    assert (card.data["source_layout"], card.data["images"], card.data["patients"]) == (
        "rsna",
        36,
        36,
    )


def test_settings_that_do_not_shape_the_model_resume_a_run(converted_dir, tmp_path):
    run = tmp_path / "run"
    manifest = load_manifest(converted_dir)
    run_folder.prepare_run_dir(run, _config(), manifest, None, overwrite=False)
    # evaluate and explain settings are read later (as cv's folds allow): still a resume.
    later = _config("evaluate.bootstrap=7", "explain.limit=3")
    assert run_folder.prepare_run_dir(run, later, manifest, None, overwrite=False) is True


def test_train_puts_the_global_keras_state_back(converted_dir, tmp_path):
    before = keras.config.dtype_policy().name
    # Fails after the precision is set (a backbone without last_stride 1).
    mixed = _config(
        "train.precision=mixed_bfloat16", "model.name=densenet121", "model.last_stride=1"
    )
    with pytest.raises(UserError, match="resnet18 and resnet10 only"):
        train.train(converted_dir, tmp_path / "run", mixed, verbose=0)
    assert keras.config.dtype_policy().name == before == "float32"
    assert keras.distribution.distribution() is None
    assert not (tmp_path / "run").exists()  # locked, then removed again: nothing written


def test_a_run_folder_in_use_is_refused_naming_its_holder(converted_dir, tmp_path):
    run = tmp_path / "run"
    with run_folder.run_lock(run):
        with pytest.raises(run_folder.RunInUseError) as info:
            train.train(converted_dir, run, _config(), verbose=0)
        assert str(info.value).startswith(f"{run} is in use by another process (pid {os.getpid()}")
        assert "wait for that run to end, or choose another --out" in str(info.value)
        assert sorted(p.name for p in run.iterdir()) == [run_folder.LOCK_FILE]
    assert not run.exists()  # the lock's folder goes with it when nothing was written


def test_the_cli_trains_at_the_data_size_unless_one_is_set(
    converted_dir, tmp_path, monkeypatch, capsys
):
    from pneumokeras.cli import main

    seen = []

    def fake_train(data_dir, run_dir, config, **kwargs):
        seen.append(config.data.image_size)
        raise UserError("stop here")

    monkeypatch.setattr(train, "train", fake_train)
    base = ["train", "--data", str(converted_dir), "--out", str(tmp_path / "run")]
    for extra in ([], ["--set", "data.image_size=96"]):
        with pytest.raises(SystemExit):
            main([*base, *extra])
    # The data is 64 px: the default (224) follows it, with a note; a size given is kept.
    assert seen == [64, 96]
    err = capsys.readouterr().err
    assert "note: training at the data's 64 px (the default data.image_size is 224" in err
    config = tmp_path / "settings.yaml"
    config.write_text("data:\n  image_size: 128\n")
    with pytest.raises(SystemExit):
        main([*base, "--config", str(config)])
    assert seen[-1] == 128  # set in the settings file: kept (and refused by train)


@pytest.mark.parametrize("checkpoint, kept", [("best", 2), ("last", 3)])
def test_the_saver_keeps_the_first_best_or_the_last_epoch(tmp_path, checkpoint, kept):
    saver = callbacks.BestModelSaver(tmp_path, None, keep_last=checkpoint == "last")
    # A small validation split: the ROC-AUC saturates at 1.0 on the second epoch.
    for epoch, auc in enumerate((0.9, 1.0, 1.0)):
        saver.on_epoch_end(epoch, {"val_auc": auc})
    assert saver.best_epoch == kept
    assert load_config(None, [f"train.checkpoint={checkpoint}"]).train.checkpoint == checkpoint


def test_on_device_augmentation_refuses_host_only_steps_before_writing(converted_dir, tmp_path):
    config = _config("augment.on_device=true", "augment.gamma=0.3", "augment.noise=0")
    with pytest.raises(UserError, match=r"augment\.gamma runs on the host: set it to 0"):
        train.train(converted_dir, tmp_path / "run", config, verbose=0)
    assert not (tmp_path / "run").exists()
