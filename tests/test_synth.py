"""Tests of the synthetic RSNA-shaped data set (pneumokeras/synth.py)."""

from __future__ import annotations

import csv
import dataclasses
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pneumokeras import synth
from pneumokeras.errors import UserError

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZE = 96


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "rsna"
    summary = synth.generate(
        out, patients=40, size=SIZE, positive_fraction=0.5, seed=3, workers=0, progress=False
    )
    assert summary.out_dir == out
    assert summary.size == SIZE
    assert (summary.patients, summary.positives) == (40, 20)
    return out


def test_same_seed_gives_identical_files(dataset: Path, tmp_path: Path) -> None:
    synth.generate(
        tmp_path, patients=40, size=SIZE, positive_fraction=0.5, seed=3, workers=0, progress=False
    )
    first, second = _files(dataset), _files(tmp_path)
    assert len(first) == 42
    assert first == second


def test_workers_do_not_change_the_bytes(tmp_path: Path) -> None:
    kwargs = dict(patients=10, size=64, positive_fraction=0.4, seed=11, progress=False)
    synth.generate(tmp_path / "serial", workers=0, **kwargs)
    synth.generate(tmp_path / "pool", workers=2, **kwargs)
    assert _files(tmp_path / "serial") == _files(tmp_path / "pool")


def test_another_seed_gives_another_data_set(dataset: Path, tmp_path: Path) -> None:
    synth.generate(
        tmp_path, patients=40, size=SIZE, positive_fraction=0.5, seed=4, workers=0, progress=False
    )
    first, second = _files(dataset), _files(tmp_path)
    assert first[synth.LABELS_CSV] != second[synth.LABELS_CSV]
    csvs = {synth.LABELS_CSV, synth.CLASS_INFO_CSV}
    assert not (set(first) - csvs) & (set(second) - csvs)  # no patientId in common


