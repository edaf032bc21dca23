"""Tests for pneumokeras.serving.export (`cli.py export`) and examples/onnx_app.py.

A 32 px stand-in model (`contract_model`) with a fitted card. The export runs
under TensorFlow, so the tests that export in this process skip under JAX; a
model saved under JAX is exported in the JAX pass
(`test_under_jax_the_export_runs_in_a_tensorflow_child`), through a spawned
TensorFlow child.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pydicom
import pytest
from model_fixtures import contract_model
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage

from pneumokeras.cli import main
from pneumokeras.errors import UserError
from pneumokeras.io.images import read_image
from pneumokeras.models.model_card import ModelCard, read_card, write_card
from pneumokeras.serving import export
from pneumokeras.synth import IMAGES_DIR, generate

SIZE = 32
REPO = Path(__file__).resolve().parents[2]
CARD = ModelCard(input_size=SIZE, threshold=0.37, threshold_method="youden", temperature=1.6)

tensorflow_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="exports in this process under TensorFlow (the JAX path has its own test)",
)


def _app():
    """examples/onnx_app.py as a module (it imports no Keras, TF or pneumokeras)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("onnx_app", REPO / "examples" / "onnx_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run folder: model.keras (32 px stand-in) and a fitted model.json."""
    run = tmp_path / "run"
    run.mkdir()
    contract_model(SIZE).save(run / "model.keras")
    write_card(run / "model.keras", CARD)
    return run


def _batch(count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, SIZE, SIZE, 1)).astype(np.float32)


def _keras(run: Path, images: np.ndarray) -> np.ndarray:
    model = keras.saving.load_model(run / "model.keras")
    return keras.ops.convert_to_numpy(model(images, training=False))


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------- the formats


@pytest.mark.backend
@tensorflow_only
def test_onnx_matches_keras_with_the_card_embedded_and_beside(run_dir):
    import onnx
    import onnxruntime

    summary = export.export_model(run_dir, "onnx")
    out = run_dir / "model.onnx"
    assert summary.out == out
    assert summary.card == run_dir / "model.onnx.json"
    assert summary.max_abs_diff <= export.TOLERANCE
    assert summary.batch_sizes == (6, 1)
    assert summary.synthetic_images == 6
    assert summary.notes == ()
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "model.json",
        "model.keras",
        "model.onnx",
        "model.onnx.json",
    ]
    proto = onnx.load(str(out))
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    assert ModelCard.from_dict(json.loads(metadata[export.ONNX_CARD_KEY])) == CARD
    assert ModelCard.from_dict(json.loads(summary.card.read_text())) == CARD
    facts = json.loads(metadata[export.ONNX_EXPORT_KEY])
    assert facts["source"] == "model.keras"
    assert facts["onnx_opset"] == summary.details["onnx_opset"]
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.name == "image"
    assert given.type == "tensor(float)"
    assert isinstance(given.shape[0], str)
    assert given.shape[1:] == [SIZE, SIZE, 1]
    assert [o.name for o in session.get_outputs()] == ["predictions"]
    for count in (1, 3):
        images = _batch(count)
        got = session.run(None, {"image": images})[0]
        assert got.shape == (count, 2)
        np.testing.assert_allclose(got, _keras(run_dir, images), atol=1e-5, rtol=0)


@pytest.mark.backend
@tensorflow_only
def test_saved_model_matches_keras_with_the_card_as_asset_and_beside(run_dir, tmp_path):
    import tensorflow as tf

    out = tmp_path / "serving" / "pneumonia" / "1"
    summary = export.export_model(run_dir / "model.keras", "saved_model", out)
    assert summary.max_abs_diff <= export.TOLERANCE
    assert summary.card == out / "model.json"
    assert {"saved_model.pb", "model.json", "assets/model.json"} <= set(_listing(out))
    assert ModelCard.from_dict(json.loads((out / "model.json").read_text())) == CARD
    loaded = tf.saved_model.load(str(out))
    asset = Path(loaded.model_card.asset_path.numpy().decode())
    assert asset == out / "assets" / "model.json"
    assert ModelCard.from_dict(json.loads(asset.read_text())) == CARD
    signature = loaded.signatures["serving_default"]
    for count in (1, 3):
        images = _batch(count)
        expected = _keras(run_dir, images)
        got = signature(image=tf.constant(images))["predictions"].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
        np.testing.assert_allclose(loaded.serve(images).numpy(), expected, atol=1e-5, rtol=0)
    assert sorted(p.name for p in out.parent.iterdir()) == ["1"]  # no staging left


