import json

import numpy as np
import pytest
from layout_fixtures import write_nih

from pneumokeras.errors import UserError
from pneumokeras.records import tfrecords
from pneumokeras.records.convert import ConvertOptions, convert, encode_png
from pneumokeras.records.manifest import MANIFEST, load_manifest
from pneumokeras.sources.listing import LayoutOptions


def _example(i):
    pixels = np.full((16, 16), i, dtype=np.uint8)
    boxes = [(0.1 * (i % 3), 0.2, 0.3, 0.4)] * (i % 3)
    return {
        "png": encode_png(pixels),
        "patient_id": f"patient-{i}",
        "label": int(i % 3 > 0),
        "boxes": boxes,
        "view": "AP" if i % 2 else "PA",
        "detailed_class": "Lung Opacity" if i % 3 else "Normal",
    }


def _write_dataset(out, n=23, shards=4):
    examples = [_example(i) for i in range(n)]
    per = -(-n // shards)
    names, stats = [], {}
    for k in range(shards):
        name = tfrecords.shard_name("train", k, shards)
        chunk = examples[k * per : (k + 1) * per]
        tfrecords.write_shard(
            out / name,
            (tfrecords.serialize_example(**{**e, "boxes": e["boxes"]}) for e in chunk),
        )
        names.append(name)
        stats[name] = {"count": len(chunk), "bytes": (out / name).stat().st_size}
    manifest = {
        "image_size": 16,
        "splits": {"train": {"count": n, "positives": 0, "files": names}},
        "shards": stats,
    }
    (out / MANIFEST).write_text(json.dumps(manifest))
    return examples


def test_shard_name():
    assert tfrecords.shard_name("train", 3, 16) == "train-00003-of-00016.tfrecord"


def test_round_trip_n_examples_k_shards(tmp_path):
    examples = _write_dataset(tmp_path)
    records = tfrecords.read_split(tmp_path, "train")
    assert len(records) == len(examples)
    for written, read in zip(examples, records, strict=True):
        assert read["png"] == written["png"]
        assert read["patient_id"] == written["patient_id"]
        assert read["label"] == written["label"]
        np.testing.assert_allclose(read["boxes"], np.reshape(written["boxes"], (-1, 4)), rtol=1e-6)
        assert read["view"] == written["view"]
        assert read["class"] == written["detailed_class"]


def test_serialization_is_deterministic():
    a = tfrecords.serialize_example(**_example(5))
    b = tfrecords.serialize_example(**_example(5))
    assert a == b


def test_corrupt_bytes_same_size(tmp_path):
    _write_dataset(tmp_path)
    shard = tmp_path / tfrecords.shard_name("train", 1, 4)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, CRC no longer matches
    shard.write_bytes(bytes(data))
    load_manifest(tmp_path)  # sizes still match
    with pytest.raises(UserError, match="corrupt"):
        tfrecords.read_split(tmp_path, "train")


def test_write_shard_is_atomic_on_error(tmp_path):
    def failing():
        yield tfrecords.serialize_example(**_example(1))
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        tfrecords.write_shard(tmp_path / "train-00000-of-00001.tfrecord", failing())
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- example → patient


@pytest.fixture(scope="module")
def nih_converted(tmp_path_factory):
    """An NIH-like findings set (1-3 follow-up images per patient) converted at 16 px."""
    root = tmp_path_factory.mktemp("nih")
    images, labels = write_nih(root / "nih", patients=12)
    convert(
        ConvertOptions(
            images=images,
            out=root / "tf",
            labels=labels,
            layout=LayoutOptions("findings"),
            size=16,
            val_fraction=0.25,
            test_fraction=0.25,
            workers=0,
        ),
        progress=False,
    )
    return root / "tf"


def _copy(src, dst):
    dst.mkdir()
    for item in src.iterdir():
        (dst / item.name).write_bytes(item.read_bytes())
    return dst


def test_read_patients_maps_each_image_to_its_patient(nih_converted):
    manifest = load_manifest(nih_converted).to_json()
    assert manifest["grouping"]["file"] == tfrecords.PATIENTS  # convert's name agrees
    patients = tfrecords.read_patients(nih_converted)
    records = [
        r for split in manifest["splits"] for r in tfrecords.read_split(nih_converted, split)
    ]
    ids = [r["patient_id"] for r in records]
    assert sorted(patients) == sorted(ids)
    assert len(ids) == 24
    found = tfrecords.patient_ids(ids, patients)
    # NIH image 00000005_002 belongs to patient 5: the Patient ID column.
    assert found == [str(int(example.split("_")[0])) for example in ids]
    assert len(set(found)) == manifest["grouping"]["patients"] == 12


def test_read_patients_of_an_rsna_folder_is_the_identity(tmp_path):
    examples = _write_dataset(tmp_path, n=5, shards=1)
    assert tfrecords.read_patients(tmp_path) == {}
    ids = [e["patient_id"] for e in examples]
    assert tfrecords.patient_ids(ids, {}) == ids


@pytest.mark.parametrize(
    "text, message",
    [
        ("example,patient\na,1\n", "must start with the header patientId,patient, not example"),
        ("", "must start with the header patientId,patient, not nothing"),
        ("patientId,patient\na,1\nb\n", "line 3: expected example id,patient; got \\['b'\\]"),
        ("patientId,patient\na,\n", "line 2: expected example id,patient"),
        ("patientId,patient\na,1\na,2\n", "line 3: example id 'a' is given twice"),
    ],
)
def test_read_patients_refuses_a_malformed_file_in_one_line(nih_converted, tmp_path, text, message):
    data = _copy(nih_converted, tmp_path / "d")
    (data / tfrecords.PATIENTS).write_text(text)
    with pytest.raises(UserError, match=message) as raised:
        tfrecords.read_patients(data)
    assert "\n" not in str(raised.value)


def test_read_patients_missing_file_and_unknown_example(nih_converted, tmp_path):
    data = _copy(nih_converted, tmp_path / "d")
    (data / tfrecords.PATIENTS).unlink()
    with pytest.raises(UserError, match=r"patients.csv \(named in .*manifest.json\) is missing"):
        tfrecords.read_patients(data)
    with pytest.raises(UserError, match=r"'00000099_000' has no row in patients.csv"):
        tfrecords.patient_ids(["00000099_000"], tfrecords.read_patients(nih_converted))
