"""Subgroup analysis and paired comparison at RSNA size: `evaluate --by` and `compare`.

Builds a converted folder of 26,684 test images (and 2,668 validation images), as
many as RSNA has, whose synthetic scores have RSNA's shape: 22.5 % positive, sex
(57 % men), age (RSNA's spread, some 90+), view (AP/PA) and one source, in an
attributes table. Each image is a 16 px square whose mean grey level encodes its
score (its top half) or that score plus noise (its bottom half), and two fixed
"models" (stock Keras layers: crop a half, mean pixel → softmax) read them back, so
the second is a little worse; the scores plant a gap (positives on AP films score
lower). Then, with `evaluate.bootstrap=2000`:

1. `python cli.py evaluate --by sex,age,view,source` (a fresh process, as a user
   runs it: imports, prediction, calibration, metrics, the subgroup analysis,
   plots, report) and `python cli.py compare` of the two models, each timed
   `--repeats` times; the target is under 60 s each on the 2-core CI machine;
2. in this process, the statistics alone on the same scores: the overall metric
   table (patient bootstrap of F1, ROC-AUC, PR-AUC, Brier), the subgroup analysis
   and the paired comparison, vectorised (`evaluation.bootstrap`), and the
   per-resample loop (`metrics.bootstrap_ci`, one scikit-learn call per resample) on
   `--loop-resamples` resamples, scaled to 2,000, side by side.

Writes `benchmarks/out/bench_subgroups.json` (atomically) and prints the Markdown.

    python -m benchmarks.bench_subgroups [--repeats 1] [--loop-resamples 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from pneumokeras.sources.attributes import Attributes, write_table

ROOT = common.REPO_ROOT

NAME = "bench_subgroups"
RSNA_IMAGES = 26_684
SIZE = 16
RESAMPLES = 2000
TARGET_S = 60.0
# Mean grey level m (in [0, 1]) ↔ pneumonia probability: p = sigmoid(SLOPE (m - 0.5)).
SLOPE = 16.0


def _scores(rng: np.random.Generator, count: int) -> tuple[np.ndarray, list[Attributes]]:
    """Labels, RSNA-shaped attributes and a planted gap: AP positives score lower."""
    labels = (rng.random(count) < 0.225).astype(int)
    sex = np.where(rng.random(count) < 0.57, "M", "F")
    ages = np.clip(np.round(rng.normal(47, 16, count)), 1, 95).astype(int)
    view = np.where(rng.random(count) < np.where(labels == 1, 0.75, 0.4), "AP", "PA")
    logits = rng.normal(-1.2, 1.0, count) + labels * np.where(view == "AP", 1.6, 2.4)
    attributes = [
        Attributes(sex=s, age="90+" if a >= 90 else str(a), view=v, source="rsna-shaped")
        for s, a, v in zip(sex, ages, view, strict=True)
    ]
    return np.stack([labels, logits]), attributes


def _half(logit: float, rng: np.random.Generator) -> np.ndarray:
    """8 × 16 pixels whose mean grey level / 255 is 0.5 + logit / SLOPE (to 1/32640)."""
    count = SIZE * SIZE // 2
    target = np.clip(0.5 + logit / SLOPE, 0.0, 1.0) * 255 * count
    base, extra = divmod(int(np.round(target)), count)
    pixels = np.full(count, base, dtype=np.int64)
    pixels[rng.permutation(count)[:extra]] += 1
    return np.clip(pixels, 0, 255).astype(np.uint8).reshape(SIZE // 2, SIZE)


def _image(logit: float, noisy_logit: float, rng: np.random.Generator) -> np.ndarray:
    """A 16 px image: the top half encodes `logit`, the bottom half `noisy_logit`."""
    return np.vstack([_half(logit, rng), _half(noisy_logit, rng)])


def build_folder(out: Path, images: int = RSNA_IMAGES, seed: int = 0) -> dict[str, Any]:
    """The converted folder (val + test shards, manifest, attributes.csv); its facts."""
    from pneumokeras.io.png import encode_png
    from pneumokeras.records import tfrecords
    from pneumokeras.records.manifest import MANIFEST

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True)
    splits, shards, table = {}, {}, {}
    for split, count in (("val", images // 10), ("test", images)):
        (labels, logits), attributes = _scores(rng, count)
        noisy = logits + rng.normal(0, 0.6, count)  # the weaker model's scores
        names = []
        per_shard = 4096
        for start in range(0, count, per_shard):
            index = len(names)
            total = -(-count // per_shard)
            name = tfrecords.shard_name(split, index, total)
            examples = []
            for i in range(start, min(count, start + per_shard)):
                example = f"{split}-{i:05d}"
                table[example] = attributes[i]
                examples.append(
                    tfrecords.serialize_example(
                        encode_png(_image(logits[i], noisy[i], rng)),
                        example,
                        int(labels[i]),
                        view=attributes[i].view,
                    )
                )
            tfrecords.write_shard(out / name, examples)
            shards[name] = {"count": len(examples), "bytes": (out / name).stat().st_size}
            names.append(name)
        splits[split] = {"count": count, "positives": int(labels.sum()), "files": names}
    write_table(out / "attributes.csv", table)
    manifest = {
        "image_size": SIZE,
        "splits": splits,
        "shards": shards,
        "source": "rsna-shaped",
        "attributes": "attributes.csv",
    }
    (out / MANIFEST).write_text(json.dumps(manifest))
    return {name: info["count"] for name, info in splits.items()}


def save_models(root: Path) -> dict[str, Path]:
    """Two run folders: `exact` reads the score from the top half, `noisy` from the bottom.

    Each is stock Keras layers with fixed weights: crop a half, mean grey level,
    softmax of ±(SLOPE / 2)(m - 0.5), i.e. p = sigmoid(SLOPE (m - 0.5)).
    """
    import keras

    paths = {}
    for name, crop in (("exact", ((0, SIZE // 2), (0, 0))), ("noisy", ((SIZE // 2, 0), (0, 0)))):
        image = keras.Input((SIZE, SIZE, 1), name="image")
        x = keras.layers.Cropping2D(crop, name="half")(image)
        x = keras.layers.Rescaling(1 / 255, name="scale")(x)
        x = keras.layers.GlobalAveragePooling2D(name="mean")(x)
        dense = keras.layers.Dense(2, name="logits")
        x = dense(x)
        slope = SLOPE / 2
        dense.set_weights([np.array([[-slope, slope]]), np.array([slope / 2, -slope / 2])])
        model = keras.Model(image, keras.layers.Activation("softmax", name="predictions")(x))
        run = root / name
        run.mkdir(parents=True)
        model.save(run / "model.keras")
        paths[name] = run
    return paths


def _timed_cli(arguments: list[str]) -> tuple[float, str]:
    """Wall time of one `cli.py` command in a fresh process, and its last output line."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *arguments],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"cli.py {' '.join(arguments)} failed: {done.stderr[-2000:]}")
    return seconds, done.stdout.strip().splitlines()[-1]


