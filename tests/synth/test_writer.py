"""Tests of `synth.generate`: the folder it writes (pneumokeras/synth/writer.py)."""

from __future__ import annotations

import csv
import json
import re
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

REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SIZE = 96
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
    assert len(first) == 43  # 40 DICOMs, two CSVs, synth.json
    assert first == second


def test_settings_record_the_arguments(dataset: Path) -> None:
    settings = json.loads((dataset / synth.SETTINGS_JSON).read_text())
    assert settings["seed"] == 3
    assert settings["patients"] == 40
    assert settings["scanner"] == synth.DEFAULT_SCANNER.to_dict()
    assert settings["subgroup_gap"] is None


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
    csvs = {synth.LABELS_CSV, synth.CLASS_INFO_CSV, synth.SETTINGS_JSON}
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
        assert re.fullmatch(r"\d{3}Y", ds.PatientAge)
        assert 1 <= int(ds.PatientAge[:3]) <= 92
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
