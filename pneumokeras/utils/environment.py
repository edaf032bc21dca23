"""Process environment defaults, applied before TensorFlow, JAX or Keras is imported."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

SUPPORTED_BACKENDS = ("tensorflow", "jax")
DEFAULT_JAX_CACHE = Path.home() / ".cache" / "pneumokeras" / "jax"

# XLA:CPU leaves convolutions to its own kernels instead of YNNPACK, whose kernel
# gradients are 10-20x slower (see pneumokeras/utils/performance.py for the measurements).
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_VALUE = "dot,eltwise,reduce"
YNN_TESTED_JAXLIB = ("0.10.",)  # jaxlib version prefixes the flag was measured on
# XLA:CPU compiler options for JAX *inference* programs, given per compile
# (`jax.jit(..., compiler_options=...)`) so that training in the same process keeps the
# flag above: the forward graph (convolutions with the element-wise ops around them)
# runs as XNNPACK subgraphs, 1.8x as fast as XLA's kernels at batch 1 (ResNet18, 224 px;
# `benchmarks/bench_infer.py`). XNNPACK did not speed up training steps.
XNN_INFERENCE_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "",
    "xla_cpu_experimental_xnn_graph_fusion_mode": "XNN_GRAPH_FUSION_MODE_GREEDY",
}

# x86-64 instruction-set levels that change which settings train fastest, lowest first
# (`cpu_isa`): AVX2 (+FMA); AVX-512 (F, BW, VL, DQ: oneDNN's `avx512_core`); AVX-512 with
# native bfloat16 (`avx512_bf16`); AMX tiles (Sapphire Rapids and later).
ISA_LEVELS = ("baseline", "avx2", "avx512", "avx512_bf16", "amx")
_ISA_FLAGS = {
    "avx2": {"avx2", "fma"},
    "avx512": {"avx512f", "avx512bw", "avx512vl", "avx512dq"},
    "avx512_bf16": {"avx512_bf16"},
    "amx": {"amx_bf16", "amx_tile"},
}
# `ONEDNN_MAX_CPU_ISA` values (oneDNN's names) → the level they cap oneDNN at. With the
# cap set, oneDNN runs that level's kernels whatever the CPU has, and so does the
# choice of settings here (an AVX-512 machine then stands in for an AVX2 one).
_ONEDNN_CAPS = {
    "SSE41": "baseline",
    "AVX": "baseline",
    "AVX2": "avx2",
    "AVX2_VNNI": "avx2",
    "AVX2_VNNI_2": "avx2",
    "AVX512_CORE": "avx512",
    "AVX512_CORE_VNNI": "avx512",
    "AVX512_CORE_BF16": "avx512_bf16",
    "AVX512_CORE_FP16": "avx512_bf16",
    "AVX10_1_512": "avx512_bf16",
}


def set_defaults(jax_cache_dir: str | Path = DEFAULT_JAX_CACHE) -> None:
    """Sets environment defaults; values the user already set are kept.

    - KERAS_BACKEND defaults to tensorflow.
    - TensorFlow's C++ INFO/WARNING logs are silenced.
    - JAX keeps compiled programs in a persistent cache. Keras under JAX compiles
      one small program per weight shape when it builds or loads a model (ResNet18:
      about 35 s on 2 CPU cores); with the cache, later processes take about 2 s.
    - Under KERAS_BACKEND=jax, XLA:CPU runs convolutions with its own kernels
      (`add_jax_cpu_flags`), several times faster for training on CPU.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(jax_cache_dir))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    if os.environ["KERAS_BACKEND"] == "jax":
        add_jax_cpu_flags()


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags (`/proc/cpuinfo`'s first `flags` line); empty where unknown.

    Args:
        cpuinfo: the text of `/proc/cpuinfo` (read from the system when None).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no flags, so no CPU-specific choice
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_isa(flags: frozenset[str] | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The highest of `ISA_LEVELS` the CPU has, capped by `ONEDNN_MAX_CPU_ISA` when set.

    Args:
        flags: CPU feature flags (default: `cpu_flags()`).
        environ: environment to read the oneDNN cap from (default: `os.environ`).

    Returns:
        One of `ISA_LEVELS`.
    """
    flags = cpu_flags() if flags is None else flags
    environ = os.environ if environ is None else environ
    level = "baseline"
    for name in ISA_LEVELS[1:]:
        if not _ISA_FLAGS[name] <= flags:
            break
        level = name
    cap = _ONEDNN_CAPS.get(environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper())
    if cap is not None and ISA_LEVELS.index(cap) < ISA_LEVELS.index(level):
        return cap
    return level


def check_backend(command: str, supported: tuple[str, ...] = SUPPORTED_BACKENDS) -> str:
    """The Keras backend from KERAS_BACKEND, checked before Keras is imported.

    Keras also knows torch, numpy and openvino; this project trains and predicts
    with TensorFlow or JAX only (tf.data input, XLA settings, tf-keras-vis).

    Returns:
        The backend name.

    Raises:
        UserError: KERAS_BACKEND is empty or names a backend `command` does not run on.
    """
    from pneumokeras.errors import UserError

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    choices = " or ".join(f"KERAS_BACKEND={name}" for name in supported)
    if not backend.strip():
        raise UserError(f"KERAS_BACKEND is set but empty; {command} runs with {choices}")
    if backend not in supported:
        raise UserError(f"{command} does not run under KERAS_BACKEND={backend}; use {choices}")
    if backend == "jax":
        from pneumokeras.utils import extras

        extras.require("jax", "KERAS_BACKEND=jax")
    return backend


def _jax_backend_started() -> bool:
    """True when JAX has already created its devices (XLA_FLAGS were read then)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge  # private, hence the fallback

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return False


def _untested_jaxlib() -> str | None:
    """Why the XLA:CPU settings here do not apply to the installed jaxlib, or None.

    They were measured on `YNN_TESTED_JAXLIB` only, and an unknown XLA flag or compiler
    option aborts XLA.
    """
    try:
        jaxlib_version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return "jaxlib is not installed"
    if not jaxlib_version.startswith(YNN_TESTED_JAXLIB):
        return f"the XLA:CPU flag was not measured on jaxlib {jaxlib_version}"
    return None


def add_jax_cpu_flags() -> str | None:
    """Adds the XLA:CPU convolution flag to XLA_FLAGS for JAX; returns why not when it cannot.

    A flag already in XLA_FLAGS (the user's choice) is kept as it is.
    """
    current = os.environ.get("XLA_FLAGS", "")
    if YNN_FLAG in current:
        return None
    problem = _untested_jaxlib()
    if problem:
        return problem
    if _jax_backend_started():
        return "JAX was already initialised; call configure_backend before any JAX computation"
    os.environ["XLA_FLAGS"] = f"{current} {YNN_FLAG}={YNN_VALUE}".strip()
    return None


def jax_cpu_inference_options(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """XLA:CPU compiler options for JAX forward passes (`XNN_INFERENCE_OPTIONS`).

    Empty where they were not measured (another jaxlib series: an unknown option
    aborts the compile) or where XLA_FLAGS already routes XNNPACK or YNNPACK its own
    way (the user's choice is kept).
    """
    current = (os.environ if environ is None else environ).get("XLA_FLAGS", "")
    if "xnn_" in current or (YNN_FLAG in current and f"{YNN_FLAG}={YNN_VALUE}" not in current):
        return {}
    return {} if _untested_jaxlib() else dict(XNN_INFERENCE_OPTIONS)


def import_tensorflow_quietly(keep_output: bool = False) -> None:
    """Imports TensorFlow with its unsilenceable C++ start-up lines sent to /dev/null.

    TensorFlow 2.21 prints absl/CUDA-probe lines on stderr at import whatever
    TF_CPP_MIN_LOG_LEVEL says; they would bury our one-line errors and progress
    bars. Stderr (file descriptor 2) is redirected while the import runs, so call
    this from the main thread while nothing else prints. `keep_output` keeps
    the lines (the CLI's `--debug`).
    """
    if keep_output or "tensorflow" in sys.modules:
        import tensorflow

        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
