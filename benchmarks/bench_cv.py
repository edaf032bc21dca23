"""Cross-validation and the deep ensemble on a synthetic set: what K fold models buy.

Generates a synthetic RSNA-shaped set (`synth.generate`), converts it with K
folds and a held-out test split, runs `cv.cross_validate` one fold at a time
(timed), then compares on the test split, which no fold saw:

- fold mean ± sd of the held-out ROC-AUC (cv_metrics.json);
- the ensemble (its card's out-of-fold temperature) against the best single fold
  model, chosen by its held-out-fold ROC-AUC (not on test) and calibrated with
  a temperature fitted on its own held-out fold: ROC-AUC, ECE, Brier score;
- the pointing game on test positives with boxes: the ensemble's mean Grad-CAM
  map (each member at its own last stage) against that single model's map;
- wall time per fold.

Grad-CAM needs TensorFlow (tf-keras-vis), so this runs under KERAS_BACKEND=tensorflow.

Usage:
    python -m benchmarks.bench_cv                               # 1000 patients, demo recipe
    python -m benchmarks.bench_cv --patients 300 --folds 3 --epochs 3   # a quick look

Writes `benchmarks/out/bench_cv.json` (atomically) and prints the Markdown.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import common

NAME = "bench_cv"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--dicom-size", type=int, default=256, help="synthetic DICOM side, px")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--test", type=float, default=0.2, help="test share of patients")
    parser.add_argument("--config", default="demo", help="settings file or preset name")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="extra SECTION.KEY=VALUE settings",
    )
    parser.add_argument("--work", default=None, help="working folder (default: a temp folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/out/NAME.json)")
    return parser.parse_args(argv)


def _test_split(data_dir: Path):
    """Test images `(N, S, S, 1)` float32, labels `(N,)`, boxes per image."""
    import io

    import numpy as np
    from PIL import Image

    from pneumokeras.records import tfrecords

    records = tfrecords.read_split(data_dir, "test")
    images = np.stack([np.asarray(Image.open(io.BytesIO(r["png"]))) for r in records])
    labels = np.array([r["label"] for r in records])
    return images[..., None].astype(np.float32), labels, [r["boxes"] for r in records]


def _scores(labels, probs) -> dict[str, float]:
    from pneumokeras.evaluation import metrics

    point = metrics.classification_metrics(labels, probs, 0.5)
    return {
        "roc_auc": point["roc_auc"],
        "brier": point["brier"],
        "ece": metrics.expected_calibration_error(labels, probs),
    }


def _pointing(explainer, images, labels, boxes) -> dict[str, float | int]:
    """Pointing-game hit rate of the pneumonia maps over test positives with boxes."""
    import numpy as np

    from pneumokeras.explain.localization import pointing_game

    rows = [i for i, (y, b) in enumerate(zip(labels, boxes, strict=True)) if y == 1 and len(b)]
    maps = explainer(images[rows], "pneumonia")
    hits = [pointing_game(m, boxes[i]) for m, i in zip(maps, rows, strict=True)]
    return {"pointing_game": float(np.mean(hits)) if hits else float("nan"), "n": len(hits)}


def run(args: argparse.Namespace) -> dict:
    """Synthesises, converts, cross-validates and compares; returns the JSON record."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from pneumokeras.utils import environment

    environment.set_defaults()
    import keras
    import numpy as np

    from pneumokeras.config import load_config
    from pneumokeras.evaluation.calibration import calibrate, fit_calibration
    from pneumokeras.explain.cam import EnsembleHeatmapExplainer, HeatmapExplainer
    from pneumokeras.models.model_card import load_classifier
    from pneumokeras.records.convert import ConvertOptions, convert
    from pneumokeras.synth import generate
    from pneumokeras.training import cv

    overrides = list(args.overrides)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    config = load_config(args.config, overrides)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_cv-"))
    start = time.perf_counter()
    synth = work / "synth"
    if not (synth / "stage_2_train_labels.csv").is_file():
        generate(
            synth, patients=args.patients, size=args.dicom_size, seed=args.seed, progress=False
        )
    data = work / "data"
    convert(
        ConvertOptions(
            images=synth / "stage_2_train_images",
            out=data,
            labels=synth / "stage_2_train_labels.csv",
            class_info=synth / "stage_2_detailed_class_info.csv",
            size=config.data.image_size,
            val_fraction=0.1,
            test_fraction=args.test,
            folds=args.folds,
            seed=args.seed,
        ),
        progress=False,
    )
    prepared = time.perf_counter() - start

    out = work / "cv"
    seconds = []
    for k in range(args.folds):
        began = time.perf_counter()
        summary = cv.cross_validate(data, out, config, only_fold=k, verbose=0)
        seconds.append(time.perf_counter() - began)
    result = summary.result  # the last fold's call aggregated
    assert result is not None, "every fold should be finished"

    images, labels, boxes = _test_split(data)
    ensemble = load_classifier(out / cv.ENSEMBLE_FILE)
    held_auc = [f["metrics"]["roc_auc"] for f in result["folds"]]
    best = int(np.argmax(held_auc))
    single = load_classifier(cv.fold_dir(out, best))
    oof = np.genfromtxt(out / cv.OOF_FILE, delimiter=",", names=True, dtype=None, encoding="utf-8")
    mine = oof["fold"] == best
    single_t = fit_calibration(oof["label"][mine], oof["probability"][mine]).temperature
    single_probs = calibrate(single.raw_probabilities(images), single_t)
    members = [load_classifier(cv.fold_dir(out, k)) for k in range(args.folds)]
    member_scores = [_scores(labels, m.raw_probabilities(images)) for m in members]

    layer = ensemble.card.members[0]["gradcam_layer"]
    names = [m["name"] for m in ensemble.card.members]
    pointing = {
        "ensemble_mean_map": _pointing(
            EnsembleHeatmapExplainer(ensemble.model, names, "gradcam", [layer] * len(names)),
            images,
            labels,
            boxes,
        ),
        "single_model": _pointing(
            HeatmapExplainer(single.model, "gradcam", layer), images, labels, boxes
        ),
    }
    return {
        "settings": {
            "patients": args.patients,
            "dicom_size": args.dicom_size,
            "folds": args.folds,
            "test_fraction": args.test,
            "config": args.config,
            "overrides": overrides,
            "seed": args.seed,
            "train": dict(config.to_dict()["train"]),
            "image_size": config.data.image_size,
        },
        "machine": common.machine(),
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "test": {"n": len(labels), "positives": int(labels.sum())},
        "oof": {
            "n": result["oof"]["n"],
            "fold_roc_auc": held_auc,
            "fold_roc_auc_mean": result["summary"]["roc_auc"]["mean"],
            "fold_roc_auc_sd": result["summary"]["roc_auc"]["sd"],
            "pooled_roc_auc": result["pooled"]["roc_auc"],
        },
        "ensemble_test": {
            **_scores(labels, ensemble.probabilities(images)),
            "temperature": ensemble.card.temperature,
        },
        "best_single_test": {
            **_scores(labels, single_probs),
            "fold": best,
            "temperature": single_t,
        },
        "members_test_uncalibrated": member_scores,
        "pointing_game_test": pointing,
        # The last fold's time includes the aggregation (out-of-fold predictions,
        # bootstrap, the ensemble).
        "seconds": {"prepare": prepared, "per_fold": seconds},
        "work_dir": str(work),
    }


