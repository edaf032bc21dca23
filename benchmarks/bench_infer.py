"""Inference throughput of ResNet18: Keras (TensorFlow, JAX), onnxruntime and PyTorch.

Images per second of one forward pass (fp32) of the product's 224 px ResNet18
(`pneumokeras.models.resnet.build_model` with the default `ModelConfig`, 1 channel, 2
classes) at batch 1 and 32, on in-memory uint8 images given as float32:

- **Keras "call"**: `Classifier.raw_probabilities`, the eager forward pass that
  `predict`, `evaluate` and `explain` run (`model(x, training=False)`, no compiled
  predict function), under TensorFlow and under JAX.
- **Keras "compiled"**: `model.predict_on_batch` after `model.compile(**COMPILE_KWARGS)`
  (XLA: `jit_compile=True` under TensorFlow, `jax.jit` under JAX).
- **Keras-JAX "compiled, YNNPACK convs"**: the same under JAX with XLA's default
  convolution routing (`environment.YNN_FLAG` at jaxlib's default list), not the
  training-oriented flag the CLI sets.
- **onnxruntime**: the model exported by `pneumokeras.serving.export` (`cli.py export
  --format onnx`, which also checks it against Keras), CPU provider, default
  session options.
- **PyTorch**: the same architecture in plain PyTorch (`bench_train._torch_resnet18`,
  NCHW, `eval()`, `torch.inference_mode()`), run by `--torch-python` (PyTorch is
  not a project dependency; any interpreter with `torch` and `numpy` works).

One model (random weights, seed 0) is built, saved and exported once in a helper
process; Keras and onnxruntime load that file. Every runtime runs in its own worker
process (the Keras backend is fixed per process; the process protocol, machine
facts and the PyTorch network come from `bench_train.py`). Workers start and warm
up one at a time, then are timed in interleaved rounds so that load from other
programs on a shared machine hits every runtime alike. The figure is
`batch / median(step time)`.

Usage:
    python benchmarks/bench_infer.py --torch-python /path/to/torch-venv/bin/python
    python benchmarks/bench_infer.py --only onnx,torch --batches 1 --steps 4

Writes `benchmarks/out/bench_infer.json` (atomically) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train

REPO_ROOT = bench_train.REPO_ROOT
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "out" / "bench_infer.json"
SIZE = 224
# jaxlib 0.10's own convolution routing (what the CLI's training flag changes).
JAX_DEFAULT_YNN = "individual_dot,individual_convolution,reduce"

# worker key → (table name, [(mode, how it runs)], interpreter: "venv" or "torch")
RUNTIMES: dict[str, tuple[str, list[tuple[str, str]], str]] = {
    "tf": (
        "Keras-TensorFlow",
        [("call", "eager call (predict.py)"), ("compiled", "predict_on_batch, XLA")],
        "venv",
    ),
    "jax": (
        "Keras-JAX",
        [("call", "eager call (predict.py)"), ("compiled", "predict_on_batch, jax.jit")],
        "venv",
    ),
    "jax-ynn": ("Keras-JAX", [("compiled", "predict_on_batch, jax.jit, YNNPACK convs")], "venv"),
    "onnx": ("onnxruntime", [("session", "exported ONNX, CPU provider")], "venv"),
    "torch": ("PyTorch", [("eager", "eval(), inference_mode")], "torch"),
}


# --------------------------------------------------------------------------
# Helper process: the model file every Keras and onnxruntime worker loads.
# --------------------------------------------------------------------------


def _prepare(folder: Path) -> dict:
    """Builds the default ResNet18, saves model.keras + card, exports and checks ONNX."""
    sys.path.insert(0, str(REPO_ROOT))
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
        "onnx_details": summary.details,
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


def _keras_steps(folder: Path, batches: list[int]) -> tuple[dict, dict]:
    """{(mode, batch): step} for the product's eager call and the compiled predict."""
    sys.path.insert(0, str(REPO_ROOT))
    from pneumokeras.utils import environment

    environment.set_defaults()  # as the CLI: XLA:CPU flag under JAX, unless XLA_FLAGS has one
    import keras

    from pneumokeras.models.model_card import load_classifier
    from pneumokeras.utils.performance import COMPILE_KWARGS

    classifier = load_classifier(folder, require_card=True)
    model = classifier.model
    model.compile(**COMPILE_KWARGS)
    steps = {}
    for batch in batches:
        images = _images(batch)
        steps[("call", batch)] = lambda x=images: classifier.raw_probabilities(x, batch_size=64)
        steps[("compiled", batch)] = lambda x=images: model.predict_on_batch(x)
    settings = {
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "compile_kwargs": {k: repr(v) for k, v in COMPILE_KWARGS.items()},
        "env": {k: os.environ[k] for k in bench_train._RECORDED_ENV if k in os.environ},
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
    model = bench_train._torch_resnet18().eval()
    steps = {}
    for batch in batches:
        images = torch.from_numpy(_images(batch)).permute(0, 3, 1, 2).contiguous()  # NCHW

        def step(x=images) -> None:
            with torch.inference_mode():
                torch.softmax(model(x), dim=1).numpy()

        steps[("eager", batch)] = step
    settings = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    return steps, settings


def _worker(args: argparse.Namespace) -> int:
    """Worker main loop: set up, warm up, then answer `steps MODE BATCH N` / `quit`."""
    started = time.perf_counter()
    batches = args.batches
    if args.worker in ("tf", "jax", "jax-ynn"):
        steps, settings = _keras_steps(args.model_dir, batches)
        if args.worker == "jax-ynn":
            steps = {k: v for k, v in steps.items() if k[0] == "compiled"}
    elif args.worker == "onnx":
        steps, settings = _onnx_steps(args.model_dir, batches)
    else:
        steps, settings = _torch_steps(batches)
    setup_s = time.perf_counter() - started
    warmup = {
        f"{mode} {batch}": bench_train._run_steps(step, args.warmup)[0]
        for (mode, batch), step in steps.items()
    }
    bench_train._emit({"ready": True, "setup_s": setup_s, "warmup_s": warmup, "settings": settings})
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        _, mode, batch, count = command
        times, cpu_times = bench_train._run_steps(steps[(mode, int(batch))], int(count))
        bench_train._emit({"times": times, "cpu_times": cpu_times})
    return 0


# --------------------------------------------------------------------------
# Parent: prepare the model, run the workers, summarise, write JSON, print.
# --------------------------------------------------------------------------


def _start(key: str, python: str, folder: Path, args: argparse.Namespace) -> bench_train._Worker:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # logging only; no effect on speed
    backend = {"tf": "tensorflow", "jax": "jax", "jax-ynn": "jax"}.get(key, key)
    if key in ("tf", "jax", "jax-ynn"):
        env["KERAS_BACKEND"] = backend
    if key == "jax-ynn":
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {_jax_default_flag()}".strip()
    command = [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        key,
        "--model-dir",
        str(folder),
        "--batches",
        ",".join(map(str, args.batches)),
        "--warmup",
        str(args.warmup),
    ]
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - the worker writes it until it ends
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    return bench_train._Worker(key, key, backend, "fp32", process, log)


def _jax_default_flag() -> str:
    """The XLA flag at jaxlib's default value (the name comes from the product)."""
    sys.path.insert(0, str(REPO_ROOT))
    from pneumokeras.utils.environment import YNN_FLAG

    return f"{YNN_FLAG}={JAX_DEFAULT_YNN}"


def timed_steps(batch: int, steps: int) -> int:
    """Timed steps for a batch size: `steps` at batch ≥ 8, 5× as many below (short steps)."""
    return steps if batch >= 8 else steps * 5


def _summary(
    key: str,
    mode: str,
    how: str,
    batch: int,
    times: list[float],
    cpu_times: list[float],
    ready: dict,
) -> dict:
    median = statistics.median(times)
    return {
        "runtime": RUNTIMES[key][0],
        "worker": key,
        "mode": mode,
        "how": how,
        "batch": batch,
        "precision": "fp32",
        "img_per_s": batch / median,
        "img_per_s_min": batch / max(times),
        "img_per_s_max": batch / min(times),
        "median_step_ms": median * 1000,
        "step_times_s": times,
        "cpu_per_wall": statistics.median(c / t for c, t in zip(cpu_times, times, strict=True)),
        "setup_s": ready["setup_s"],
        "warmup_s": ready["warmup_s"].get(f"{mode} {batch}"),
        "settings": ready["settings"],
    }


def run_workers(keys: list[str], folder: Path, args: argparse.Namespace) -> list[dict]:
    """Starts one worker per runtime (one at a time), then times them in interleaved rounds."""
    workers: list[bench_train._Worker] = []
    try:
        for key in keys:
            python = args.torch_python if RUNTIMES[key][2] == "torch" else sys.executable
            worker = _start(key, python, folder, args)
            workers.append(worker)
            worker.ready = worker.request("")
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
        times = {id(job): ([], []) for job in jobs}
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
            results.append(_summary(worker.name, mode, how, batch, *times[id(job)], worker.ready))
        return results
    finally:
        for worker in workers:
            worker.close()


def format_table(results: list[dict]) -> str:
    """Markdown: runtime, how, batch, img/s (median, range), ms/batch, ratio vs PyTorch."""
    torch_rate = {r["batch"]: r["img_per_s"] for r in results if r["runtime"] == "PyTorch"}
    lines = [
        "| runtime | how | batch | img/s (median) | min–max | ms/batch | vs PyTorch |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: (r["batch"], -r["img_per_s"])):
        reference = torch_rate.get(r["batch"])
        ratio = f"{r['img_per_s'] / reference:.2f}×" if reference else "n/a"
        lines.append(
            f"| {r['runtime']} | {r['how']} | {r['batch']} | {r['img_per_s']:.1f} | "
            f"{r['img_per_s_min']:.1f}–{r['img_per_s_max']:.1f} | "
            f"{r['median_step_ms']:.0f} | {ratio} |"
        )
    return "\n".join(lines)


def _parse_only(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(names) - set(RUNTIMES))
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"--only takes a comma list of {', '.join(RUNTIMES)}; got {text!r}"
        )
    return [key for key in RUNTIMES if key in names]


def _parse_batches(text: str) -> list[int]:
    try:
        batches = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        batches = []
    if not batches or batches[0] < 1:
        raise argparse.ArgumentTypeError(f"--batches takes positive integers; got {text!r}")
    return batches


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps",
        type=bench_train._positive,
        default=6,
        help="timed steps per batch-32 configuration (batch < 8: 5× as many)",
    )
    parser.add_argument(
        "--warmup",
        type=bench_train._positive,
        default=2,
        help="untimed steps first (the first one compiles)",
    )
    parser.add_argument(
        "--rounds", type=bench_train._positive, default=3, help="interleaving rounds"
    )
    parser.add_argument(
        "--batches",
        type=_parse_batches,
        default=[1, 32],
        help="comma list of batch sizes (default 1,32)",
    )
    parser.add_argument("--only", type=_parse_only, help=f"comma list of {', '.join(RUNTIMES)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results path")
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
        [sys.executable, str(Path(__file__).resolve()), "--prepare", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"preparing the model failed:\n{done.stderr[-3000:]}")
    line = [x for x in done.stdout.splitlines() if x.startswith(bench_train._PREFIX)][-1]
    return json.loads(line[len(bench_train._PREFIX) :])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.prepare:
        bench_train._emit(_prepare(args.prepare))
        return 0
    if args.worker:
        return _worker(args)
    keys = args.only or list(RUNTIMES)
    notes = []
    if "torch" in keys:
        args.torch_python = shutil.which(args.torch_python) or args.torch_python
        reason = bench_train._torch_available(args.torch_python)
        if reason:
            notes.append(f"PyTorch reference skipped: {reason}")
            keys.remove("torch")
    for note in notes:
        print(note, file=sys.stderr)
    machine = bench_train._machine()
    print(
        f"bench_infer: {', '.join(keys)}; batches {args.batches}, {SIZE} px, fp32, "
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
    machine["load_avg_end"] = os.getloadavg()
    table = format_table(results)
    payload = {
        "benchmark": "inference",
        "model": model,
        "precision": "fp32",
        "size": SIZE,
        "args": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("worker", "model_dir", "prepare")
        },
        "machine": machine,
        "notes": notes,
        "results": results,
        "table": table,
    }
    bench_train._write_json(args.out, payload)
    print(table)
    for note in notes:
        print(f"\nNote: {note}")
    print(
        f"\nload average {machine['load_avg_start'][0]:.1f} → {machine['load_avg_end'][0]:.1f} "
        f"on {machine['cpus']} CPUs; results in {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
