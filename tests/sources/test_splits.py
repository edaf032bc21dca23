"""Tests of pneumokeras.sources.splits: patient-level splits, folds and class weights."""

import pytest

from pneumokeras.errors import UserError
from pneumokeras.sources import splits


def _synthetic_labels(n=1000, positive_every=4):
    return {f"p{i:04d}": int(i % positive_every == 0) for i in range(n)}


def test_split_is_patient_level_stratified_and_deterministic():
    records = _synthetic_labels()
    views = {p: "AP" if i % 3 else "PA" for i, p in enumerate(records)}
    drawn = splits.split_patients(records, 0.1, 0.1, seed=5, views=views)
    sets = [set(v) for v in drawn.values()]
    assert sum(len(s) for s in sets) == len(records)
    assert set().union(*sets) == set(records)
    assert not (sets[0] & sets[1])
    assert not (sets[0] & sets[2])
    assert not (sets[1] & sets[2])
    assert len(drawn["val"]) == 100
    assert len(drawn["test"]) == 100
    whole = sum(records.values()) / len(records)
    for ids in drawn.values():
        assert abs(sum(records[p] for p in ids) / len(ids) - whole) <= 0.01
    assert splits.split_patients(records, 0.1, 0.1, seed=5, views=views) == drawn
    assert splits.split_patients(records, 0.1, 0.1, seed=6, views=views) != drawn
    # Independent of input order.
    shuffled = dict(reversed(list(records.items())))
    assert splits.split_patients(shuffled, 0.1, 0.1, seed=5, views=views) == drawn


def test_split_tiny_dataset_falls_back():
    records = _synthetic_labels(n=7, positive_every=7)  # one positive only
    drawn = splits.split_patients(records, 0.2, 0.2, seed=0)
    assert sum(len(v) for v in drawn.values()) == 7


def test_split_rejects_bad_fractions():
    with pytest.raises(UserError):
        splits.split_patients(_synthetic_labels(), 0.6, 0.5)


def test_folds_disjoint_covering_stratified():
    records = _synthetic_labels(n=200)
    ids = sorted(records)[:150]
    folds = splits.assign_folds(records, ids, 5, seed=1)
    assert set(folds) == set(ids)
    assert sorted(set(folds.values())) == [0, 1, 2, 3, 4]
    sizes = [sum(1 for f in folds.values() if f == k) for k in range(5)]
    assert max(sizes) - min(sizes) <= 1
    for k in range(5):
        positives = sum(records[p] for p, f in folds.items() if f == k)
        assert abs(positives - sum(records[p] for p in ids) / 5) <= 1
    assert splits.assign_folds(records, ids, 5, seed=1) == folds
    with pytest.raises(UserError):
        splits.assign_folds(records, ids, 1)


def test_class_weights_balanced_rule():
    weights = splits.class_weights([0, 0, 0, 1])
    assert weights == pytest.approx({0: 4 / 6, 1: 4 / 2})
    with pytest.raises(UserError, match="both classes"):
        splits.class_weights([0, 0])


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
def test_seed_outside_32_bits_is_a_user_error(seed):
    records = _synthetic_labels(n=40)
    with pytest.raises(UserError, match="--seed") as info:
        splits.split_patients(records, 0.1, 0.1, seed=seed)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="--seed"):
        splits.assign_folds(records, records, 3, seed=seed)


def test_largest_seed_splits():
    # The validation draw uses the next seed, which wraps instead of leaving 32 bits.
    records = _synthetic_labels(n=40)
    drawn = splits.split_patients(records, 0.1, 0.1, seed=2**32 - 1)
    assert sum(len(v) for v in drawn.values()) == 40
    assert splits.assign_folds(records, records, 3, seed=2**32 - 1)


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

    records = _synthetic_labels(n=n, positive_every=positive_every)
    ids = sorted(records)
    view = {
        "every third PA": {p: "PA" if i % 3 == 0 else "AP" for i, p in enumerate(ids)},
        "one PA": {p: "PA" if i == 1 else "AP" for i, p in enumerate(ids)},
        "none": {},
    }[views]
    strata = {
        "label|view": [f"{records[p]}|{view.get(p, '')}" for p in ids],
        "label": [records[p] for p in ids],
        None: None,
    }[stratify]
    held = max(1, round(n * 0.1))
    _, expected = train_test_split(ids, test_size=held, random_state=3, stratify=strata)
    drawn = splits.split_patients(records, 0.0, 0.1, seed=3, views=view)
    assert drawn["test"] == sorted(expected)
