import pytest

from pneumokeras.errors import UserError
from pneumokeras.sources import rsna

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


def _synthetic_records(n=1000, positive_every=4):
    return {
        f"p{i:04d}": rsna.PatientRecord(f"p{i:04d}", int(i % positive_every == 0)) for i in range(n)
    }


def test_split_is_patient_level_stratified_and_deterministic():
    records = _synthetic_records()
    views = {p: "AP" if i % 3 else "PA" for i, p in enumerate(records)}
    splits = rsna.split_patients(records, 0.1, 0.1, seed=5, views=views)
    sets = [set(v) for v in splits.values()]
    assert sum(len(s) for s in sets) == len(records)
    assert set().union(*sets) == set(records)
    assert not (sets[0] & sets[1])
    assert not (sets[0] & sets[2])
    assert not (sets[1] & sets[2])
    assert len(splits["val"]) == 100
    assert len(splits["test"]) == 100
    whole = sum(r.label for r in records.values()) / len(records)
    for ids in splits.values():
        assert abs(sum(records[p].label for p in ids) / len(ids) - whole) <= 0.01
    assert rsna.split_patients(records, 0.1, 0.1, seed=5, views=views) == splits
    assert rsna.split_patients(records, 0.1, 0.1, seed=6, views=views) != splits
    # Independent of input order.
    shuffled = dict(reversed(list(records.items())))
    assert rsna.split_patients(shuffled, 0.1, 0.1, seed=5, views=views) == splits


def test_split_tiny_dataset_falls_back():
    records = _synthetic_records(n=7, positive_every=7)  # one positive only
    splits = rsna.split_patients(records, 0.2, 0.2, seed=0)
    assert sum(len(v) for v in splits.values()) == 7


def test_split_rejects_bad_fractions():
    with pytest.raises(UserError):
        rsna.split_patients(_synthetic_records(), 0.6, 0.5)


def test_folds_disjoint_covering_stratified():
    records = _synthetic_records(n=200)
    ids = sorted(records)[:150]
    folds = rsna.assign_folds(records, ids, 5, seed=1)
    assert set(folds) == set(ids)
    assert sorted(set(folds.values())) == [0, 1, 2, 3, 4]
    sizes = [sum(1 for f in folds.values() if f == k) for k in range(5)]
    assert max(sizes) - min(sizes) <= 1
    for k in range(5):
        positives = sum(records[p].label for p, f in folds.items() if f == k)
        assert abs(positives - sum(records[p].label for p in ids) / 5) <= 1
    assert rsna.assign_folds(records, ids, 5, seed=1) == folds
    with pytest.raises(UserError):
        rsna.assign_folds(records, ids, 1)


def test_class_weights_balanced_rule():
    weights = rsna.class_weights([0, 0, 0, 1])
    assert weights == pytest.approx({0: 4 / 6, 1: 4 / 2})
    with pytest.raises(UserError, match="both classes"):
        rsna.class_weights([0, 0])


def test_real_label_file(shared_file):
    records = rsna.read_labels(shared_file("stage_2_train_labels.csv"))
    assert len(records) == 26684
    assert sum(r.label for r in records.values()) == 6012
    assert sum(len(r.boxes_px) for r in records.values()) == 9555
    splits = rsna.split_patients(records, 0.1, 0.1, seed=0)
    assert sum(len(v) for v in splits.values()) == 26684
    assert not set(splits["train"]) & set(splits["test"])
    whole = 6012 / 26684
    for ids in splits.values():
        assert abs(sum(records[p].label for p in ids) / len(ids) - whole) <= 0.01


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
def test_seed_outside_32_bits_is_a_user_error(seed):
    records = _synthetic_records(n=40)
    with pytest.raises(UserError, match="--seed") as info:
        rsna.split_patients(records, 0.1, 0.1, seed=seed)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="--seed"):
        rsna.assign_folds(records, records, 3, seed=seed)


def test_largest_seed_splits():
    # The validation draw uses the next seed, which wraps instead of leaving 32 bits.
    records = _synthetic_records(n=40)
    splits = rsna.split_patients(records, 0.1, 0.1, seed=2**32 - 1)
    assert sum(len(v) for v in splits.values()) == 40
    assert rsna.assign_folds(records, records, 3, seed=2**32 - 1)


@pytest.mark.parametrize(
    "n, positive_every, views, stratify",
    [
        (40, 4, "every third PA", "label|view"),
        (40, 4, "one PA", "label"),  # a (label, view) stratum of one
        (7, 7, "none", None),  # one positive in all
        (9, 3, "none", None),  # one held-out patient cannot hold both classes
    ],
)
def test_split_stratifies_as_finely_as_possible(n, positive_every, views, stratify):
    """Same draw as scikit-learn's with the finest stratification that can succeed."""
    from sklearn.model_selection import train_test_split

    records = _synthetic_records(n=n, positive_every=positive_every)
    ids = sorted(records)
    view = {
        "every third PA": {p: "PA" if i % 3 == 0 else "AP" for i, p in enumerate(ids)},
        "one PA": {p: "PA" if i == 1 else "AP" for i, p in enumerate(ids)},
        "none": {},
    }[views]
    strata = {
        "label|view": [f"{records[p].label}|{view.get(p, '')}" for p in ids],
        "label": [records[p].label for p in ids],
        None: None,
    }[stratify]
    held = max(1, round(n * 0.1))
    _, expected = train_test_split(ids, test_size=held, random_state=3, stratify=strata)
    splits = rsna.split_patients(records, 0.0, 0.1, seed=3, views=view)
    assert splits["test"] == sorted(expected)
