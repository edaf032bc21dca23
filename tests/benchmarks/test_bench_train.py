"""The train benchmark's own logic: rows, Markdown, arguments, the pipeline worker."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench_train

ROOT = Path(__file__).resolve().parents[2]
MACHINE = {
    "cpu": "AMD EPYC",
    "cpus": 2,
    "cpu_flags": ["avx2", "avx512f", "avx512_bf16"],
    "emulated_isa": None,
    "load_avg_start": [1.0, 1.0, 1.0],
    "load_avg_end": [2.0, 1.0, 1.0],
}


def _row(variant, precision, rate, default_xla=False):
    backend, how, _, _ = bench_train.VARIANTS[variant]
    framework = "torch" if backend == "torch" else "keras"
    return {
        "variant": variant,
        "precision": precision,
        "framework": framework,
        "backend": backend,
        "how": how,
        "img_per_s": rate,
        "img_per_s_min": rate * 0.9,
        "img_per_s_max": rate * 1.1,
        "settings": {"default_xla": default_xla},
    }


def test_markdown_marks_trains_default_and_compares_with_the_best_pytorch():
    rows = [
        _row("tf-xla", "fp32", 10.0),
        _row("tf-graph", "bf16", 25.0),
        _row("jax-xla", "fp32", 9.0, default_xla=True),
        _row("torch", "fp32", 13.0),
        _row("torch", "bf16", 20.0),
        {**_row("tf-graph", "fp32", 0.0), "error": "worker exited (134):\ndouble free"},
    ]
    pipeline = [
        {"augment_on_host": True, "cores": 1, "batch": 32, "size": 224, "img_per_s": 300.0,
         "img_per_core_s": 300.0},
        {"augment_on_host": False, "cores": 2, "batch": 32, "size": 224, "img_per_s": 1200.0,
         "img_per_core_s": 680.0},
    ]  # fmt: skip
    text = bench_train.render_markdown({"machine": MACHINE, "results": rows, "pipeline": pipeline})
    lines = text.splitlines()
    assert lines[0].startswith("Machine: AMD EPYC, 2 logical CPUs, flags: avx2 avx512f")
    table = [line for line in lines if line.startswith("| Keras") or line.startswith("| PyTorch")]
    # Keras rows fastest first, then PyTorch; ratios against the best PyTorch row (20).
    assert table[0].startswith("| Keras-tensorflow | graph, oneDNN")
    assert table[0].endswith("| 1.25× |")
    # Marked where the worker's `training_xla("auto")` equals the row's setting.
    marked = [("**(train's default here)**" in line) for line in table]
    assert marked == [True, False, True, False, False, False]  # tf-graph, tf-xla, jax-xla, ...
    assert table[3].startswith("| PyTorch | eager | bf16 autocast | 20.00 |")
    assert "fails: double free" in table[-1]
    assert "Best Keras (tensorflow, graph, oneDNN" in text
    assert "**1.25×** the best PyTorch row" in text
    assert "- float32 with train's default settings: Keras-jax 0.69× PyTorch's float32." in text
    # One GPU at ≈ 5,581 img/s needs 19 cores augmenting on the host, 9 decoding only.
    assert "| decode, augment, batch | 1 | 300 | 300 | 19 |" in text
    assert "| decode, batch (augment on device) | 2 | 1200 | 680 | 9 |" in text


def test_the_batch_normalisation_diagnostic_is_neither_default_nor_best():
    rows = [
        _row("tf-graph", "bf16", 25.0),
        _row("tf-graph-nobn", "bf16", 35.0),
        _row("torch", "bf16", 26.0),
    ]
    text = bench_train.render_markdown({"machine": MACHINE, "results": rows})
    (diagnostic,) = [line for line in text.splitlines() if "skipped" in line]
    assert diagnostic.endswith("| 1.35× |")  # shown, against PyTorch like every row
    assert "train's default here" not in diagnostic
    assert "- Best Keras (tensorflow, graph, oneDNN (`jit_compile=False`)" in text
    assert "**0.96×** the best PyTorch row" in text


def test_the_batch_normalisation_diagnostic_skips_it_in_its_worker_only():
    code = (
        "import numpy as np, keras\n"
        "from benchmarks import bench_train\n"
        "step, settings = bench_train._keras_step('tf-graph-nobn', 'float32', 2, 32)\n"
        "step()\n"
        "x = np.full((1, 4, 4, 3), 7.0, np.float32)\n"
        "print(float(keras.layers.BatchNormalization()(x, training=True).numpy().max()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "7.0"  # normalised, it would be 0


def test_rows_follow_variants_and_precisions():
    args = bench_train._parser().parse_args(
        ["--variants", "torch,tf-graph", "--precisions", "bf16"]
    )
    assert bench_train.configurations(args) == [
        {"variant": "tf-graph", "precision": "bf16"},
        {"variant": "torch", "precision": "bf16"},
    ]
    gpu = bench_train._parser().parse_args(["--gpu"])
    assert bench_train.configurations(gpu) == [{"variant": "jax-xla", "precision": "bf16"}]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--variants", "tf,cuda"], "--variants"),
        (["--precisions", "fp16"], "--precisions"),
        (["--isa", "avx10"], "--isa"),
        (["--steps", "0"], "--steps"),
    ],
)
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        bench_train._parser().parse_args(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.backend
@pytest.mark.parametrize("augment", [True, False])
def test_pipeline_worker_gives_batches_augmented_on_the_host_or_not(converted_dir, augment):
    step, settings = bench_train._pipeline_step(str(converted_dir), 4, 64, augment)
    for _ in range(3):
        step()
    assert settings["steps_per_epoch"] >= 1
    assert settings["augment"]["on_device"] is not augment
    assert settings["cores"] >= 1


@pytest.mark.backend
@pytest.mark.slow  # compiles ResNet18 (64 filters) under JAX in a child: ≈ 50 s
def test_gpu_mode_runs_keras_jax_without_tensorflow(tmp_path):
    """--gpu with TensorFlow made unimportable and no accelerator: runs, then exits 1."""
    import keras

    if keras.backend.backend() != "jax":
        pytest.skip("runs in the JAX pass of the suite (it compiles ResNet18 under JAX)")
    # The GPU machine has no TensorFlow: a package that refuses to import stands in.
    blocker = tmp_path / "no_tensorflow" / "tensorflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('TensorFlow is not installed here')\n")
    out = tmp_path / "gpu.json"
    command = [sys.executable, "-m", "benchmarks.bench_train", "--gpu", "--size", "32"]
    command += ["--batch", "4", "--steps", "1", "--rounds", "1", "--warmup", "1"]
    result = subprocess.run(
        [*command, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(blocker.parent)},
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(out.read_text())
    (row,) = report["results"]
    assert (row["backend"], row["precision"], row["batch"]) == ("jax", "bf16", 4)
    assert row["settings"]["dtype_policy"] == "mixed_bfloat16"
    assert row["settings"]["tensorflow_imported"] is False
    assert "no accelerator" in report["notes"][-1]
    assert report["script"] == "bench_train"


def test_markdown_sizes_a_gpu_host_from_the_one_core_rates():
    pipeline = [
        {"augment_on_host": augment, "cores": 1, "batch": 32, "size": 224,
         "img_per_s": rate, "img_per_core_s": rate}
        for augment, rate in ((True, 300.0), (False, 1200.0))
    ]  # fmt: skip
    text = bench_train.render_markdown({"machine": MACHINE, "results": [], "pipeline": pipeline})
    gpu = bench_train.GPU_RESNET18_IMG_S
    assert round(gpu) == 5581  # 2,470 img/s × 4.09 / 1.81
    assert "needs **19 cores** augmenting on the host, 5 decoding only" in text
    assert "a typical GPU host gives 8–16 cores per GPU" in text


def test_marks_follow_todays_rule_for_the_cpu_level_the_worker_saw():
    rows = []
    for variant, precision in (("tf-xla", "fp32"), ("tf-graph", "fp32"), ("tf-xla", "bf16"),
                               ("tf-graph", "bf16")):  # fmt: skip
        row = _row(variant, precision, 5.0)
        row["settings"] = {"isa": "avx2"}  # an (emulated) AVX2 CPU
        rows.append(row)
    text = bench_train.render_markdown({"machine": MACHINE, "results": rows, "pipeline": None})
    marked = [line for line in text.splitlines() if "train's default here" in line]
    # float32: oneDNN graphs; bf16 without native bf16: XLA.
    assert len(marked) == 2
    assert any("graph, oneDNN" in line and "| float32 |" in line for line in marked)
    assert any("XLA" in line and "| mixed_bfloat16 |" in line for line in marked)


def test_a_failed_worker_is_shown_by_its_telling_line():
    onednn = (
        'File "x.py", line 1\nOperation received an exception:Status: 3, message: could not '
        "create a primitive descriptor for the convolution forward propagation primitive. Run "
        "workload with ONEDNN_VERBOSE=all\n\t [[{{node conv}}]] [Op:__inference_step_1]"
    )
    assert bench_train._error_reason(onednn) == (
        "could not create a primitive descriptor for the convolution forward propagation primitive"
    )
    python = "Traceback (most recent call last):\nValueError: bad\n  during handling"
    assert bench_train._error_reason(python) == "ValueError: bad"
    assert bench_train._error_reason("") == "?"
