"""Train-step throughput of ResNet18: Keras (TensorFlow, JAX) against PyTorch.

Measures images per second of one optimisation step (forward, backward, Adam
update; batch 32, 224×224×1 by default) of `pneumokeras.models.resnet.build_resnet18`
(filters 64) compiled exactly as the product compiles it: the dtype policy and
backend settings from `pneumokeras.utils.performance.configure_backend` and the
compile arguments `pneumokeras.utils.performance.COMPILE_KWARGS`, with
`Adam(1e-4)` and categorical cross-entropy, driven by `model.train_on_batch` on
one in-memory batch (no input pipeline: see `bench_pipeline`).

The reference is the same architecture written in plain PyTorch below (no
torchvision), fp32 and with bfloat16 autocast, run by `--torch-python` (PyTorch
is not a project dependency; any interpreter with `torch` and `numpy` works).

Every configuration runs in its own worker process (the Keras backend is
fixed per process). Workers are started and warmed up one at a time, then
timed in interleaved rounds (each worker runs a few steps in turn) so that load
from other programs on a shared machine hits every configuration alike. The
reported figure is `batch / median(step time)` over all timed steps.

Usage:
    python benchmarks/bench_train.py                     # full CPU matrix
    python benchmarks/bench_train.py --torch-python /path/to/torch-venv/bin/python
    python benchmarks/bench_train.py --only jax,torch --precisions fp32 --steps 20
    python benchmarks/bench_train.py --gpu               # Keras-JAX, bf16, batch 256

Writes `benchmarks/out/bench_train.json` (atomically) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "out" / "bench_train.json"
_PREFIX = "@bench "  # worker → parent protocol lines on stdout

# (framework, backend, precision as the table shows it, precision argument)
_MATRIX = [
    ("keras", "tensorflow", "fp32", "float32"),
    ("keras", "tensorflow", "bf16", "mixed_bfloat16"),
    ("keras", "jax", "fp32", "float32"),
    ("keras", "jax", "bf16", "mixed_bfloat16"),
    ("torch", "torch", "fp32", "float32"),
    ("torch", "torch", "bf16", "bfloat16"),
]
_ONLY = {"tf": "tensorflow", "jax": "jax", "torch": "torch", "data": "pipeline"}
# Environment variables that change speed, recorded with each Keras result.
_RECORDED_ENV = (
    "KERAS_BACKEND",
    "XLA_FLAGS",
    "TF_XLA_FLAGS",
    "TF_ENABLE_ONEDNN_OPTS",
    "OMP_NUM_THREADS",
    "JAX_PLATFORMS",
)


# --------------------------------------------------------------------------
# Workers: each builds one model, warms it up, then runs steps on request.
# --------------------------------------------------------------------------


def _keras_step(precision: str, batch: int, size: int) -> tuple[Callable[[], None], dict]:
    """Builds and compiles the product's ResNet18; returns (one train step, settings)."""
    sys.path.insert(0, str(REPO_ROOT))
    from pneumokeras.utils.performance import COMPILE_KWARGS, configure_backend

    configure_backend(precision)  # before any model is built

    import keras
    import numpy as np

    from pneumokeras.models.resnet import build_resnet18

    keras.utils.set_random_seed(0)
    model = build_resnet18(size, filters=64, num_classes=2)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss="categorical_crossentropy",
        **COMPILE_KWARGS,
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 1), dtype=np.uint8)
    labels = np.eye(2, dtype=np.float32)[rng.integers(0, 2, batch)]
    if keras.backend.backend() == "jax":
        import jax

        # Device-resident once: no host→device copy inside the timed step.
        images, labels = jax.device_put(images), jax.device_put(labels)

    def step() -> None:
        # Returns the loss as a host scalar, so the step has finished.
        model.train_on_batch(images, labels)

    settings = {
        "keras": keras.__version__,
        "dtype_policy": keras.config.dtype_policy().name,
        "compile_kwargs": {k: repr(v) for k, v in COMPILE_KWARGS.items()},
        "env": {k: os.environ[k] for k in _RECORDED_ENV if k in os.environ},
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        settings["tensorflow"] = tf.__version__
        settings["intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
        settings["inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    else:
        import jax

        settings["jax"] = jax.__version__
        settings["device"] = str(jax.devices()[0])
        settings["tensorflow_imported"] = "tensorflow" in sys.modules  # --gpu needs none
    return step, settings


def _torch_resnet18(filters: int = 64, num_classes: int = 2) -> Any:
    """torchvision's resnet18 layout with 1 input channel, written out (no torchvision)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Identity()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(1, filters, 7, 2, 3, bias=False),
                nn.BatchNorm2d(filters),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
            blocks, cin = [], filters
            for stage, multiplier in enumerate((1, 2, 4, 8)):
                cout = filters * multiplier
                blocks += [Block(cin, cout, 1 if stage == 0 else 2), Block(cout, cout, 1)]
                cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.blocks(self.stem(x / 127.5 - 1.0))  # same [-1, 1] input as Keras
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    return ResNet18()


def _torch_step(precision: str, batch: int, size: int) -> tuple[Callable[[], None], dict]:
    """Plain PyTorch train step (default NCHW, default threads); fp32 or bf16 autocast."""
    import torch
    from torch.nn import functional as F

    torch.manual_seed(0)
    model = _torch_resnet18().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randint(0, 256, (batch, 1, size, size)).float()
    labels = torch.randint(0, 2, (batch,))
    autocast = precision == "bfloat16"

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    settings = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "autocast": "bfloat16" if autocast else None,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return step, settings


def _emit(payload: dict) -> None:
    print(_PREFIX + json.dumps(payload), flush=True)


def _worker(args: argparse.Namespace) -> int:
    """Worker main loop: set up, warm up, then answer `steps N` / `quit` on stdin."""
    started = time.perf_counter()
    if args.worker == "pipeline":
        step, settings = _pipeline_step(args.data, args.batch, args.size)
    else:
        make = _torch_step if args.worker == "torch" else _keras_step
        step, settings = make(args.worker_precision, args.batch, args.size)
    setup_s = time.perf_counter() - started
    warmup_times, _ = _run_steps(step, args.warmup)
    _emit({"ready": True, "setup_s": setup_s, "warmup_s": warmup_times, "settings": settings})
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        times, cpu_times = _run_steps(step, int(command[1]))
        _emit({"times": times, "cpu_times": cpu_times})
    return 0


def _run_steps(step: Callable[[], None], count: int) -> tuple[list[float], list[float]]:
    """Runs `count` steps; returns wall-clock and process CPU seconds of each."""
    times, cpu_times = [], []
    for _ in range(count):
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - wall)
        cpu_times.append(time.process_time() - cpu)
    return times, cpu_times


@dataclass
class _Worker:
    name: str
    framework: str
    backend: str
    precision: str
    process: subprocess.Popen
    log: Any
    ready: dict | None = None

    def request(self, text: str) -> dict:
        """Sends one command line; returns the worker's next protocol message."""
        if text:
            self.process.stdin.write(text + "\n")
            self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(_PREFIX):
                return json.loads(line[len(_PREFIX) :])
        self.process.wait()
        self.log.seek(0)
        tail = self.log.read()[-4000:]
        raise RuntimeError(f"{self.name} worker exited ({self.process.returncode}):\n{tail}")

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.log.close()


def _start_worker(
    framework: str,
    backend: str,
    label: str,
    precision: str,
    python: str,
    args: argparse.Namespace,
    extra: list[str] | None = None,
) -> _Worker:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # logging only; no effect on speed
    if framework == "keras":
        env["KERAS_BACKEND"] = backend
    command = [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        framework,
        "--worker-precision",
        precision,
        "--batch",
        str(args.batch),
        "--size",
        str(args.size),
        "--warmup",
        str(args.warmup),
        *(extra or []),
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
    name = f"{'keras-' if framework == 'keras' else ''}{backend} {label}"
    if framework == "pipeline":
        name = "tf.data pipeline"
    return _Worker(name, framework, backend, label, process, log)


# --------------------------------------------------------------------------
# Parent: run the matrix, summarise, write JSON, print the table.
# --------------------------------------------------------------------------


def _pipeline_step(data_dir: str, batch: int, size: int) -> tuple[Callable[[], None], dict]:
    """The product's training input pipeline on converted shards; one step = one batch."""
    sys.path.insert(0, str(REPO_ROOT))
    import tensorflow as tf

    from pneumokeras import config as config_lib
    from pneumokeras.records.pipeline import training_dataset

    config = config_lib.from_dict(
        {"data": {"image_size": size, "batch_size": batch}}  # default augmentation
    )
    dataset, steps = training_dataset(data_dir, config)
    batches = iter(dataset.repeat())

    def step() -> None:
        images, _ = next(batches)
        images.numpy()  # the batch is materialised on the host, as Keras receives it

    augment = dataclasses.asdict(config.augment)
    settings = {"tensorflow": tf.__version__, "steps_per_epoch": steps, "augment": augment}
    return step, settings


def _pipeline_data(args: argparse.Namespace, workdir: Path) -> Path:
    """Converted shards at `args.size`: `--pipeline-data`, or a synthetic set made here."""
    if args.pipeline_data:
        return args.pipeline_data
    synth, converted = workdir / "synth", workdir / "converted"
    cli = [sys.executable, str(REPO_ROOT / "cli.py")]
    steps = [
        [
            *cli,
            "synth",
            "--out",
            str(synth),
            "--patients",
            str(args.pipeline_patients),
            "--size",
            "512",
            "--seed",
            "0",
        ],
        [
            *cli,
            "convert",
            "--images",
            str(synth / "stage_2_train_images"),
            "--labels",
            str(synth / "stage_2_train_labels.csv"),
            "--out",
            str(converted),
            "--size",
            str(args.size),
            "--val",
            "0.05",
            "--test",
            "0.05",
        ],
    ]
    for command in steps:
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"{command[2]} failed: {done.stderr.strip()[-2000:]}")
    return converted


def bench_pipeline(args: argparse.Namespace) -> dict:
    """tf.data training pipeline alone (parse, decode, augment, batch): images/s.

    Runs after the train steps, alone on the machine (all cores), in its own
    process, for `args.pipeline_batches` batches after 3 warm-up batches.
    """
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as workdir:
        data_dir = _pipeline_data(args, Path(workdir))
        worker = _start_worker(
            "pipeline",
            "tensorflow",
            "fp32",
            "float32",
            sys.executable,
            args,
            extra=["--data", str(data_dir)],
        )
        try:
            worker.ready = worker.request("")
            answer = worker.request(f"steps {args.pipeline_batches}")
        finally:
            worker.close()
    times = answer["times"]
    return {
        "name": "tf.data pipeline",
        "framework": "tf.data",
        "backend": "tensorflow",
        "batch": args.batch,
        "size": args.size,
        "batches": len(times),
        "img_per_s": args.batch * len(times) / sum(times),
        "step_times_s": times,
        "cpu_per_wall": sum(answer["cpu_times"]) / sum(times),
        "setup_s": worker.ready["setup_s"],
        "settings": worker.ready["settings"],
        "data": str(args.pipeline_data) if args.pipeline_data else "synthetic (cli.py synth)",
    }


def _torch_available(python: str) -> str | None:
    """Returns why `python` cannot run the PyTorch part, or None when it can."""
    try:
        probe = subprocess.run(
            [python, "-c", "import torch, numpy"], capture_output=True, text=True, timeout=300
        )
    except OSError as err:
        return f"cannot run {python}: {err.strerror}"
    if probe.returncode != 0:
        return f"`import torch` fails in {python}"
    return None


def _summarise(worker: _Worker, times: list[float], cpu_times: list[float], batch: int) -> dict:
    median = statistics.median(times)
    return {
        "name": worker.name,
        "framework": worker.framework,
        "backend": worker.backend,
        "precision": worker.precision,
        "batch": batch,
        "img_per_s": batch / median,
        "img_per_s_min": batch / max(times),
        "img_per_s_max": batch / min(times),
        "median_step_s": median,
        "step_times_s": times,
        # CPU seconds (all threads) per wall second: well below the core count
        # means the step waited for CPUs that other programs were using.
        "cpu_per_wall": statistics.median(c / t for c, t in zip(cpu_times, times, strict=True)),
        "setup_s": worker.ready["setup_s"],
        "warmup_s": worker.ready["warmup_s"],
        "settings": worker.ready["settings"],
    }


def run_matrix(configs: list[tuple[str, str, str, str]], args: argparse.Namespace) -> list[dict]:
    """Starts one worker per configuration, then times them in interleaved rounds.

    Args:
        configs: `(framework, backend, label, precision)` rows of `_MATRIX`.
        args: parsed command line (`steps`, `rounds`, `batch`, `size`, ...).

    Returns:
        One result dict per configuration (see `_summarise`), img/s units.
    """
    workers: list[_Worker] = []
    try:
        for framework, backend, label, precision in configs:
            python = args.torch_python if framework == "torch" else sys.executable
            worker = _start_worker(framework, backend, label, precision, python, args)
            workers.append(worker)
            # One at a time: a worker compiling would slow down the others.
            worker.ready = worker.request("")
            print(
                f"  ready: {worker.name:<22} setup {worker.ready['setup_s']:6.1f} s, "
                f"warm-up steps {', '.join(f'{t:.1f}' for t in worker.ready['warmup_s'])} s",
                file=sys.stderr,
                flush=True,
            )
        rounds = max(1, min(args.rounds, args.steps))
        per_round = math.ceil(args.steps / rounds)
        times: dict[str, list[float]] = {w.name: [] for w in workers}
        cpu_times: dict[str, list[float]] = {w.name: [] for w in workers}
        for index in range(rounds):
            for worker in workers:
                answer = worker.request(f"steps {per_round}")
                times[worker.name] += answer["times"]
                cpu_times[worker.name] += answer["cpu_times"]
            print(f"  round {index + 1}/{rounds} done", file=sys.stderr, flush=True)
        return [_summarise(w, times[w.name], cpu_times[w.name], args.batch) for w in workers]
    finally:
        for worker in workers:
            worker.close()


def format_table(results: list[dict], pipeline: dict | None = None) -> str:
    """Markdown table: backend, precision, img/s (median, range), ratio vs PyTorch.

    With `pipeline`, a last row gives the input pipeline's rate and its ratio to
    the fastest train step measured.
    """
    torch_rate = {r["precision"]: r["img_per_s"] for r in results if r["framework"] == "torch"}
    lines = [
        "| backend | precision | img/s (median) | min–max | vs PyTorch |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        backend = "PyTorch" if r["framework"] == "torch" else f"Keras-{r['backend']}"
        if r["precision"] == "bf16":
            precision = "bf16 autocast" if r["framework"] == "torch" else "mixed_bfloat16"
        else:
            precision = "float32"
        reference = torch_rate.get(r["precision"])
        ratio = f"{r['img_per_s'] / reference:.2f}×" if reference else "n/a"
        lines.append(
            f"| {backend} | {precision} | {r['img_per_s']:.2f} | "
            f"{r['img_per_s_min']:.1f}–{r['img_per_s_max']:.1f} | {ratio} |"
        )
    if pipeline is not None:
        fastest = max((r["img_per_s"] for r in results), default=None)
        versus = f"{pipeline['img_per_s'] / fastest:.0f}× fastest step" if fastest else "n/a"
        lines.append(
            f"| tf.data input pipeline (augmenting) | uint8 PNG → float32 | "
            f"{pipeline['img_per_s']:.0f} | – | {versus} |"
        )
    return "\n".join(lines)


def _machine() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_start": os.getloadavg(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def _write_json(path: Path, payload: dict) -> None:
    sys.path.insert(0, str(REPO_ROOT))
    from pneumokeras.utils.fileio import atomic_write_json

    atomic_write_json(path, payload)


def _parse_only(text: str) -> set[str]:
    names = {part.strip() for part in text.split(",") if part.strip()}
    unknown = names - set(_ONLY)
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"--only takes a comma list of {', '.join(_ONLY)}; got {text!r}"
        )
    return {_ONLY[name] for name in names}


def _parse_precisions(text: str) -> set[str]:
    names = {part.strip() for part in text.split(",") if part.strip()}
    if not names or names - {"fp32", "bf16"}:
        raise argparse.ArgumentTypeError(f"--precisions takes fp32, bf16; got {text!r}")
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1; got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=_positive, default=10, help="timed steps per config")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (≥ 1)")
    parser.add_argument("--rounds", type=_positive, default=5, help="interleaving rounds")
    parser.add_argument("--batch", type=_positive, help="images per step (32; 256 with --gpu)")
    parser.add_argument("--size", type=_positive, default=224, help="image side, pixels")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results path")
    parser.add_argument("--only", type=_parse_only, help="comma list of tf, jax, torch")
    parser.add_argument(
        "--precisions", type=_parse_precisions, help="comma list of fp32, bf16 (default both)"
    )
    parser.add_argument(
        "--torch-python",
        default=sys.executable,
        help="interpreter with torch for the PyTorch reference (default: this one)",
    )
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="Keras-JAX only, bf16, batch 256 on the accelerator (no TensorFlow)",
    )
    parser.add_argument(
        "--pipeline-data",
        type=Path,
        help="converted shards at --size for the input-pipeline figure (default: synthetic)",
    )
    parser.add_argument(
        "--pipeline-patients", type=_positive, default=512, help="synthetic patients for it"
    )
    parser.add_argument(
        "--pipeline-batches", type=_positive, default=60, help="timed pipeline batches"
    )
    # Internal: the worker side of the protocol.
    parser.add_argument("--worker", choices=["keras", "torch", "pipeline"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--worker-precision", default="float32", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.warmup < 1:
        print("error: --warmup must be ≥ 1 (the first step compiles)", file=sys.stderr)
        return 2
    if args.batch is None:
        args.batch = 256 if args.gpu else 32
    if args.worker:
        return _worker(args)

    notes = []
    backends: set[str] = set()
    if args.gpu:
        configs = [("keras", "jax", "bf16", "mixed_bfloat16")]
    else:
        backends = args.only or set(_ONLY.values())
        precisions = args.precisions or {"fp32", "bf16"}
        configs = [c for c in _MATRIX if c[1] in backends and c[2] in precisions]
        if "torch" in backends:
            python = shutil.which(args.torch_python) or args.torch_python
            args.torch_python = python
            reason = _torch_available(python)
            if reason:
                notes.append(f"PyTorch reference skipped: {reason}")
                configs = [c for c in configs if c[0] != "torch"]
    for note in notes:
        print(note, file=sys.stderr)

    machine = _machine()
    print(
        f"bench_train: {len(configs)} configs, batch {args.batch}, {args.size} px, "
        f"{args.warmup} warm-up + {args.steps} timed steps in {args.rounds} rounds",
        file=sys.stderr,
        flush=True,
    )
    results = run_matrix(configs, args)
    pipeline = None
    if not args.gpu and "pipeline" in backends:
        print("  timing the tf.data pipeline alone ...", file=sys.stderr, flush=True)
        pipeline = bench_pipeline(args)
    machine["load_avg_end"] = os.getloadavg()
    status = 0
    if args.gpu:
        device = results[0]["settings"].get("device", "")
        if "cpu" in device.lower():
            notes.append(f"--gpu ran on {device}: no accelerator was visible to JAX")
            status = 1
    table = format_table(results, pipeline)
    payload = {
        "benchmark": "train_step",
        "model": "resnet18 (filters 64, 1 channel, 2 classes)",
        "optimizer": "Adam(1e-4), categorical cross-entropy",
        "args": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("worker", "worker_precision")
        },
        "machine": machine,
        "notes": notes,
        "results": results,
        "pipeline": pipeline,
        "table": table,
    }
    for key in ("only", "precisions"):
        if isinstance(payload["args"].get(key), set):
            payload["args"][key] = sorted(payload["args"][key])
    _write_json(args.out, payload)
    print(table)
    for note in notes:
        print(f"\nNote: {note}")
    print(
        f"\nload average {machine['load_avg_start'][0]:.1f} → {machine['load_avg_end'][0]:.1f} "
        f"on {machine['cpus']} CPUs; results in {args.out}"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
