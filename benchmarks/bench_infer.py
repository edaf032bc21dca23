"""Inference throughput of ResNet18: Keras (TensorFlow, JAX), onnxruntime and PyTorch.

Images per second of one forward pass (fp32) of the product's 224 px ResNet18
(`pneumokeras.models.resnet.build_model` with the default `ModelConfig`, 1 channel, 2
classes) at batch 1 and 32, on in-memory uint8 images given as float32, each way a
runtime can run it:

- **Keras-TensorFlow**: the eager call (`model(x, training=False)`); one traced
  `tf.function` (graph, oneDNN kernels); the same with `jit_compile=True` (XLA).
- **Keras-JAX**: the eager call; `jax.jit` over `model.stateless_call` as `predict`
  compiles it (the forward graph on XNNPACK, `environment.XNN_INFERENCE_OPTIONS`);
  mode `jit-flags`: `jax.jit` with the process's XLA_FLAGS alone, i.e. the XLA:CPU flag
  the CLI sets for training (convolutions on XLA's kernels), and (worker `jax-ynn`)
  jaxlib's default convolution routing (YNNPACK).
- The compiled ways run through `pneumokeras.utils.performance.CompiledForward`, the
  function `Classifier.forward` uses (so `predict`, `evaluate`, `explain`, `cv` and the
  app); the row it picks on the measured CPU (`performance.inference_path`) is marked.
- **onnxruntime**: the model exported by `pneumokeras.serving.export` (`pneumokeras
  export --format onnx`, which also checks it against Keras), CPU provider, default
  session options.
- **PyTorch**: the same architecture in plain PyTorch (`common.torch_resnet18`, NCHW,
  `eval()`, `torch.inference_mode()`), run by `--torch-python` (PyTorch is not a
  project dependency; any interpreter with `torch` and `numpy` works).

One model (random weights, seed 0) is built, saved and exported once in a helper
process; Keras and onnxruntime load that file. Every runtime runs in its own worker
process, started and warmed up one at a time, then timed in interleaved rounds. The
figure is `batch / median(step time)`.

Usage:
    python -m benchmarks.bench_infer --torch-python /path/to/torch-venv/bin/python
    python -m benchmarks.bench_infer --only onnx,torch --batches 1 --steps 4

Writes `benchmarks/out/bench_infer.json` (atomically) and prints the Markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import common

NAME = "bench_infer"
SIZE = 224
# jaxlib 0.10's own convolution routing (what the CLI's training flag changes).
JAX_DEFAULT_YNN = "individual_dot,individual_convolution,reduce"

# worker key → (runtime, [(mode, how it runs)], interpreter: "venv" or "torch")
RUNTIMES: dict[str, tuple[str, list[tuple[str, str]], str]] = {
    "tf": (
        "Keras-TensorFlow",
        [
            ("eager", "eager call"),
            ("graph", "`tf.function`, oneDNN (graph)"),
            ("xla", "`tf.function(jit_compile=True)` (XLA)"),
        ],
        "venv",
    ),
    "jax": (
        "Keras-JAX",
        [
            ("eager", "eager call"),
            ("jit", "`jax.jit`, forward graph on XNNPACK"),
            ("jit-flags", "`jax.jit`, convolutions on XLA's kernels"),
        ],
        "venv",
    ),
    "jax-ynn": ("Keras-JAX", [("jit-flags", "`jax.jit`, convolutions on YNNPACK")], "venv"),
    "onnx": ("onnxruntime", [("session", "exported ONNX, CPU provider")], "venv"),
    "torch": ("PyTorch", [("eager", "`eval()`, `inference_mode`")], "torch"),
}


# --------------------------------------------------------------------------
# Helper process: the model file every Keras and onnxruntime worker loads.
# --------------------------------------------------------------------------


def _prepare(folder: Path) -> dict:
    """Builds the default ResNet18, saves model.keras + card, exports and checks ONNX."""
    import keras

    from pneumokeras.config import ModelConfig
    from pneumokeras.models.model_card import ModelCard, write_card
    from pneumokeras.models.resnet import build_model
    from pneumokeras.serving.export import export_model

    keras.utils.set_random_seed(0)
    config = ModelConfig()
    model = build_model(config, SIZE)
    model.save(folder / "model.keras")
    write_card(folder / "model.keras", ModelCard(input_size=SIZE, model_name=config.name))
    summary = export_model(folder, "onnx")
    return {
        "model": config.name,
        "parameters": int(model.count_params()),
        "onnx_max_abs_diff": summary.max_abs_diff,
        "export_s": summary.seconds,
    }


# --------------------------------------------------------------------------
# Workers: each loads one runtime, warms it up, then runs steps on request.
# --------------------------------------------------------------------------


def _images(batch: int) -> Any:
    """`(batch, 224, 224, 1)` float32 grey levels 0..255 (seeded by the batch size)."""
    import numpy as np

    rng = np.random.default_rng(batch)
    return rng.integers(0, 256, (batch, SIZE, SIZE, 1), dtype=np.uint8).astype(np.float32)


def _keras_steps(folder: Path, batches: list[int], modes: list[str]) -> tuple[dict, dict]:
    """{(mode, batch): step}: the eager call and each compiled forward of the classifier."""
    from pneumokeras.utils import environment

    environment.set_defaults()  # as the CLI: XLA:CPU flag under JAX, unless XLA_FLAGS has one
    import keras

    from pneumokeras.models.model_card import load_classifier
    from pneumokeras.utils import performance

    classifier = load_classifier(folder, require_card=True)
    forwards = {
        mode: performance.CompiledForward(classifier.model, "jit", jax_options={})
        if mode == "jit-flags"  # XLA_FLAGS alone, without the inference options
        else performance.CompiledForward(classifier.model, mode)
        for mode in modes
    }
    steps = {}
    for batch in batches:
        images = _images(batch)
        for mode, forward in forwards.items():
            steps[(mode, batch)] = lambda x=images, f=forward: f(x)
    settings = {
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "default_path": performance.inference_path(),
        "isa": environment.cpu_isa(),
        "env": common.settings_env(),
    }
    return steps, settings


def _onnx_steps(folder: Path, batches: list[int]) -> tuple[dict, dict]:
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(folder / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    steps = {}
    for batch in batches:
        images = _images(batch)
        steps[("session", batch)] = lambda x=images: session.run(None, {"image": x})[0]
    options = session.get_session_options()
    settings = {
        "onnxruntime": onnxruntime.__version__,
        "intra_op_threads": options.intra_op_num_threads,  # 0 = one per core
        "graph_optimization_level": str(options.graph_optimization_level),
    }
    return steps, settings


def _torch_steps(batches: list[int]) -> tuple[dict, dict]:
    import torch

    torch.manual_seed(0)
    model = common.torch_resnet18().eval()
    steps = {}
    for batch in batches:
        images = torch.from_numpy(_images(batch)).permute(0, 3, 1, 2).contiguous()  # NCHW

        def step(x: Any = images) -> None:
            with torch.inference_mode():
                torch.softmax(model(x), dim=1).numpy()

        steps[("eager", batch)] = step
    settings = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "env": common.settings_env(),
    }
    return steps, settings


def _worker(args: argparse.Namespace) -> int:
    """Worker main loop: set up, warm up, then answer `steps MODE BATCH N` / `quit`."""
    started = time.perf_counter()
    batches = args.batches
    modes = [mode for mode, _ in RUNTIMES[args.worker][1]]
    if args.worker in ("tf", "jax", "jax-ynn"):
        steps, settings = _keras_steps(args.model_dir, batches, modes)
    elif args.worker == "onnx":
        steps, settings = _onnx_steps(args.model_dir, batches)
    else:
        steps, settings = _torch_steps(batches)
    setup_s = time.perf_counter() - started
    warmup = {
        f"{mode} {batch}": common.run_steps(step, args.warmup)[0]
        for (mode, batch), step in steps.items()
    }
    common.emit({"ready": True, "setup_s": setup_s, "warmup_s": warmup, "settings": settings})
    return common.answer_step_requests(lambda key: steps[(key[0], int(key[1]))])


# --------------------------------------------------------------------------
# Parent: prepare the model, run the workers, summarise, write JSON, print.
# --------------------------------------------------------------------------


def _start(key: str, python: str, folder: Path, args: argparse.Namespace) -> common.Worker:
    env = dict(common.ISA_EMULATION.get(args.isa or "", {}))
    backend = {"tf": "tensorflow", "jax": "jax", "jax-ynn": "jax"}.get(key, key)
    if key in ("tf", "jax", "jax-ynn"):
        env["KERAS_BACKEND"] = backend
    if key == "jax-ynn":
        from pneumokeras.utils.environment import YNN_FLAG

        flag = f"{YNN_FLAG}={JAX_DEFAULT_YNN}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
    argv = ["--worker", key, "--model-dir", str(folder)]
    argv += ["--batches", ",".join(map(str, args.batches)), "--warmup", str(args.warmup)]
    return common.start_worker(NAME, argv, key, env=env, python=python, meta={"backend": backend})


def timed_steps(batch: int, steps: int) -> int:
    """Timed steps for a batch size: `steps` at batch ≥ 8, 5× as many below (short steps)."""
    return steps if batch >= 8 else steps * 5


def run_workers(keys: list[str], folder: Path, args: argparse.Namespace) -> list[dict]:
    """Starts one worker per runtime (one at a time), then times them in interleaved rounds."""
    workers: list[common.Worker] = []
    try:
        for key in keys:
            python = args.torch_python if RUNTIMES[key][2] == "torch" else sys.executable
            worker = _start(key, python, folder, args)
            workers.append(worker)
            worker.ready = worker.request()
            print(
                f"  ready: {key:<8} setup {worker.ready['setup_s']:5.1f} s",
                file=sys.stderr,
                flush=True,
            )
        jobs = [
            (w, mode, how, batch)
            for w in workers
            for mode, how in RUNTIMES[w.name][1]
            for batch in args.batches
        ]
        times: dict[int, tuple[list[float], list[float]]] = {id(job): ([], []) for job in jobs}
        rounds = max(1, min(args.rounds, args.steps))
        for index in range(rounds):
            for job in jobs:
                worker, mode, _, batch = job
                count = math.ceil(timed_steps(batch, args.steps) / rounds)
                answer = worker.request(f"steps {mode} {batch} {count}")
                times[id(job)][0].extend(answer["times"])
                times[id(job)][1].extend(answer["cpu_times"])
            print(f"  round {index + 1}/{rounds} done", file=sys.stderr, flush=True)
        results = []
        for job in jobs:
            worker, mode, how, batch = job
            ready = worker.ready or {}
            summary = common.summarise_times(*times[id(job)], batch)
            results.append(
                {
                    "runtime": RUNTIMES[worker.name][0],
                    "worker": worker.name,
                    "mode": mode,
                    "how": how,
                    "batch": batch,
                    "precision": "fp32",
                    **summary,
                    "median_step_ms": summary["median_step_s"] * 1000,
                    "setup_s": ready.get("setup_s"),
                    "warmup_s": ready.get("warmup_s", {}).get(f"{mode} {batch}"),
                    "settings": ready.get("settings", {}),
                }
            )
        return results
    finally:
        for worker in workers:
            worker.close()


def _is_default(row: Mapping[str, Any]) -> bool:
    """Whether `Classifier.forward` runs this row's way on the CPU it was measured on
    (today's `performance.inference_path` for the CPU level the worker saw)."""
    if row["worker"] not in ("tf", "jax"):
        return False
    from pneumokeras.utils import performance

    settings = row.get("settings", {})
    if "isa" not in settings:
        return settings.get("default_path") == row["mode"]
    path = performance.inference_path(settings["backend"], settings["isa"], gpu=False)
    return path == row["mode"]


def render_markdown(results: Mapping[str, Any]) -> str:
    """The documentation's section for one run of this script (its JSON)."""
    rows = results["results"]
    torch_rate = {r["batch"]: r["img_per_s"] for r in rows if r["runtime"] == "PyTorch"}
    lines = [
        f"Machine: {common.describe_machine(results['machine'])}.",
        "",
        "| runtime | how | batch | img/s (median) | min–max | ms/batch | first call (s) "
        "| vs PyTorch |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["batch"], -r["img_per_s"])):
        how = r["how"] + (" **(predict's path here)**" if _is_default(r) else "")
        versus = common.ratio(r["img_per_s"], torch_rate.get(r["batch"]))
        lines.append(
            f"| {r['runtime']} | {how} | {r['batch']} | {r['img_per_s']:.1f} | "
            f"{r['img_per_s_min']:.1f}–{r['img_per_s_max']:.1f} | "
            f"{r['median_step_ms']:.0f} | {_first_call(r)} | {versus} |"
        )
    defaults = [r for r in rows if _is_default(r)]
    if defaults:
        lines.append("")
        for r in sorted(defaults, key=lambda r: (r["runtime"], r["batch"])):
            versus = torch_rate.get(r["batch"])
            against = f": **{common.ratio(r['img_per_s'], versus)}** PyTorch" if versus else ""
            lines.append(
                f"- {r['runtime']}, batch {r['batch']}, the path `predict` takes{against}"
                f"{_break_even(r, rows)}."
            )
    return "\n".join(lines)


def _first_call(row: Mapping[str, Any]) -> str:
    """Seconds of the first call (the compile, for compiled ways)."""
    warmup = row.get("warmup_s") or []
    return f"{warmup[0]:.1f}" if warmup else "–"


def _break_even(row: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> str:
    """`; its compile pays off after N images` against the eager call at the same batch."""
    eager = [
        r
        for r in rows
        if r["worker"] == row["worker"] and r["mode"] == "eager" and r["batch"] == row["batch"]
    ]
    warmup = row.get("warmup_s") or []
    if not eager or not warmup or row["img_per_s"] <= eager[0]["img_per_s"]:
        return ""
    compile_s = warmup[0] - row["median_step_ms"] / 1000
    if compile_s < 0.1:  # found in a compilation cache (JAX's persists on disk)
        return "; its compiled program came from the cache"
    saved_per_image = 1 / eager[0]["img_per_s"] - 1 / row["img_per_s"]
    images = compile_s / saved_per_image
    return f"; its compile ({compile_s:.1f} s) pays off after ≈ {images:.0f} images"


def _parse_only(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(names) - set(RUNTIMES))
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"--only takes a comma list of {', '.join(RUNTIMES)}; got {text!r}"
        )
    return [key for key in RUNTIMES if key in names]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps",
        type=common.positive,
        default=6,
        help="timed steps per batch-32 configuration (batch < 8: 5× as many)",
    )
    parser.add_argument(
        "--warmup", type=common.positive, default=2, help="untimed steps first (compiles)"
    )
    parser.add_argument("--rounds", type=common.positive, default=3, help="interleaving rounds")
    parser.add_argument(
        "--batches",
        type=common.parse_batches,
        default=[1, 32],
        help="comma list of batch sizes (default 1,32)",
    )
    parser.add_argument("--only", type=_parse_only, help=f"comma list of {', '.join(RUNTIMES)}")
    parser.add_argument(
        "--isa", choices=sorted(common.ISA_EMULATION), help="emulate a smaller CPU (common.py)"
    )
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/out/NAME.json)")
    parser.add_argument(
        "--torch-python",
        default=sys.executable,
        help="interpreter with torch for the PyTorch reference",
    )
    # Internal: the worker side of the protocol.
    parser.add_argument("--worker", choices=list(RUNTIMES), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)
    return parser


