"""The end-to-end demo: synth → convert → train → evaluate → explain.

Runs the whole pipeline on the embedded synthetic RSNA-shaped data set so a
newcomer sees every stage work on a fresh machine (`make demo`). Each stage is the
same library call as its CLI command; explain runs in a TensorFlow subprocess when
training ran under another backend (tf-keras-vis needs `tf.GradientTape`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pneumokeras.config import Config

STAGES = 5


@dataclasses.dataclass(frozen=True)
class DemoSummary:
    """Headline figures and where the outputs are."""

    out_dir: Path
    test_roc_auc: float
    sensitivity: float
    specificity: float
    pointing_game: float | None
    energy_in_boxes: float | None
    report: Path
    overlays: Path
    seconds: float


def _value(metrics: dict, name: str) -> float:
    entry = metrics["metrics"][name]
    return float(entry["value"] if isinstance(entry, dict) else entry)


def _explain(run_dir: Path, data_dir: Path, out: Path, config: Config, limit: int) -> dict:
    import keras

    if keras.backend.backend() == "tensorflow":
        from pneumokeras.explain import explain_run

        return explain_run(
            run_dir / "model.keras",
            out,
            config,
            data_dir=data_dir,
            split="test",
            limit=limit,
            only_positives=True,
            progress=False,
        )
    # Keras is already loaded with another backend in this process.
    overrides = [
        f"{section}.{key}={value}"
        for section, values in config.to_dict().items()
        for key, value in values.items()
        if section == "explain" and key != "layer"
    ]
    command = [
        sys.executable,
        "-m",
        "pneumokeras.cli",
        "explain",
        "--model",
        str(run_dir / "model.keras"),
        "--data",
        str(data_dir),
        "--split",
        "test",
        "--limit",
        str(limit),
        "--positives-only",
        "--out",
        str(out),
    ]
    for override in overrides:
        command += ["--set", override]
    if config.explain.layer:
        command += ["--layer", config.explain.layer]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"explain failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads((out / "summary.json").read_text())


def run_demo(
    out_dir: str | Path,
    config: Config,
    patients: int = 600,
    size: int = 512,
    seed: int = 0,
    workers: int | None = None,
    echo: Callable[[str], None] = print,
) -> DemoSummary:
    """Runs every stage on fresh synthetic data in `out_dir` (replaced).

    Args:
        out_dir: folder for synth/, tfrecords/, run/, evaluation/, explain/.
        config: settings (configs/demo.yaml); images are converted at
            `config.data.image_size`.
        patients: synthetic patients.
        size: synthetic DICOM side, pixels.
        seed: data seed.
        workers: processes for synth and convert (None = all cores).
        echo: where progress lines go.
    """
    from pneumokeras.convert import convert
    from pneumokeras.synth import generate

    start = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    synth_dir, data_dir = out_dir / "synth", out_dir / "tfrecords"
    run_dir, eval_dir, explain_dir = out_dir / "run", out_dir / "evaluation", out_dir / "explain"

    def stage(number: int, text: str) -> None:
        echo(f"[{number}/{STAGES}] {text} ({time.perf_counter() - start:.0f} s elapsed)")

    stage(1, f"synth: {patients} patients at {size} px")
    generate(synth_dir, patients=patients, size=size, seed=seed, workers=workers, progress=False)

    stage(2, f"convert to {config.data.image_size} px TFRecords")
    converted = convert(
        synth_dir / "stage_2_train_images",
        synth_dir / "stage_2_train_labels.csv",
        data_dir,
        class_info_csv=synth_dir / "stage_2_detailed_class_info.csv",
        size=config.data.image_size,
        seed=seed,
        workers=workers,
        progress=False,
    )
    echo(
        f"      train {converted.counts['train']}, val {converted.counts['val']}, "
        f"test {converted.counts['test']} patients"
    )

    import keras

    from pneumokeras.evaluate import evaluate_run
    from pneumokeras.train import train

    stage(
        3,
        f"train {config.model.name} for {config.train.epochs} epochs under "
        f"{keras.backend.backend()}",
    )
    trained = train(data_dir, run_dir, config, verbose=2)
    echo(
        f"      best epoch {trained.best_epoch + 1}, validation ROC-AUC {trained.best_val_auc:.3f}"
    )

    stage(4, "evaluate on the test split")
    metrics = evaluate_run(
        run_dir / "model.keras", data_dir, eval_dir, config, split="test", progress=False
    )

    stage(5, "explain (Grad-CAM) on test positives")
    explained = _explain(run_dir, data_dir, explain_dir, config, limit=config.explain.limit)

    return DemoSummary(
        out_dir=out_dir,
        test_roc_auc=_value(metrics, "roc_auc"),
        sensitivity=_value(metrics, "recall"),
        specificity=_value(metrics, "specificity"),
        pointing_game=explained.get("pointing_game"),
        energy_in_boxes=explained.get("energy_in_boxes"),
        report=eval_dir / "report.md",
        overlays=explain_dir,
        seconds=time.perf_counter() - start,
    )