def test_labels_follow_rsna_conventions(dataset: Path) -> None:
    real = REAL_DATA / "stage_2_train_labels.csv"
    if not real.exists():
        pytest.skip(f"real RSNA labels not found at {real}")
    with open(real, newline="", encoding="utf-8") as handle:
        real_header = next(csv.reader(handle))
    with open(dataset / synth.LABELS_CSV, newline="", encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == real_header

    rows = _read_csv(dataset / synth.LABELS_CSV)
    by_patient: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_patient[row["patientId"]].append(row)
    # A patient's rows are adjacent, as in the real file.
    runs = [
        pid
        for k, pid in enumerate(r["patientId"] for r in rows)
        if k == 0 or rows[k - 1]["patientId"] != pid
    ]
    assert len(runs) == len(by_patient) == 40
    box_fields = ("x", "y", "width", "height")
    for patient_rows in by_patient.values():
        targets = {r["Target"] for r in patient_rows}
        assert targets in ({"0"}, {"1"})
        if targets == {"0"}:
            assert len(patient_rows) == 1
            assert all(patient_rows[0][f] == "" for f in box_fields)
            continue
        assert 1 <= len(patient_rows) <= 4
        for row in patient_rows:
            x, y, w, h = (float(row[f]) for f in box_fields)
            assert row["x"].endswith(".0")
            assert w > 0
            assert h > 0
            assert x >= 0
            assert x + w <= SIZE
            assert y >= 0
            assert y + h <= SIZE
    assert sum(r["Target"] == "1" for r in rows) >= 20


def test_class_info_matches_labels(dataset: Path) -> None:
    labels = _read_csv(dataset / synth.LABELS_CSV)
    info = _read_csv(dataset / synth.CLASS_INFO_CSV)
    assert list(info[0]) == ["patientId", "class"]
    assert [r["patientId"] for r in info] == [r["patientId"] for r in labels]
    for label, klass in zip(labels, info, strict=True):
        assert klass["class"] in synth.CLASSES
        assert (klass["class"] == synth.LUNG_OPACITY) == (label["Target"] == "1")
    negatives = [r["class"] for r in info if r["class"] != synth.LUNG_OPACITY]
    assert negatives.count(synth.NOT_NORMAL) == round(len(negatives) * synth.NOT_NORMAL_FRACTION)


def test_dicoms_look_like_rsna(dataset: Path) -> None:
    paths = sorted((dataset / synth.IMAGES_DIR).glob("*.dcm"))
    assert {p.stem for p in paths} == {
        r["patientId"] for r in _read_csv(dataset / synth.LABELS_CSV)
    }
    views = set()
    for path in paths:
        ds = pydicom.dcmread(path)
        assert ds.preamble == b"\0" * 128
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
        assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.1"
        assert ds["PixelData"].is_undefined_length  # encapsulated
        assert ds.PatientID == ds.PatientName == path.stem
        assert ds.Modality == "CR"
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.ViewPosition in {"AP", "PA"}
        assert ds.SeriesDescription == f"view: {ds.ViewPosition}"
        assert ds.PatientSex in {"M", "F"}
        assert ds.PatientAge.isdigit()
        assert (ds.Rows, ds.Columns, ds.BitsStored, ds.SamplesPerPixel) == (SIZE, SIZE, 8, 1)
        pixels = ds.pixel_array
        assert pixels.dtype == np.uint8
        assert pixels.shape == (SIZE, SIZE)
        assert 20 < pixels.mean() < 235
        views.add(ds.ViewPosition)
    assert views == {"AP", "PA"}
    sample = REAL_DATA / "rsna_sample.dcm"
    if sample.exists():
        # Every tag of a real RSNA file is there (plus a StudyDescription).
        real = pydicom.dcmread(sample)
        assert set(real.keys()) <= set(ds.keys())
        assert set(real.file_meta.keys()) == set(ds.file_meta.keys())


@pytest.mark.parametrize("size", [128, 640])
def test_opacities_change_pixels_only_inside_their_boxes(size: int) -> None:
    # 640 exercises the upsampling path: bicubic resampling spreads a change by up
    # to two pixels of the grid the geometry is drawn on.
    margin = 2 + 2 * size / min(size, synth._MAX_BASE)
    yy, xx = np.mgrid[0:size, 0:size]
    for index in range(4):
        spec = synth.sample_patient(synth.patient_seed(5, index), synth.LUNG_OPACITY)
        with_opacity = synth.render_image(spec, size).astype(int)
        without = synth.render_image(dataclasses.replace(spec, opacities=()), size).astype(int)
        inside = np.zeros((size, size), bool)
        boxes = synth.boxes(spec, size)
        assert 1 <= len(boxes) <= 4
        for x, y, w, h in boxes:
            # RSNA boxes: 5th-95th percentile sides 12-61 % of the image.
            assert 0.1 * size <= max(w, h) <= 0.6 * size
            in_x = (xx >= x - margin) & (xx < x + w + margin)
            inside |= in_x & (yy >= y - margin) & (yy < y + h + margin)
        changed = with_opacity != without
        assert changed.any()
        assert not (changed & ~inside).any()
        # Each opacity is visible: clearly brighter than the same patient without it.
        for x, y, w, h in boxes:
            box = (slice(int(y), int(y + h)), slice(int(x), int(x + w)))
            assert (with_opacity[box] - without[box]).max() >= 25


def test_boxes_enclose_their_opacity_and_lie_in_its_lung() -> None:
    """Every box holds its opacity's added intensity and stays in a lung field.

    The lung fields are synth's own (left and right lung less the heart, on the
    render grid); a box that crosses the mediastinum or leaves the chest fails.
    """
    size = 128
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    u, v = np.meshgrid(grid, grid)
    checked = 0
    for index in range(60):
        spec = synth.sample_patient(synth.patient_seed(21, index), synth.LUNG_OPACITY)
        _, fields = synth._attenuation(spec, u, v, np.random.default_rng(0))
        lung_boxes = []
        for field in fields:
            rows, cols = np.nonzero(field > 0)
            lung_boxes.append((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
        in_lungs = np.maximum(*fields) > 0.5
        without = synth.render_image(dataclasses.replace(spec, opacities=()), size).astype(int)
        for blob, (x, y, w, h) in zip(spec.opacities, synth.boxes(spec, size), strict=True):
            x0, y0, x1, y1 = int(x), int(y), int(x + w), int(y + h)
            assert any(
                x0 >= lx0 and y0 >= ly0 and x1 <= lx1 and y1 <= ly1
                for lx0, ly0, lx1, ly1 in lung_boxes
            ), (index, (x, y, w, h), lung_boxes)
            # Most of the box is lung, not mediastinum, neck or abdomen.
            assert in_lungs[y0:y1, x0:x1].mean() >= 0.6, (index, (x, y, w, h))
            alone = dataclasses.replace(spec, opacities=(blob,))
            added = np.clip(synth.render_image(alone, size).astype(int) - without, 0, None)
            assert added[y0:y1, x0:x1].sum() >= 0.9 * added.sum() > 0, (index, (x, y, w, h))
            checked += 1
    assert checked >= 80


def test_sampling_is_pure() -> None:
    seq = synth.patient_seed(0, 7)
    first = synth.sample_patient(seq, synth.LUNG_OPACITY)
    assert synth.sample_patient(seq, synth.LUNG_OPACITY) == first
    # Anatomy and exposure come from their own streams: the class does not move them.
    normal = synth.sample_patient(seq, synth.NORMAL)
    assert (normal.anatomy, normal.exposure, normal.patient_id) == (
        first.anatomy,
        first.exposure,
        first.patient_id,
    )
    assert normal.opacities == ()
    assert first.opacities


def test_class_counts_are_exact() -> None:
    classes = synth.assign_classes(seed=0, patients=1000, positive_fraction=0.225)
    assert classes.count(synth.LUNG_OPACITY) == 225
    assert classes.count(synth.NOT_NORMAL) == round(775 * synth.NOT_NORMAL_FRACTION)
    assert classes != synth.assign_classes(seed=1, patients=1000, positive_fraction=0.225)


def test_global_statistics_do_not_give_the_label(tmp_path: Path) -> None:
    """Mean, std and a 16-bin histogram must not separate the classes (AUC ≤ 0.70)."""
    synth.generate(tmp_path, patients=300, size=128, seed=0, workers=0, progress=False)
    target = {r["patientId"]: int(r["Target"]) for r in _read_csv(tmp_path / synth.LABELS_CSV)}
    features, labels = [], []
    for patient_id, label in sorted(target.items()):
        image = pydicom.dcmread(tmp_path / synth.IMAGES_DIR / f"{patient_id}.dcm").pixel_array
        histogram = np.histogram(image, bins=16, range=(0, 256))[0] / image.size
        features.append([image.mean(), image.std(), *histogram])
        labels.append(label)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    scores = cross_val_score(
        model, np.array(features), np.array(labels), cv=folds, scoring="roc_auc"
    )
    assert scores.mean() <= 0.70


def test_refuses_a_folder_with_another_data_set(tmp_path: Path) -> None:
    synth.generate(tmp_path, patients=3, size=64, seed=0, workers=0, progress=False)
    # The same arguments again rewrite the same files.
    synth.generate(tmp_path, patients=3, size=64, seed=0, workers=0, progress=False)
    with pytest.raises(UserError, match="another data set"):
        synth.generate(tmp_path, patients=3, size=64, seed=1, workers=0, progress=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"patients": 0}, "patients"),
        ({"patients": 2.5}, "patients"),
        ({"size": 32}, "size"),
        ({"positive_fraction": 1.5}, "positive_fraction"),
        ({"positive_fraction": -0.1}, "positive_fraction"),
        ({"seed": -1}, "seed"),
        ({"workers": -1}, "workers"),
    ],
)
def test_invalid_arguments_raise_user_error(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        synth.generate(tmp_path / "out", **{"progress": False, "workers": 0, **kwargs})
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()
