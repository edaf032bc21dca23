import os
import subprocess
import sys
from pathlib import Path

import pytest

from pneumokeras import environment

ROOT = Path(__file__).resolve().parents[1]


def _run(code, **env):
    """Runs `code` in a fresh interpreter with a controlled environment; returns stdout."""
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "KERAS_BACKEND")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**base, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


SET_DEFAULTS = "from pneumokeras import environment as e; e.set_defaults(); import os; "


def test_jax_gets_the_cpu_convolution_flag():
    flags = _run(SET_DEFAULTS + "print(os.environ['XLA_FLAGS'])", KERAS_BACKEND="jax")
    assert f"{environment.YNN_FLAG}={environment.YNN_VALUE}" in flags


def test_tensorflow_runs_are_left_alone():
    flags = _run(SET_DEFAULTS + "print(os.environ.get('XLA_FLAGS', '<unset>'))")
    assert flags == "<unset>"


def test_the_users_own_choice_is_kept():
    mine = f"--xla_cpu_multi_thread_eigen=true {environment.YNN_FLAG}=individual_dot"
    flags = _run(
        SET_DEFAULTS + "print(os.environ['XLA_FLAGS'])", KERAS_BACKEND="jax", XLA_FLAGS=mine
    )
    assert flags == mine


def test_too_late_once_jax_has_started():
    code = (
        "import jax; jax.devices(); from pneumokeras import environment as e; "
        "print(e.add_jax_cpu_flags())"
    )
    assert "already initialised" in _run(code, KERAS_BACKEND="jax")


def test_tensorflow_accepts_the_flag_inherited_from_a_jax_parent():
    """The demo explains in a TensorFlow child of a JAX process: XLA must not abort."""
    code = (
        "from pneumokeras import environment as e; e.import_tensorflow_quietly(); "
        "import tensorflow as tf; "
        "print(float(tf.function(lambda x: tf.reduce_sum(x * 2), jit_compile=True)(tf.ones(3))))"
    )
    flags = f"{environment.YNN_FLAG}={environment.YNN_VALUE}"
    assert _run(code, XLA_FLAGS=flags, KERAS_BACKEND="tensorflow").endswith("6.0")


def _import_stderr(**env):
    code = "from pneumokeras import environment as e; e.import_tensorflow_quietly(); print('ok')"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "0", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    return result.stderr


def test_tensorflow_start_up_lines_are_hidden_unless_debugging():
    loud = _import_stderr(**{environment.DEBUG_VARIABLE: "1"})
    if not loud:
        pytest.skip("TensorFlow printed nothing at import on this machine")
    assert _import_stderr(**{environment.DEBUG_VARIABLE: "0"}) == ""
