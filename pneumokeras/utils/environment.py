"""Process environment defaults, applied before TensorFlow, JAX or Keras is imported."""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

SUPPORTED_BACKENDS = ("tensorflow", "jax")
DEFAULT_JAX_CACHE = Path.home() / ".cache" / "pneumokeras" / "jax"

# XLA:CPU leaves convolutions to its own kernels instead of YNNPACK, whose kernel
# gradients are 10-20x slower (see pneumokeras/utils/performance.py for the measurements).
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_VALUE = "dot,eltwise,reduce"
YNN_TESTED_JAXLIB = ("0.10.",)  # jaxlib version prefixes the flag was measured on


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


def add_jax_cpu_flags() -> str | None:
    """Adds the XLA:CPU convolution flag to XLA_FLAGS for JAX; returns why not when it cannot.

    A flag already in XLA_FLAGS (the user's choice) is kept as it is.
    """
    current = os.environ.get("XLA_FLAGS", "")
    if YNN_FLAG in current:
        return None
    try:
        jaxlib_version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return "jaxlib is not installed"
    if not jaxlib_version.startswith(YNN_TESTED_JAXLIB):
        return f"the XLA:CPU flag was not measured on jaxlib {jaxlib_version}"
    if _jax_backend_started():
        return "JAX was already initialised; call configure_backend before any JAX computation"
    os.environ["XLA_FLAGS"] = f"{current} {YNN_FLAG}={YNN_VALUE}".strip()
    return None


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
