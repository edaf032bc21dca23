"""Tests of pneumokeras.sources.layouts: the layout's images split and folded by patient.
Names and labels only: no pixels, no Keras."""

from __future__ import annotations

import functools
import operator

import pytest
from layout_fixtures import write_nih

from pneumokeras.errors import UserError
from pneumokeras.sources import layouts
from pneumokeras.sources.layouts import LayoutOptions, list_images


def _findings(**kwargs) -> LayoutOptions:
    return LayoutOptions("findings", **kwargs)


def test_mixed_order_is_fixed_and_mixes_the_class_folders():
    ids = [f"NORMAL/IM-{i:04d}" for i in range(20)] + [f"PNEUMONIA/person{i}" for i in range(20)]
    order = layouts.mixed_order(ids)
    assert sorted(order) == sorted(ids)
    assert order == layouts.mixed_order(ids[::-1])
    assert {i.split("/")[0] for i in order[:8]} == {"NORMAL", "PNEUMONIA"}


def test_multi_image_patients_are_never_in_two_splits_or_folds(tmp_path):
    images, labels = write_nih(tmp_path, patients=30)
    items = list_images(images, labels, _findings()).items
    ids = list(items)
    for seed in range(4):
        drawn = layouts.split_items(items, ids, 0.2, 0.2, seed, {i: items[i].view for i in ids})
        assert sorted(functools.reduce(operator.iadd, drawn.values(), [])) == ids
        assert layouts.patients_in_several_splits(items, drawn) == 0
        assert all(drawn[s] for s in drawn)
        fold_of = layouts.assign_folds(items, drawn["train"] + drawn["val"], 3, seed)
        folds_of_patient: dict[str, set[int]] = {}
        for image_id, fold in fold_of.items():
            folds_of_patient.setdefault(items[image_id].patient, set()).add(fold)
        assert all(len(f) == 1 for f in folds_of_patient.values())
        assert set(fold_of.values()) == {0, 1, 2}
    # A patient is positive when any image is: 10 positive patients of 30.
    labels_of_patients = layouts._patient_labels(items, layouts._groups(items, ids))
    assert sum(labels_of_patients.values()) == 10


def test_folds_need_enough_patients_of_each_class(tmp_path):
    images, labels = write_nih(tmp_path, patients=6)  # 2 positive patients
    items = list_images(images, labels, _findings()).items
    with pytest.raises(UserError, match="needs at least 3 patients of each class"):
        layouts.assign_folds(items, list(items), 3, 0)