def render_markdown(record: Mapping[str, Any]) -> str:
    """The documentation's section for one run of this script (its JSON)."""
    ens, one = record["ensemble_test"], record["best_single_test"]
    oof, point = record["oof"], record["pointing_game_test"]
    per_fold = record["seconds"]["per_fold"]
    backend = record.get("backend") or record["machine"].get("backend", "tensorflow")
    lines = [
        f"Machine: {common.describe_machine(record['machine'])}.",
        "",
        f"{record['settings']['patients']} synthetic patients, {record['settings']['folds']} "
        f"folds, {record['settings']['train']['epochs']} epochs, "
        f"{record['settings']['image_size']} px; test split {record['test']['n']} patients "
        f"({record['test']['positives']} positive); {backend} backend.",
        "",
        f"- fold ROC-AUC (held-out folds): {oof['fold_roc_auc_mean']:.3f} ± "
        f"{oof['fold_roc_auc_sd']:.3f} (mean ± sd); pooled out-of-fold "
        f"{oof['pooled_roc_auc']['value']:.3f}",
        f"- wall time per fold: {sum(per_fold) / len(per_fold):.0f} s "
        f"(min {min(per_fold):.0f}, max {max(per_fold):.0f})",
        "",
        "| test split | ROC-AUC | ECE | Brier | pointing game |",
        "|---|---|---|---|---|",
        f"| ensemble of {record['settings']['folds']} (mean map) | {ens['roc_auc']:.3f} | "
        f"{ens['ece']:.3f} | {ens['brier']:.3f} | "
        f"{point['ensemble_mean_map']['pointing_game']:.3f} "
        f"(n={point['ensemble_mean_map']['n']}) |",
        f"| best single fold model (fold {one['fold']}) | {one['roc_auc']:.3f} | "
        f"{one['ece']:.3f} | {one['brier']:.3f} | "
        f"{point['single_model']['pointing_game']:.3f} (n={point['single_model']['n']}) |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    record = run(args)
    record["script"] = NAME
    record["command"] = common.command_line(argv, NAME)
    common.finish_machine(record["machine"])
    path = common.write_results(NAME, record, args.out)
    print(render_markdown(record))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
