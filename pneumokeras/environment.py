"""Process environment defaults, applied before TensorFlow, JAX or Keras is imported."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_JAX_CACHE = Path.home() / ".cache" / "pneumokeras" / "jax"


def set_defaults(jax_cache_dir: str | Path = DEFAULT_JAX_CACHE) -> None:
    """Sets environment defaults; values the user already set are kept.

    - KERAS_BACKEND defaults to tensorflow.
    - TensorFlow's C++ INFO/WARNING logs are silenced.
    - JAX keeps compiled programs in a persistent cache. Keras under JAX compiles
      one small program per weight shape when it builds or loads a model (ResNet18:
      about 35 s on 2 CPU cores); with the cache, later processes take about 2 s.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(jax_cache_dir))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
