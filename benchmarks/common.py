"""What the benchmark scripts share: worker processes, timing, machine facts, JSON.

Every script measures in worker processes (one runtime or setting each: the Keras
backend and several speed settings are fixed per process) that the parent drives
over a line protocol: a worker prints `@bench {json}` lines on stdout and reads
commands on stdin. Workers are started and warmed up one at a time, then timed in
interleaved rounds, so that load from other programs on a shared machine hits every
configuration alike.

Each script writes `benchmarks/out/<name>.json` holding `script` (its module name),
`machine` (`machine()`), `command` and its results, and has a
`render_markdown(results) -> str` that turns that JSON into the documentation's
section (`docs/gen_benchmarks.py` renders every JSON file through it).

This module imports neither TensorFlow, JAX nor Keras.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "benchmarks" / "out"
PREFIX = "@bench "  # worker → parent protocol lines on stdout

if str(REPO_ROOT) not in sys.path:  # `python benchmarks/bench_x.py` as well as `-m`
    sys.path.insert(0, str(REPO_ROOT))

from pneumokeras.utils import environment  # noqa: E402 - needs the checkout on sys.path

# Environment variables that change speed, recorded with each result.
RECORDED_ENV = (
    "KERAS_BACKEND",
    "XLA_FLAGS",
    "TF_XLA_FLAGS",
    "TF_ENABLE_ONEDNN_OPTS",
    "ONEDNN_MAX_CPU_ISA",
    "ATEN_CPU_CAPABILITY",
    "OMP_NUM_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "JAX_PLATFORMS",
)

# `--isa` emulation: cap every library's kernels at a lower instruction set, so that an
# AVX-512 machine stands in for a smaller CPU. oneDNN (TensorFlow's and PyTorch's
# convolutions) reads ONEDNN_MAX_CPU_ISA, PyTorch's own kernels ATEN_CPU_CAPABILITY and
# XLA's code generator (TensorFlow with XLA, JAX) `--xla_cpu_max_isa`. Not capped:
# TensorFlow's Eigen kernels (compiled for one instruction set) and XNNPACK/YNNPACK
# (JAX), which dispatch on the CPU itself; rows measured so are labelled emulated.
ISA_EMULATION: dict[str, dict[str, str]] = {
    "avx2": {
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "XLA_FLAGS": "--xla_cpu_max_isa=AVX2",
    },
    "avx512": {  # AVX-512 without bfloat16 instructions (Skylake-X, Cascade Lake, Zen 4 off)
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI",
        "ATEN_CPU_CAPABILITY": "avx512",
        "XLA_FLAGS": "--xla_cpu_max_isa=AVX512_VNNI",
    },
}
# CPU flags worth naming next to a figure (what the kernels can use).
_NAMED_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
)


# --------------------------------------------------------------------------- workers


def emit(payload: Mapping[str, Any]) -> None:
    """Worker side: one protocol line to the parent."""
    print(PREFIX + json.dumps(payload), flush=True)


def run_steps(step: Callable[[], Any], count: int) -> tuple[list[float], list[float]]:
    """Runs `step` `count` times; returns wall-clock and process CPU seconds of each."""
    times, cpu_times = [], []
    for _ in range(count):
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - wall)
        cpu_times.append(time.process_time() - cpu)
    return times, cpu_times


def answer_step_requests(step_of: Callable[[list[str]], Callable[[], Any]]) -> int:
    """Worker side: answers the parent's `steps [KEY ...] COUNT` lines until `quit` or EOF.

    `step_of(KEY words)` gives the step to time; each answer holds the wall-clock
    and CPU seconds of its COUNT calls (`run_steps`). Returns the exit status, 0.
    """
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        times, cpu_times = run_steps(step_of(command[1:-1]), int(command[-1]))
        emit({"times": times, "cpu_times": cpu_times})
    return 0


@dataclass
class Worker:
    """A running worker process and what the parent knows about it.

    Attributes:
        name: label in logs and tables.
        process: the child (stdin/stdout pipes, text mode).
        log: its stderr, kept for the error message when it dies.
        meta: the configuration it runs (copied into its results).
        ready: its first protocol message (set-up time, settings), once received.
    """

    name: str
    process: subprocess.Popen
    log: Any
    meta: dict[str, Any] = field(default_factory=dict)
    ready: dict[str, Any] | None = None

    def request(self, text: str = "") -> dict[str, Any]:
        """Sends one command line (none for the first message); returns the next answer.

        Raises:
            RuntimeError: the worker exited; the message holds its stderr's tail.
        """
        if text:
            assert self.process.stdin is not None
            self.process.stdin.write(text + "\n")
            self.process.stdin.flush()
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX) :])
        self.process.wait()
        self.log.seek(0)
        tail = self.log.read()[-4000:]
        raise RuntimeError(f"{self.name} worker exited ({self.process.returncode}):\n{tail}")

    def close(self) -> None:
        """Asks the worker to quit (kills it after a minute), closes its log."""
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.log.close()


def start_worker(
    module: str,
    argv: Sequence[str],
    name: str,
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    meta: Mapping[str, Any] | None = None,
) -> Worker:
    """Starts `python -m benchmarks.<module> *argv` in the checkout with `env` added.

    `XLA_FLAGS` in `env` is appended to the inherited value, not replacing it.
    """
    merged = dict(os.environ)
    merged.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # logging only; no effect on speed
    for key, value in (env or {}).items():
        if key == "XLA_FLAGS" and merged.get(key):
            value = f"{merged[key]} {value}"
        merged[key] = value
    # A PyTorch interpreter from another venv finds this package through PYTHONPATH.
    merged["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(REPO_ROOT), merged.get("PYTHONPATH", "")) if part
    )
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - the worker writes it until it ends
    process = subprocess.Popen(
        [python, "-m", f"benchmarks.{module}", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=merged,
        cwd=REPO_ROOT,
    )
    return Worker(name, process, log, dict(meta or {}))


def summarise_times(
    times: Sequence[float], cpu_times: Sequence[float], items: int
) -> dict[str, Any]:
    """Rates of `items` per step from step times: median, slowest, fastest.

    `cpu_per_wall` is the median of CPU seconds (all threads) per wall second: well
    below the core count means the step waited for cores other programs held.
    """
    median = statistics.median(times)
    return {
        "img_per_s": items / median,
        "img_per_s_min": items / max(times),
        "img_per_s_max": items / min(times),
        "median_step_s": median,
        "step_times_s": list(times),
        "cpu_per_wall": statistics.median(c / t for c, t in zip(cpu_times, times, strict=True)),
    }


def torch_available(python: str) -> str | None:
    """Why `python` cannot run the PyTorch reference, or None when it can."""
    try:
        probe = subprocess.run(
            [python, "-c", "import torch, numpy"], capture_output=True, text=True, timeout=300
        )
    except OSError as err:
        return f"cannot run {python}: {err.strerror}"
    if probe.returncode != 0:
        return f"`import torch` fails in {python}"
    return None


def torch_resnet18(filters: int = 64, num_classes: int = 2) -> Any:
    """torchvision's resnet18 layout with 1 input channel, written out (no torchvision).

    The PyTorch reference of the train and inference benchmarks: the same network as
    `pneumokeras.models.resnet.build_resnet18` (same [-1, 1] input scaling).
    """
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
            self.shortcut: nn.Module = nn.Identity()
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


def settings_env() -> dict[str, str]:
    """The speed-relevant environment variables of this process."""
    return {k: os.environ[k] for k in RECORDED_ENV if k in os.environ}


# --------------------------------------------------------------------------- machine


def machine(isa: str | None = None) -> dict[str, Any]:
    """Facts about this machine that figures depend on.

    Args:
        isa: the `--isa` emulation the run used (`ISA_EMULATION` key), or None.

    Returns:
        `platform`, `python`, `cpus` (logical), `cpu` (model name), `cpu_flags` (the
        ones in `_NAMED_FLAGS` it has), `isa` (the level the product sees, see
        `environment.cpu_isa`), `emulated_isa`, `load_avg_start`.
    """
    flags = environment.cpu_flags()
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu": "",
        "cpu_flags": [flag for flag in _NAMED_FLAGS if flag in flags],
        "isa": environment.cpu_isa(flags, {}),
        "emulated_isa": isa,
        "load_avg_start": list(os.getloadavg()),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def finish_machine(info: dict[str, Any]) -> dict[str, Any]:
    """Adds the load average at the end of the run."""
    info["load_avg_end"] = list(os.getloadavg())
    return info


def describe_machine(info: Mapping[str, Any]) -> str:
    """One line naming the CPU, its cores and flags, the emulation and the load.

    Example: `AMD EPYC, 2 logical CPUs, flags avx2 fma avx512f ... (AVX-512 with bf16);
    load average 1.2 → 3.4`.
    """
    flags = " ".join(info.get("cpu_flags", [])) or "unknown"
    line = (
        f"{info.get('cpu') or 'unknown CPU'}, {info.get('cpus', '?')} logical CPUs, flags: {flags}"
    )
    emulated = info.get("emulated_isa")
    if emulated:
        caps = " ".join(f"{k}={v}" for k, v in ISA_EMULATION.get(emulated, {}).items())
        line += f"; **{ISA_TITLES.get(emulated, emulated)} emulated** ({caps})"
    start, end = info.get("load_avg_start"), info.get("load_avg_end")
    if start and end:
        line += f"; load average {start[0]:.1f} → {end[0]:.1f}"
    return line


ISA_TITLES = {
    "baseline": "below AVX2",
    "avx2": "AVX2",
    "avx512": "AVX-512 without bf16",
    "avx512_bf16": "AVX-512 with bf16",
    "amx": "AMX",
}


# --------------------------------------------------------------------------- results


def command_line(argv: Sequence[str] | None, module: str) -> str:
    """The command that reproduces a run: `python -m benchmarks.<module> ARGS`."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", "-m", f"benchmarks.{module}", *args])