@pytest.mark.backend
@tensorflow_only
def test_mixed_precision_ensemble_is_exported_in_float32(tmp_path):
    """A `cv` ensemble (nested members) saved under mixed_bfloat16: exported in float32."""
    from pneumokeras.training.cv import build_ensemble

    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_ensemble([contract_model(SIZE) for _ in range(2)], SIZE)
    finally:
        keras.config.set_dtype_policy("float32")
    path = tmp_path / "ensemble.keras"
    model.save(path)
    write_card(path, CARD)
    summary = export.export_model(tmp_path / "ensemble.keras", "onnx")
    assert summary.out == tmp_path / "ensemble.onnx"
    assert summary.card == tmp_path / "ensemble.onnx.json"
    assert summary.max_abs_diff <= export.TOLERANCE
    assert any("float32" in note and "mixed_bfloat16" in note for note in summary.notes)


# ---------------------------------------------------------------- bad input


@pytest.mark.backend
def test_unknown_format_and_missing_model_are_user_errors(run_dir):
    with pytest.raises(UserError, match="format must be one of onnx, saved_model"):
        export.export_model(run_dir, "tflite")
    with pytest.raises(UserError, match="does not exist"):
        export.export_model(run_dir / "nothing.keras", "onnx")
    assert sorted(p.name for p in run_dir.iterdir()) == ["model.json", "model.keras"]


@pytest.mark.backend
def test_outputs_that_exist_or_must_not_be_replaced(run_dir, tmp_path):
    (run_dir / "model.onnx").write_text("patient,label\np1,1\n")  # a CSV named .onnx
    with pytest.raises(UserError, match="exists; pass --force"):
        export.export_model(run_dir, "onnx")
    # --force replaces an ONNX model only, and a card beside it only.
    with pytest.raises(UserError, match=r"model.onnx is not an ONNX model; refusing to replace"):
        export.export_model(run_dir, "onnx", force=True)
    (run_dir / "model.onnx").unlink()
    (run_dir / "model.onnx.json").write_text('{"notes": "mine"}')
    with pytest.raises(UserError, match=r"model.onnx.json is not a model card; refusing"):
        export.export_model(run_dir, "onnx", force=True)
    (run_dir / "model.onnx.json").unlink()
    (run_dir / "model.onnx").write_text("patient,label\np1,1\n")
    with pytest.raises(UserError, match=r"must end in \.onnx"):
        export.export_model(run_dir, "onnx", tmp_path / "model.bin")
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(UserError, match="is a folder"):
        export.export_model(run_dir, "onnx", tmp_path / "folder.onnx", force=True)
    with pytest.raises(UserError, match="would replace the model itself"):
        export.export_model(run_dir, "saved_model", run_dir, force=True)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_text("x")
    with pytest.raises(UserError, match="not a SavedModel folder"):
        export.export_model(run_dir, "saved_model", other, force=True)
    assert (run_dir / "model.onnx").read_text() == "patient,label\np1,1\n"
    assert (other / "holiday.jpg").read_text() == "x"
    (run_dir / "model.onnx").unlink()


@pytest.mark.backend
def test_missing_check_images_are_user_errors(run_dir, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        export.export_model(run_dir, "onnx", check_images=[tmp_path / "none.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files"):
        export.export_model(run_dir, "onnx", check_images=[tmp_path / "empty"])


@pytest.mark.backend
@tensorflow_only
def test_files_that_are_not_a_model_of_the_contract(tmp_path):
    text = tmp_path / "text" / "model.keras"
    text.parent.mkdir()
    text.write_text("not a zip")
    write_card(text, CARD)
    with pytest.raises(UserError, match=r"not a valid .keras file"):
        export.export_model(text, "onnx")
    wrong = tmp_path / "wrong" / "model.keras"
    wrong.parent.mkdir()
    keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)]).save(wrong)
    write_card(wrong, CARD)
    with pytest.raises(UserError, match=r"expected \(None, S, S, 1\) to \(None, 2\)"):
        export.export_model(wrong, "saved_model")
    bare = tmp_path / "bare" / "model.keras"
    bare.parent.mkdir()
    contract_model(SIZE).save(bare)
    with pytest.raises(UserError, match="no model card"):
        export.export_model(bare, "onnx")
    for folder in ("text", "wrong", "bare"):
        assert {p.name for p in (tmp_path / folder).iterdir()} <= {"model.json", "model.keras"}


