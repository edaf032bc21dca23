import pytest

from pneumokeras.errors import UserError
from pneumokeras.sources import rsna, splits

HEADER = "patientId,x,y,width,height,Target\n"


def write(tmp_path, text, name="labels.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_records_boxes_and_classes(tmp_path):
    labels = write(
        tmp_path,
        HEADER + "a,,,,,0\nb,100,200,50,60,1\nb,500,300,40,80,1\nc,,,,,0\n",
    )
    classes = write(
        tmp_path,
        "patientId,class\na,Normal\nb,Lung Opacity\nb,Lung Opacity\n"
        "c,No Lung Opacity / Not Normal\n",
        "classes.csv",
    )
    records = rsna.read_labels(labels, classes)
    assert list(records) == ["a", "b", "c"]
    assert records["a"].label == 0
    assert records["a"].boxes_px == ()
    assert records["b"].label == 1
    assert len(records["b"].boxes_px) == 2
    assert records["b"].normalised_boxes(1000, 1000)[0] == pytest.approx((0.1, 0.2, 0.05, 0.06))
    # A portrait image is stored padded to a centred square: 200 px of black on the left.
    assert records["b"].normalised_boxes(600, 1000)[0] == pytest.approx((0.3, 0.2, 0.05, 0.06))
    # A landscape one: 200 px on top.
    assert records["b"].normalised_boxes(1000, 600)[0] == pytest.approx((0.1, 0.4, 0.05, 0.06))
    assert records["c"].detailed_class == "No Lung Opacity / Not Normal"


@pytest.mark.parametrize(
    "text, message",
    [
        ("patientId,x,y,Target\na,,,0\n", "missing column"),
        (HEADER + "a,,,,,2\n", "Target must be 0 or 1"),
        (HEADER + "a,,,,,0\na,1,2,3,4,1\n", "Targets disagree"),
        (HEADER + "a,,,,,1\n", "positive row without a box"),
        (HEADER + "a,1,2,3,4,0\n", "negative row with a box"),
        (HEADER + "a,x,2,3,4,1\n", "not a number"),
        (HEADER, "no label rows"),
    ],
)
def test_label_errors(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        rsna.read_labels(write(tmp_path, text))


def test_unreadable_labels(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        rsna.read_labels(tmp_path / "missing.csv")
    bad = tmp_path / "bin.csv"
    bad.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(UserError):
        rsna.read_labels(bad)


def test_class_contradicting_target(tmp_path):
    labels = write(tmp_path, HEADER + "a,,,,,0\n")
    classes = write(tmp_path, "patientId,class\na,Lung Opacity\n", "classes.csv")
    with pytest.raises(UserError, match="contradicts"):
        rsna.read_labels(labels, classes)


def test_real_label_file(shared_file):
    records = rsna.read_labels(shared_file("stage_2_train_labels.csv"))
    assert len(records) == 26684
    assert sum(r.label for r in records.values()) == 6012
    assert sum(len(r.boxes_px) for r in records.values()) == 9555
    drawn = splits.split_patients({p: r.label for p, r in records.items()}, 0.1, 0.1, seed=0)
    assert sum(len(v) for v in drawn.values()) == 26684
    assert not set(drawn["train"]) & set(drawn["test"])
    whole = 6012 / 26684
    for ids in drawn.values():
        assert abs(sum(records[p].label for p in ids) / len(ids) - whole) <= 0.01
