"""The end-to-end demo: synth → convert → train → evaluate → explain.

Runs the whole pipeline on the embedded synthetic RSNA-shaped data set so a
newcomer sees every stage work on a fresh machine (`make demo`). Each stage is the
same library call as its CLI command; explain runs in a spawned TensorFlow process
when training ran under another backend (tf-keras-vis needs `tf.GradientTape`).
"""

from __future__ import annotations

import csv
import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pneumokeras.config import Config
from pneumokeras.errors import UserError
from pneumokeras.utils.spawn import call_under_tensorflow

if TYPE_CHECKING:
    from pneumokeras.explain.explain import ExplainSummary

STAGES = 5
OUTPUT_FOLDERS = ("synth", "tfrecords", "run", "evaluation", "explain")


@dataclasses.dataclass(frozen=True)
class DemoSummary:
    """Headline figures and where the outputs are."""

    out_dir: Path
    test_roc_auc: float
    sensitivity: float
    specificity: float
    pointing_game: float | None  # over test positives with boxes, misses of the model included
    pointing_game_detected: float | None  # over those the model called pneumonia
    energy_in_boxes: float | None
    largest_gap: str | None  # the largest subgroup gap evaluate found, in words; None: none
    report: Path
    overlays: Path
    seconds: float


def _value(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _explain_test_positives(
    run_dir: Path, data_dir: Path, out: Path, config: Config, limit: int
) -> ExplainSummary:
    """explain_run on the test positives (needs Keras on TensorFlow: see `_explain`)."""
    from pneumokeras.explain.explain import explain_run

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


def _explain(
    run_dir: Path, data_dir: Path, out: Path, config: Config, limit: int
) -> ExplainSummary:
    """Explains under TensorFlow: here, or in a spawned child when Keras runs another backend.

    Keras fixes its backend when first imported, and tf-keras-vis needs TensorFlow,
    so a JAX demo explains in a fresh process (`spawn.call_under_tensorflow`).
    """
    return call_under_tensorflow(_explain_test_positives, run_dir, data_dir, out, config, limit)


def _clear_out_dir(out_dir: Path) -> None:
    """Removes an earlier demo's output; refuses a folder holding anything else.

    Raises:
        UserError: `out_dir` is a file, or a folder with entries the demo does not write.
    """
    if out_dir.is_file():
        raise UserError(f"--out {out_dir} is a file; give a folder")
    if not out_dir.is_dir():
        return
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in OUTPUT_FOLDERS)
    if foreign:
        raise UserError(
            f"--out {out_dir} holds files the demo did not write ({', '.join(foreign[:3])}); "
            "give a new or empty folder, or an earlier demo's output folder"
        )
    shutil.rmtree(out_dir)


def _pointing_on_detected(explain_dir: Path) -> float | None:
    """Pointing-game rate over test positives the classifier called pneumonia."""
    with open(explain_dir / "explain.csv", newline="") as handle:
        hits = [
            int(row["pointing_game"])
            for row in csv.DictReader(handle)
            if row["pointing_game"] != "" and row["predicted_label"] == "1"
        ]
    return sum(hits) / len(hits) if hits else None


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
        out_dir: folder for synth/, tfrecords/, run/, evaluation/, explain/
            (an earlier demo's output is replaced; a folder holding other files
            is refused).
        config: settings (configs/demo.yaml); images are converted at
            `config.data.image_size`.
        patients: synthetic patients.
        size: synthetic DICOM side, pixels.
        seed: data seed.
        workers: processes for synth and convert (None = all cores).
        echo: where progress lines go.
    """
    from pneumokeras.records.convert import ConvertOptions, convert
    from pneumokeras.synth import generate

    start = time.perf_counter()
    out_dir = Path(out_dir)
    _clear_out_dir(out_dir)
    synth_dir, data_dir = out_dir / "synth", out_dir / "tfrecords"
    run_dir, eval_dir, explain_dir = out_dir / "run", out_dir / "evaluation", out_dir / "explain"

    def stage(number: int, text: str) -> None:
        echo(f"[{number}/{STAGES}] {text} ({time.perf_counter() - start:.0f} s elapsed)")

    stage(1, f"synth: {patients} patients at {size} px")
    generate(synth_dir, patients=patients, size=size, seed=seed, workers=workers, progress=False)

    stage(2, f"convert to {config.data.image_size} px TFRecords")
    converted = convert(
        ConvertOptions(
            images=synth_dir / "stage_2_train_images",
            out=data_dir,
            labels=synth_dir / "stage_2_train_labels.csv",
            class_info=synth_dir / "stage_2_detailed_class_info.csv",
            size=config.data.image_size,
            seed=seed,
            workers=workers,
        ),
        progress=False,
    )
    echo(
        f"      train {converted.counts['train']}, val {converted.counts['val']}, "
        f"test {converted.counts['test']} patients"
    )

    import keras

    from pneumokeras.evaluation.evaluate import evaluate_run
    from pneumokeras.evaluation.report import gap_words
    from pneumokeras.training.train import train

    stage(
        3,
        f"train {config.model.name} for {config.train.epochs} epochs under "
        f"{keras.backend.backend()}",
    )
    trained = train(data_dir, run_dir, config, verbose=2)
    echo(f"      best epoch {trained.best_epoch}, validation ROC-AUC {trained.best_val_auc:.3f}")

    stage(4, "evaluate on the test split")
    evaluated = evaluate_run(
        run_dir / "model.keras", data_dir, eval_dir, config, split="test", progress=False
    )

    stage(5, "explain (Grad-CAM) on test positives")
    explained = _explain(run_dir, data_dir, explain_dir, config, limit=config.explain.limit)

    return DemoSummary(
        out_dir=out_dir,
        test_roc_auc=_value(evaluated.roc_auc),
        sensitivity=_value(evaluated.sensitivity),
        specificity=_value(evaluated.specificity),
        pointing_game=explained.pointing_game,
        pointing_game_detected=_pointing_on_detected(explain_dir),
        energy_in_boxes=explained.energy_in_boxes,
        largest_gap=gap_words(evaluated.largest_gap) if evaluated.largest_gap else None,
        report=eval_dir / "report.md",
        overlays=explain_dir,
        seconds=time.perf_counter() - start,
    )
