"""Recipe benchmark: the demo recipe on several seeds, scored on large in-domain and shifted sets.

For each seed, the demo's own data (`synth` 600 patients at 512 px, `convert` at
the recipe's size, the demo's 80/10/10 split) trains the recipe (`train`), and
`evaluate` on its own test split fits the threshold and temperature on its
validation split, as the demo does. The model is then scored, through the
external-evaluation path (the model card's own threshold and temperature;
`evaluate --split all`), on two large test sets of the same patients (seed
`--test-seed`, never trained or tuned on): one from the default scanner
(in-domain) and one from `synth --shift` (another site's scanner). Reported per
set: ROC-AUC, sensitivity and specificity at the model's threshold, ECE (from
`evaluate`), pointing game and energy in boxes over every test positive, misses
included (from `explain`), each with its 95 % interval, and the mean, standard
deviation and range over seeds; the drop from in-domain to shifted.

Optional parts: the 5-fold cross-validation ensemble (`cv`) of the first seed
against that seed's single model, on both sets; test-time augmentation (`predict
--tta`) of the first seed's model; the cost of the recipe's augmentation in
images/s of the training pipeline against the default augmentation, measured
side by side.

Grad-CAM needs TensorFlow (tf-keras-vis): run under KERAS_BACKEND=tensorflow.

Usage:
    python benchmarks/bench_recipe.py                  # the full benchmark (hours on 2 cores)
    python benchmarks/bench_recipe.py --seeds 1 --train-patients 80 --test-patients 60 \\
        --epochs 1 --no-cv --tta 0 --work /tmp/recipe   # a quick look
    python benchmarks/bench_recipe.py --variant acq --set augment.gamma=0.3 --no-cv --tta 0
        # one row of the variants table (benchmarks/out/bench_recipe_variants.json)

Writes `benchmarks/out/bench_recipe.json` (atomically) and prints a Markdown table
(`render_markdown`); `--render` prints the table of an existing JSON file.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "benchmarks" / "out"
DEFAULT_OUT = OUT_DIR / "bench_recipe.json"
DEFAULT_VARIANTS = OUT_DIR / "bench_recipe_variants.json"
SETS = ("in_domain", "shifted")
SET_TITLES = {"in_domain": "in-domain", "shifted": "shifted (`synth --shift`)"}
METRICS = ("roc_auc", "sensitivity", "specificity", "ece", "pointing_game", "energy_in_boxes")
METRIC_TITLES = {
    "roc_auc": "ROC-AUC",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "ece": "ECE",
    "pointing_game": "pointing game",
    "energy_in_boxes": "energy in boxes",
}
# The targets of the recipe (issue #26), on the means over seeds.
TARGETS = (
    ("roc_auc", "in_domain", ">=", 0.97),
    ("roc_auc", "drop", "<=", 0.02),
    ("pointing_game", "in_domain", ">=", 0.9),
)
# The split of a test set: converted with no validation or test share, every
# patient is in `train`, and `evaluate --split all` reads it whole.
TEST_SET_SPLIT = "train"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated data and training seeds")
    parser.add_argument("--train-patients", type=int, default=600, help="the demo's 600")
    parser.add_argument("--dicom-size", type=int, default=512, help="synthetic DICOM side, px")
    parser.add_argument("--test-patients", type=int, default=2000)
    parser.add_argument("--test-seed", type=int, default=1001)
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--explain-limit", type=int, default=0, help="0 = every test positive")
    parser.add_argument("--no-cv", dest="cv", action="store_false", help="skip the ensemble")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--tta", type=int, default=8, help="copies per image; 0 skips TTA")
    parser.add_argument("--tta-patients", type=int, default=0, help="0 = the whole test set")
    parser.add_argument("--pipeline-batches", type=int, default=40, help="0 skips it")
    parser.add_argument("--workers", type=int, default=None, help="synth and convert processes")
    parser.add_argument("--work", default=str(OUT_DIR / ".recipe_work"), help="cache folder")
    parser.add_argument("--variant", default=None, help="record a row of the variants table")
    parser.add_argument("--variants", default=str(DEFAULT_VARIANTS))
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--render", action="store_true", help="print --out's table and stop")
    args = parser.parse_args(argv)
    try:
        args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers; got {args.seeds!r}")
    if not args.seed_list or min(args.seed_list) < 0:
        parser.error("--seeds needs at least one seed ≥ 0")
    if args.train_patients < 20 or args.test_patients < 10:
        parser.error("--train-patients ≥ 20 and --test-patients ≥ 10")
    if args.cv and args.folds < 2:
        parser.error("--folds must be ≥ 2")
    return args


# ------------------------------------------------------------------ pure parts


def spread(values: list[float | None]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation, minimum and maximum of the defined values."""
    defined = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not defined:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    return {
        "mean": statistics.fmean(defined),
        "sd": statistics.stdev(defined) if len(defined) > 1 else 0.0,
        "min": min(defined),
        "max": max(defined),
        "n": len(defined),
    }


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Spread over seeds of every metric on each set, and of the per-seed drop.

    Args:
        per_seed: one dict per seed with `in_domain` and `shifted`, each
            `{metric: {"value": v, "ci95": [lo, hi]}}`.

    Returns:
        `{"in_domain": {metric: spread}, "shifted": {...}, "drop": {...}}`; the
        drop is in-domain minus shifted (positive: worse on the shifted set).
    """
    out: dict[str, Any] = {}
    for name in SETS:
        out[name] = {m: spread([s[name][m]["value"] for s in per_seed]) for m in METRICS}
    out["drop"] = {
        m: spread(
            [
                None
                if s["in_domain"][m]["value"] is None or s["shifted"][m]["value"] is None
                else s["in_domain"][m]["value"] - s["shifted"][m]["value"]
                for s in per_seed
            ]
        )
        for m in METRICS
    }
    return out


def check_targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of `TARGETS` with the mean over seeds and whether it is met."""
    rows = []
    for metric, where, sense, bound in TARGETS:
        mean = summary[where][metric]["mean"]
        met = None if mean is None else (mean >= bound if sense == ">=" else mean <= bound)
        rows.append(
            {"metric": metric, "set": where, "target": f"{sense} {bound}", "mean": mean, "met": met}
        )
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _with_interval(entry: dict[str, Any]) -> str:
    low, high = entry.get("ci95") or (None, None)
    if low is None or high is None:
        return _fmt(entry["value"])
    return f"{_fmt(entry['value'])} ({_fmt(low)}–{_fmt(high)})"


