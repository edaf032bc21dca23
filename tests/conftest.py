"""Shared test fixtures: the optional real data in ../shared/data, a synthetic RSNA-layout
folder and its conversion (built with `factories.py`, the shared test factories)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# XLA without LLVM's optimisations, for this process and every child it starts
# (JAX always compiles; TensorFlow with `train.xla`): the tests' models are tiny,
# so compiling is most of their time. A one-epoch ResNet10 run under JAX: 29 s
# instead of 63 s on 2 busy cores. The HLO passes still run, so the numbers are
# the same computation's; the benchmarks under benchmarks/ keep XLA's default.
XLA_TEST_FLAG = "--xla_backend_optimization_level=0"
if XLA_TEST_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_TEST_FLAG}".strip()

import pytest  # noqa: E402

from pneumokeras.utils import environment  # noqa: E402

# One JAX compilation cache for the whole run (subprocesses included), so each
# model shape is compiled once per test run instead of once per process.
environment.set_defaults(
    jax_cache_dir=Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax-compilation"
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Puts `sys.modules["__main__"]` back after each test.

    Streamlit's AppTest runs the app script as `__main__` and leaves it there; a
    later test whose code spawns worker processes (convert, synth) would then make
    every child re-run the app script instead of pytest's `__main__`, and the pool
    would restart its dying workers forever.
    """
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture
def shared_file():
    """Returns a path in ../shared/data, skipping the test when it is absent."""

    def get(name: str) -> Path:
        path = SHARED_DATA / name
        if not path.is_file():
            pytest.skip(f"real data file {name} not available (../shared/data)")
        return path

    return get


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic RSNA-layout folder: 80 patients at 128 px."""
    from pneumokeras.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, patients=80, size=128, positive_fraction=0.3, seed=11, workers=0, progress=False)
    return out


@pytest.fixture(scope="session")
def converted_dir(synth_dir, tmp_path_factory):
    """`synth_dir` converted to 64 px TFRecords (3 folds, 16 examples per shard)."""
    from factories import convert_synth

    out = tmp_path_factory.mktemp("converted")
    convert_synth(
        synth_dir, out, size=64, val_fraction=0.2, test_fraction=0.2, folds=3, shard_size=16
    )
    return out


@pytest.fixture(scope="module")
def dicoms(tmp_path_factory) -> list[Path]:
    """Three synthetic RSNA DICOMs (64 px)."""
    from pneumokeras.synth import IMAGES_DIR, generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, patients=3, size=64, seed=2, workers=0, progress=False)
    return sorted((root / IMAGES_DIR).glob("*.dcm"))


@pytest.fixture
def image_files(tmp_path: Path) -> dict[str, Path]:
    """A non-square PNG, a JPEG, and a 16-bit PNG, in nested folders, odd-case suffixes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    paths = {
        "png": tmp_path / "in" / "wide.PNG",
        "jpeg": tmp_path / "in" / "sub" / "photo.JpEg",
        "png16": tmp_path / "in" / "sub" / "deep.png",
    }
    Image.fromarray(rng.integers(0, 256, (40, 70), dtype=np.uint8)).save(paths["png"])
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(
        paths["jpeg"], format="JPEG"
    )
    Image.fromarray(rng.integers(0, 4096, (48, 48), dtype=np.uint16)).save(paths["png16"])
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    return paths


@pytest.fixture
def oversized_png(tmp_path) -> Path:
    """A 14000 × 14000 PNG header with no pixels: over Pillow's pixel limit, a few bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 14000, 14000, 8, 0, 0, 0, 0)  # 8-bit gray
    path = tmp_path / "oversized.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------- parallel runs


# The modules that take longest, longest first (seconds of test time in the
# TensorFlow / JAX pass, `--durations=0` on a clean clone of the code that wrote
# this list; CI prints the slowest tests): pytest-xdist then starts them first and
# lets the short modules fill the gaps, instead of one worker finishing a long
# module alone at the end. Unlisted modules follow in file order.
LONGEST_MODULES_FIRST = (
    "test_distributed",  # 9 / 157 s (two-process runs under JAX)
    "test_cv",  # 124 / 85 s
    "test_train",  # 82 / 35 s
    "test_demo",  # 34 s, TensorFlow pass only
    "test_docs_commands",  # TensorFlow pass only: the README's RSNA walk-through, 60-170 s
    "test_bench_train",  # JAX 32 s
    "test_browser",  # TensorFlow 28 s
    "test_export",  # 7 / 25 s
    "test_pipeline",  # 8 / 24 s
    "test_evaluate",  # 22 / 11 s
    "test_predict",  # 4 / 21 s
    "test_convert",  # TensorFlow 18 s
    "test_resnet",  # TensorFlow 17 s
    "test_explain",  # TensorFlow 17 s
    "test_environment",  # TensorFlow 13 s
    "test_writer",  # synth: TensorFlow 10 s
)


def pytest_collection_modifyitems(config, items):
    """Orders the modules by `LONGEST_MODULES_FIRST`, each module's tests kept together.

    `make test` runs pytest-xdist with `--dist loadfile --no-loadscope-reorder`: one
    module per worker at a time (so module fixtures such as a trained model or a
    3-fold run are built once), handed out in this order. (Without
    `--no-loadscope-reorder`, pytest-xdist 3.8 hands out the modules with the most
    tests first, whatever their time. `loadgroup` cannot spread single tests instead:
    it marks groups through `item._nodeid`, which pytest 9 no longer reads.)
    """
    rank = {name: index for index, name in enumerate(LONGEST_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable
