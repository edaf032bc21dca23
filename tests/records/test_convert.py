import csv
import dataclasses
import filecmp
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from factories import convert_synth, oversized_png
from layout_fixtures import add_odd_files, write_chexpert, write_kermany, write_nih
from PIL import Image
from pydicom.data import get_testdata_file

from pneumokeras.errors import UserError
from pneumokeras.io.dicom import resize_square
from pneumokeras.io.images import read_image
from pneumokeras.records import spool, tfrecords
from pneumokeras.records.convert import STATE_DIR, ConvertOptions, convert, encode_png
from pneumokeras.records.manifest import load_manifest
from pneumokeras.sources.layouts import LayoutOptions, list_images, mixed_order

ROOT = Path(__file__).resolve().parents[2]


def _run_convert(synth_dir, out, **options):
    return convert_synth(synth_dir, out, **{"size": 32, "shard_size": 16, **options})


@pytest.mark.parametrize("shape", [(32, 32), (48, 40), (1, 7)])
def test_encode_png_round_trips_through_pillow_and_tensorflow(shape):
    import io

    from PIL import Image

    from pneumokeras.utils.environment import import_tensorflow_quietly

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
    manifest = load_manifest(converted_dir).to_json()
    counts = {s: manifest["splits"][s]["count"] for s in ("train", "val", "test")}
    assert sum(counts.values()) == 80
    ids = {s: {r["patient_id"] for r in tfrecords.read_split(converted_dir, s)} for s in counts}
    assert not (ids["train"] & ids["val"])
    assert not (ids["train"] & ids["test"])
    assert not (ids["val"] & ids["test"])
    assert len(ids["train"] | ids["val"] | ids["test"]) == 80
    train = tfrecords.read_split(converted_dir, "train")
    n, pos = len(train), sum(r["label"] for r in train)
    assert manifest["class_weights"] == pytest.approx(
        {"0": n / (2 * (n - pos)), "1": n / (2 * pos)}
    )
    assert set(manifest["folds"]) == ids["train"] | ids["val"]
    assert manifest["image_size"] == 64
    assert manifest["skipped"] == 0
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
                        / load_manifest(converted_dir).to_json()["splits"]["train"]["files"][0]
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
        ConvertOptions(images, tmp_path / "out", labels, size=32, workers=0, shard_size=16),
        progress=False,
    )
    assert sum(summary.counts.values()) == 80 - 4
    with open(tmp_path / "out" / "skipped.csv") as handle:
        skipped = {row["patientId"]: row["reason"] for row in csv.DictReader(handle)}
    assert "truncated" in skipped[good[0].stem]
    assert "colour" in skipped[good[1].stem]
    assert "multi-frame" in skipped[good[2].stem] or "colour" in skipped[good[2].stem]
    assert "not a DICOM" in skipped[good[3].stem]
    assert "not a DICOM" in skipped["notes.txt"]
    assert "without a label" in skipped["unlabelled-patient"]
    assert summary.skipped == len(skipped) == 6


