import os
import subprocess
import sys
from pathlib import Path

import pytest

from pneumokeras.utils import environment

ROOT = Path(__file__).resolve().parents[2]


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


SET_DEFAULTS = "from pneumokeras.utils import environment as e; e.set_defaults(); import os; "


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
        "import jax; jax.devices(); from pneumokeras.utils import environment as e; "
        "print(e.add_jax_cpu_flags())"
    )
    assert "already initialised" in _run(code, KERAS_BACKEND="jax")


def test_jax_inference_gets_xnnpack_unless_the_user_routes_it(monkeypatch):
    monkeypatch.setattr(environment.metadata, "version", lambda name: "0.10.2")
    ours = f"{environment.YNN_FLAG}={environment.YNN_VALUE}"
    assert environment.jax_cpu_inference_options({}) == environment.XNN_INFERENCE_OPTIONS
    assert environment.jax_cpu_inference_options({"XLA_FLAGS": ours}) == (
        environment.XNN_INFERENCE_OPTIONS
    )
    mine = f"{environment.YNN_FLAG}=individual_convolution"
    assert environment.jax_cpu_inference_options({"XLA_FLAGS": mine}) == {}
    xnn = "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_DISABLED"
    assert environment.jax_cpu_inference_options({"XLA_FLAGS": xnn}) == {}
    # Another jaxlib series: the options were not measured there (and may not exist).
    monkeypatch.setattr(environment.metadata, "version", lambda name: "0.11.0")
    assert environment.jax_cpu_inference_options({}) == {}


@pytest.fixture(scope="module")
def tensorflow_child(tmp_path_factory):
    """One TensorFlow child of a JAX parent (its XLA_FLAGS), importing TF the quiet way.

    TensorFlow takes many seconds to import, so the tests below share this one
    run. /dev/null is swapped for a file, so they can see what the quiet import
    hid. Returns (stdout, stderr, hidden text).
    """
    hidden = tmp_path_factory.mktemp("tf-child") / "hidden.txt"
    code = (
        f"import os; os.devnull = {str(hidden)!r}; "
        "from pneumokeras.utils import environment as e; e.import_tensorflow_quietly(); "
        "import tensorflow as tf; "
        "print(float(tf.function(lambda x: tf.reduce_sum(x * 2), jit_compile=True)(tf.ones(3))))"
    )
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "KERAS_BACKEND")}
    flags = f"{environment.YNN_FLAG}={environment.YNN_VALUE}"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={
            **base,
            "PYTHONPATH": str(ROOT),
            "XLA_FLAGS": flags,
            "KERAS_BACKEND": "tensorflow",
            "TF_CPP_MIN_LOG_LEVEL": "3",  # what set_defaults sets; TF prints at import anyway
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), result.stderr, hidden.read_text() if hidden.exists() else ""


def test_tensorflow_accepts_the_flag_inherited_from_a_jax_parent(tensorflow_child):
    """The demo explains in a TensorFlow child of a JAX process: XLA must not abort."""
    stdout, _, _ = tensorflow_child
    assert stdout.endswith("6.0")


def test_real_tensorflow_start_up_lines_are_hidden(tensorflow_child):
    """What TensorFlow itself prints at import goes where the quiet path sends it."""
    _, stderr, hidden = tensorflow_child
    assert stderr == ""
    if not hidden:
        pytest.skip("TensorFlow printed nothing at import on this machine")


def _import_stderr(fake_tensorflow_dir, keep_output):
    """Stderr of a fresh interpreter that imports `tensorflow` through the quiet path."""
    code = (
        "from pneumokeras.utils import environment as e; "
        f"e.import_tensorflow_quietly(keep_output={keep_output}); print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": f"{fake_tensorflow_dir}{os.pathsep}{ROOT}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok", result.stderr
    return result.stderr


def test_start_up_lines_are_hidden_unless_debugging(tmp_path):
    """A stand-in `tensorflow` that writes to file descriptor 2 at import, as TF's C++ does."""
    fake = tmp_path / "fake" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import os\nos.write(2, b'I0000 cpu_feature_guard.cc\\n')\n")
    assert _import_stderr(fake.parent, keep_output=False) == ""
    loud = _import_stderr(fake.parent, keep_output=True)
    assert loud == "I0000 cpu_feature_guard.cc\n"
