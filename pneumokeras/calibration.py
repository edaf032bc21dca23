"""Temperature scaling of the pneumonia probability (Guo et al., ICML 2017).

Pure functions of NumPy arrays; no Keras, no files. A 2-way softmax depends only
on the difference of its two logits, which is the log-odds `logit(p)` of the
pneumonia probability `p`, so dividing both logits by `T` gives
`expit(logit(p) / T)`. `T > 1` softens, `T < 1` sharpens, `T = 1` is the identity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.metrics import log_loss

# Probabilities are clipped away from 0 and 1 before taking logs (float32 softmax
# can return exactly 1.0).
PROB_EPSILON = 1e-7
# Temperature search range: far wider than any trained network needs.
TEMPERATURE_BOUNDS = (0.05, 20.0)


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


def negative_log_likelihood(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy (nats) of pneumonia probabilities; lower is better."""
    return float(log_loss(labels, clip_probabilities(probs), labels=[0, 1]))


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> float:
    """Fits the temperature that minimises the negative log-likelihood (Guo et al., 2017).

    Bounded scalar search over log T (so T stays > 0) within `TEMPERATURE_BOUNDS`.

    Args:
        labels: (N,) int, 1 = pneumonia; both classes should be present.
        probs: (N,) raw pneumonia probabilities.

    Returns:
        T > 0.
    """

    def nll(log_t: float) -> float:
        return negative_log_likelihood(labels, calibrate(probs, math.exp(log_t)))

    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    result = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    return float(math.exp(result.x))
