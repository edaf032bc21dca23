"""Tests for pneumokeras.models.ensemble: the averaging model cv saves as ensemble.keras."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from model_fixtures import contract_model

from pneumokeras.models.ensemble import build_ensemble, member_name

pytestmark = pytest.mark.backend
SIZE = 16


def test_the_head_computes_in_float32_whatever_the_global_policy(tmp_path):
    # As in a process that trained its folds under train.precision=mixed_bfloat16.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        members = [contract_model(SIZE), contract_model(SIZE)]
        ensemble = build_ensemble(members, SIZE)
        ensemble.save(tmp_path / "ensemble.keras")
    finally:
        keras.config.set_dtype_policy(previous)
    images = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 1)).astype(np.float32)
    assert [layer.name for layer in ensemble.layers[1:3]] == [member_name(0), member_name(1)]
    assert ensemble.get_layer("predictions").dtype_policy.name == "float32"
    here = ensemble(images)
    assert keras.backend.standardize_dtype(here.dtype) == "float32"
    # Loaded where the global policy is float32, it computes the same.
    loaded = keras.saving.load_model(tmp_path / "ensemble.keras")
    assert loaded.get_layer("predictions").dtype_policy.name == "float32"
    there = loaded(images)
    assert keras.backend.standardize_dtype(there.dtype) == "float32"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(there), keras.ops.convert_to_numpy(here), atol=1e-6
    )
    mean = np.mean([keras.ops.convert_to_numpy(m(images)) for m in members], axis=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(here), mean, atol=1e-6)


def test_one_member_is_passed_through_and_none_is_refused():
    member = contract_model(SIZE)
    single = build_ensemble([member], SIZE)
    images = np.zeros((1, SIZE, SIZE, 1), np.float32)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(single(images)), keras.ops.convert_to_numpy(member(images))
    )
    with pytest.raises(ValueError, match="at least one member"):
        build_ensemble([], SIZE)
