"""Temperature scaling applied to a model's pneumonia probability (Guo et al., ICML 2017).

A 2-way softmax depends only on the difference of its two logits, the log-odds
`logit(p)` of the pneumonia probability `p`; dividing both logits by `T` gives
`expit(logit(p) / T)`. Applying it belongs to the calibrated classifier (the
model card holds `T`); fitting it is `evaluation/calibration.py`'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import expit, logit

# Probabilities are clipped away from 0 and 1 before taking logs (float32 softmax
# can return exactly 1.0).
PROB_EPSILON = 1e-7


def clip_probabilities(probs: np.ndarray | Sequence[float]) -> np.ndarray:
    """float64 copy of `probs` clipped to `[1e-7, 1 - 1e-7]`."""
    return np.clip(np.asarray(probs, dtype=np.float64), PROB_EPSILON, 1 - PROB_EPSILON)


def calibrate(probs_pneumonia: np.ndarray | Sequence[float], temperature: float) -> np.ndarray:
    """Applies temperature scaling to pneumonia probabilities: `expit(logit(p) / T)`.

    Args:
        probs_pneumonia: pneumonia probabilities, any shape, in [0, 1].
        temperature: T > 0.

    Returns:
        float64 array of the same shape: calibrated pneumonia probabilities
        (`T = 1` returns `p` clipped to `[1e-7, 1 - 1e-7]`).

    Raises:
        ValueError: `temperature` is not a finite number > 0.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be > 0. Received: temperature={temperature!r}")
    return expit(logit(clip_probabilities(probs_pneumonia)) / temperature)
