"""Tests for pneumokeras.utils.spawn: a function run where Keras is on TensorFlow.

The child process is faked here (a pool that records the environment it would
start with); a real spawned child exports a JAX-trained model in test_export.py
(JAX pass) and explains in the JAX demo.
"""

from __future__ import annotations

import os
from typing import ClassVar

import pytest

from pneumokeras.utils import spawn


class _Pool:
    """multiprocessing's Pool, run in this process: records the child's environment."""

    started_with: ClassVar[list[str | None]] = []

    def __init__(self, processes, initializer=None):
        self.started_with.append(os.environ.get("KERAS_BACKEND"))
        assert initializer is not None  # TensorFlow imported quietly first

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def apply(self, function, args):
        return function(*args)


class _Context:
    Pool = _Pool


@pytest.mark.parametrize("asked", ["jax", None])
def test_another_backend_starts_a_tensorflow_child_and_puts_the_variable_back(monkeypatch, asked):
    monkeypatch.setattr(spawn, "keras_backend", lambda: "jax")
    monkeypatch.setattr(spawn.multiprocessing, "get_context", lambda method: _Context())
    if asked is None:
        monkeypatch.delenv("KERAS_BACKEND", raising=False)
    else:
        monkeypatch.setenv("KERAS_BACKEND", asked)
    _Pool.started_with.clear()
    assert spawn.call_under_tensorflow(os.getenv, "KERAS_BACKEND") == "tensorflow"
    assert _Pool.started_with == ["tensorflow"]
    assert os.environ.get("KERAS_BACKEND") == asked  # put back (absent stays absent)
    with pytest.raises(ZeroDivisionError):  # and put back when the function fails
        spawn.call_under_tensorflow(divmod, 1, 0)
    assert os.environ.get("KERAS_BACKEND") == asked


def test_under_tensorflow_the_function_runs_here(monkeypatch):
    monkeypatch.setattr(spawn, "keras_backend", lambda: "tensorflow")
    assert spawn.call_under_tensorflow(os.getpid) == os.getpid()