def statistics_times(images: int, loop_resamples: int, seed: int = 0) -> dict[str, float]:
    """Seconds of the statistics on RSNA-sized synthetic scores (no model, no files)."""
    from pneumokeras.evaluation import metrics, paired, subgroups

    rng = np.random.default_rng(seed)
    (labels, logits), attributes = _scores(rng, images)
    labels = labels.astype(int)
    probs = 1 / (1 + np.exp(-logits))
    other = 1 / (1 + np.exp(-(logits + rng.normal(0, 0.6, logits.size))))
    patients = np.arange(labels.size)
    times: dict[str, float] = {}

    def clock(name: str, work: Any) -> None:
        start = time.perf_counter()
        work()
        times[name] = time.perf_counter() - start

    clock(
        "metric_table",
        lambda: metrics.metric_table(labels, probs, 0.3, groups=patients, resamples=RESAMPLES),
    )
    clock(
        "subgroups",
        lambda: subgroups.analyse(
            labels,
            probs,
            patients,
            0.3,
            attributes,
            ["sex", "age", "view", "source"],
            subgroups.Settings(resamples=RESAMPLES),
        ),
    )
    clock(
        "compare",
        lambda: paired.compare_models(
            labels, patients, np.vstack([probs, other]), [0.3, 0.3], ["a", "b"], RESAMPLES
        ),
    )
    start = time.perf_counter()
    metrics.bootstrap_ci(
        lambda y, p: metrics.ranking_metrics(y, p, 0.3),
        labels,
        probs,
        groups=patients,
        resamples=loop_resamples,
    )
    times["metric_table_loop_scaled"] = (time.perf_counter() - start) * RESAMPLES / loop_resamples
    return times


