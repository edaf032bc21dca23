"""Grad-CAM throughput: the split model `explain` runs against whole-model tf-keras-vis.

Images per second of Grad-CAM maps (log-odds score, target `stack4_block2_out`, maps at
the layer's resolution, no upsampling) of the default 224 px ResNet18 (random weights,
seed 0) under the TensorFlow backend, at batch 1 (the app: one upload) and 16 (what
`explain` hands tf-keras-vis per call, `cam.BATCH`):

- **split** (`pneumokeras.explain.cam.HeatmapExplainer`, what `explain`, the app and
  `cv` run): the layers up to the target as one TensorFlow graph outside the gradient
  tape; tf-keras-vis differentiates only the layers after it, XLA-compiled.
- **whole model, eager**: tf-keras-vis on the whole model (`Gradcam(model)`), its
  plain use: every layer on an eager `GradientTape`, backpropagated to the input
  through TensorFlow's eager oneDNN kernels. At widths below 64 filters this path
  corrupts the heap on AVX-512 CPUs under TensorFlow 2.21 (`double free`), so it is
  only timed at `--filters 64`, where it runs without crashing, and with oneDNN off.

Each way runs with oneDNN on (TensorFlow's default) and off (`TF_ENABLE_ONEDNN_OPTS=0`,
the other way around the heap corruption), each setting in its own worker process, timed in
interleaved rounds; the figure is `batch / median(call time)`. The train step with
oneDNN on and off is `bench_train --variants tf-graph,tf-graph-nodnn,tf-xla,tf-xla-nodnn`.

Usage:
    python -m benchmarks.bench_explain
    python -m benchmarks.bench_explain --batches 1 --steps 4

Writes `benchmarks/out/bench_explain.json` (atomically) and prints the Markdown.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import common

NAME = "bench_explain"
SIZE = 224
LAYER = "stack4_block2_out"
MODES = {
    "split": "split at the target (explain's way)",
    "whole": "whole model, eager (tf-keras-vis alone)",
}
WORKERS = {"onednn": {}, "nodnn": {"TF_ENABLE_ONEDNN_OPTS": "0"}}


def _explainers(filters: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """{mode: maps(images)} for the product's explainer and whole-model tf-keras-vis."""
    import os

    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras
    import numpy as np

    from pneumokeras.explain import cam
    from pneumokeras.models.resnet import build_resnet18

    keras.utils.set_random_seed(0)
    model = build_resnet18(SIZE, filters=filters, num_classes=2)
    split = cam.HeatmapExplainer(model, "gradcam", LAYER)

    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

    linear = keras.models.clone_model(model)
    linear.set_weights(model.get_weights())
    ReplaceToLinear()(linear)
    whole = Gradcam(linear, clone=False)

    def split_maps(images: Any) -> Any:
        indices = np.ones(len(images), dtype=int)
        return split._raw_maps(images, indices)

    def whole_maps(images: Any) -> Any:
        indices = np.ones(len(images), dtype=int)
        return np.asarray(
            whole(
                cam.log_odds_score(indices),
                images,
                penultimate_layer=LAYER,
                seek_penultimate_conv_layer=False,
                expand_cam=False,
                normalize_cam=False,
            )
        )

    import tensorflow as tf

    settings = {
        "tensorflow": tf.__version__,
        "filters": filters,
        "env": common.settings_env(),
    }
    return {"split": split_maps, "whole": whole_maps}, settings


def _worker(args: argparse.Namespace) -> int:
    import numpy as np

    started = time.perf_counter()
    explainers, settings = _explainers(args.filters)
    rng = np.random.default_rng(0)
    steps = {}
    for batch in args.batches:
        images = rng.uniform(0, 255, (batch, SIZE, SIZE, 1)).astype(np.float32)
        for mode, maps in explainers.items():
            steps[(mode, batch)] = lambda m=maps, x=images: m(x)
    # The two ways agree (to float32 rounding) before anything is timed.
    check = rng.uniform(0, 255, (2, SIZE, SIZE, 1)).astype(np.float32)
    split, whole = explainers["split"](check), explainers["whole"](check)
    settings["max_abs_difference"] = float(np.max(np.abs(split - whole)))
    settings["max_relative_difference"] = float(
        np.max(np.abs(split - whole)) / max(float(np.max(np.abs(whole))), 1e-30)
    )
    setup_s = time.perf_counter() - started
    warmup = {f"{m} {b}": common.run_steps(step, args.warmup)[0] for (m, b), step in steps.items()}
    common.emit({"ready": True, "setup_s": setup_s, "warmup_s": warmup, "settings": settings})
    return common.answer_step_requests(lambda key: steps[(key[0], int(key[1]))])


