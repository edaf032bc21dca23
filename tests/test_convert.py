import csv
import filecmp
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from pneumokeras import tfrecords
from pneumokeras.convert import KILL_HOOK, STATE_DIR, convert, encode_png
from pneumokeras.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _run_convert(synth_dir, out, **kwargs):
    args = dict(
        images_dir=synth_dir / "stage_2_train_images",
        labels_csv=synth_dir / "stage_2_train_labels.csv",
        out_dir=out,
        class_info_csv=synth_dir / "stage_2_detailed_class_info.csv",
        size=32,
        workers=0,
        shard_size=16,
        progress=False,
    )
    args.update(kwargs)
    return convert(**args)


@pytest.mark.parametrize("shape", [(32, 32), (48, 40), (1, 7)])
def test_encode_png_round_trips_through_pillow_and_tensorflow(shape):
    import io

    from PIL import Image

    from pneumokeras.environment import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf

    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    pixels[: shape[0] // 2] //= 4  # smooth and noisy rows: every row filter differs
    png = encode_png(pixels)
    with Image.open(io.BytesIO(png)) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "L", shape[::-1])
        np.testing.assert_array_equal(np.array(image), pixels)
    np.testing.assert_array_equal(tf.io.decode_png(png, channels=1).numpy()[..., 0], pixels)
    assert encode_png(pixels.copy()) == png  # deterministic: resumed runs are byte-identical
    # A non-contiguous view encodes the same pixels.
    assert encode_png(np.asfortranarray(pixels)) == png


@pytest.mark.parametrize(
    "pixels", [np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint16), np.zeros(4, np.uint8)]
)
def test_encode_png_refuses_what_is_not_a_grayscale_byte_image(pixels):
    with pytest.raises(ValueError, match="2-D uint8"):
        encode_png(pixels)


