"""Train-step throughput of ResNet18: Keras (TensorFlow, JAX) against PyTorch, per setting.

Measures images per second of one optimisation step (forward, backward, Adam
update; batch 32, 224×224×1 by default) of `pneumokeras.models.resnet.build_resnet18`
(filters 64) set up as `train` sets it up: the dtype policy and backend settings of
`pneumokeras.utils.performance.configure_backend`, `Adam(1e-4)` and categorical
cross-entropy, driven by `model.train_on_batch` on one in-memory batch (no input
pipeline), under each speed setting (`VARIANTS`): XLA or plain TensorFlow graphs,
oneDNN on or off, JAX's convolution routing. The row `train` picks by default
(`performance.training_xla("auto")` on this CPU) is marked.

The reference is the same architecture in plain PyTorch (`common.torch_resnet18`),
fp32 and with bfloat16 autocast, run by `--torch-python` (PyTorch is not a project
dependency; any interpreter with `torch` and `numpy` works).

`--isa avx2` (or `avx512`) caps every library at a smaller instruction set
(`common.ISA_EMULATION`), so an AVX-512 machine gives emulated rows for an AVX2 CPU.

The input pipeline is timed alone afterwards (`bench_pipeline`): the product's
tf.data training pipeline on converted synthetic shards, with augmentation on the
host and without it (decode and batch only, as with `augment.on_device`), on one
pinned core and on all cores; images/s per core is what sizing a GPU host needs.

Every configuration runs in its own worker process, started and warmed up one at a
time, then timed in interleaved rounds. The figure is `batch / median(step time)`.

Usage:
    python -m benchmarks.bench_train --torch-python /path/to/torch-venv/bin/python
    python -m benchmarks.bench_train --isa avx2 --out benchmarks/out/bench_train_avx2.json
    python -m benchmarks.bench_train --variants tf-graph,tf-graph-nodnn --precisions fp32
    python -m benchmarks.bench_train --gpu               # Keras-JAX, bf16, batch 256

Writes `benchmarks/out/bench_train.json` (atomically) and prints the Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from benchmarks import common

NAME = "bench_train"

# variant → (backend, how it runs, XLA, extra environment). `None` XLA: not Keras.
VARIANTS: dict[str, tuple[str, str, bool | None, dict[str, str]]] = {
    "tf-xla": ("tensorflow", "XLA (`jit_compile=True`)", True, {}),
    "tf-graph": ("tensorflow", "graph, oneDNN (`jit_compile=False`)", False, {}),
    "tf-graph-inter1": (
        "tensorflow",
        "graph, oneDNN, one inter-op thread (`TF_NUM_INTEROP_THREADS=1`)",
        False,
        {"TF_NUM_INTEROP_THREADS": "1"},
    ),
    "tf-graph-fuse": (
        "tensorflow",
        "graph, oneDNN, element-wise ops auto-clustered by XLA",
        False,
        {
            "TF_XLA_FLAGS": "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit "
            "--tf_xla_ops_to_cluster=FUSIBLE"
        },
    ),
    "tf-graph-nobn": (
        "tensorflow",
        "graph, oneDNN, batch normalisation skipped (diagnostic, not a model)",
        False,
        {},
    ),
    "tf-graph-nodnn": (
        "tensorflow",
        "graph, oneDNN off (`TF_ENABLE_ONEDNN_OPTS=0`)",
        False,
        {"TF_ENABLE_ONEDNN_OPTS": "0"},
    ),
    "tf-xla-nodnn": (
        "tensorflow",
        "XLA, oneDNN off (`TF_ENABLE_ONEDNN_OPTS=0`)",
        True,
        {"TF_ENABLE_ONEDNN_OPTS": "0"},
    ),
    "tf-graph-devaug": (
        "tensorflow",
        "graph, oneDNN, augmentation in the step",
        False,
        {},
    ),
    "jax-xla": ("jax", "XLA (`jax.jit`), convolutions on XLA's kernels", True, {}),
    "jax-ynn": (
        "jax",
        "XLA, convolutions on YNNPACK (jaxlib's default)",
        True,
        {
            "XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="
            "individual_dot,individual_convolution,reduce"
        },
    ),
    "jax-onednn": (
        "jax",
        "XLA with oneDNN (`--xla_cpu_use_onednn=true`)",
        True,
        {"XLA_FLAGS": "--xla_cpu_use_onednn=true"},
    ),
    "jax-xla-devaug": ("jax", "XLA, augmentation in the step", True, {}),
    "torch": ("torch", "eager", None, {}),
}
# Rows that measure a part of the step rather than a way to train the model: never a
# default, never "best Keras".
DIAGNOSTIC_VARIANTS = frozenset({"tf-graph-nobn"})
DEFAULT_VARIANTS = ("tf-xla", "tf-graph", "jax-xla", "torch")
PRECISIONS = {"fp32": ("float32", "float32"), "bf16": ("mixed_bfloat16", "bfloat16")}


# --------------------------------------------------------------------------
# Workers: each builds one model, warms it up, then runs steps on request.
# --------------------------------------------------------------------------


def _keras_step(
    variant: str, precision: str, batch: int, size: int
) -> tuple[Callable[[], None], dict]:
    """Builds and compiles the product's ResNet18; returns (one train step, settings)."""
    from pneumokeras.utils import environment, performance

    performance.configure_backend(precision)  # before any model is built

    import keras
    import numpy as np

    from pneumokeras.models.resnet import build_resnet18

    xla = VARIANTS[variant][2]
    if variant.endswith("-nobn"):
        # Diagnostic: every BatchNormalization returns its input, so that the row's
        # distance to the plain one is what Keras' batch normalisation (not fused,
        # computed in float32) costs in the step.
        setattr(keras.layers.BatchNormalization, "call", lambda self, inputs, **_: inputs)  # noqa: B010
    keras.utils.set_random_seed(0)
    model = build_resnet18(size, filters=64, num_classes=2)
    if variant.endswith("-devaug"):
        from pneumokeras.config import AugmentConfig
        from pneumokeras.models.augmented import with_augmentation
        from pneumokeras.records.augment import device_layers

        model = with_augmentation(model, device_layers(AugmentConfig(), seed=0))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss="categorical_crossentropy",
        **performance.compile_kwargs(xla, precision),
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 1), dtype=np.uint8).astype(np.float32)
    labels = np.eye(2, dtype=np.float32)[rng.integers(0, 2, batch)]
    if keras.backend.backend() == "jax":
        import jax

        # Device-resident once: no host→device copy inside the timed step.
        images, labels = jax.device_put(images), jax.device_put(labels)

    def step() -> None:
        # Returns the loss as a host scalar, so the step has finished.
        model.train_on_batch(images, labels)

    settings: dict[str, Any] = {
        "keras": keras.__version__,
        "dtype_policy": keras.config.dtype_policy().name,
        "compile_kwargs": performance.compile_kwargs(xla, precision),
        "default_xla": performance.training_xla("auto", precision=precision),
        "isa": environment.cpu_isa(),
        "env": common.settings_env(),
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        settings["tensorflow"] = tf.__version__
        settings["intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
    else:
        import jax

        settings["jax"] = jax.__version__
        settings["device"] = str(jax.devices()[0])
        settings["tensorflow_imported"] = "tensorflow" in sys.modules  # --gpu needs none
    return step, settings


def _torch_step(precision: str, batch: int, size: int) -> tuple[Callable[[], None], dict]:
    """Plain PyTorch train step (default NCHW, default threads); fp32 or bf16 autocast."""
    import torch
    from torch.nn import functional as F

    torch.manual_seed(0)
    model = common.torch_resnet18().train()
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
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "autocast": "bfloat16" if autocast else None,
        "env": common.settings_env(),
    }
    return step, settings


def _pipeline_step(
    data_dir: str, batch: int, size: int, augment: bool = True
) -> tuple[Callable[[], None], dict]:
    """The product's training input pipeline on converted shards; one step = one batch.

    `augment=False` is the host's share with `augment.on_device`: decode and batch.
    """
    import tensorflow as tf

    from pneumokeras import config as config_lib
    from pneumokeras.records.pipeline import training_dataset

    config = config_lib.from_dict(
        {"data": {"image_size": size, "batch_size": batch}, "augment": {"on_device": not augment}}
    )
    dataset, steps = training_dataset(data_dir, config)
    batches = iter(dataset.repeat())

    def step() -> None:
        images, _ = next(batches)
        images.numpy()  # the batch is materialised on the host, as Keras receives it

    settings = {
        "tensorflow": tf.__version__,
        "steps_per_epoch": steps,
        "augment": dataclasses.asdict(config.augment),
        "cores": len(os.sched_getaffinity(0)),
    }
    return step, settings


def _worker(args: argparse.Namespace) -> int:
    """Worker main loop: set up, warm up, then answer `steps N` / `quit` on stdin."""
    started = time.perf_counter()
    if args.worker == "pipeline":
        if args.cores:
            # Before TensorFlow starts: its thread pools size themselves to the affinity.
            os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
        step, settings = _pipeline_step(args.data, args.batch, args.size, not args.no_augment)
    elif args.worker == "torch":
        step, settings = _torch_step(args.worker_precision, args.batch, args.size)
    else:
        step, settings = _keras_step(args.worker, args.worker_precision, args.batch, args.size)
    setup_s = time.perf_counter() - started
    warmup_times, _ = common.run_steps(step, args.warmup)
    common.emit({"ready": True, "setup_s": setup_s, "warmup_s": warmup_times, "settings": settings})
    return common.answer_step_requests(lambda _key: step)


# --------------------------------------------------------------------------
# Parent: run the matrix, summarise, write JSON, print.
# --------------------------------------------------------------------------


def _worker_argv(args: argparse.Namespace, worker: str, precision: str) -> list[str]:
    return [
        "--worker",
        worker,
        "--worker-precision",
        precision,
        "--batch",
        str(args.batch),
        "--size",
        str(args.size),
        "--warmup",
        str(args.warmup),
    ]


def configurations(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The rows to measure: one per (variant, precision), in `VARIANTS` order."""
    if args.gpu:
        return [{"variant": "jax-xla", "precision": "bf16"}]
    rows = []
    for variant in VARIANTS:
        if variant not in args.variants:
            continue
        for precision in ("fp32", "bf16"):
            if precision in args.precisions:
                rows.append({"variant": variant, "precision": precision})
    return rows


def run_matrix(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Starts one worker per row (one at a time), then times them in interleaved rounds.

    A worker that fails to start (a setting this CPU cannot run) gives a row with
    `error` instead of figures; the others go on.
    """
    workers: list[common.Worker] = []
    failed: list[dict[str, Any]] = []
    emulation = common.ISA_EMULATION.get(args.isa or "", {})
    try:
        for row in rows:
            backend, how, _, env = VARIANTS[row["variant"]]
            keras_precision, torch_precision = PRECISIONS[row["precision"]]
            framework = "torch" if backend == "torch" else "keras"
            env = {**emulation, **env}
            if framework == "keras":
                env["KERAS_BACKEND"] = backend
            if "XLA_FLAGS" in emulation and "XLA_FLAGS" in VARIANTS[row["variant"]][3]:
                env["XLA_FLAGS"] = (
                    f"{emulation['XLA_FLAGS']} {VARIANTS[row['variant']][3]['XLA_FLAGS']}"
                )
            name = f"{row['variant']} {row['precision']}"
            worker = common.start_worker(
                NAME,
                _worker_argv(
                    args,
                    "torch" if framework == "torch" else row["variant"],
                    torch_precision if framework == "torch" else keras_precision,
                ),
                name,
                env=env,
                python=args.torch_python if framework == "torch" else sys.executable,
                meta={**row, "framework": framework, "backend": backend, "how": how},
            )
            try:
                worker.ready = worker.request()
            except RuntimeError as err:
                worker.close()
                failed.append({**worker.meta, "name": name, "error": str(err)[-1500:]})
                print(f"  FAILED: {name}", file=sys.stderr, flush=True)
                continue
            workers.append(worker)
            print(
                f"  ready: {name:<24} setup {worker.ready['setup_s']:6.1f} s, warm-up steps "
                f"{', '.join(f'{t:.1f}' for t in worker.ready['warmup_s'])} s",
                file=sys.stderr,
                flush=True,
            )
        rounds = max(1, min(args.rounds, args.steps))
        per_round = math.ceil(args.steps / rounds)
        times: dict[str, tuple[list[float], list[float]]] = {w.name: ([], []) for w in workers}
        for index in range(rounds):
            for worker in workers:
                answer = worker.request(f"steps {per_round}")
                times[worker.name][0].extend(answer["times"])
                times[worker.name][1].extend(answer["cpu_times"])
            print(f"  round {index + 1}/{rounds} done", file=sys.stderr, flush=True)
        results = [
            {
                **w.meta,
                "name": w.name,
                "batch": args.batch,
                **common.summarise_times(*times[w.name], args.batch),
                "setup_s": w.ready["setup_s"] if w.ready else None,
                "warmup_s": w.ready["warmup_s"] if w.ready else None,
                "settings": w.ready["settings"] if w.ready else {},
            }
            for w in workers
        ]
        return results + failed
    finally:
        for worker in workers:
            worker.close()


def _pipeline_data(args: argparse.Namespace, workdir: Path) -> Path:
    """Converted shards at `args.size`: `--pipeline-data`, or a synthetic set made here."""
    if args.pipeline_data:
        return args.pipeline_data
    synth, converted = workdir / "synth", workdir / "converted"
    cli = [sys.executable, str(common.REPO_ROOT / "cli.py")]
    synth_args = ["--out", str(synth), "--patients", str(args.pipeline_patients)]
    convert_args = [
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
    ]
    steps = [
        [*cli, "synth", *synth_args, "--size", "512", "--seed", "0"],
        [*cli, "convert", *convert_args],
    ]
    for command in steps:
        done = subprocess.run(command, capture_output=True, text=True, cwd=common.REPO_ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"{command[2]} failed: {done.stderr.strip()[-2000:]}")
    return converted


def bench_pipeline(args: argparse.Namespace) -> list[dict[str, Any]]:
    """tf.data training pipeline alone: images/s and images/s per core.

    Four runs, each in its own process, one after the other, alone on the machine:
    augmentation on the host or not (`augment.on_device`), on one pinned core or on
    all of them. `per_core` is images per CPU-second: the rate on one pinned core, or
    the rate divided by the CPU seconds used per wall second on all cores.
    """
    cores = len(os.sched_getaffinity(0))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as workdir:
        data_dir = _pipeline_data(args, Path(workdir))
        for augment in (True, False):
            for pinned in sorted({1, cores}):
                argv = [*_worker_argv(args, "pipeline", "float32"), "--data", str(data_dir)]
                argv += ["--cores", str(pinned)] + ([] if augment else ["--no-augment"])
                name = f"pipeline {'augmenting' if augment else 'decode only'}, {pinned} core(s)"
                worker = common.start_worker(NAME, argv, name)
                try:
                    worker.ready = worker.request()
                    answer = worker.request(f"steps {args.pipeline_batches}")
                finally:
                    worker.close()
                times, cpu = answer["times"], answer["cpu_times"]
                rate = args.batch * len(times) / sum(times)
                cpu_per_wall = sum(cpu) / sum(times)
                results.append(
                    {
                        "name": name,
                        "augment_on_host": augment,
                        "cores": pinned,
                        "batch": args.batch,
                        "size": args.size,
                        "batches": len(times),
                        "img_per_s": rate,
                        "cpu_per_wall": cpu_per_wall,
                        "img_per_core_s": rate / max(cpu_per_wall, 1e-9) if pinned > 1 else rate,
                        "settings": worker.ready["settings"],
                    }
                )
                print(f"  {name}: {rate:.0f} img/s", file=sys.stderr, flush=True)
    return results


# --------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------

# What one GPU consumes, for sizing its host. Published: ResNet-50 v1.5 training on one
# A100 80GB, mixed precision, 2,470 img/s (NVIDIA DeepLearningExamples, PyTorch
# ResNet50 v1.5 README, "Training performance: NVIDIA DGX A100", pytorch-21.03 NGC
# container). ResNet18 needs 1.81 GFLOPs per 224 px image against ResNet-50's 4.09
# (torchvision's model tables), so ≈ 2.26× that rate; an H100 is faster than an A100,
# so the cores computed from it are a lower bound for an H100.
PUBLISHED_RESNET50_IMG_S = 2470.0
RESNET18_PER_RESNET50 = 4.09 / 1.81
GPU_RESNET18_IMG_S = PUBLISHED_RESNET50_IMG_S * RESNET18_PER_RESNET50
GPU_HOST_CORES = (8, 16)


def _precision_title(row: Mapping[str, Any]) -> str:
    if row["precision"] == "bf16":
        return "bf16 autocast" if row["framework"] == "torch" else "mixed_bfloat16"
    return "float32"


def _is_default(row: Mapping[str, Any]) -> bool:
    """Whether `train` runs this row's setting by default on the CPU it was measured on.

    Decided by today's `performance.training_xla` for the CPU level the worker saw
    (emulation included), so the marks follow the code, not the code of the run.
    """
    if row["framework"] != "keras" or "error" in row or row["variant"].endswith("devaug"):
        return False
    if row["variant"] in DIAGNOSTIC_VARIANTS:
        return False
    from pneumokeras.utils import performance

    settings = row.get("settings", {})
    backend, _, xla, env = VARIANTS[row["variant"]]
    if env or "isa" not in settings:
        return not env and settings.get("default_xla") == xla
    default = performance.training_xla(
        "auto", backend, settings["isa"], gpu=False, precision=PRECISIONS[row["precision"]][0]
    )
    return default == xla


def render_markdown(results: Mapping[str, Any]) -> str:
    """The documentation's section for one run of this script (its JSON)."""
    rows = results["results"]
    lines = [
        f"Machine: {common.describe_machine(results['machine'])}.",
        "",
        "| framework | how | precision | img/s (median) | min–max | vs best PyTorch |",
        "|---|---|---|---:|---:|---:|",
    ]
    measured = [r for r in rows if "error" not in r]
    torch_rows = [r for r in measured if r["framework"] == "torch"]
    best_torch = max((r["img_per_s"] for r in torch_rows), default=None)
    order = sorted(measured, key=lambda r: (r["framework"] == "torch", -r["img_per_s"]))
    for r in order:
        framework = "PyTorch" if r["framework"] == "torch" else f"Keras-{r['backend']}"
        how = r["how"] + (" **(train's default here)**" if _is_default(r) else "")
        lines.append(
            f"| {framework} | {how} | {_precision_title(r)} | {r['img_per_s']:.2f} | "
            f"{r['img_per_s_min']:.1f}–{r['img_per_s_max']:.1f} | "
            f"{common.ratio(r['img_per_s'], best_torch)} |"
        )
    for r in rows:
        if "error" in r:
            reason = _error_reason(r["error"])
            lines.append(
                f"| Keras-{r['backend']} | {r['how']} | {_precision_title(r)} | "
                f"fails: {reason} | – | – |"
            )
    keras_rows = [
        r for r in measured if r["framework"] == "keras" and r["variant"] not in DIAGNOSTIC_VARIANTS
    ]
    if keras_rows and best_torch:
        best = max(keras_rows, key=lambda r: r["img_per_s"])
        defaults = [r for r in keras_rows if _is_default(r)]
        lines += [
            "",
            f"- Best Keras ({best['backend']}, {best['how']}, {_precision_title(best)}): "
            f"**{common.ratio(best['img_per_s'], best_torch)}** the best PyTorch row.",
        ]
        for precision in ("fp32", "bf16"):
            torch_same = [r["img_per_s"] for r in torch_rows if r["precision"] == precision]
            same = sorted(
                (r for r in defaults if r["precision"] == precision), key=lambda r: r["backend"]
            )
            if same and torch_same:
                ratios = ", ".join(
                    f"Keras-{r['backend']} {common.ratio(r['img_per_s'], torch_same[0])}"
                    for r in same
                )
                lines.append(
                    f"- {_precision_title(same[0])} with train's default settings: {ratios} "
                    f"PyTorch's {'bf16 autocast' if precision == 'bf16' else 'float32'}."
                )
    pipeline = results.get("pipeline") or []
    if pipeline:
        lines += _pipeline_markdown(pipeline, max((r["img_per_s"] for r in measured), default=0))
    return "\n".join(lines)


def _error_reason(text: str) -> str:
    """The telling line of a worker's stderr: an exception's message, shortened."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if "message:" in line:  # oneDNN's status line
            return line.split("message:", 1)[1].split(". Run")[0].strip()[:160]
        if "Error" in line.split(":", 1)[0]:
            return line[:160]
    return lines[-1][:160] if lines else "?"


def _pipeline_markdown(pipeline: list[Mapping[str, Any]], fastest_step: float) -> list[str]:
    size = pipeline[0]["size"]
    lines = [
        "",
        f"Input pipeline alone (tf.data, {size} px PNG shards → float32 batches of "
        f"{pipeline[0]['batch']}, synthetic data):",
        "",
        "| host work | cores | img/s | img/s per core | cores to feed one GPU at "
        f"{GPU_RESNET18_IMG_S:,.0f} img/s |",
        "|---|---:|---:|---:|---:|",
    ]
    gpu_rate = GPU_RESNET18_IMG_S
    for r in pipeline:
        work = (
            "decode, augment, batch"
            if r["augment_on_host"]
            else "decode, batch (augment on device)"
        )
        lines.append(
            f"| {work} | {r['cores']} | {r['img_per_s']:.0f} | {r['img_per_core_s']:.0f} | "
            f"{math.ceil(gpu_rate / r['img_per_core_s'])} |"
        )
    per_core = {r["augment_on_host"]: r["img_per_core_s"] for r in pipeline if r["cores"] == 1}
    if True in per_core and False in per_core:
        low, high = GPU_HOST_CORES
        lines += [
            "",
            f"- One GPU training ResNet18 at ≈ {gpu_rate:,.0f} img/s (the published ResNet-50 "
            f"rate of an A100, {PUBLISHED_RESNET50_IMG_S:,.0f} img/s, × "
            f"{RESNET18_PER_RESNET50:.2f} for ResNet18's fewer FLOPs; an H100 is faster) "
            f"needs **{math.ceil(gpu_rate / per_core[True])} cores** augmenting on the host, "
            f"{math.ceil(gpu_rate / per_core[False])} decoding only (`augment.on_device`); a "
            f"typical GPU host gives {low}–{high} cores per GPU.",
        ]
    if fastest_step:
        best = max(r["img_per_s"] for r in pipeline if r["augment_on_host"])
        lines += [
            "",
            f"- The augmenting pipeline on all cores feeds {best / fastest_step:.0f}× "
            "the fastest CPU train step above.",
        ]
    return lines


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _parse_variants(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"--variants takes a comma list of {', '.join(VARIANTS)}; got {text!r}"
        )
    return names


def _parse_precisions(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names or set(names) - set(PRECISIONS):
        raise argparse.ArgumentTypeError(f"--precisions takes fp32, bf16; got {text!r}")
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=common.positive, default=10, help="timed steps per row")
    parser.add_argument("--warmup", type=common.positive, default=3, help="untimed steps first")
    parser.add_argument("--rounds", type=common.positive, default=5, help="interleaving rounds")
    parser.add_argument("--batch", type=common.positive, help="images per step (32; 256 --gpu)")
    parser.add_argument("--size", type=common.positive, default=224, help="image side, pixels")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/out/NAME.json)")
    parser.add_argument(
        "--variants",
        type=_parse_variants,
        default=list(DEFAULT_VARIANTS),
        help=f"comma list of {', '.join(VARIANTS)} (default {','.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument(
        "--precisions", type=_parse_precisions, default=["fp32", "bf16"], help="fp32, bf16"
    )
    parser.add_argument(
        "--isa", choices=sorted(common.ISA_EMULATION), help="emulate a smaller CPU (see above)"
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
        "--pipeline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time the input pipeline after the train steps (not with --gpu)",
    )
    parser.add_argument(
        "--pipeline-data",
        type=Path,
        help="converted shards at --size for the input-pipeline figure (default: synthetic)",
    )
    parser.add_argument(
        "--pipeline-patients", type=common.positive, default=512, help="synthetic patients"
    )
    parser.add_argument(
        "--pipeline-batches", type=common.positive, default=40, help="timed pipeline batches"
    )
    # Internal: the worker side of the protocol.
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--cores", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--no-augment", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-precision", default="float32", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.batch is None:
        args.batch = 256 if args.gpu else 32
    if args.worker:
        return _worker(args)

    notes = []
    rows = configurations(args)
    if any(VARIANTS[r["variant"]][0] == "torch" for r in rows):
        args.torch_python = shutil.which(args.torch_python) or args.torch_python
        reason = common.torch_available(args.torch_python)
        if reason:
            notes.append(f"PyTorch reference skipped: {reason}")
            rows = [r for r in rows if VARIANTS[r["variant"]][0] != "torch"]
    for note in notes:
        print(note, file=sys.stderr)
    machine = common.machine(args.isa)
    print(
        f"{NAME}: {len(rows)} configurations, batch {args.batch}, {args.size} px, "
        f"{args.warmup} warm-up + {args.steps} timed steps in {args.rounds} rounds",
        file=sys.stderr,
        flush=True,
    )
    results = run_matrix(rows, args)
    pipeline = None
    if args.pipeline and not args.gpu:
        print("  timing the tf.data pipeline alone ...", file=sys.stderr, flush=True)
        pipeline = bench_pipeline(args)
    common.finish_machine(machine)
    status = 0
    if args.gpu and results:
        device = results[0].get("settings", {}).get("device", "")
        if "cpu" in device.lower():
            notes.append(f"--gpu ran on {device}: no accelerator was visible to JAX")
            status = 1
    payload = {
        "script": NAME,
        "benchmark": "train_step",
        "command": common.command_line(argv, NAME),
        "model": "resnet18 (filters 64, 1 channel, 2 classes)",
        "optimizer": "Adam(1e-4), categorical cross-entropy",
        "batch": args.batch,
        "size": args.size,
        "gpu": args.gpu,
        "machine": machine,
        "notes": notes,
        "results": results,
        "pipeline": pipeline,
    }
    path = common.write_results(NAME, payload, args.out)
    print(render_markdown(payload))
    for note in notes:
        print(f"\nNote: {note}")
    print(f"\nresults in {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
