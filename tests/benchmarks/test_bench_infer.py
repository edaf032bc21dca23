"""The inference benchmark's own logic: Markdown, arguments, and its worker steps."""

import keras
import numpy as np
import pytest

from benchmarks import bench_infer
from pneumokeras.models.model_card import ModelCard, write_card

MACHINE = {"cpu": "AMD EPYC", "cpus": 2, "cpu_flags": ["avx2"], "emulated_isa": "avx2"}


def _result(runtime, worker, mode, batch, rate, default_path=""):
    return {
        "runtime": runtime,
        "worker": worker,
        "mode": mode,
        "how": mode,
        "batch": batch,
        "img_per_s": rate,
        "img_per_s_min": rate * 0.9,
        "img_per_s_max": rate * 1.1,
        "median_step_ms": 1000 * batch / rate,
        "settings": {"default_path": default_path},
    }


def test_markdown_sorts_by_batch_and_speed_and_marks_predicts_path():
    results = [
        _result("Keras-JAX", "jax", "eager", 32, 10.0, "jit"),
        _result("Keras-JAX", "jax", "jit", 32, 40.0, "jit"),
        _result("PyTorch", "torch", "eager", 32, 20.0),
        _result("onnxruntime", "onnx", "session", 1, 50.0),
        _result("PyTorch", "torch", "eager", 1, 25.0),
    ]
    text = bench_infer.render_markdown({"machine": MACHINE, "results": results})
    assert "**AVX2 emulated**" in text.splitlines()[0]
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1] == "| onnxruntime | session | 1 | 50.0 | 45.0–55.0 | 20 | – | 2.00× |"
    assert rows[2].startswith("| PyTorch |")
    assert rows[3].startswith("| Keras-JAX | jit **(predict's path here)** | 32 | 40.0 |")
    assert rows[3].endswith("| 2.00× |")
    assert rows[5].startswith("| Keras-JAX | eager | 32 |")
    assert "- Keras-JAX, batch 32, the path `predict` takes: **2.00×** PyTorch" in text


def test_marks_follow_todays_rule_for_the_cpu_measured_and_say_when_compiling_pays():
    def row(mode, rate, first_call):
        result = _result("Keras-TensorFlow", "tf", mode, 32, rate)
        result["settings"] = {"backend": "tensorflow", "isa": "avx2"}
        result["warmup_s"] = [first_call, 32 / rate]
        return result

    results = [row("eager", 10.0, 3.2), row("graph", 40.0, 2.8), row("xla", 45.0, 20.7)]
    text = bench_infer.render_markdown({"machine": MACHINE, "results": results})
    (marked,) = [line for line in text.splitlines() if "predict's path here" in line]
    assert marked.startswith("| Keras-TensorFlow | graph **(predict's path here)** | 32 | 40.0 |")
    assert "| 2.8 |" in marked  # the first call, seconds
    # 2.0 s of compile saves 1/10 - 1/40 s per image: paid after 27 images.
    assert "its compile (2.0 s) pays off after ≈ 27 images" in text


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
def test_keras_worker_steps_agree_with_the_eager_call(model_dir):
    key = "tf" if keras.backend.backend() == "tensorflow" else "jax"
    modes = [mode for mode, _ in bench_infer.RUNTIMES[key][1]]
    steps, settings = bench_infer._keras_steps(model_dir, [1, 3], modes)
    assert sorted(steps) == sorted((mode, batch) for mode in modes for batch in (1, 3))
    assert settings["backend"] == keras.backend.backend()
    assert settings["default_path"] in modes
    eager = steps[("eager", 3)]()
    assert eager.shape == (3, 2)
    for mode in modes:
        np.testing.assert_allclose(steps[(mode, 3)](), eager, atol=1e-5)


@pytest.mark.backend
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="exports in this process")
def test_onnx_worker_steps_run_the_exported_model(model_dir):
    from pneumokeras.serving.export import export_model

    export_model(model_dir, "onnx")
    steps, settings = bench_infer._onnx_steps(model_dir, [1, 3])
    assert sorted(steps) == [("session", 1), ("session", 3)]
    assert steps[("session", 3)]().shape == (3, 2)
    assert "onnxruntime" in settings


def test_a_compile_found_in_the_cache_is_said_so():
    eager = _result("Keras-JAX", "jax", "eager", 32, 8.0)
    jit = _result("Keras-JAX", "jax", "jit", 32, 10.0)
    jit["warmup_s"] = [3.1, 3.2]  # the first call no slower than a step: a cached program
    assert bench_infer._break_even(jit, [eager, jit]) == (
        "; its compiled program came from the cache"
    )
    assert bench_infer._break_even(eager, [eager, jit]) == ""
