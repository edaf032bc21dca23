"""The inference benchmark's own logic: table, arguments, and its worker steps."""

import importlib.util
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from pneumokeras.models.model_card import ModelCard, write_card

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_infer", ROOT / "benchmarks" / "bench_infer.py")
bench_infer = importlib.util.module_from_spec(spec)
sys.modules["bench_infer"] = bench_infer
spec.loader.exec_module(bench_infer)


def _result(runtime, how, batch, rate):
    return {
        "runtime": runtime,
        "how": how,
        "batch": batch,
        "img_per_s": rate,
        "img_per_s_min": rate * 0.9,
        "img_per_s_max": rate * 1.1,
        "median_step_ms": 1000 * batch / rate,
    }


def test_table_sorts_by_batch_and_speed_and_compares_with_pytorch_at_the_same_batch():
    results = [
        _result("Keras-JAX", "eager call (predict.py)", 32, 10.0),
        _result("PyTorch", "eval(), inference_mode", 32, 20.0),
        _result("onnxruntime", "exported ONNX, CPU provider", 1, 50.0),
        _result("PyTorch", "eval(), inference_mode", 1, 25.0),
    ]
    lines = bench_infer.format_table(results).splitlines()
    assert lines[2] == (
        "| onnxruntime | exported ONNX, CPU provider | 1 | 50.0 | 45.0–55.0 | 20 | 2.00× |"
    )
    assert lines[3].startswith("| PyTorch |")
    assert lines[3].endswith("| 1.00× |")
    assert lines[4].startswith("| PyTorch |")
    assert "| 32 |" in lines[4]
    assert lines[5].startswith("| Keras-JAX |")
    assert lines[5].endswith("| 3200 | 0.50× |")
    no_torch = bench_infer.format_table([_result("Keras-JAX", "x", 1, 3.0)])
    assert no_torch.splitlines()[-1].endswith("| n/a |")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--only", "tf,tflite"], "--only"),
        (["--batches", "0,32"], "--batches"),
        (["--batches", "a"], "--batches"),
        (["--steps", "0"], "--steps"),
    ],
)
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        bench_infer._parser().parse_args(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_arguments_and_step_counts():
    args = bench_infer._parser().parse_args(["--only", "torch,tf", "--batches", "32,1,32"])
    assert args.only == ["tf", "torch"]
    assert args.batches == [1, 32]
    assert bench_infer.timed_steps(32, 6) == 6
    assert bench_infer.timed_steps(1, 6) == 30


def _stand_in(size: int) -> keras.Model:
    """The contract at 224 px in a few layers, pooling 14 x 14 like a real backbone's 7 x 7.

    (`contract_model` at 224 px averages 111 x 111 values; onnxruntime's float32 mean
    of that many equal values differs from TensorFlow's by over 1e-5, which the
    export check rightly refuses.)
    """
    keras.utils.set_random_seed(0)
    image = keras.Input((size, size, 1), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(image)
    x = keras.layers.Conv2D(4, 16, strides=16, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(2)(x)
    return keras.Model(image, keras.layers.Activation("softmax", name="predictions")(x))


@pytest.fixture
def model_dir(tmp_path):
    """A 224 px stand-in model with its card (the benchmark's images are 224 px)."""
    _stand_in(bench_infer.SIZE).save(tmp_path / "model.keras")
    write_card(tmp_path / "model.keras", ModelCard(input_size=bench_infer.SIZE))
    return tmp_path


@pytest.mark.backend
def test_keras_worker_steps_agree(model_dir):
    steps, settings = bench_infer._keras_steps(model_dir, [1, 3])
    assert sorted(steps) == [("call", 1), ("call", 3), ("compiled", 1), ("compiled", 3)]
    assert settings["backend"] == keras.backend.backend()
    call, compiled = steps[("call", 3)](), np.asarray(steps[("compiled", 3)]())
    assert call.shape == (3,)
    assert compiled.shape == (3, 2)
    np.testing.assert_allclose(call, compiled[:, 1], atol=1e-5)


@pytest.mark.backend
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="exports in this process")
def test_onnx_worker_steps_run_the_exported_model(model_dir):
    from pneumokeras.serving.export import export_model

    export_model(model_dir, "onnx")
    steps, settings = bench_infer._onnx_steps(model_dir, [1, 3])
    assert sorted(steps) == [("session", 1), ("session", 3)]
    assert steps[("session", 3)]().shape == (3, 2)
    assert "onnxruntime" in settings