def _mean_sd(entry: dict[str, Any]) -> str:
    if entry["mean"] is None:
        return "–"
    text = f"{_fmt(entry['mean'])} ± {_fmt(entry['sd'])}"
    return text + (f" ({_fmt(entry['min'])}–{_fmt(entry['max'])})" if entry["n"] > 1 else "")


def _scores_table(title: str, rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    head = " | ".join(METRIC_TITLES[m] for m in METRICS)
    lines = [f"| {title} | {head} |", "|---|" + "---:|" * len(METRICS)]
    for label, scores in rows:
        cells = " | ".join(_with_interval(scores[m]) for m in METRICS)
        lines.append(f"| {label} | {cells} |")
    return lines


def _variants_table(variants: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| variant (settings over the demo recipe) | seeds | ROC-AUC in-domain | "
        "ROC-AUC shifted | drop | pointing game in-domain | pointing game shifted | "
        "ECE in-domain | ECE shifted |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in variants:
        s = v["summary"]
        settings_text = " ".join(v["overrides"]) or "(none)"
        lines.append(
            f"| **{v['name']}**: `{settings_text}` | {', '.join(map(str, v['seeds']))} | "
            f"{_mean_sd(s['in_domain']['roc_auc'])} | {_mean_sd(s['shifted']['roc_auc'])} | "
            f"{_mean_sd(s['drop']['roc_auc'])} | "
            f"{_mean_sd(s['in_domain']['pointing_game'])} | "
            f"{_mean_sd(s['shifted']['pointing_game'])} | "
            f"{_mean_sd(s['in_domain']['ece'])} | {_mean_sd(s['shifted']['ece'])} |"
        )
    return lines


def _machine_line(machine: dict[str, Any]) -> str:
    """`Machine: CPU, N logical CPUs, flags: …, backend` from a run's `machine` record."""
    return (
        f"Machine: {machine['cpu']}, {machine['cpus']} logical CPUs, flags: "
        f"{machine['cpu_flags']}, Keras {machine.get('keras', '?')} on {machine['backend']}"
    )


def render_markdown(results: dict[str, Any]) -> str:
    """The benchmark's Markdown: headline, per-seed scores, ensemble, TTA, pipeline, variants.

    A record of variants only (`bench_recipe_variants.json`) renders their table.
    """
    if "seeds" not in results:
        variants = results.get("variants", [])
        machines = [v["machine"] for v in variants]
        loads = ", ".join(f"{m['load_start'].split(' / ')[0]}" for m in machines)
        head = (
            f"{_machine_line(machines[0])}; load average at the start of each variant's run: "
            f"{loads}."
            if machines
            else "Machine: not recorded."
        )
        return "\n".join([head, "", *_variants_table(variants)]) + "\n"
    settings, machine = results["settings"], results["machine"]
    lines = [
        f"{_machine_line(machine)}; load average {machine['load_start']} → "
        f"{machine.get('load_end', '?')}.",
        "",
        f"Recipe `{settings['config']}`"
        + (f" with `{' '.join(settings['overrides'])}`" if settings["overrides"] else "")
        + f", seeds {', '.join(map(str, settings['seeds']))}: {settings['train_patients']} "
        f"synthetic patients per seed ({settings['dicom_size']} px DICOMs, converted at "
        f"{settings['image_size']} px, the demo's split); test sets of "
        f"{results['test_sets']['in_domain']['n']} patients "
        f"({results['test_sets']['in_domain']['positives']} positive, seed "
        f"{settings['test_seed']}), the same patients from the default and the shifted "
        f"scanner. Command: `{results['command']}`.",
        "",
        "| metric (mean ± sd over seeds, range) | in-domain | shifted | drop |",
        "|---|---:|---:|---:|",
    ]
    summary = results["summary"]
    for m in METRICS:
        lines.append(
            f"| {METRIC_TITLES[m]} | {_mean_sd(summary['in_domain'][m])} | "
            f"{_mean_sd(summary['shifted'][m])} | {_mean_sd(summary['drop'][m])} |"
        )
    lines += ["", "| target (mean over seeds) | value | met |", "|---|---:|---|"]
    for target in results["targets"]:
        where = "drop" if target["set"] == "drop" else SET_TITLES[target["set"]]
        met = {True: "yes", False: "**no**", None: "–"}[target["met"]]
        lines.append(
            f"| {METRIC_TITLES[target['metric']]}, {where} {target['target']} | "
            f"{_fmt(target['mean'])} | {met} |"
        )
    rows = [
        (f"seed {s['seed']}, {SET_TITLES[name]}", s[name])
        for s in results["seeds"]
        for name in SETS
    ]
    lines += ["", *_scores_table("seed, test set (95 % interval)", rows)]
    ensemble = results.get("ensemble")
    if ensemble:
        rows = [
            (f"{label}, {SET_TITLES[name]}", ensemble[key][name])
            for key, label in (
                ("single", f"single model (seed {ensemble['seed']})"),
                ("ensemble", f"{ensemble['folds']}-fold ensemble"),
            )
            for name in SETS
        ]
        lines += ["", *_scores_table("model, test set", rows)]
        lines.append(
            f"\nEnsemble: {ensemble['folds']} folds of the seed-{ensemble['seed']} data "
            f"(`cv`), out-of-fold temperature and threshold; fold training "
            f"{_fmt(statistics.fmean(ensemble['fold_seconds']), 0)} s on average."
        )
    tta = results.get("tta")
    if tta:
        lines += [
            "",
            f"| test-time augmentation (seed {tta['seed']}, {tta['copies']} copies, "
            f"{tta['patients']} patients) | ROC-AUC without | with TTA |",
            "|---|---:|---:|",
        ]
        for name in SETS:
            lines.append(
                f"| {SET_TITLES[name]} | {_with_interval(tta[name]['plain'])} | "
                f"{_with_interval(tta[name]['tta'])} |"
            )
    pipeline = results.get("pipeline")
    if pipeline:
        lines += [
            "",
            "| training pipeline (parse, decode, augment, batch) | img/s (median) |",
            "|---|---:|",
        ]
        if "before" in pipeline:
            lines.append(
                "| default augmentation, one Keras layer per step (before the affine step) | "
                f"{_fmt(pipeline['before']['img_per_s'], 0)} |"
            )
        lines += [
            f"| default augmentation | {_fmt(pipeline['default']['img_per_s'], 0)} |",
            f"| the recipe's augmentation | {_fmt(pipeline['recipe']['img_per_s'], 0)} |",
            f"| cost of the recipe's augmentation | {_fmt(100 * pipeline['cost'], 1)} % |",
        ]
        if "cost_vs_before" in pipeline:
            lines.append(
                "| cost against the pipeline before the affine step | "
                f"{_fmt(100 * pipeline['cost_vs_before'], 1)} % |"
            )
    if results.get("variants"):
        lines += ["", *_variants_table(results["variants"])]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ steps


def _machine() -> dict[str, Any]:
    import keras

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine(), "x86_64"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "cpu_flags": ", ".join(f for f in wanted if f in flags) or "none of AVX2/AVX-512",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "load_start": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def _synth(out: Path, patients: int, size: int, seed: int, scanner: Any, workers: Any) -> None:
    """`synth` into `out` unless it already holds exactly this data set."""
    from pneumokeras import synth

    settings = out / synth.SETTINGS_JSON
    if settings.is_file() and (out / synth.LABELS_CSV).is_file():
        recorded = json.loads(settings.read_text())
        wanted = {"patients": patients, "size": size, "seed": seed, "scanner": scanner.to_dict()}
        if all(recorded.get(k) == v for k, v in wanted.items()):
            return
    synth.generate(
        out, patients=patients, size=size, seed=seed, workers=workers, progress=False,
        scanner=scanner,
    )  # fmt: skip


def _convert(synth_dir: Path, out: Path, size: int, seed: int, workers: Any, **split: Any) -> None:
    """`convert` unless `out` already holds this conversion (its manifest says so)."""
    from pneumokeras.records.convert import ConvertOptions, convert

    manifest = out / "manifest.json"
    if manifest.is_file():
        recorded = json.loads(manifest.read_text())
        if recorded.get("image_size") == size and recorded.get("seed") == seed:
            return
    options = ConvertOptions(
        images=synth_dir / "stage_2_train_images",
        out=out,
        labels=synth_dir / "stage_2_train_labels.csv",
        class_info=synth_dir / "stage_2_detailed_class_info.csv",
        size=size,
        seed=seed,
        workers=workers,
        **split,
    )
    convert(options, progress=False)


def _test_sets(work: Path, args: argparse.Namespace, size: int) -> dict[str, Path]:
    from pneumokeras import synth

    folders = {}
    for name, scanner in (("in_domain", synth.DEFAULT_SCANNER), ("shifted", synth.SHIFTED_SCANNER)):
        base = (
            work / "test" / f"{name}_{args.test_patients}_{args.dicom_size}px_seed{args.test_seed}"
        )
        _synth(
            base / "synth", args.test_patients, args.dicom_size, args.test_seed, scanner,
            args.workers,
        )  # fmt: skip
        _convert(
            base / "synth", base / f"tf{size}", size, args.test_seed, args.workers,
            val_fraction=0.0, test_fraction=0.0,
        )  # fmt: skip
        folders[name] = base
    return folders


def _train_data(work: Path, seed: int, args: argparse.Namespace, size: int, folds: int = 0) -> Path:
    from pneumokeras import synth

    base = work / "data" / f"seed{seed}_{args.train_patients}_{args.dicom_size}px"
    _synth(
        base / "synth", args.train_patients, args.dicom_size, seed, synth.DEFAULT_SCANNER,
        args.workers,
    )  # fmt: skip
    out = base / (f"tf{size}_folds{folds}" if folds else f"tf{size}")
    _convert(base / "synth", out, size, seed, args.workers, folds=folds)
    return out


def _finished_run(run_dir: Path, config: Any) -> bool:
    """Whether `run_dir` holds a finished training with exactly these settings."""
    record = run_dir / "run.json"
    if not (run_dir / "model.keras").is_file() or not record.is_file():
        return False
    recorded = json.loads(record.read_text())
    return recorded.get("status") == "finished" and same_training(
        recorded.get("config", {}), config.to_dict()
    )


# Settings that change how fast a model trains, not what it learns.
SPEED_ONLY = {("train", "xla")}


def same_training(recorded: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a recorded run's settings train the model `current` would.

    Speed-only settings (`SPEED_ONLY`) are ignored, and a setting the record lacks
    (added to the schema since) counts as equal when `current` holds its default.
    """
    from pneumokeras.config import load_config

    defaults = load_config(None).to_dict()
    for section, values in current.items():
        for name, value in values.items():
            if (section, name) in SPEED_ONLY:
                continue
            default = defaults.get(section, {}).get(name)
            if recorded.get(section, {}).get(name, default) != value:
                return False
    return True


def _model_for_seed(
    work: Path, name: str, seed: int, data_dir: Path, config: Any
) -> tuple[Path, dict[str, Any]]:
    """Trains (or reuses) the seed's model and fits its card on the data's own validation split."""
    from pneumokeras.evaluation.evaluate import evaluate_run
    from pneumokeras.training.train import train

    run_dir = work / "runs" / name / f"seed{seed}" / "run"
    facts: dict[str, Any] = {"reused": _finished_run(run_dir, config)}
    began = time.perf_counter()
    if not facts["reused"]:
        trained = train(data_dir, run_dir, config, verbose=0, overwrite=True)
        facts.update(best_epoch=trained.best_epoch, best_val_auc=trained.best_val_auc)
    facts["train_seconds"] = time.perf_counter() - began
    own = evaluate_run(
        run_dir / "model.keras", data_dir, run_dir.parent / "demo_test", config, progress=False
    )
    facts["demo_test"] = {
        key: _metric(own, key) for key in ("roc_auc", "sensitivity", "specificity")
    }
    facts["threshold"] = own.threshold
    facts["temperature"] = own.temperature
    return run_dir / "model.keras", facts


_METRIC_KEYS = {"sensitivity": "recall"}


def _metric(evaluation: Any, name: str) -> dict[str, Any]:
    """`{"value", "ci95"}` of one metric of an `evaluate_run` result."""
    entry = evaluation.metrics["metrics"][_METRIC_KEYS.get(name, name)]
    return {"value": entry["value"], "ci95": list(entry["ci95"])}


def _test_images(data_dir: Path) -> tuple[Any, Any, Any]:
    """Images `(N, S, S)` uint8, labels `(N,)` and patient ids of a test set, in file order."""
    import io

    import numpy as np
    from PIL import Image

    from pneumokeras.records import tfrecords

    records = tfrecords.read_split(data_dir, TEST_SET_SPLIT)
    images = np.stack([np.asarray(Image.open(io.BytesIO(r["png"]))) for r in records])
    return images, np.array([r["label"] for r in records]), [r["patient_id"] for r in records]


def _score(model: Path, test_set: Path, out: Path, config: Any, limit: int) -> dict[str, Any]:
    """`evaluate` (external path) and `explain` on a test set; metrics with intervals.

    `test_set` is the set's folder (`synth/`, `tf<size>/`); the converted folder
    at the model's input size is scored.
    """
    import numpy as np

    from pneumokeras.evaluation import metrics
    from pneumokeras.evaluation.evaluate import evaluate_run
    from pneumokeras.explain.explain import explain_run
    from pneumokeras.models.model_card import load_classifier

    data_dir = test_set / f"tf{config.data.image_size}"
    # A rerun reuses the scores of the same model file on the same data.
    from pneumokeras.models.model_card import card_path

    key = {
        "model_sha256": _sha256(model),
        "card_sha256": _sha256(card_path(model)),
        "data": json.loads((data_dir / "manifest.json").read_text()).get("seed"),
        "data_dir": str(data_dir),
        "explain_limit": limit,
    }
    cached = out / "scores.json"
    if cached.is_file():
        saved = json.loads(cached.read_text())
        if saved.get("key") == key:
            return saved["scores"]
    evaluation = evaluate_run(
        model, data_dir, out / "evaluate", config, split="all", progress=False, external_data=True
    )
    scores: dict[str, Any] = {
        name: _metric(evaluation, name) for name in ("roc_auc", "sensitivity", "specificity")
    }
    # The ECE's interval: a patient bootstrap of the calibrated probabilities, which
    # are recomputed here (evaluate reports the ECE without one).
    images, labels, patients = _test_images(data_dir)
    probs = load_classifier(model).probabilities(images)
    bins = config.evaluate.calibration_bins
    ece = evaluation.metrics["calibration"]["after"]["ece"]
    mine = metrics.expected_calibration_error(labels, probs, bins)
    if not math.isclose(mine, ece, abs_tol=1e-6):
        raise RuntimeError(f"ECE {mine} from the model's probabilities, {ece} from evaluate")
    interval = metrics.bootstrap_ci(
        lambda y, p: {"ece": metrics.expected_calibration_error(y, p, bins)},
        labels,
        probs,
        groups=np.array(patients),
        resamples=config.evaluate.bootstrap,
    )["ece"]
    scores["ece"] = {"value": ece, "ci95": [interval.low, interval.high]}
    explain_run(
        model, out / "explain", config, data_dir=data_dir, split=TEST_SET_SPLIT,
        limit=limit or 10**9, only_positives=True, progress=False,
    )  # fmt: skip
    with open(out / "explain" / "explain.csv", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["pointing_game"] != ""]
    hits = sum(int(r["pointing_game"]) for r in rows)
    low, high = metrics.wilson_interval(hits, len(rows))
    scores["pointing_game"] = {"value": hits / len(rows), "ci95": [low, high], "n": len(rows)}
    energy = np.array([float(r["energy_in_boxes"]) for r in rows])
    spread_ = metrics.bootstrap_ci(
        lambda _, e: {"mean": float(e.mean())},
        np.zeros(len(energy), dtype=int),
        energy,
        resamples=config.evaluate.bootstrap,
    )["mean"]
    scores["energy_in_boxes"] = {"value": float(energy.mean()), "ci95": [spread_.low, spread_.high]}
    scores["n"], scores["positives"] = len(labels), int(labels.sum())
    scores["threshold"] = evaluation.threshold
    from pneumokeras.utils.fileio import atomic_write_json

    atomic_write_json(cached, {"key": key, "scores": scores})
    return scores


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tta(model: Path, test_sets: dict[str, Path], args: argparse.Namespace, config: Any) -> dict:
    """ROC-AUC of `predict` with and without test-time augmentation on the test sets' DICOMs."""
    import numpy as np

    from pneumokeras import synth
    from pneumokeras.evaluation import metrics
    from pneumokeras.serving.predict import predict_files

    out: dict[str, Any] = {"copies": args.tta}
    for name, base in test_sets.items():
        with open(base / "synth" / synth.LABELS_CSV, newline="", encoding="utf-8") as handle:
            truth = {r["patientId"]: int(r["Target"]) for r in csv.DictReader(handle)}
        files = sorted((base / "synth" / synth.IMAGES_DIR).glob("*.dcm"))
        files = files[: args.tta_patients] if args.tta_patients else files
        rows = predict_files(model, files, tta=args.tta, seed=0)
        labels = np.array([truth[Path(r["path"]).stem] for r in rows])
        out[name] = {}
        for key, column in (("plain", "probability"), ("tta", "tta_mean")):
            probs = np.array([float(r[column]) for r in rows])
            ci = metrics.bootstrap_ci(
                lambda y, p: {"auc": metrics.ranking_metrics(y, p, 0.5)["roc_auc"]},
                labels,
                probs,
                resamples=config.evaluate.bootstrap,
            )["auc"]
            value = metrics.ranking_metrics(labels, probs, 0.5)["roc_auc"]
            out[name][key] = {"value": value, "ci95": [ci.low, ci.high]}
        out["patients"] = len(rows)
    return out


def _ensemble(
    work: Path, name: str, seed: int, args: argparse.Namespace, config: Any, sets: dict
) -> dict[str, Any]:
    """`cv` on the seed's data with folds; the ensemble scored on both test sets."""
    from pneumokeras.training import cv

    data_dir = _train_data(work, seed, args, config.data.image_size, folds=args.folds)
    out = work / "runs" / name / f"cv{seed}"
    seconds = []
    for fold in range(args.folds):
        began = time.perf_counter()
        cv.cross_validate(data_dir, out, config, only_fold=fold, verbose=0)
        seconds.append(time.perf_counter() - began)
    model = out / cv.ENSEMBLE_FILE
    scores = {
        set_name: _score(model, base, out / set_name, config, args.explain_limit)
        for set_name, base in sets.items()
    }
    return {"seed": seed, "folds": args.folds, "fold_seconds": seconds, "ensemble": scores}


class _LayerByLayer:
    """The augmentation as it ran before `records.augment.RandomAffine`: one Keras layer per
    step (`device_layers`), the geometric ones over image and mask together. Only for the
    pipeline figure's "before" row (the default settings: no gamma or noise)."""

    GEOMETRIC = ("RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom")

    def __init__(self, config: Any, seed: int):
        from pneumokeras.records.augment import device_layers

        self.layers = device_layers(config, seed)

    def __call__(self, images: Any, masks: Any = None) -> Any:
        import tensorflow as tf

        spatial = [x for x in self.layers if type(x).__name__ in self.GEOMETRIC]
        rest = [x for x in self.layers if type(x).__name__ not in self.GEOMETRIC]
        if masks is not None:
            both = tf.concat([images, masks], axis=-1)
            for layer in spatial:
                both = layer(both, training=True)
            images, masks = both[..., :1], both[..., 1:]
        else:
            for layer in spatial:
                images = layer(images, training=True)
        for layer in rest:
            images = layer(images, training=True)
        images = tf.clip_by_value(images, 0.0, 255.0)
        return images if masks is None else (images, tf.clip_by_value(masks, 0.0, 1.0))


def _pipeline_cost(data_dir: Path, config: Any, batches: int, rounds: int = 5) -> dict[str, Any]:
    """Images/s of the training pipeline: before, with the default and the recipe's augmentation.

    `before` is the default augmentation run the earlier way, one Keras layer per
    step (`_LayerByLayer`); `default` and `recipe` run `records.augment.Augmenter`
    (flip, rotation, translation and zoom in one affine resampling). All read the
    same shards (with the box targets, as the recipe trains). Each round times a
    fresh pipeline of each kind in turn: two warm-up batches, then `batches`
    batches; only one pipeline exists at a time, so none prefetches while another
    is timed. The median round counts.
    """
    import dataclasses

    from pneumokeras.config import AugmentConfig
    from pneumokeras.records import pipeline

    variants = {
        "before": dataclasses.replace(config, augment=AugmentConfig()),
        "default": dataclasses.replace(config, augment=AugmentConfig()),
        "recipe": config,
    }
    own_augmenter = pipeline.Augmenter

    def rate(key: str, settings: Any) -> float:
        pipeline.Augmenter = _LayerByLayer if key == "before" else own_augmenter
        try:
            dataset, _ = pipeline.training_dataset(data_dir, settings, box_grid=8, seed=0)
        finally:
            pipeline.Augmenter = own_augmenter
        stream = iter(dataset.repeat())
        for _ in range(2):
            next(stream)
        began, images = time.perf_counter(), 0
        for _ in range(batches):
            images += int(next(stream)[0].shape[0])
        return images / (time.perf_counter() - began)

    rates: dict[str, list[float]] = {key: [] for key in variants}
    for _ in range(rounds):
        for key, settings in variants.items():
            rates[key].append(rate(key, settings))
    out: dict[str, Any] = {
        key: {"img_per_s": statistics.median(v), "rounds": v} for key, v in rates.items()
    }
    out["cost"] = 1.0 - out["recipe"]["img_per_s"] / out["default"]["img_per_s"]
    out["cost_vs_before"] = 1.0 - out["recipe"]["img_per_s"] / out["before"]["img_per_s"]
    out["batches"] = batches
    out["augment"] = {
        "default": dataclasses.asdict(AugmentConfig()),
        "recipe": dataclasses.asdict(config.augment),
    }
    return out


def _save_variant(path: Path, name: str, record: dict[str, Any]) -> None:
    """Adds (or replaces) one row of the variants file, a record of its own."""
    from pneumokeras.utils.fileio import atomic_write_json

    saved = json.loads(path.read_text()) if path.is_file() else {}
    variants = [v for v in saved.get("variants", []) if v["name"] != name]
    variants.append(
        {
            "name": name,
            "overrides": record["settings"]["overrides"],
            "seeds": record["settings"]["seeds"],
            "explain_limit": record["settings"]["explain_limit"],
            "summary": record["summary"],
            "per_seed": [{"seed": s["seed"], **{k: s[k] for k in SETS}} for s in record["seeds"]],
            "machine": record["machine"],
            "command": record["command"],
        }
    )
    atomic_write_json(
        path,
        {
            "script": "bench_recipe",
            "command": "python benchmarks/bench_recipe.py --variant NAME [--set ...]",
            "variants": variants,
        },
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every step; returns the JSON record."""
    sys.path.insert(0, str(REPO_ROOT))
    from pneumokeras.utils import environment

    environment.set_defaults()
    import keras

    from pneumokeras import synth
    from pneumokeras.config import load_config

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("run under KERAS_BACKEND=tensorflow: explain (Grad-CAM) needs it")
    overrides = list(args.overrides)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    base_config = load_config(args.config, overrides)
    size = base_config.data.image_size
    work = Path(args.work)
    name = args.variant or "recipe"
    began = time.perf_counter()
    record: dict[str, Any] = {
        "script": "bench_recipe",
        "command": " ".join(["python benchmarks/bench_recipe.py", *map(shlex.quote, sys.argv[1:])]),
        "machine": _machine(),
    }
    sets = _test_sets(work, args, size)
    record["test_sets"] = {}
    for set_name, base in sets.items():
        settings = json.loads((base / "synth" / synth.SETTINGS_JSON).read_text())
        with open(base / "synth" / synth.LABELS_CSV, newline="", encoding="utf-8") as handle:
            labels = {r["patientId"]: r["Target"] for r in csv.DictReader(handle)}
        record["test_sets"][set_name] = {
            "n": len(labels),
            "positives": sum(v == "1" for v in labels.values()),
            "scanner": settings["scanner"],
        }
    seeds = []
    for seed in args.seed_list:
        config = load_config(args.config, [*overrides, f"train.seed={seed}"])
        data_dir = _train_data(work, seed, args, size)
        model, facts = _model_for_seed(work, name, seed, data_dir, config)
        entry = {"seed": seed, **facts}
        for set_name, base in sets.items():
            out = model.parent.parent / set_name
            entry[set_name] = _score(model, base, out, config, args.explain_limit)
        seeds.append(entry)
        print(f"seed {seed}: " + json.dumps({k: entry[k]["roc_auc"] for k in SETS}), flush=True)
    record["seeds"] = seeds
    record["summary"] = summarise(seeds)
    record["targets"] = check_targets(record["summary"])
    first = args.seed_list[0]
    first_config = load_config(args.config, [*overrides, f"train.seed={first}"])
    if args.cv:
        ensemble = _ensemble(work, name, first, args, first_config, sets)
        ensemble["single"] = {k: seeds[0][k] for k in SETS}
        record["ensemble"] = ensemble
    if args.tta:
        model = work / "runs" / name / f"seed{first}" / "run" / "model.keras"
        record["tta"] = {"seed": first, **_tta(model, sets, args, first_config)}
    if args.pipeline_batches:
        data_dir = _train_data(work, first, args, size)
        record["pipeline"] = _pipeline_cost(data_dir, first_config, args.pipeline_batches)
    record["settings"] = {
        "config": os.path.relpath(args.config, REPO_ROOT),
        "overrides": overrides,
        "seeds": args.seed_list,
        "train_patients": args.train_patients,
        "dicom_size": args.dicom_size,
        "image_size": size,
        "test_patients": args.test_patients,
        "test_seed": args.test_seed,
        "explain_limit": args.explain_limit,
        "recipe": base_config.to_dict(),
    }
    record["machine"]["load_end"] = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    record["seconds"] = time.perf_counter() - began
    return record


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.render:
        print(render_markdown(json.loads(Path(args.out).read_text())))
        return 0
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    record = run(args)
    sys.path.insert(0, str(REPO_ROOT))
    from pneumokeras.utils.fileio import atomic_write_json

    if args.variant:
        _save_variant(Path(args.variants), args.variant, record)
        print(f"variant {args.variant} written to {args.variants}")
    else:
        atomic_write_json(args.out, record)
        print(f"written to {args.out}")
    print(render_markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