@pytest.mark.backend
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the JAX pass's path")
@pytest.mark.slow  # two TensorFlow children (≈ 15-30 s each)
def test_under_jax_the_export_runs_in_a_tensorflow_child(run_dir, tmp_path):
    """A model saved under JAX exports (and checks) in a spawned TensorFlow process;
    a bad model there is a user error here; this process stays on JAX."""
    unfitted = tmp_path / "unfitted"
    unfitted.mkdir()
    (run_dir / "model.keras").rename(unfitted / "model.keras")
    write_card(unfitted / "model.keras", ModelCard(input_size=SIZE))
    summary = export.export_model(unfitted, "onnx")
    assert summary.max_abs_diff <= export.TOLERANCE
    assert any("child process (KERAS_BACKEND=jax)" in note for note in summary.notes)
    assert any("training's defaults" in note for note in summary.notes)  # an unfitted card
    assert sorted(p.name for p in unfitted.iterdir()) == [
        "model.json",
        "model.keras",
        "model.onnx",
        "model.onnx.json",
    ]
    text = tmp_path / "text" / "model.keras"
    text.parent.mkdir()
    text.write_text("not a zip")
    write_card(text, CARD)
    with pytest.raises(UserError, match=r"not a valid .keras file"):
        export.export_model(text, "saved_model")
    assert os.environ["KERAS_BACKEND"] == "jax"
    assert keras.backend.backend() == "jax"
    assert sorted(p.name for p in text.parent.iterdir()) == ["model.json", "model.keras"]


@pytest.mark.backend
@tensorflow_only
def test_an_unreadable_check_image_writes_nothing(run_dir):
    broken = run_dir.parent / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(UserError, match=r"--check-images .*broken.png"):
        export.export_model(run_dir, "onnx", check_images=[broken])
    assert sorted(p.name for p in run_dir.iterdir()) == ["model.json", "model.keras"]


def test_an_oversized_check_image_is_one_line(run_dir, oversized_png):
    with pytest.raises(UserError) as info:
        export.export_model(run_dir, "onnx", check_images=[oversized_png])
    assert str(info.value).startswith(f"--check-images {oversized_png}: ")
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in run_dir.iterdir()) == ["model.json", "model.keras"]


@pytest.mark.backend
@tensorflow_only
@pytest.mark.parametrize("fmt", ["onnx", "saved_model"])
def test_a_failing_check_leaves_nothing_and_keeps_an_earlier_export(run_dir, monkeypatch, fmt):
    export.export_model(run_dir, fmt)
    out = export.default_out(run_dir / "model.keras", fmt)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    runner = export._onnx_runner if fmt == "onnx" else export._saved_model_runner

    def perturbed(path):
        run = runner(path)
        return lambda images: run(images) + np.float32(2e-5)

    monkeypatch.setattr(
        export, "_onnx_runner" if fmt == "onnx" else "_saved_model_runner", perturbed
    )
    limit = r"differs .* by up to 2(\.0\d*)?e-05 \(limit 1e-05\)"
    with pytest.raises(export.ExportCheckError, match=limit):
        export.export_model(run_dir, fmt, force=True)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]
    # A new output path: nothing at all, not even the folders made for it.
    target = run_dir.parent / "new" / "deeper" / ("m.onnx" if fmt == "onnx" else "sm")
    with pytest.raises(export.ExportCheckError):
        export.export_model(run_dir, fmt, target)
    assert not (run_dir.parent / "new").exists()
    assert out.exists()


@pytest.mark.backend
@tensorflow_only
def test_cli_prints_the_difference_and_maps_failures_to_exit_codes(run_dir, monkeypatch, capsys):
    png = run_dir.parent / "wide.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (20, 44), np.uint8)).save(png)
    argv = ["export", "--model", str(run_dir), "--format", "onnx", "--check-images", str(png)]
    main(argv)  # returns on success
    out = capsys.readouterr().out
    assert re.search(r"max \|ONNX - Keras\| = \S+ \(limit 1e-05\) on 6 synthetic \+ 1 given", out)
    assert "model.onnx.json" in out
    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert len(err.strip().splitlines()) == 1
    assert "--force" in err
    monkeypatch.setattr(export, "_onnx_runner", lambda path: lambda images: images[:, :2, 0, 0])
    with pytest.raises(SystemExit) as done:
        main([*argv, "--force"])
    err = capsys.readouterr().err
    assert done.value.code == 1
    assert len(err.strip().splitlines()) == 1
    assert "ExportCheckError" in err
    assert "nothing was written" in err
    with pytest.raises(SystemExit) as done:
        main(["export", "--model", str(run_dir), "--format", "tflite"])
    assert done.value.code == 2


@pytest.mark.backend
@pytest.mark.parametrize("backend", ["torch", ""])
def test_cli_refuses_unsupported_backends_before_any_work(run_dir, monkeypatch, capsys, backend):
    monkeypatch.setenv("KERAS_BACKEND", backend)
    with pytest.raises(SystemExit) as done:
        main(["export", "--model", str(run_dir), "--format", "onnx"])
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert len(err.strip().splitlines()) == 1
    assert "export" in err
    assert sorted(p.name for p in run_dir.iterdir()) == ["model.json", "model.keras"]