def _tree(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def _assert_identical(a, b):
    assert _tree(a) == _tree(b)
    for name in _tree(a):
        assert filecmp.cmp(Path(a) / name, Path(b) / name, shallow=False), name


def test_manifest_splits_patients_and_class_weights(converted_dir, synth_dir):
    manifest = tfrecords.load_manifest(converted_dir)
    counts = {s: manifest["splits"][s]["count"] for s in ("train", "val", "test")}
    assert sum(counts.values()) == 80
    ids = {s: {r["patient_id"] for r in tfrecords.read_split(converted_dir, s)} for s in counts}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert len(ids["train"] | ids["val"] | ids["test"]) == 80
    train = tfrecords.read_split(converted_dir, "train")
    n, pos = len(train), sum(r["label"] for r in train)
    assert manifest["class_weights"] == pytest.approx(
        {"0": n / (2 * (n - pos)), "1": n / (2 * pos)}
    )
    assert set(manifest["folds"]) == ids["train"] | ids["val"]
    assert manifest["image_size"] == 64 and manifest["skipped"] == 0
    assert not (converted_dir / STATE_DIR).exists()


def test_records_carry_boxes_view_class_and_no_other_phi(converted_dir, synth_dir):
    labels = {}
    with open(synth_dir / "stage_2_train_labels.csv") as handle:
        for row in csv.DictReader(handle):
            labels.setdefault(row["patientId"], []).append(row)
    for record in tfrecords.read_split(converted_dir, "train"):
        rows = labels[record["patient_id"]]
        assert record["label"] == int(rows[0]["Target"])
        assert record["view"] in ("AP", "PA")
        if record["label"]:
            assert record["class"] == "Lung Opacity"
            expected = np.array(
                [[float(r[k]) / 128 for k in ("x", "y", "width", "height")] for r in rows]
            )
            np.testing.assert_allclose(record["boxes"], expected, rtol=1e-5)
        else:
            assert record["boxes"].shape == (0, 4)
    example = next(
        iter(
            __import__("tensorflow").data.TFRecordDataset(
                [
                    str(
                        converted_dir
                        / tfrecords.load_manifest(converted_dir)["splits"]["train"]["files"][0]
                    )
                ]
            )
        )
    )
    import tensorflow as tf

    keys = set(tf.train.Example.FromString(example.numpy()).features.feature)
    assert keys == set(tfrecords.FEATURES)


def test_deterministic_and_independent_of_workers(synth_dir, tmp_path):
    _run_convert(synth_dir, tmp_path / "a", limit=40)
    _run_convert(synth_dir, tmp_path / "b", limit=40, workers=2)
    _assert_identical(tmp_path / "a", tmp_path / "b")


def test_mixed_folder_skips_bad_files_with_reasons(synth_dir, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(synth_dir / "stage_2_train_images", images)
    good = sorted(images.glob("*.dcm"))
    labels = tmp_path / "labels.csv"
    shutil.copy(synth_dir / "stage_2_train_labels.csv", labels)
    # Replace four patients' files with bad ones; they keep their label rows.
    bad = {
        good[0].stem: ("truncated", good[0].read_bytes()[: len(good[0].read_bytes()) // 2]),
        good[1].stem: ("colour", Path(get_testdata_file("ExplVR_BigEnd.dcm")).read_bytes()),
        good[2].stem: (
            "multi-frame",
            Path(get_testdata_file("SC_rgb_rle_2frame.dcm")).read_bytes(),
        ),
        good[3].stem: ("not DICOM", b"this is a text file\n"),
    }
    for stem, (_, data) in bad.items():
        (images / f"{stem}.dcm").write_bytes(data)
    (images / "notes.txt").write_text("not an image")
    shutil.copy(good[4], images / "unlabelled-patient.dcm")
    summary = convert(
        images, labels, tmp_path / "out", size=32, workers=0, progress=False, shard_size=16
    )
    assert sum(summary.counts.values()) == 80 - 4
    with open(tmp_path / "out" / "skipped.csv") as handle:
        skipped = {row["patientId"]: row["reason"] for row in csv.DictReader(handle)}
    assert "truncated" in skipped[good[0].stem]
    assert "colour" in skipped[good[1].stem]
    assert "multi-frame" in skipped[good[2].stem] or "colour" in skipped[good[2].stem]
    assert "not a DICOM" in skipped[good[3].stem]
    assert "not a DICOM" in skipped["notes"]
    assert "without a label" in skipped["unlabelled-patient"]
    assert summary.skipped == len(skipped) == 6


def test_label_rows_without_dicom_are_listed(synth_dir, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(synth_dir / "stage_2_train_images", images)
    missing = sorted(images.glob("*.dcm"))[5]
    missing.unlink()
    _run_convert(synth_dir, tmp_path / "out", images_dir=images)
    text = (tmp_path / "out" / "skipped.csv").read_text()
    assert f"{missing.stem},,label row without a DICOM file" in text


def test_unusable_inputs(synth_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no DICOM files"):
        _run_convert(synth_dir, tmp_path / "o", images_dir=tmp_path / "empty")
    with pytest.raises(UserError, match="cannot read"):
        _run_convert(synth_dir, tmp_path / "o", labels_csv=tmp_path / "missing.csv")
    with pytest.raises(UserError, match="not a folder"):
        _run_convert(synth_dir, tmp_path / "o", images_dir=tmp_path / "nope")


def _cli(*args, env=None, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _lines(path):
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


KILL_SHARD_SIZE = 4


def _convert_for_kill_tests(synth_dir, out):
    """What `cli.py convert` runs for the kill tests' arguments (it finds the class file)."""
    return convert(
        synth_dir / "stage_2_train_images",
        synth_dir / "stage_2_train_labels.csv",
        out,
        class_info_csv=synth_dir / "stage_2_detailed_class_info.csv",
        size=32,
        workers=0,
        shard_size=KILL_SHARD_SIZE,
        progress=False,
    )


@pytest.fixture(scope="module")
def uninterrupted(synth_dir, tmp_path_factory):
    """The kill/resume tests' reference: the same conversion, never interrupted."""
    out = tmp_path_factory.mktemp("uninterrupted")
    _convert_for_kill_tests(synth_dir, out)
    return out


@pytest.mark.parametrize("phase", ["encode", "write"])
def test_kill_and_resume_is_byte_identical(synth_dir, uninterrupted, tmp_path, phase):
    """SIGKILL at a known point of the encode or write pass; rerun; same bytes.

    The test hook makes the CLI process kill itself after 10 images indexed, or
    after 10 examples handed to the shard writer (inside the third shard of 4).
    """
    args = [
        "convert",
        "--images",
        str(synth_dir / "stage_2_train_images"),
        "--labels",
        str(synth_dir / "stage_2_train_labels.csv"),
        "--size",
        "32",
        "--workers",
        "0",
        "--shard-size",
        str(KILL_SHARD_SIZE),
        "--out",
        str(tmp_path / "killed"),
    ]
    out = tmp_path / "killed"
    index = out / STATE_DIR / "spool.jsonl"

    killed = _cli(*args, env={KILL_HOOK: f"{phase}:10"})
    _, stderr = killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL, stderr
    assert not (out / "manifest.json").exists()
    shards = list(out.glob("*.tfrecord"))
    if phase == "encode":
        assert _lines(index) == 10
        assert not shards
    else:
        assert _lines(index) == 80
        assert len(shards) == 10 // KILL_SHARD_SIZE
        assert len(list(out.glob(".*.tfrecord.tmp-*"))) == 1  # the shard being written

    # The rerun runs in this process (it needs no kill), sparing a TensorFlow start.
    summary = _convert_for_kill_tests(synth_dir, out)
    assert summary.resumed_shards == (0 if phase == "encode" else len(shards))
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    _assert_identical(uninterrupted, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(manifest["splits"][s]["count"] for s in ("train", "val", "test")) == 80


def test_torn_spool_tail_is_dropped_on_resume(tmp_path):
    """A kill mid-line, or before a PNG is wholly on disk, loses only the images after it."""
    from pneumokeras.convert import _Encoded, _load_spool_index

    candidates = [f"p{i}" for i in range(6)]
    entries, offset, spool = [], 0, b""
    for i, patient in enumerate(candidates[:4]):
        if i == 2:  # a skipped file has no bytes in the spool
            entries.append(_Encoded(patient, "", 0, 0, False, "", -1, 0, "colour image"))
            continue
        png = bytes([i]) * (10 + i)
        entries.append(_Encoded(patient, "PA", 64, 64, False, "spool-1.bin", offset, len(png), ""))
        spool, offset = spool + png, offset + len(png)
    lines = [e.to_line() for e in entries]
    # The fourth PNG is only partly on disk; a fifth line was cut in half.
    (tmp_path / "spool-1.bin").write_bytes(spool[:-3])
    (tmp_path / "spool.jsonl").write_text("".join(lines) + lines[0][:9])

    assert _load_spool_index(tmp_path, candidates) == entries[:3]
    assert (tmp_path / "spool.jsonl").read_text() == "".join(lines[:3])
    # A line pointing at a spool file that is gone ends the usable prefix too.
    (tmp_path / "spool-1.bin").unlink()
    assert _load_spool_index(tmp_path, candidates) == []
    # An index from another file list is not trusted at all.
    (tmp_path / "spool.jsonl").write_text("".join(lines))
    assert _load_spool_index(tmp_path, ["other", *candidates]) == []


def test_cli_errors_are_one_line(tmp_path):
    process = _cli(
        "convert",
        "--images",
        str(tmp_path),
        "--labels",
        str(tmp_path / "x.csv"),
        "--out",
        str(tmp_path / "o"),
    )
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    err = stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_seed_outside_32_bits_is_refused_before_any_work(synth_dir, tmp_path, seed):
    out = tmp_path / "o"
    process = _cli(
        "convert",
        "--images",
        str(synth_dir / "stage_2_train_images"),
        "--labels",
        str(synth_dir / "stage_2_train_labels.csv"),
        "--out",
        str(out),
        "--seed",
        seed,
    )
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr
    err = stderr.strip().splitlines()
    assert len(err) == 1 and "--seed" in err[0] and seed in err[0], err
    assert not out.exists()


def test_real_rsna_dicom_converts(shared_file, tmp_path):
    dicom = shared_file("rsna_sample.dcm")
    images = tmp_path / "images"
    images.mkdir()
    ds = pydicom.dcmread(dicom, stop_before_pixels=True)
    shutil.copy(dicom, images / f"{ds.PatientID}.dcm")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"patientId,x,y,width,height,Target\n{ds.PatientID},100,200,300,400,1\n")
    summary = convert(
        images,
        labels,
        tmp_path / "out",
        size=256,
        val_fraction=0,
        test_fraction=0,
        workers=0,
        progress=False,
    )
    assert summary.counts["train"] == 1
    (record,) = tfrecords.read_split(tmp_path / "out", "train")
    np.testing.assert_allclose(record["boxes"], [[100 / 1024, 200 / 1024, 300 / 1024, 400 / 1024]])
    assert record["view"] == "PA"
