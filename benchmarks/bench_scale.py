"""Training across processes: 1 process x N devices against N processes x 1 device.

Measures, under JAX, training images per second of the product's ResNet18
(`pneumokeras.models.resnet.build_resnet18`, compiled as `train` compiles it:
`performance.configure_backend` + `compile_kwargs`, Adam, cross-entropy) with
`keras.distribution.DataParallel` at the same global batch in two layouts:

- `1xN`: one process over N local devices (the all-reduce stays in-process);
- `Nx1`: N processes of one device each, joined through `jax.distributed` on
  loopback (`pneumokeras.training.distributed.initialize`), as `train --num-processes N`
  runs them; each process feeds its `1/N` part of every global batch.

and the cost of one all-reduce of a gradient-sized float32 vector (all trainable
weights) in each layout, which is what a step pays for crossing processes.
Steps are `model.train_on_batch` on a fixed in-memory batch (no input pipeline);
the figure is `global batch / median step time` over the timed steps.

On a CPU machine (`--platform cpu`, the default) each "device" is an XLA CPU
device (`JAX_NUM_CPU_DEVICES`) and cross-process collectives use Gloo over TCP;
with 2 cores the two layouts share the same cores, so this shows the overhead of
crossing processes, not a speed-up. On a machine with N GPUs, `--platform gpu
--devices N` compares one process over all GPUs with N processes of one GPU each
(`CUDA_VISIBLE_DEVICES` per process; collectives over NCCL).

Usage:
    python -m benchmarks.bench_scale                         # CPU, 2 devices
    python -m benchmarks.bench_scale --steps 10 --size 224 --filters 64 --batch 32
    python -m benchmarks.bench_scale --platform gpu --devices 4 --batch 256 --size 224

Writes `benchmarks/out/bench_scale.json` (atomically) and prints the Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import common

NAME = "bench_scale"


# --------------------------------------------------------------------------
# Worker: one process of one layout.
# --------------------------------------------------------------------------


def _timed(function: Any, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def _worker(args: argparse.Namespace) -> int:
    """Trains `args.steps` steps in this process's layout; process 0 prints the result."""
    from pneumokeras.training import distributed
    from pneumokeras.utils import environment

    environment.set_defaults()
    cluster = distributed.ClusterSettings()
    if args.processes > 1:
        cluster = distributed.settings(
            f"127.0.0.1:{args.port}", args.processes, args.process_id, environ={}
        )
    distributed.initialize(cluster, "jax")  # before any JAX computation

    from pneumokeras.utils.performance import compile_kwargs, configure_backend

    configure_backend("float32")
    import jax
    import keras
    import numpy as np

    from pneumokeras.models.resnet import build_resnet18

    devices = jax.device_count()
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(auto_shard_dataset=args.processes == 1)
    )
    keras.utils.set_random_seed(0)
    model = build_resnet18(args.size, filters=args.filters, num_classes=2)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss="categorical_crossentropy",
        **compile_kwargs("auto"),
    )
    local = args.batch // args.processes  # this process's part of the global batch
    rng = np.random.default_rng(args.process_id)
    images = rng.integers(0, 256, (local, args.size, args.size, 1)).astype(np.float32)
    labels = np.eye(2, dtype=np.float32)[rng.integers(0, 2, local)]

    def step() -> None:
        model.train_on_batch(images, labels)  # returns the loss on the host: finished

    _timed(step, args.warmup)
    step_times = _timed(step, args.steps)

    # One all-reduce of all trainable weights' worth of float32 over every device.
    size = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("d",))
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    per_device = np.ones((jax.local_device_count(), size), np.float32)
    gradients = jax.make_array_from_process_local_data(sharded, per_device)
    all_reduce = jax.jit(lambda g: g.sum(0), out_shardings=replicated)
    all_reduce(gradients).block_until_ready()  # compile
    reduce_times = _timed(lambda: all_reduce(gradients).block_until_ready(), args.reduces)

    if distributed.is_writer():
        median = statistics.median(step_times)
        payload = {
            "layout": f"{args.processes}x{devices // args.processes}",
            "processes": args.processes,
            "devices": devices,
            "global_batch": args.batch,
            "step_s": median,
            "step_s_all": step_times,
            "img_per_s": args.batch / median,
            "all_reduce_ms": 1000 * statistics.median(reduce_times),
            "all_reduce_mb": size * 4 / 1e6,
            "device": str(jax.devices()[0]),
            "jax": jax.__version__,
            "keras": keras.__version__,
        }
        common.emit(payload)
    return 0


