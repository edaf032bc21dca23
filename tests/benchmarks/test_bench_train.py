"""The train benchmark's own logic: table, argument checks, the pipeline worker."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_train", ROOT / "benchmarks" / "bench_train.py")
bench_train = importlib.util.module_from_spec(spec)
sys.modules["bench_train"] = bench_train  # dataclasses look their module up
spec.loader.exec_module(bench_train)


def _result(framework, backend, precision, rate):
    return {
        "framework": framework,
        "backend": backend,
        "precision": precision,
        "img_per_s": rate,
        "img_per_s_min": rate * 0.9,
        "img_per_s_max": rate * 1.1,
    }


def test_table_compares_each_precision_with_pytorch():
    results = [
        _result("keras", "jax", "fp32", 8.0),
        _result("keras", "tensorflow", "bf16", 6.0),
        _result("torch", "torch", "fp32", 4.0),
        _result("torch", "torch", "bf16", 3.0),
    ]
    pipeline = {"img_per_s": 400.0}
    lines = bench_train.format_table(results, pipeline).splitlines()
    assert lines[2].startswith("| Keras-jax | float32 | 8.00 |")
    assert lines[2].endswith("| 2.00× |")
    assert "| Keras-tensorflow | mixed_bfloat16 | 6.00 |" in lines[3]
    assert "2.00×" in lines[3]
    assert "| PyTorch | bf16 autocast |" in lines[5]
    assert lines[6].startswith("| tf.data input pipeline")
    assert "50× fastest step" in lines[6]


def test_table_without_pytorch_says_so():
    table = bench_train.format_table([_result("keras", "jax", "fp32", 8.0)])
    assert table.splitlines()[-1].endswith("| n/a |")


@pytest.mark.parametrize(
    "argv, message",
    [(["--only", "tf,cuda"], "--only"), (["--precisions", "fp16"], "--precisions")],
)
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        bench_train._parser().parse_args(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.backend
def test_pipeline_worker_gives_augmented_batches(converted_dir):
    step, settings = bench_train._pipeline_step(str(converted_dir), batch=4, size=64)
    for _ in range(3):
        step()
    assert settings["steps_per_epoch"] >= 1
    assert settings["augment"]["rotation_degrees"] == 10.0


@pytest.mark.backend
@pytest.mark.slow  # compiles ResNet18 (64 filters) under JAX in a child: ≈ 50 s
def test_gpu_mode_runs_keras_jax_without_tensorflow(tmp_path):
    """--gpu with TensorFlow made unimportable and no accelerator: runs, then exits 1."""
    import json
    import os
    import subprocess

    import keras

    if keras.backend.backend() != "jax":
        pytest.skip("runs in the JAX pass of the suite (it compiles ResNet18 under JAX)")
    # The GPU machine has no TensorFlow: a package that refuses to import stands in.
    blocker = tmp_path / "no_tensorflow" / "tensorflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('TensorFlow is not installed here')\n")
    out = tmp_path / "gpu.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--gpu"]
    command += ["--size", "32", "--batch", "4", "--steps", "1", "--rounds", "1", "--warmup", "1"]
    result = subprocess.run(
        [*command, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(blocker.parent)},
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(out.read_text())
    (row,) = report["results"]
    assert (row["backend"], row["precision"], row["batch"]) == ("jax", "bf16", 4)
    assert row["settings"]["dtype_policy"] == "mixed_bfloat16"
    assert row["settings"]["tensorflow_imported"] is False
    assert "no accelerator" in report["notes"][-1]
