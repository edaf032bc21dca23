"""Running one function under the TensorFlow backend when this process's Keras runs another.

Keras fixes its backend when first imported, and some steps need TensorFlow
(tf-keras-vis' `tf.GradientTape` for Grad-CAM, tf2onnx for ONNX export). A
process whose Keras runs JAX calls `call_under_tensorflow(function, ...)`: the
function runs in a freshly spawned child process that imports Keras with
`KERAS_BACKEND=tensorflow` and returns its result (which must pickle).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
BACKEND_VARIABLE = "KERAS_BACKEND"


def keras_backend() -> str:
    """The backend Keras runs (or will run, when not imported yet) in this process."""
    if "keras" in sys.modules:
        return str(sys.modules["keras"].backend.backend())
    return os.environ.get(BACKEND_VARIABLE, "tensorflow")


def _quiet_tensorflow() -> None:
    """The child's first step: TensorFlow imported with its start-up lines hidden."""
    from pneumokeras.utils import environment

    environment.import_tensorflow_quietly()


def call_under_tensorflow(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` where Keras runs TensorFlow: here, or in a spawned child.

    The child imports TensorFlow quietly (`environment.import_tensorflow_quietly`)
    and reads `KERAS_BACKEND` when it imports Keras, so the variable is set to
    `tensorflow` while the child runs, and put back as it was
    (absent included) before this returns or raises.

    Args:
        function: a module-level function (spawned children import it by name).
        args: its arguments (pickled for the child).

    Returns:
        Its result.
    """
    if keras_backend() == "tensorflow":
        return function(*args)
    asked = os.environ.get(BACKEND_VARIABLE)
    os.environ[BACKEND_VARIABLE] = "tensorflow"
    try:
        context = multiprocessing.get_context("spawn")
        with context.Pool(1, initializer=_quiet_tensorflow) as pool:
            return pool.apply(function, args)
    finally:
        if asked is None:
            del os.environ[BACKEND_VARIABLE]
        else:
            os.environ[BACKEND_VARIABLE] = asked