def render_markdown(record: Mapping[str, Any]) -> str:
    """The documentation's section for one run of this script (its JSON)."""
    results, setup = record["results"], record["setup"]
    cli, stats = results["cli"], results["statistics"]
    lines = [
        f"Machine: {common.describe_machine(record['machine'])}.",
        "",
        f"{setup['test_images']:,} test images ({setup['val_images']:,} validation), "
        f"{setup['resamples']:,} patient-bootstrap resamples, {SIZE} px images whose grey "
        "level is the score (the model's own time is small).",
        "",
        "| command (fresh process) | median s | runs | under 60 s |",
        "|---|---|---|---|",
    ]
    for entry in cli.values():
        seconds = entry["seconds"]
        median = statistics.median(seconds)
        verdict = "yes" if median < TARGET_S else "**no**"
        lines.append(f"| `{entry['command']}` | {median:.1f} | {len(seconds)} | {verdict} |")
    lines += [
        "",
        "The statistics alone (this process, same scores):",
        "",
        "| step | s |",
        "|---|---|",
        f"| overall metric table (F1, ROC-AUC, PR-AUC, Brier), vectorised | "
        f"{stats['metric_table']:.1f} |",
        f"| the same, one scikit-learn call per resample (scaled from "
        f"{setup['loop_resamples']}) | {stats['metric_table_loop_scaled']:.1f} |",
        f"| subgroup analysis, 4 attributes | {stats['subgroups']:.1f} |",
        f"| paired comparison of 2 models | {stats['compare']:.1f} |",
        "",
        "The machine is shared: the load average above says how busy it was; absolute "
        "times are inflated by that load.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="Runs of each command.")
    parser.add_argument(
        "--images", type=int, default=RSNA_IMAGES, help="Test images (default: RSNA's 26,684)."
    )
    parser.add_argument(
        "--loop-resamples", type=int, default=50, help="Resamples of the timed loop bootstrap."
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default benchmarks/out/bench_subgroups.json).",
    )
    args = parser.parse_args(argv)
    info = common.machine()
    work = Path(tempfile.mkdtemp(prefix="bench_subgroups-"))
    try:
        counts = build_folder(work / "data", args.images)
        models = save_models(work / "runs")
        settings = ["--set", f"evaluate.bootstrap={RESAMPLES}", "--set", "data.batch_size=512"]
        commands = {
            "evaluate": [
                "evaluate", "--model", str(models["exact"]), "--data", str(work / "data"),
                "--by", "sex,age,view,source", "--out", str(work / "eval"), *settings,
            ],
            "compare": [
                "compare", "--model", str(models["exact"]), "--model", str(models["noisy"]),
                "--data", str(work / "data"), "--out", str(work / "compare"), *settings,
            ],
        }  # fmt: skip
        cli: dict[str, Any] = {}
        for name, arguments in commands.items():
            seconds, last = [], ""
            for _ in range(args.repeats):
                elapsed, last = _timed_cli(arguments)
                seconds.append(elapsed)
            shown = " ".join(
                "DIR" if "bench_subgroups-" in a else shlex.quote(a) for a in arguments
            )
            cli[name] = {"command": f"python cli.py {shown}", "seconds": seconds, "output": last}
            print(f"{name}: {[round(s, 1) for s in seconds]} s; {last}", file=sys.stderr)
        metrics_json = json.loads((work / "eval" / "metrics.json").read_text())
        gap = metrics_json["subgroups"]["largest_gap"]
        stats = statistics_times(args.images, args.loop_resamples)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    common.finish_machine(info)
    record = {
        "script": NAME,
        "machine": info,
        "command": common.command_line(argv, NAME),
        "setup": {
            "test_images": counts["test"],
            "val_images": counts["val"],
            "resamples": RESAMPLES,
            "image_size": SIZE,
            "loop_resamples": args.loop_resamples,
        },
        "results": {"cli": cli, "statistics": stats, "largest_gap_found": gap},
    }
    common.write_results(NAME, record, args.out)
    print(render_markdown(record))


if __name__ == "__main__":
    main()
