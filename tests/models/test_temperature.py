"""Tests for pneumokeras.models.temperature: applying a temperature to probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pneumokeras.models.temperature import calibrate


def test_calibrate_identity_at_t1_and_softens_above():
    p = np.array([0.01, 0.2, 0.5, 0.7, 0.99])
    np.testing.assert_allclose(calibrate(p, 1.0), p, atol=1e-12)
    soft = calibrate(p, 2.0)
    assert np.all(np.abs(soft - 0.5) <= np.abs(p - 0.5))
    assert np.all(np.diff(soft) > 0)  # order (and so AUC) is kept
    # Two-class softmax of log-probabilities / T is the sigmoid of logit / T.
    logit = np.log(p / (1 - p))
    np.testing.assert_allclose(soft, 1 / (1 + np.exp(-logit / 2.0)), rtol=1e-12)
    # Saturated float32 outputs stay finite and move when T changes.
    assert 0.5 < calibrate(np.float32(1.0), 2.0) < 1.0


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.nan, math.inf])
def test_calibrate_rejects_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        calibrate([0.5], temperature)