def run_workers(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One worker per oneDNN setting, started one at a time, timed in interleaved rounds."""
    workers: list[common.Worker] = []
    try:
        for key, env in WORKERS.items():
            argv = ["--worker", key, "--filters", str(args.filters), "--warmup", str(args.warmup)]
            argv += ["--batches", ",".join(map(str, args.batches))]
            worker = common.start_worker(
                NAME, argv, key, env={"KERAS_BACKEND": "tensorflow", **env}
            )
            workers.append(worker)
            worker.ready = worker.request()
            print(f"  ready: {key} ({worker.ready['setup_s']:.0f} s)", file=sys.stderr, flush=True)
        jobs = [(w, mode, batch) for w in workers for mode in MODES for batch in args.batches]
        times: dict[int, tuple[list[float], list[float]]] = {id(job): ([], []) for job in jobs}
        rounds = max(1, min(args.rounds, args.steps))
        for index in range(rounds):
            for job in jobs:
                worker, mode, batch = job
                count = math.ceil(args.steps / rounds)
                answer = worker.request(f"steps {mode} {batch} {count}")
                times[id(job)][0].extend(answer["times"])
                times[id(job)][1].extend(answer["cpu_times"])
            print(f"  round {index + 1}/{rounds} done", file=sys.stderr, flush=True)
        return [
            {
                "onednn": job[0].name == "onednn",
                "mode": job[1],
                "how": MODES[job[1]],
                "batch": job[2],
                "filters": args.filters,
                **common.summarise_times(*times[id(job)], job[2]),
                "settings": (job[0].ready or {}).get("settings", {}),
            }
            for job in jobs
        ]
    finally:
        for worker in workers:
            worker.close()


def render_markdown(results: Mapping[str, Any]) -> str:
    """The documentation's section for one run of this script (its JSON)."""
    rows = results["results"]
    rate = {(r["onednn"], r["mode"], r["batch"]): r["img_per_s"] for r in rows}
    lines = [
        f"Machine: {common.describe_machine(results['machine'])}.",
        "",
        f"ResNet18 ({rows[0]['filters']} filters), {SIZE} px, Grad-CAM at `{LAYER}`:",
        "",
        "| way | oneDNN | batch | maps/s (median) | min–max | vs whole model, oneDNN on |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["batch"], r["mode"] != "split", not r["onednn"])):
        reference = rate.get((True, "whole", r["batch"]))
        lines.append(
            f"| {r['how']} | {'on' if r['onednn'] else 'off'} | {r['batch']} | "
            f"{r['img_per_s']:.1f} | {r['img_per_s_min']:.1f}–{r['img_per_s_max']:.1f} | "
            f"{common.ratio(r['img_per_s'], reference)} |"
        )
    absolute = [
        r["settings"]["max_abs_difference"] for r in rows if "max_abs_difference" in r["settings"]
    ]
    relative = [
        r["settings"]["max_relative_difference"]
        for r in rows
        if "max_relative_difference" in r["settings"]
    ]
    if relative:
        lines += ["", f"- The two ways' maps differ by at most {max(relative):.1e} of their "
                  "largest value (two random images, before normalisation)."]  # fmt: skip
    elif absolute:
        lines += ["", f"- The two ways' maps differ by at most {max(absolute):.1e} "
                  "(raw Grad-CAM values, before normalisation)."]  # fmt: skip
    for batch in sorted({r["batch"] for r in rows}):
        split_on, whole_on = rate.get((True, "split", batch)), rate.get((True, "whole", batch))
        split_off = rate.get((False, "split", batch))
        if split_on and whole_on:
            lines.append(
                f"- Batch {batch}: the split model is {common.ratio(split_on, whole_on)} the "
                f"whole-model eager path; with oneDNN off the split model runs at "
                f"{common.ratio(split_off, split_on)} its speed."
            )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=common.positive, default=6, help="timed calls per row")
    parser.add_argument("--warmup", type=common.positive, default=2, help="untimed calls first")
    parser.add_argument("--rounds", type=common.positive, default=3, help="interleaving rounds")
    parser.add_argument(
        "--batches", type=common.parse_batches, default=[1, 16], help="comma list (default 1,16)"
    )
    parser.add_argument(
        "--filters",
        type=int,
        default=64,
        choices=[64],
        help="ResNet18 width (64 only: the whole-model path corrupts memory below it)",
    )
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/out/NAME.json)")
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        return _worker(args)
    machine = common.machine()
    print(f"{NAME}: batches {args.batches}, {SIZE} px", file=sys.stderr, flush=True)
    results = run_workers(args)
    payload = {
        "script": NAME,
        "benchmark": "gradcam",
        "command": common.command_line(argv, NAME),
        "size": SIZE,
        "layer": LAYER,
        "machine": common.finish_machine(machine),
        "results": results,
    }
    path = common.write_results(NAME, payload, args.out)
    print(render_markdown(payload))
    print(f"\nresults in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
