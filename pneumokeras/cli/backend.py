"""Backend choices the front ends make before Keras is imported."""

from __future__ import annotations

import os
import sys

import click


def force_tensorflow_backend(what: str = "explain", why: str = "tf-keras-vis") -> None:
    """Grad-CAM needs tf.GradientTape (tf-keras-vis): pick TensorFlow before keras loads."""
    asked = os.environ.get("KERAS_BACKEND", "tensorflow")
    if asked != "tensorflow":
        click.echo(
            f"note: {what} runs under the TensorFlow backend ({why} needs "
            f"tf.GradientTape); KERAS_BACKEND={asked} is ignored here",
            err=True,
        )
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != "tensorflow":
        raise RuntimeError("keras was already imported with another backend")
    os.environ["KERAS_BACKEND"] = "tensorflow"