# ---------------------------------------------------------------- examples/onnx_app.py


def _dataset(pixels: np.ndarray, photometric: str = "MONOCHROME2", **tags) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "CR"
    ds.set_pixel_data(pixels, photometric, pixels.dtype.itemsize * 8)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def _jpeg_dataset(pixels: np.ndarray, photometric: str) -> Dataset:
    ds = _dataset(np.zeros((2, 2), np.uint8), photometric)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    return ds


@pytest.fixture(scope="module")
def app_inputs(tmp_path_factory) -> list[Path]:
    """DICOMs through every rule of dicom.py, and PNG/JPEG files of each kind."""
    root = tmp_path_factory.mktemp("app_inputs")
    generate(root / "synth", patients=2, size=128, seed=4, workers=0, progress=False)
    rng = np.random.default_rng(5)
    wide16 = rng.integers(0, 4096, (60, 90), dtype=np.uint16)
    lut = Dataset()
    lut.add_new("LUTDescriptor", "US", [256, 0, 16])
    lut.add_new("LUTData", "US", [int(v) for v in np.linspace(10, 900, 256)])
    datasets = {
        "window_mono1.dcm": _dataset(
            wide16,
            "MONOCHROME1",
            RescaleSlope=2,
            RescaleIntercept=-100,
            WindowCenter=3000,
            WindowWidth=4000,
        ),
        "signed_minmax.dcm": _dataset(rng.integers(-500, 900, (70, 50), dtype=np.int16)),
        "voi_lut.dcm": _dataset(
            rng.integers(0, 256, (40, 40), dtype=np.uint8), VOILUTSequence=Sequence([lut])
        ),
        "plain8.dcm": _dataset(rng.integers(0, 256, (64, 80), dtype=np.uint8)),
        "jpeg_mono1_tall.dcm": _jpeg_dataset(
            rng.integers(0, 256, (256, 192), np.uint8), "MONOCHROME1"
        ),
    }
    paths = sorted((root / "synth" / IMAGES_DIR).glob("*.dcm"))
    for name, ds in datasets.items():
        ds.save_as(root / name, enforce_file_format=True)
        paths.append(root / name)
    # A gray picture saved as RGB (predict refuses real colour: images.read_gray).
    gray = rng.integers(0, 256, (40, 70, 1), dtype=np.uint8)
    Image.fromarray(np.repeat(gray, 3, axis=2)).save(root / "rgb.png")
    Image.fromarray(rng.integers(0, 4096, (48, 48), dtype=np.uint16)).save(root / "deep.png")
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(root / "photo.jpg")
    return [*paths, root / "rgb.png", root / "deep.png", root / "photo.jpg"]


def test_onnx_app_prepares_the_pixels_predict_reads(app_inputs):
    app = _app()
    for path in app_inputs:
        for size in (SIZE, 64):
            expected = read_image(path, size).pixels
            np.testing.assert_array_equal(app.prepare(str(path), size), expected, err_msg=path.name)
    assert pydicom.dcmread(app_inputs[0]).file_meta.TransferSyntaxUID == JPEGBaseline8Bit


@pytest.mark.backend
@tensorflow_only
def test_onnx_app_agrees_with_predict_without_keras(run_dir, app_inputs):
    from pneumokeras.serving.predict import predict_files

    export.export_model(run_dir, "onnx")
    files = [app_inputs[0], app_inputs[-3]]  # a synthetic (JPEG Baseline) DICOM and a PNG
    expected = predict_files(run_dir, [str(f) for f in files])
    assert read_card(run_dir).temperature == 1.6
    code = (
        "import runpy, sys; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    guard = (
        "import atexit, os, sys\n"
        "def check():\n"
        "    found = [m for m in sys.modules if m.split('.')[0] in "
        "('pneumokeras', 'keras', 'tensorflow', 'jax')]\n"
        "    if found:\n"
        "        print('IMPORTED', found[:5], flush=True); os._exit(3)\n"
        "atexit.register(check)\n"
    )
    command = [
        sys.executable,
        "-c",
        guard + code.replace("; ", "\n"),
        str(REPO / "examples" / "onnx_app.py"),
        str(run_dir / "model.onnx"),
        *map(str, files),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, row in zip(lines, expected, strict=True):
        match = re.fullmatch(r"(.+): probability (\S+) label (\S+)", line)
        assert match
        assert match.group(1) == row["path"]
        assert float(match.group(2)) == pytest.approx(row["probability"], abs=1e-5)
        assert match.group(3) == row["class"]