# --------------------------------------------------------------------------
# Parent: starts the layouts one after the other.
# --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _layout_env(args: argparse.Namespace, processes: int, index: int) -> dict[str, str]:
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    per_process = args.devices // processes
    if args.platform == "cpu":
        env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(per_process))
    else:
        env["JAX_PLATFORMS"] = "cuda"
        first = index * per_process
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(first + i) for i in range(per_process))
    return env


def run_layout(args: argparse.Namespace, processes: int) -> dict:
    """Runs one layout (`processes` x `devices / processes`); returns process 0's result."""
    port = _free_port()
    workers = []
    for index in range(processes):
        command = [sys.executable, "-m", f"benchmarks.{NAME}", "--worker"]
        command += ["--processes", str(processes)]
        command += ["--process-id", str(index), "--port", str(port)]
        for name in ("batch", "size", "filters", "steps", "warmup", "reduces"):
            command += [f"--{name}", str(getattr(args, name))]
        workers.append(
            subprocess.Popen(
                command,
                env=_layout_env(args, processes, index),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=common.REPO_ROOT,
            )
        )
    outputs = [worker.communicate(timeout=args.timeout) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        if worker.returncode:
            raise RuntimeError(f"a {processes}-process worker failed:\n{stderr[-3000:]}")
    lines = [line for line in outputs[0][0].splitlines() if line.startswith(common.PREFIX)]
    return json.loads(lines[-1][len(common.PREFIX) :])


def render_markdown(record: Mapping[str, Any]) -> str:
    """The documentation's section for one run of this script (its JSON)."""
    results, settings = record["results"], record["settings"]
    base = results[0]
    lines = [
        f"Machine: {common.describe_machine(record['machine'])}.",
        "",
        f"Keras-JAX, ResNet18 ({settings['filters']} filters), {settings['size']} px, global "
        f"batch {settings['batch']}, {settings['steps']} timed steps, {settings['platform']} "
        "devices:",
        "",
        "| layout (processes x devices) | global batch | step (s) | img/s | vs first |"
        " all-reduce of the gradients (ms) | step minus in-process step (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        lines.append(
            f"| {result['layout']} | {result['global_batch']} | {result['step_s']:.3f} | "
            f"{result['img_per_s']:.2f} | {result['img_per_s'] / base['img_per_s']:.2f}× | "
            f"{result['all_reduce_ms']:.1f} ({result['all_reduce_mb']:.1f} MB) | "
            f"{1000 * (result['step_s'] - base['step_s']):+.0f} |"
        )
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--devices", type=int, default=2, help="Devices in all (default 2).")
    parser.add_argument("--batch", type=int, default=16, help="Global batch (default 16).")
    parser.add_argument("--size", type=int, default=128, help="Image side, px (default 128).")
    parser.add_argument("--filters", type=int, default=32, help="ResNet18 width (default 32).")
    parser.add_argument("--steps", type=int, default=6, help="Timed steps (default 6).")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps (default 2).")
    parser.add_argument("--reduces", type=int, default=20, help="Timed all-reduces.")
    parser.add_argument("--timeout", type=int, default=1800, help="Seconds per layout.")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/out/NAME.json)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.devices < 2:
        parser.error("--devices must be at least 2 (one layout has one device per process)")
    if args.batch % args.devices:
        parser.error(f"--batch {args.batch} must divide by --devices {args.devices}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker:
        return _worker(args)
    machine = common.machine()
    results = [run_layout(args, 1), run_layout(args, args.devices)]
    record = {
        "script": NAME,
        "benchmark": "bench_scale",
        "command": common.command_line(argv, NAME),
        "settings": {
            k: getattr(args, k)
            for k in (
                "platform",
                "devices",
                "batch",
                "size",
                "filters",
                "steps",
                "warmup",
                "reduces",
            )
        },
        "machine": common.finish_machine(machine),
        "results": results,
    }
    path = common.write_results(NAME, record, args.out)
    print(render_markdown(record))
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
