"""Backend performance settings shared by training and the benchmarks.

One place for what makes a train step fast, so `benchmarks/bench_train.py` measures
exactly what `train` runs. Today that is the Keras dtype policy and Keras' own
compile defaults (XLA under JAX; TensorFlow's `jit_compile="auto"`).
"""

from __future__ import annotations

import keras

# Extra `model.compile` arguments; empty keeps Keras' defaults.
COMPILE_KWARGS: dict = {}


def configure_backend(precision: str) -> None:
    """Sets the global Keras dtype policy: `float32`, `mixed_bfloat16` or `mixed_float16`."""
    keras.config.set_dtype_policy(precision)