def display_command(command: str) -> str:
    """A recorded command as a reader would type it in a checkout (output paths relative)."""
    import re

    return re.sub(r"\S*/benchmarks/out/", "benchmarks/out/", command)


def write_results(name: str, payload: Mapping[str, Any], out: Path | None = None) -> Path:
    """Writes a run's JSON atomically to `out` (default `benchmarks/out/<name>.json`)."""
    from pneumokeras.utils.fileio import atomic_write_json

    path = OUT_DIR / f"{name}.json" if out is None else Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, dict(payload))
    return path


def time_convert_cli(arguments: Sequence[str], out: Path, limit: int | None = None) -> float:
    """Seconds of `cli.py convert ARGUMENTS --out OUT [--limit N]` in a fresh process.

    Start-up, the TensorFlow import and the workers' spawn are included, as a user
    meets them; `out` is removed before and after.
    """
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, str(REPO_ROOT / "cli.py"), "convert", *arguments, "--out", str(out)]
    if limit is not None:
        command += ["--limit", str(limit)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    shutil.rmtree(out)
    return seconds


def parse_batches(text: str) -> list[int]:
    """argparse type of `--batches`: a comma list of positive integers, sorted, unique."""
    try:
        batches = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        batches = []
    if not batches or batches[0] < 1:
        raise argparse.ArgumentTypeError(f"--batches takes positive integers; got {text!r}")
    return batches


def positive(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1; got {value}")
    return value


def ratio(value: float | None, reference: float | None) -> str:
    """`value / reference` as `1.23×`, or `n/a`."""
    if not value or not reference:
        return "n/a"
    return f"{value / reference:.2f}×"


# --------------------------------------------------------------------------- rendering


def scripts() -> list[str]:
    """The benchmark scripts' module names (`bench_train`, ...)."""
    return sorted(path.stem for path in (REPO_ROOT / "benchmarks").glob("bench_*.py"))


def script_of(path: Path, results: Mapping[str, Any]) -> str:
    """The script that wrote a JSON file: its `script` key, else the longest name prefix.

    Raises:
        ValueError: no script matches.
    """
    names = scripts()
    if results.get("script") in names:
        return str(results["script"])
    matches = [name for name in names if path.stem == name or path.stem.startswith(name + "_")]
    if not matches:
        raise ValueError(f"{path.name}: no benchmarks/bench_*.py script wrote it")
    return max(matches, key=len)


def describe(docstring: str) -> tuple[str, str]:
    """A script's title (its docstring's first line) and description (before its usage)."""
    title, _, rest = docstring.strip().partition("\n")
    paragraphs = []
    for paragraph in rest.strip().split("\n\n"):
        if paragraph.lstrip().startswith(("Usage:", "Writes ", "python ")):
            break
        paragraphs.append(paragraph)
    return title.rstrip("."), "\n\n".join(paragraphs)


def render_file(path: Path) -> tuple[str, str]:
    """`(script, Markdown)` of one results file, rendered by its script's `render_markdown`."""
    import importlib

    results = json.loads(Path(path).read_text())
    script = script_of(Path(path), results)
    module = importlib.import_module(f"benchmarks.{script}")
    return script, module.render_markdown(results)