def test_label_rows_without_dicom_are_listed(synth_dir, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(synth_dir / "stage_2_train_images", images)
    missing = sorted(images.glob("*.dcm"))[5]
    missing.unlink()
    _run_convert(synth_dir, tmp_path / "out", images=images)
    text = (tmp_path / "out" / "skipped.csv").read_text()
    assert f"{missing.stem},,label row without a DICOM file" in text


def test_unusable_inputs(synth_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no DICOM files"):
        _run_convert(synth_dir, tmp_path / "o", images=tmp_path / "empty")
    with pytest.raises(UserError, match="cannot read"):
        _run_convert(synth_dir, tmp_path / "o", labels=tmp_path / "missing.csv")
    with pytest.raises(UserError, match="not a folder"):
        _run_convert(synth_dir, tmp_path / "o", images=tmp_path / "nope")


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
# A conversion in a fresh process that SIGKILLs itself at a known step (`on_step`).
KILLED_CONVERSION = """
import json, os, signal, sys
from pneumokeras.records.convert import ConvertOptions, convert
from pneumokeras.sources.listing import LayoutOptions

fields, phase, at = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
fields["layout"] = LayoutOptions(**fields["layout"])


def kill_at(step, done):
    if (step, done) == (phase, at):
        os.kill(os.getpid(), signal.SIGKILL)


convert(ConvertOptions(**fields), progress=False, on_step=kill_at)
"""


def _killed_conversion(options, phase, at):
    """Runs `convert(options)` in a child that kills itself after `at` steps of `phase`."""
    fields = {
        name: str(value) if isinstance(value, Path) else value
        for name, value in dataclasses.asdict(options).items()
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", KILLED_CONVERSION, json.dumps(fields), phase, str(at)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _kill_test_options(synth_dir, out):
    return ConvertOptions(
        images=synth_dir / "stage_2_train_images",
        out=out,
        labels=synth_dir / "stage_2_train_labels.csv",
        class_info=synth_dir / "stage_2_detailed_class_info.csv",
        size=32,
        workers=0,
        shard_size=KILL_SHARD_SIZE,
    )


@pytest.fixture(scope="module")
def uninterrupted(synth_dir, tmp_path_factory):
    """The kill/resume tests' reference: the same conversion, never interrupted."""
    out = tmp_path_factory.mktemp("uninterrupted")
    convert(_kill_test_options(synth_dir, out), progress=False)
    return out


@pytest.mark.parametrize("phase", ["encode", "write"])
def test_kill_and_resume_is_byte_identical(synth_dir, uninterrupted, tmp_path, phase):
    """SIGKILL at a known point of the encode or write pass; rerun; same bytes.

    The child kills itself after 10 images indexed, or after 10 examples handed
    to the shard writer (inside the third shard of 4).
    """
    out = tmp_path / "killed"
    index = out / STATE_DIR / "spool.jsonl"

    killed = _killed_conversion(_kill_test_options(synth_dir, out), phase, 10)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
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
    summary = convert(_kill_test_options(synth_dir, out), progress=False)
    assert summary.resumed_shards == (0 if phase == "encode" else len(shards))
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    _assert_identical(uninterrupted, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(manifest["splits"][s]["count"] for s in ("train", "val", "test")) == 80


def test_torn_spool_tail_is_dropped_on_resume(tmp_path):
    """A kill mid-line, or before a PNG is wholly on disk, loses only the images after it."""
    candidates = [f"p{i}" for i in range(6)]
    entries, offset, spooled = [], 0, b""
    for i, patient in enumerate(candidates[:4]):
        if i == 2:  # a skipped file has no bytes in the spool
            entries.append(spool.Encoded.skipped(patient, "colour image"))
            continue
        png = bytes([i]) * (10 + i)
        entries.append(
            spool.Encoded(patient, "PA", 64, 64, False, "spool-1.bin", offset, len(png), "")
        )
        spooled, offset = spooled + png, offset + len(png)
    lines = [e.to_line() for e in entries]
    # The fourth PNG is only partly on disk; a fifth line was cut in half.
    (tmp_path / "spool-1.bin").write_bytes(spooled[:-3])
    (tmp_path / "spool.jsonl").write_text("".join(lines) + lines[0][:9])

    assert spool.load_spool_index(tmp_path, candidates) == entries[:3]
    assert (tmp_path / "spool.jsonl").read_text() == "".join(lines[:3])
    # A line pointing at a spool file that is gone ends the usable prefix too.
    (tmp_path / "spool-1.bin").unlink()
    assert spool.load_spool_index(tmp_path, candidates) == []
    # An index from another file list is not trusted at all.
    (tmp_path / "spool.jsonl").write_text("".join(lines))
    assert spool.load_spool_index(tmp_path, ["other", *candidates]) == []


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
    assert len(err) == 1
    assert err[0].startswith("error:")


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
    assert len(err) == 1, err
    assert "--seed" in err[0], err
    assert seed in err[0], err
    assert not out.exists()


def test_real_rsna_dicom_converts(shared_file, tmp_path):
    dicom = shared_file("rsna_sample.dcm")
    images = tmp_path / "images"
    images.mkdir()
    ds = pydicom.dcmread(dicom, stop_before_pixels=True)
    shutil.copy(dicom, images / f"{ds.PatientID}.dcm")
    shutil.copy(dicom, images / "negative-copy.dcm")  # both classes: convert needs them
    labels = tmp_path / "labels.csv"
    labels.write_text(
        f"patientId,x,y,width,height,Target\n{ds.PatientID},100,200,300,400,1\n"
        "negative-copy,,,,,0\n"
    )
    summary = convert(
        ConvertOptions(
            images, tmp_path / "out", labels, size=256, val_fraction=0, test_fraction=0, workers=0
        ),
        progress=False,
    )
    assert summary.counts["train"] == 2
    records = {r["patient_id"]: r for r in tfrecords.read_split(tmp_path / "out", "train")}
    record = records[ds.PatientID]
    np.testing.assert_allclose(record["boxes"], [[100 / 1024, 200 / 1024, 300 / 1024, 400 / 1024]])
    assert record["view"] == "PA"
    assert load_manifest(tmp_path / "out").patient_id_tag_mismatches == 1  # the copy


# ------------------------------------------------------------------ other layouts (issue #15)


def _convert_layout(images, labels, out, layout, **options):
    if isinstance(layout, str):
        layout = LayoutOptions(layout)
    fields = {"size": 32, "workers": 0, "shard_size": 8, **options}
    return convert(ConvertOptions(images, out, labels, layout=layout, **fields), progress=False)


def _csv_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _all_records(out):
    return {
        split: {r["patient_id"]: r for r in tfrecords.read_split(out, split)}
        for split in ("train", "val", "test")
    }


def _png_pixels(png):
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.array(image)


@pytest.fixture(scope="module")
def kermany(tmp_path_factory):
    """A Kermany-like tree (36 images) plus odd files in train/ (see layout_fixtures)."""
    root = tmp_path_factory.mktemp("chest_xray")
    return root, {**write_kermany(root), **add_odd_files(root)}


@pytest.fixture(scope="module")
def kermany_converted(kermany, tmp_path_factory):
    root, _ = kermany
    out = tmp_path_factory.mktemp("kermany_out")
    summary = _convert_layout(
        root, None, out, "folders", folds=2, val_fraction=0.2, test_fraction=0.2
    )
    return out, summary


def test_folders_layout_records_manifest_skips_and_notes(kermany, kermany_converted):
    root, paths = kermany
    out, summary = kermany_converted
    assert sum(summary.counts.values()) == 38  # 36 + the 16-bit PNG + the gray RGB JPEG
    assert (summary.skipped, summary.notes) == (3, 1)
    skipped = {row["file"]: row["reason"] for row in _csv_rows(out / "skipped.csv")}
    assert skipped["train/NORMAL/IM-9001-0001.png"].startswith("colour image (RGB channels")
    assert skipped["train/NORMAL/IM-9002-0001.jpeg"].startswith("truncated or corrupt image")
    assert skipped["train/NORMAL/notes.txt"] == "not an image file (.txt)"
    (note,) = _csv_rows(out / "notes.csv")
    assert note == {
        "patientId": "train/PNEUMONIA/person1_virus_9",
        "file": "train/PNEUMONIA/person1_virus_9.jpeg",
        "note": "RGB image of a gray picture: made gray",
    }
    manifest = load_manifest(out).to_json()
    assert (manifest["source"], manifest["source_layout"]) == (root.name, "folders")
    assert manifest["label_mapping"] == {"class_folders": {"NORMAL": 0, "PNEUMONIA": 1}}
    assert manifest["grouping"]["patients"] == 19 + 9
    assert manifest["grouping"]["images"] == 38
    patient_of = {
        r["patientId"]: r["patient"] for r in _csv_rows(out / manifest["grouping"]["file"])
    }
    assert len(patient_of) == 38
    assert len(set(patient_of.values())) == 28
    assert patient_of["train/PNEUMONIA/person1_virus_9"] == "person1"
    assert patient_of["val/NORMAL/IM-1001-0001"] == "val/NORMAL/IM-1001-0001"
    assert (manifest["notes"], manifest["skipped"], manifest["kept_splits"]) == (1, 3, False)

    records = _all_records(out)
    split_of_patient: dict[str, set[str]] = {}
    for split, by_id in records.items():
        for image_id, record in by_id.items():
            assert record["boxes"].shape == (0, 4)
            assert record["view"] == record["class"] == ""
            assert record["label"] == int("/PNEUMONIA/" in image_id)
            patient = image_id.split("/")[-1].split("_")[0] if "person" in image_id else image_id
            split_of_patient.setdefault(patient, set()).add(split)
    assert len(split_of_patient) == 28
    assert all(len(s) == 1 for s in split_of_patient.values())
    folds = manifest["folds"]
    assert set(folds) == set(records["train"]) | set(records["val"])
    person1 = {folds[i] for i in folds if "/person1_" in i}
    assert len(person1) == 1
    assert len([i for i in folds if "/person1_" in i]) == 3

    # Pixels: exactly what images.read_image gives (predict and the app), 16-bit included.
    flat = {i: r for by_id in records.values() for i, r in by_id.items()}
    for role in ("normal_png", "png16", "gray_rgb", "train_person"):
        image_id = paths[role].relative_to(root).with_suffix("").as_posix()
        expected = read_image(paths[role], 32).pixels
        np.testing.assert_array_equal(_png_pixels(flat[image_id]["png"]), expected)


def test_folders_keep_splits_and_a_worker_pool(kermany, kermany_converted, tmp_path):
    root, _ = kermany
    options = LayoutOptions("folders", keep_splits=True)
    summary = _convert_layout(root, None, tmp_path / "kept", options, workers=2)
    assert summary.counts == {"train": 14, "val": 12, "test": 12}
    records = _all_records(tmp_path / "kept")
    assert all(i.startswith(f"{s}/") for s, by_id in records.items() for i in by_id)
    manifest = load_manifest(tmp_path / "kept").to_json()
    assert manifest["kept_splits"] is True
    assert manifest["patients_in_several_splits"] == 0
    # The pool decodes PNG/JPEG as the parent does: same bytes as in-process.
    in_process = _convert_layout(root, None, tmp_path / "one", options, workers=0)
    assert in_process.counts == summary.counts
    _assert_identical(tmp_path / "kept", tmp_path / "one")


def test_folders_limit_takes_both_classes(kermany, tmp_path):
    root, _ = kermany
    summary = _convert_layout(
        root, None, tmp_path / "out", "folders", limit=8, val_fraction=0, test_fraction=0
    )
    assert summary.counts["train"] == 8
    assert 0 < summary.positives["train"] < 8


def test_findings_layout_nih_groups_follow_ups_by_patient(tmp_path):
    images, labels = write_nih(tmp_path / "nih", patients=24)
    out = tmp_path / "out"
    summary = _convert_layout(
        images, labels, out, "findings", folds=2, val_fraction=0.25, test_fraction=0.25
    )
    assert sum(summary.counts.values()) == 48
    assert summary.skipped == 1
    (row,) = _csv_rows(out / "skipped.csv")
    assert row == {
        "patientId": "99999999_000",
        "file": "99999999_000.png",
        "reason": "image file not found",
    }
    manifest = load_manifest(out).to_json()
    assert manifest["source_layout"] == "findings"
    assert manifest["label_mapping"]["column"] == "Finding Labels"
    assert manifest["grouping"] == {
        "rule": "patient column 'Patient ID'",
        "patients": 24,
        "images": 48,
        "file": "patients.csv",
    }
    records = _all_records(out)
    patient_splits: dict[str, set[str]] = {}
    for split, by_id in records.items():
        for image_id, record in by_id.items():
            patient_splits.setdefault(str(int(image_id.split("_")[0])), set()).add(split)
            assert record["view"] in ("AP", "PA")
            assert record["boxes"].shape == (0, 4)
    assert all(len(s) == 1 for s in patient_splits.values())
    assert len(patient_splits) == 24
    patient_folds: dict[str, set[int]] = {}
    for image_id, fold in manifest["folds"].items():
        patient_folds.setdefault(image_id.split("_")[0], set()).add(fold)
    assert all(len(f) == 1 for f in patient_folds.values())
    assert sum(summary.positives.values()) == 8


def test_findings_layout_chexpert_drops_uncertain_rows(tmp_path):
    images, labels = write_chexpert(tmp_path)
    out = tmp_path / "out"
    summary = _convert_layout(images, labels, out, "findings", val_fraction=0, test_fraction=0)
    assert (summary.counts["train"], summary.positives["train"], summary.skipped) == (10, 4, 2)
    reasons = {row["reason"] for row in _csv_rows(out / "skipped.csv")}
    assert reasons == {"uncertain label (-1) dropped (--uncertain drop)"}
    manifest = load_manifest(out).to_json()
    assert manifest["label_mapping"]["uncertain"] == "drop"
    assert manifest["grouping"]["patients"] == 6
    assert not (out / "notes.csv").exists()
    patients = {r["patient"] for r in _csv_rows(out / "patients.csv")}
    assert patients == {f"patient{i:05d}" for i in range(1, 7)}


def test_folders_kill_and_resume_is_byte_identical(kermany, tmp_path):
    """SIGKILL once the gray RGB image (a note) and the colour and corrupt files
    (skipped) are indexed, so the resumed run takes those from the spool index.
    (The write pass resumes as for RSNA, tested above.)"""
    root, _ = kermany
    options = LayoutOptions("folders", keep_splits=True)
    order = mixed_order(list(list_images(root, None, options).items))
    odd = (
        "train/PNEUMONIA/person1_virus_9",
        "train/NORMAL/IM-9001-0001",
        "train/NORMAL/IM-9002-0001",
    )
    kill_at = max(order.index(i) for i in odd) + 1
    _convert_layout(root, None, tmp_path / "whole", options, shard_size=KILL_SHARD_SIZE)
    out = tmp_path / "killed"
    killed = _killed_conversion(
        ConvertOptions(root, out, layout=options, size=32, workers=0, shard_size=KILL_SHARD_SIZE),
        "encode",
        kill_at,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "manifest.json").exists()
    index = (out / STATE_DIR / "spool.jsonl").read_text()
    assert len(index.splitlines()) == kill_at
    assert "made gray" in index
    assert "colour image" in index
    summary = _convert_layout(root, None, out, options, shard_size=KILL_SHARD_SIZE)
    assert summary.resumed_shards == 0
    assert summary.notes == 1
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    _assert_identical(tmp_path / "whole", out)


def test_real_nih_png_converts(shared_file, tmp_path):
    png = shared_file("nih_00000001_000.png")
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(png, images / "00000001_000.png")
    shutil.copy(png, images / "00000002_000.png")  # both classes: convert needs them
    labels = tmp_path / "Data_Entry_2017.csv"
    labels.write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
        "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
        "00000001_000.png,Cardiomegaly|Pneumonia,0,1,58,M,PA,2682,2749,0.143,0.143\n"
        "00000002_000.png,No Finding,0,2,58,M,PA,2682,2749,0.143,0.143\n"
    )
    out = tmp_path / "out"
    summary = _convert_layout(
        images, labels, out, "findings", size=256, val_fraction=0, test_fraction=0
    )
    assert (summary.counts["train"], summary.positives["train"], summary.skipped) == (2, 1, 0)
    records = {r["patient_id"]: r for r in tfrecords.read_split(out, "train")}
    record = records["00000001_000"]
    assert (record["label"], record["view"]) == (1, "PA")
    np.testing.assert_array_equal(_png_pixels(record["png"]), read_image(png, 256).pixels)


def _main(capsys, argv):
    from pneumokeras.cli import main

    with pytest.raises(SystemExit) as done:
        main(argv)
    return done.value.code, capsys.readouterr().err.strip().splitlines()


def test_cli_layout_errors_are_one_line(capsys, kermany, tmp_path):
    root, _ = kermany
    images, labels = write_nih(tmp_path / "nih", patients=3)
    out = str(tmp_path / "out")
    cases = {
        "'--layout'": ["--layout", "kermany", "--images", str(root)],
        "--keep-splits applies to --layout folders": ["--images", str(root), "--keep-splits"],
        "--layout rsna needs --labels": ["--images", str(root)],
        "--label-column 'Pneumonia' is not a column": [
            "--layout", "findings", "--images", str(images), "--labels", str(labels),
            "--label-column", "Pneumonia",
        ],
        "'--uncertain'": ["--layout", "findings", "--images", str(images), "--uncertain", "x"],
        "unknown class folder": ["--layout", "folders", "--images", str(tmp_path / "xray")],
    }  # fmt: skip
    (tmp_path / "xray" / "COVID").mkdir(parents=True)
    for expected, argv in cases.items():
        code, err = _main(capsys, ["convert", *argv, "--out", out])
        assert code == 2, (expected, err)
        assert len(err) == 1, (expected, err)
        assert expected in err[0], (expected, err)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ issue #24: odd inputs


def _tiny_picture(seed: int, height: int = 24, width: int = 36) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(40, 200, (height, width), dtype=np.uint8)
    pixels[:4, :6] = 255  # a corner no turn maps onto itself
    return pixels


@pytest.fixture(scope="module")
def odd_folders(dicoms, tmp_path_factory):
    """A two-class folder set with one good image of each kind and every odd file."""
    root = tmp_path_factory.mktemp("odd_folders")
    normal, pneumonia = root / "NORMAL", root / "PNEUMONIA"
    (normal / ".thumbs").mkdir(parents=True)
    pneumonia.mkdir()
    for i in range(3):
        Image.fromarray(_tiny_picture(i)).save(normal / f"IM-{i}.png")
        Image.fromarray(_tiny_picture(10 + i)).save(pneumonia / f"person{i}_virus_1.jpeg")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_tiny_picture(20)).save(normal / "phone.jpg", quality=95, exif=exif)
    Image.fromarray(_tiny_picture(21)).save(normal / "Ünïcødé-ß.png")
    (pneumonia / "1.2.840.113619.2.55.3").write_bytes(dicoms[0].read_bytes())
    oversized_png(pneumonia / "huge.png")
    Image.fromarray(_tiny_picture(22)).save(pneumonia / "scan.png", format="TIFF")
    Image.fromarray(_tiny_picture(23)).save(pneumonia / "scan.tif")
    Image.fromarray(_tiny_picture(24)).save(normal / ".hidden.png")
    Image.fromarray(_tiny_picture(25)).save(normal / ".thumbs" / "t.png")
    os.symlink(normal / "moved.png", normal / "gone.png")
    (normal / "empty.png").write_bytes(b"")
    return root


def test_folders_read_by_content_and_every_odd_file_gets_its_row(odd_folders, tmp_path):
    out = tmp_path / "out"
    summary = _convert_layout(
        odd_folders, None, out, "folders", val_fraction=0, test_fraction=0, size=16
    )
    skipped = {row["file"]: row["reason"] for row in _csv_rows(out / "skipped.csv")}
    moved = odd_folders / "NORMAL" / "moved.png"
    assert skipped == {
        "NORMAL/empty.png": "empty file (0 bytes)",
        "NORMAL/gone.png": f"broken symbolic link (its target {moved} does not exist)",
        "PNEUMONIA/huge.png": "image too large to decode (196,000,000 pixels, over Pillow's "
        "limit of 178,956,970)",
        "PNEUMONIA/scan.png": "unsupported format TIFF (DICOM, PNG and JPEG are read)",
        "PNEUMONIA/scan.tif": "unsupported format TIFF (DICOM, PNG and JPEG are read)",
    }
    assert summary.counts["train"] == 3 + 3 + 3  # + the EXIF JPEG, the unicode name, the DICOM
    notes = {row["file"]: row["note"] for row in _csv_rows(out / "notes.csv")}
    assert notes == {"NORMAL/phone.jpg": "EXIF orientation 6 applied (turned 90° clockwise)"}
    records = {r["patient_id"]: r for r in tfrecords.read_split(out, "train")}
    assert "PNEUMONIA/1.2.840.113619.2.55.3" in records  # no suffix: read as the DICOM it is
    assert "NORMAL/Ünïcødé-ß" in records
    upright = np.rot90(np.asarray(Image.open(odd_folders / "NORMAL" / "phone.jpg")), -1)
    stored = _png_pixels(records["NORMAL/phone"]["png"])
    np.testing.assert_array_equal(stored, resize_square(np.ascontiguousarray(upright), 16))


def test_rsna_takes_dicoms_without_suffix_and_reports_dangling_links(synth_dir, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(synth_dir / "stage_2_train_images", images)
    files = sorted(images.glob("*.dcm"))
    files[0].rename(images / files[0].stem)  # a PACS export: no suffix
    files[1].rename(images / f"{files[1].stem}.DCM")
    files[2].unlink()
    os.symlink(tmp_path / "elsewhere.dcm", images / f"{files[2].stem}.dcm")
    (images / ".DS_Store").write_bytes(b"\0")
    summary = _run_convert(synth_dir, tmp_path / "out", images=images)
    assert sum(summary.counts.values()) == 80 - 1
    rows = _csv_rows(tmp_path / "out" / "skipped.csv")
    assert rows == [
        {
            "patientId": files[2].stem,
            "file": f"{files[2].stem}.dcm",
            "reason": f"broken symbolic link (its target {tmp_path / 'elsewhere.dcm'} does not "
            "exist)",
        }
    ]
    converted = {i for by_id in _all_records(tmp_path / "out").values() for i in by_id}
    assert {files[0].stem, files[1].stem} <= converted


def test_keep_splits_warns_of_patients_in_several_splits(kermany, tmp_path, capsys):
    root = tmp_path / "chest_xray"
    shutil.copytree(kermany[0], root)
    # person1 (train) also has an image in test: as in the real Kermany set.
    shutil.copy(root / "train/PNEUMONIA/person1_virus_2.jpeg", root / "test/PNEUMONIA")
    options = LayoutOptions("folders", keep_splits=True)
    summary = _convert_layout(root, None, tmp_path / "out", options)
    (warning,) = summary.warnings
    assert warning.startswith("1 patient(s) have images in more than one of the data set's own")
    assert load_manifest(tmp_path / "out").patients_in_several_splits == 1
    argv = ["convert", "--layout", "folders", "--keep-splits", "--images", str(root)]
    argv += ["--size", "32", "--workers", "0", "--out", str(tmp_path / "cli")]
    from pneumokeras.cli import main

    capsys.readouterr()
    main(argv)  # returns: exit 0
    err = capsys.readouterr().err.splitlines()  # progress bars, then the warning
    assert [line for line in err if "warning" in line] == [f"warning: {warning}"]


def test_one_class_inputs_are_refused_and_a_one_class_training_split_warned(synth_dir, tmp_path):
    labels = tmp_path / "negative.csv"
    with open(synth_dir / "stage_2_train_labels.csv") as handle:
        negative = [line for line in handle if not line.rstrip().endswith(",1")]
    labels.write_text("".join(negative))
    with pytest.raises(UserError, match=r"has Target 0; a classifier needs both classes"):
        _run_convert(synth_dir, tmp_path / "o", labels=labels)
    assert not (tmp_path / "o").exists()
    # Both classes in the data set, one in its own training split: converted, with a warning.
    root = tmp_path / "kept"
    both = ["NORMAL", "PNEUMONIA"]
    for split, classes in {"train": ["NORMAL"], "val": both, "test": both}.items():
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(_tiny_picture(i)).save(root / split / name / f"{name}-{i}.png")
    options = LayoutOptions("folders", keep_splits=True)
    summary = _convert_layout(root, None, tmp_path / "out", options)
    assert summary.warnings == (
        "the training split holds one class only (0 positive of 2): train needs both; convert "
        "more examples or lower --val/--test",
    )


def test_output_folders_that_would_lose_files_are_refused(kermany, tmp_path):
    root, _ = kermany
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.tfrecord").write_bytes(b"someone else's shard")
    (tmp_path / "a_file").write_text("x")
    labels_dir = tmp_path / "nih"
    images, labels = write_nih(labels_dir, patients=3)
    named_like_output = labels.rename(labels_dir / "skipped.csv")
    cases = {
        "is a folder inside --images": (root, root / "converted", None, "folders"),
        "is --images": (root / "train" / "NORMAL", root / "train" / "NORMAL", None, "rsna"),
        "holds 1 .tfrecord file(s) (mine.tfrecord, ...)": (root, foreign, None, "folders"),
        "is a file, not a folder": (root, tmp_path / "a_file", None, "folders"),
        "would be replaced by the skipped.csv convert writes": (
            images / "images_001",
            labels_dir,
            named_like_output,
            "findings",
        ),
    }
    for expected, (images_dir, out, labels_csv, layout) in cases.items():
        with pytest.raises(UserError, match=re.escape(expected)):
            _convert_layout(images_dir, labels_csv, out, layout)
    assert not (root / "converted").exists()
    assert sorted(p.name for p in foreign.iterdir()) == ["mine.tfrecord"]
    assert not (labels_dir / "manifest.json").exists()
