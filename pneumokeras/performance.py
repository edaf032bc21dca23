"""Backend performance settings (placeholder during exploration)."""

from __future__ import annotations

import keras

COMPILE_KWARGS: dict = {}


def configure_backend(precision: str) -> None:
    keras.config.set_dtype_policy(precision)
