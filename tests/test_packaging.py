"""The installable package: the wheel's contents and metadata, an install in a fresh venv."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import pneumokeras

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = {"app", "export", "jax", "cuda", "dev"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (no network: the venv's setuptools)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("pneumokeras", "configs"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*pip_wheel, "--no-index", "--quiet", "-w", str(work / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = (work / "dist").glob("pneumokeras-*.whl")
    return built


def test_wheel_holds_every_module_and_the_presets_once(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "pneumokeras").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert modules <= names, f"missing from the wheel: {sorted(modules - names)}"
    presets = sorted((ROOT / "configs").glob("*.yaml"))
    assert presets
    archive = zipfile.ZipFile(wheel)
    for preset in presets:
        # One copy in the checkout (configs/), the same bytes inside the package.
        assert archive.read(f"pneumokeras/configs/{preset.name}") == preset.read_bytes()
    assert not any(name.startswith(("configs/", "tests/", "benchmarks/")) for name in names)


def test_wheel_metadata_names_the_extras_and_the_command(wheel):
    archive = zipfile.ZipFile(wheel)
    info = f"pneumokeras-{pneumokeras.__version__}.dist-info"
    metadata = email.message_from_bytes(archive.read(f"{info}/METADATA"))
    assert metadata["Version"] == pneumokeras.__version__
    assert set(metadata.get_all("Provides-Extra")) == EXTRAS
    requires = metadata.get_all("Requires-Dist")
    core = [r.split(";")[0].split(">")[0].split("=")[0].strip() for r in requires if ";" not in r]
    assert "tensorflow" in core
    assert "keras" in core
    # The core install leaves the extras' packages out.
    assert not {"streamlit", "jax", "onnxruntime", "tf2onnx", "pytest"} & set(core)
    assert any(r.startswith("streamlit") and 'extra == "app"' in r for r in requires)
    assert any(r.startswith("onnxruntime") and 'extra == "export"' in r for r in requires)
    assert any(r.startswith("jax") and 'extra == "jax"' in r for r in requires)
    entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert "pneumokeras = pneumokeras.cli:main" in entry_points


@pytest.mark.slow  # a fresh venv with the core install (TensorFlow, Keras, ...) from the uv cache
def test_the_wheel_installs_in_a_fresh_venv_and_runs_from_another_folder(wheel, tmp_path):
    uv = Path(sys.executable).with_name("uv")
    if not uv.is_file():
        pytest.skip("uv is not installed beside this interpreter (make install puts it there)")
    venv = tmp_path / "venv"
    subprocess.run([str(uv), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    # From the package registry (through uv's cache when warm): the core install only, at
    # the versions requirements.txt pins (those make install put in uv's cache).
    pins = ["--constraint", str(ROOT / "requirements.txt")]
    install = subprocess.run(
        [str(uv), "pip", "install", "--quiet", *pins, "--python", str(python), str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv, cwd=elsewhere, capture_output=True, text=True, timeout=300, env=env
        )

    version = run(str(venv / "bin" / "pneumokeras"), "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"pneumokeras {pneumokeras.__version__}"
    helped = run(str(venv / "bin" / "pneumokeras"), "--help")
    assert helped.returncode == 0
    assert helped.stdout.startswith("Usage: pneumokeras [OPTIONS] COMMAND")
    module = run(str(python), "-m", "pneumokeras", "--help")
    assert module.returncode == 0
    assert module.stdout.startswith("Usage: python -m pneumokeras [OPTIONS] COMMAND")
    # The presets ship inside the package: found from any folder.
    preset = run(str(python), "-c", "from pneumokeras import config; print(*config.presets())")
    assert {"demo", "rsna"} <= set(preset.stdout.split()), preset.stderr
    # The core install has no Streamlit: the app says which extra to install.
    app = run(str(venv / "bin" / "pneumokeras"), "app", "--model", str(elsewhere))
    assert app.returncode == 2
    assert app.stderr.strip() == (
        "error: the app needs the [app] extra (streamlit not installed): "
        "pip install 'pneumokeras[app]'"
    )