def _prepare_in_child(folder: Path) -> dict:
    """Runs `_prepare` in a TensorFlow process (so the parent stays small)."""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{NAME}", "--prepare", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        cwd=common.REPO_ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"preparing the model failed:\n{done.stderr[-3000:]}")
    line = [x for x in done.stdout.splitlines() if x.startswith(common.PREFIX)][-1]
    return json.loads(line[len(common.PREFIX) :])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.prepare:
        common.emit(_prepare(args.prepare))
        return 0
    if args.worker:
        return _worker(args)
    keys = args.only or list(RUNTIMES)
    notes = []
    if "torch" in keys:
        args.torch_python = shutil.which(args.torch_python) or args.torch_python
        reason = common.torch_available(args.torch_python)
        if reason:
            notes.append(f"PyTorch reference skipped: {reason}")
            keys.remove("torch")
    for note in notes:
        print(note, file=sys.stderr)
    machine = common.machine(args.isa)
    print(
        f"{NAME}: {', '.join(keys)}; batches {args.batches}, {SIZE} px, fp32, "
        f"{args.warmup} warm-up + {args.steps} timed steps (×5 below batch 8) in "
        f"{args.rounds} rounds",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as folder:
        started = time.perf_counter()
        model = _prepare_in_child(Path(folder))
        print(
            f"  model saved and exported to ONNX in {time.perf_counter() - started:.0f} s "
            f"(max |ONNX - Keras| {model['onnx_max_abs_diff']:.1e})",
            file=sys.stderr,
            flush=True,
        )
        results = run_workers(keys, Path(folder), args)
    payload = {
        "script": NAME,
        "benchmark": "inference",
        "command": common.command_line(argv, NAME),
        "model": model,
        "precision": "fp32",
        "size": SIZE,
        "machine": common.finish_machine(machine),
        "notes": notes,
        "results": results,
    }
    path = common.write_results(NAME, payload, args.out)
    print(render_markdown(payload))
    for note in notes:
        print(f"\nNote: {note}")
    print(f"\nresults in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
