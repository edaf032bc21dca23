"""Evaluation: calibration, decision threshold, metrics with bootstrap CIs, plots, report.

`evaluate_run` follows one order, so that nothing is tuned on the data it reports:

1. predict the validation split and the evaluated split once (raw softmax);
2. fit a calibration temperature on validation (temperature scaling, Guo et al.,
   "On Calibration of Modern Neural Networks", ICML 2017);
3. choose the decision threshold on the *calibrated* validation probabilities:
   Youden's J (Youden, Cancer 1950) or the best F1, unless one is given;
4. report the evaluated split's metrics on calibrated probabilities at that
   threshold, each with a 95 % percentile bootstrap interval over patients, plus
   ECE and Brier score before and after calibration and subgroups by view (AP/PA);
5. write metrics.json, roc.png, pr.png, confusion.png, calibration.png and
   report.md, then store the threshold and temperature in model.json.

A pneumonia probability `p` counts as positive when `p >= threshold` (scikit-learn's
`roc_curve` convention). Metrics come from scikit-learn; precision, recall
(sensitivity), specificity (recall of the negative class) and F1 come from one
`precision_recall_fscore_support` call, the function `precision_score`,
`recall_score` and `f1_score` wrap.

One-class data: the validation split must hold both classes (neither a temperature
nor a threshold can be fitted otherwise), else `UserError`. An evaluated split
with one class is still reported: metrics that need both classes (ROC-AUC, PR-AUC,
and recall or specificity of the absent class) are `null` in metrics.json, and a
warning says why. A metric that is undefined on a bootstrap resample (e.g. AUC of
a resample with one class) skips that resample.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np
import sklearn
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.optimize import minimize_scalar
from scipy.special import softmax
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    log_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from tqdm import tqdm

from pneumokeras import data as data_lib
from pneumokeras import tfrecords
from pneumokeras.config import Config
from pneumokeras.errors import UserError
from pneumokeras.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

CLASS_NAMES = ("normal", "pneumonia")
DISCLAIMER = "Research and education only; not for diagnosis or any clinical decision."
# Probabilities are clipped away from 0 and 1 before taking logs (float32 softmax
# can return exactly 1.0).
PROB_EPSILON = 1e-7
# Temperature search range: far wider than any trained network needs.
TEMPERATURE_BOUNDS = (0.05, 20.0)
CI_LEVEL = 0.95
# (key, label in the report); counts last.
METRICS = (
    ("accuracy", "Accuracy"),
    ("precision", "Precision (PPV)"),
    ("recall", "Recall (sensitivity)"),
    ("specificity", "Specificity"),
    ("f1", "F1"),
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC (average precision)"),
    ("brier", "Brier score"),
    ("tn", "True negatives"),
    ("fp", "False positives"),
    ("fn", "False negatives"),
    ("tp", "True positives"),
)
COUNTS = ("tn", "fp", "fn", "tp")
PLOTS = ("roc.png", "pr.png", "confusion.png", "calibration.png")


# ---------------------------------------------------------------- pure functions


def calibrate(probs_pneumonia: np.ndarray | Sequence[float], temperature: float) -> np.ndarray:
    """Applies temperature scaling to pneumonia probabilities.

    The logits are the log-probabilities `[log(1 - p), log(p)]`; the result is
    `softmax(logits / T)[1]`. `T > 1` softens, `T < 1` sharpens, `T = 1` returns
    `p` (clipped to `[1e-7, 1 - 1e-7]`).

    Args:
        probs_pneumonia: pneumonia probabilities, any shape, in [0, 1].
        temperature: T > 0.

    Returns:
        float64 array of the same shape: calibrated pneumonia probabilities.

    Raises:
        ValueError: `temperature` is not a finite number > 0.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be > 0. Received: temperature={temperature!r}")
    p = np.clip(np.asarray(probs_pneumonia, dtype=np.float64), PROB_EPSILON, 1 - PROB_EPSILON)
    logits = np.log(np.stack([1.0 - p, p], axis=-1))
    return softmax(logits / temperature, axis=-1)[..., 1]


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
        return log_loss(labels, calibrate(probs, math.exp(log_t)), labels=[0, 1])

    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    result = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    return float(math.exp(result.x))


def choose_threshold(labels: np.ndarray, probs: np.ndarray, method: str = "youden") -> float:
    """Decision threshold maximising Youden's J (sensitivity + specificity - 1) or F1.

    Candidates are the distinct probabilities (scikit-learn's curve thresholds);
    ties go to the highest threshold.

    Args:
        labels: (N,) int, both classes present.
        probs: (N,) pneumonia probabilities.
        method: `youden` or `f1`.

    Returns:
        Threshold in [0, 1]; predict pneumonia when `p >= threshold`.

    Raises:
        ValueError: unknown method.
    """
    if method == "youden":
        fpr, tpr, thresholds = roc_curve(labels, probs, drop_intermediate=False)
        best = thresholds[np.argmax(tpr - fpr)]  # J = tpr - fpr; [0] is inf: none positive
    elif method == "f1":
        precision, recall, thresholds = precision_recall_curve(labels, probs)
        # The curve's last point (recall 0) has no threshold. F1 is the harmonic
        # mean of the curve's precision and recall at each threshold.
        precision, recall = precision[:-1], recall[:-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = 2 * precision * recall / (precision + recall)
        best_f1 = np.nanmax(f1)
        best = thresholds[np.flatnonzero(f1 == best_f1)[-1]]  # thresholds ascend
    else:
        raise ValueError(f"method must be 'youden' or 'f1'. Received: method={method!r}")
    return float(min(best, 1.0))


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, threshold: float
) -> dict[str, float]:
    """Point metrics of pneumonia probabilities at a threshold (all from scikit-learn).

    Args:
        labels: (N,) int, 1 = pneumonia, N ≥ 1.
        probs: (N,) pneumonia probabilities.
        threshold: predict pneumonia when `p >= threshold`.

    Returns:
        `accuracy, precision, recall, specificity, f1, roc_auc, pr_auc, brier` as
        floats and `tn, fp, fn, tp` counts; NaN where undefined (AUCs with one
        class; precision with no predicted positive; recall without positives;
        specificity without negatives).
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    predicted = (probs >= threshold).astype(labels.dtype)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=[0, 1], zero_division=np.nan
    )
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    both_classes = np.unique(labels).size == 2
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "precision": float(precision[1]),
        "recall": float(recall[1]),
        "specificity": float(recall[0]),
        "f1": float(f1[1]),
        "roc_auc": float(roc_auc_score(labels, probs)) if both_classes else math.nan,
        "pr_auc": float(average_precision_score(labels, probs)) if both_classes else math.nan,
        "brier": float(brier_score_loss(labels, probs, labels=[0, 1])),
        "tn": float(tn),
        "fp": float(fp),
        "fn": float(fn),
        "tp": float(tp),
    }


class Interval(NamedTuple):
    """A bootstrap confidence interval; `resamples` counts those where it was defined."""

    low: float
    high: float
    resamples: int


def bootstrap_ci(
    statistic: Callable[[np.ndarray, np.ndarray], Mapping[str, float]],
    labels: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray | None = None,
    resamples: int = 1000,
    seed: int = 0,
    level: float = CI_LEVEL,
    progress: bool = False,
) -> dict[str, Interval]:
    """Percentile bootstrap intervals of every value `statistic` returns.

    Resamples groups (patients) with replacement, keeping all rows of a drawn
    group together (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993).
    A value that is NaN on a resample (e.g. ROC-AUC of a one-class resample) skips
    that resample; a value never defined gets `(nan, nan, 0)`.

    Args:
        statistic: `(labels, probs) -> {name: value}`.
        labels: (N,) int labels.
        probs: (N,) probabilities.
        groups: (N,) group id per row; None = each row its own group.
        resamples: number of bootstrap resamples.
        seed: random seed.
        level: central coverage, e.g. 0.95.
        progress: show a progress bar on stderr.

    Returns:
        `{name: Interval(low, high, resamples used)}`.
    """
    labels, probs = np.asarray(labels), np.asarray(probs)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    rows_of_group = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    # Inputs were validated once by the caller; skipping scikit-learn's per-call
    # checks makes the loop several times faster.
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        for _ in tqdm(range(resamples), desc="bootstrap", disable=not progress, leave=False):
            picks = rng.integers(0, len(rows_of_group), len(rows_of_group))
            rows = np.concatenate([rows_of_group[g] for g in picks])
            for name, value in statistic(labels[rows], probs[rows]).items():
                values.setdefault(name, []).append(value)
    tail = 100 * (1 - level) / 2
    intervals = {}
    for name, samples in values.items():
        finite = np.asarray(samples, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        if finite.size == 0:
            intervals[name] = Interval(math.nan, math.nan, 0)
        else:
            low, high = np.percentile(finite, [tail, 100 - tail])
            intervals[name] = Interval(float(low), float(high), int(finite.size))
    return intervals


@dataclasses.dataclass(frozen=True)
class Reliability:
    """Equal-width bins of predicted pneumonia probability.

    Attributes:
        edges: (bins + 1,) bin edges from 0 to 1.
        counts: (bins,) examples per bin.
        mean_predicted: (bins,) mean probability per bin, NaN when empty.
        fraction_positive: (bins,) observed pneumonia rate per bin, NaN when empty.
    """

    edges: np.ndarray
    counts: np.ndarray
    mean_predicted: np.ndarray
    fraction_positive: np.ndarray


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> Reliability:
    """Bins probabilities like `sklearn.calibration.calibration_curve(strategy="uniform")`.

    Bin i holds `edges[i] < p <= edges[i+1]` (the first bin also holds 0), but
    empty bins are kept (as NaN) and counts returned, for the diagram and the ECE.
    """
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ids = np.searchsorted(edges[1:-1], probs)
    counts = np.bincount(ids, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(ids, weights=probs, minlength=bins) / counts
        fraction_positive = np.bincount(ids, weights=labels, minlength=bins) / counts
    return Reliability(edges, counts, mean_predicted, fraction_positive)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """ECE of the pneumonia probability over equal-width bins (Naeini et al., AAAI 2015).

    `sum_b (n_b / N) * |observed pneumonia rate_b - mean probability_b|`; 0 is
    perfectly calibrated, in [0, 1].
    """
    bins_ = reliability(labels, probs, bins)
    filled = bins_.counts > 0
    gaps = np.abs(bins_.fraction_positive[filled] - bins_.mean_predicted[filled])
    return float(np.sum(bins_.counts[filled] * gaps) / np.sum(bins_.counts))


# ---------------------------------------------------------------- model loading


def model_json_path(model_path: str | Path) -> Path:
    """model.json beside the model file."""
    return Path(model_path).with_name("model.json")


def load_model(model_path: str | Path) -> tuple[keras.Model, dict[str, Any]]:
    """Loads model.keras (safe mode) and the model.json beside it ({} when absent).

    Raises:
        UserError: missing or unloadable model, unreadable model.json or one whose
            `input_size` differs from the model's, or a model that does not take
            `(None, S, S, 1)` images to 2 probabilities.
    """
    path = Path(model_path)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    try:
        model = keras.saving.load_model(path)
    except Exception as err:  # noqa: BLE001 - Keras raises many types for a bad file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load model {path}: {reason}") from err
    shape_in, shape_out = model.input_shape, model.output_shape
    if (
        not isinstance(shape_in, tuple)
        or len(shape_in) != 4
        or shape_in[1] != shape_in[2]
        or shape_in[3] != 1
        or shape_out != (None, 2)
    ):
        raise UserError(
            f"{path} takes {shape_in} to {shape_out}; expected (None, S, S, 1) to (None, 2)"
        )
    meta_path = model_json_path(path)
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"{meta_path} is unreadable: {err}") from err
    if meta.get("input_size", shape_in[1]) != shape_in[1]:
        raise UserError(
            f"{meta_path} says input size {meta['input_size']} but {path} takes {shape_in[1]} px"
        )
    return model, meta


def input_size(model: keras.Model) -> int:
    """Side of the square input images, pixels."""
    return int(model.input_shape[1])


# ---------------------------------------------------------------- the run


@dataclasses.dataclass(frozen=True)
class SplitData:
    """Labels and patient information of one split, in `tfrecords.read_split` order."""

    labels: np.ndarray  # (N,) int, 1 = pneumonia
    patients: np.ndarray  # (N,) str
    views: np.ndarray  # (N,) str, upper case, '' when unknown


def _read_split(data_dir: Path, split: str) -> SplitData:
    records = tfrecords.read_split(data_dir, split)
    if not records:
        raise UserError(f"split {split!r} of {data_dir} is empty")
    return SplitData(
        labels=np.array([r["label"] for r in records]),
        patients=np.array([r["patient_id"] for r in records]),
        views=np.array([r["view"].upper() for r in records]),
    )


def _predict(
    model: keras.Model, data_dir: Path, split: str, count: int, config: Config, progress: bool
) -> np.ndarray:
    """(N,) float64 raw pneumonia probabilities of a split, in shard order."""
    dataset = data_lib.evaluation_dataset(data_dir, split, config)
    probs = np.asarray(model.predict(dataset, verbose=1 if progress else 0))[:, 1]
    if len(probs) != count:
        raise RuntimeError(f"split {split!r}: {len(probs)} predictions for {count} examples")
    if not np.all(np.isfinite(probs)):
        raise RuntimeError(f"the model outputs non-finite probabilities on split {split!r}")
    return probs.astype(np.float64)


def _clean(value: float) -> float | None:
    """JSON-safe value: NaN → None."""
    if not math.isfinite(value):
        return None
    return value


def _metric_table(
    labels: np.ndarray,
    probs: np.ndarray,
    patients: np.ndarray,
    threshold: float,
    config: Config,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """`{metric: {"value", "ci95": [low, high], "resamples"}}` at `threshold`."""
    point = classification_metrics(labels, probs, threshold)
    intervals = bootstrap_ci(
        lambda y, p: classification_metrics(y, p, threshold),
        labels,
        probs,
        groups=patients,
        resamples=config.evaluate.bootstrap,
        seed=config.train.seed,
        progress=progress,
    )
    table = {}
    for name, _ in METRICS:
        value = int(point[name]) if name in COUNTS else _clean(point[name])
        interval = intervals[name]
        table[name] = {
            "value": value,
            "ci95": [_clean(interval.low), _clean(interval.high)],
            "resamples": interval.resamples,
        }
    return table


def _calibration_summary(
    labels: np.ndarray, raw: np.ndarray, calibrated: np.ndarray, bins: int
) -> dict[str, Any]:
    def one(probs: np.ndarray) -> dict[str, Any]:
        rel = reliability(labels, probs, bins)
        return {
            "ece": expected_calibration_error(labels, probs, bins),
            "brier": float(brier_score_loss(labels, probs, labels=[0, 1])),
            "nll": float(log_loss(labels, np.clip(probs, PROB_EPSILON, 1 - PROB_EPSILON),
                                  labels=[0, 1])),
            "bins": {
                "counts": rel.counts.tolist(),
                "mean_predicted": [_clean(v) for v in rel.mean_predicted.tolist()],
                "fraction_positive": [_clean(v) for v in rel.fraction_positive.tolist()],
            },
        }

    return {"before": one(raw), "after": one(calibrated)}


def _one_class_warning(labels: np.ndarray, what: str) -> str | None:
    present = np.unique(labels)
    if present.size == 2:
        return None
    name = CLASS_NAMES[int(present[0])]
    return (
        f"{what} holds only {name} examples: ROC-AUC, PR-AUC and the metrics of the "
        "absent class are undefined (null)"
    )


def evaluate_run(
    model_path: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    config: Config,
    split: str = "test",
    threshold: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluates a saved model on a converted split; writes metrics, plots and a report.

    See the module docstring for the order of steps. The image size comes from the
    model (`config.data.image_size` is ignored); `config.data.batch_size`, the
    `evaluate` section and `train.seed` (bootstrap seed) are used.

    Args:
        model_path: model.keras; model.json beside it is updated (threshold,
            threshold_method, temperature; other fields kept) or created.
        data_dir: converted folder (manifest + shards) with a `val` split.
        out_dir: output folder for metrics.json, the four PNGs and report.md.
        config: validated settings.
        split: split to report (`test`; `val` gives optimistic numbers).
        threshold: decision threshold on calibrated probabilities, in [0, 1];
            None chooses it on validation with `config.evaluate.threshold_method`.
        progress: show progress bars on stderr.

    Returns:
        The dict written to metrics.json.

    Raises:
        UserError: missing/unloadable model, size mismatch, unknown or empty
            split, a validation split with one class, a threshold outside [0, 1].
    """
    model_path, data_dir, out_dir = Path(model_path), Path(data_dir), Path(out_dir)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UserError(f"threshold must be in [0, 1]; got {threshold}")
    manifest = tfrecords.load_manifest(data_dir)
    for needed in ("val", split):
        if needed not in manifest["splits"]:
            raise UserError(f"{data_dir} has no split {needed!r}")
    val = _read_split(data_dir, "val")
    test = val if split == "val" else _read_split(data_dir, split)
    if np.unique(val.labels).size < 2:
        raise UserError(
            f"the validation split of {data_dir} holds one class only; the temperature "
            "and the threshold need both (convert with a larger --val)"
        )
    model, meta = load_model(model_path)
    size = input_size(model)
    if manifest["image_size"] != size:
        raise UserError(
            f"{model_path} takes {size} px images but {data_dir} holds "
            f"{manifest['image_size']} px images; convert the data with --size {size}"
        )
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, image_size=size))
    val_probs = _predict(model, data_dir, "val", len(val.labels), config, progress)
    test_probs = (
        val_probs
        if split == "val"
        else _predict(model, data_dir, split, len(test.labels), config, progress)
    )

    temperature = fit_temperature(val.labels, val_probs)
    val_calibrated = calibrate(val_probs, temperature)
    method = config.evaluate.threshold_method if threshold is None else "manual"
    chosen_on = "val" if threshold is None else "argument"
    if threshold is None:
        threshold = choose_threshold(val.labels, val_calibrated, method)
    calibrated = calibrate(test_probs, temperature)

    warnings = []
    if split == "val":
        warnings.append(
            "the evaluated split is the validation split that chose the threshold and "
            "temperature: the numbers are optimistic"
        )
    warning = _one_class_warning(test.labels, f"split {split!r}")
    if warning:
        warnings.append(warning)
    metrics = _metric_table(test.labels, calibrated, test.patients, threshold, config, progress)

    subgroups = {}
    for view in sorted({v for v in test.views if v}):
        rows = test.views == view
        warning = _one_class_warning(test.labels[rows], f"view {view}")
        if warning:
            warnings.append(warning)
        subgroups[view] = {
            "n": int(rows.sum()),
            "positives": int(test.labels[rows].sum()),
            "metrics": _metric_table(
                test.labels[rows], calibrated[rows], test.patients[rows], threshold, config,
                progress,
            ),
        }
    for text in warnings:
        logger.warning("warning: %s", text)

    bins = config.evaluate.calibration_bins
    calibration = {
        "method": "temperature scaling",
        "temperature": temperature,
        "fitted_on": "val",
        "val_nll_before": float(log_loss(val.labels, calibrate(val_probs, 1.0), labels=[0, 1])),
        "val_nll_after": float(log_loss(val.labels, val_calibrated, labels=[0, 1])),
        **_calibration_summary(test.labels, test_probs, calibrated, bins),
    }
    tn, fp, fn, tp = (metrics[k]["value"] for k in COUNTS)
    result: dict[str, Any] = {
        "model": str(model_path),
        "data_dir": str(data_dir),
        "data_source": manifest.get("source", ""),
        "split": split,
        "n": int(len(test.labels)),
        "positives": int(test.labels.sum()),
        "patients": int(np.unique(test.patients).size),
        "backend": keras.backend.backend(),
        "class_names": list(CLASS_NAMES),
        "threshold": {"value": threshold, "method": method, "chosen_on": chosen_on},
        "temperature": temperature,
        "metrics": metrics,
        "confusion_matrix": {"rows": "true [normal, pneumonia]",
                             "columns": "predicted [normal, pneumonia]",
                             "matrix": [[tn, fp], [fn, tp]]},
        "calibration": calibration,
        "subgroups": {"view": subgroups},
        "bootstrap": {"resamples": config.evaluate.bootstrap, "seed": config.train.seed,
                      "level": CI_LEVEL, "unit": "patient", "method": "percentile"},
        "warnings": warnings,
        "disclaimer": DISCLAIMER,
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "roc.png", _roc_png(test.labels, calibrated, threshold))
    atomic_write_bytes(out_dir / "pr.png", _pr_png(test.labels, calibrated, threshold))
    atomic_write_bytes(out_dir / "confusion.png", _confusion_png([[tn, fp], [fn, tp]], threshold))
    atomic_write_bytes(
        out_dir / "calibration.png",
        _calibration_png(test.labels, test_probs, calibrated, temperature, bins),
    )
    atomic_write_json(out_dir / "metrics.json", result)
    atomic_write_text(out_dir / "report.md", _report(result))
    atomic_write_json(
        model_json_path(model_path),
        {
            "class_names": list(CLASS_NAMES),
            "input_size": size,
            **meta,
            "threshold": threshold,
            "threshold_method": method,
            "temperature": temperature,
        },
    )
    return result


# ---------------------------------------------------------------- plots


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)  # Agg, without touching pyplot's global backend
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _undefined(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)


def _roc_png(labels: np.ndarray, probs: np.ndarray, threshold: float) -> bytes:
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    if np.unique(labels).size < 2:
        _undefined(ax, "ROC undefined: the split holds one class")
    else:
        fpr, tpr, _ = roc_curve(labels, probs)
        point = classification_metrics(labels, probs, threshold)
        ax.plot(fpr, tpr, label=f"ROC-AUC {point['roc_auc']:.3f}")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
        ax.plot(1 - point["specificity"], point["recall"], "o", color="C3",
                label=f"threshold {threshold:.3f}")
        ax.legend(loc="lower right")
    ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (recall)",
           xlim=(0, 1), ylim=(0, 1.01), title="ROC curve")
    return _png(fig)


def _pr_png(labels: np.ndarray, probs: np.ndarray, threshold: float) -> bytes:
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    if np.unique(labels).size < 2:
        _undefined(ax, "precision-recall undefined: the split holds one class")
    else:
        precision, recall, _ = precision_recall_curve(labels, probs)
        point = classification_metrics(labels, probs, threshold)
        ax.step(recall, precision, where="post", label=f"AP {point['pr_auc']:.3f}")
        prevalence = float(np.mean(labels))
        ax.axhline(prevalence, linestyle="--", color="grey", label=f"prevalence {prevalence:.3f}")
        if math.isfinite(point["precision"]):
            ax.plot(point["recall"], point["precision"], "o", color="C3",
                    label=f"threshold {threshold:.3f}")
        ax.legend(loc="upper right")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", xlim=(0, 1),
           ylim=(0, 1.01), title="Precision-recall curve")
    return _png(fig)


def _confusion_png(matrix: list[list[int]], threshold: float) -> bytes:
    counts = np.asarray(matrix)
    fig = Figure(figsize=(4.5, 4))
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax)
    totals = counts.sum(axis=1, keepdims=True)
    for (row, col), count in np.ndenumerate(counts):
        share = f"{100 * count / totals[row, 0]:.0f} %" if totals[row, 0] else "-"
        ax.text(col, row, f"{count}\n{share} of row", ha="center", va="center",
                color="white" if count > counts.max() / 2 else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES,
           xlabel="predicted", ylabel="true", title=f"Confusion matrix (threshold {threshold:.3f})")
    return _png(fig)


def _calibration_png(
    labels: np.ndarray, raw: np.ndarray, calibrated: np.ndarray, temperature: float, bins: int
) -> bytes:
    fig = Figure(figsize=(5.5, 7))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    width = 1.0 / bins
    for offset, (probs, name) in enumerate(
        [(raw, "before"), (calibrated, f"after (T = {temperature:.2f})")]
    ):
        rel = reliability(labels, probs, bins)
        filled = rel.counts > 0
        ece = expected_calibration_error(labels, probs, bins)
        top.plot(rel.mean_predicted[filled], rel.fraction_positive[filled], "o-",
                 color=f"C{offset}", label=f"{name}, ECE {ece:.3f}")
        bottom.bar(rel.edges[:-1] + width * (0.25 + 0.5 * offset), rel.counts, width=width / 2,
                   align="center", color=f"C{offset}", label=name)
    top.set(ylabel="observed pneumonia rate", xlim=(0, 1), ylim=(0, 1),
            title="Reliability diagram (equal-width bins)")
    top.legend(loc="upper left")
    bottom.set(xlabel="predicted pneumonia probability", ylabel="count per bin")
    bottom.legend(loc="upper center", fontsize="small")
    return _png(fig)


# ---------------------------------------------------------------- report


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def _table(metrics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = ["| metric | value | 95 % CI |", "|---|---|---|"]
    for name, label in METRICS:
        entry = metrics[name]
        low, high = entry["ci95"]
        digits = 1 if name in COUNTS else 3
        interval = "n/a" if low is None else f"{_fmt(low, digits)} – {_fmt(high, digits)}"
        lines.append(f"| {label} | {_fmt(entry['value'])} | {interval} |")
    return lines


def _report(result: Mapping[str, Any]) -> str:
    threshold = result["threshold"]
    cal = result["calibration"]
    boot = result["bootstrap"]
    (tn, fp), (fn, tp) = result["confusion_matrix"]["matrix"]
    how = {
        "youden": "maximising Youden's J on the validation split",
        "f1": "maximising F1 on the validation split",
        "manual": "given by the user",
    }[threshold["method"]]
    lines = [
        "# Pneumonia classifier evaluation",
        "",
        f"> **{DISCLAIMER}**",
        "",
        f"- model: `{result['model']}` (Keras backend {result['backend']})",
        f"- data: `{result['data_dir']}` (source {result['data_source'] or 'unknown'}), "
        f"split **{result['split']}**: {result['n']} images of {result['patients']} patients, "
        f"{result['positives']} with pneumonia",
        f"- decision threshold: **{threshold['value']:.4f}** on the calibrated pneumonia "
        f"probability ({how})",
        f"- confidence intervals: {boot['level']:.0%} percentile bootstrap over patients, "
        f"{boot['resamples']} resamples, seed {boot['seed']}; threshold and temperature held "
        "fixed",
        "",
    ]
    if result["warnings"]:
        lines += ["**Warnings**", ""] + [f"- {w}" for w in result["warnings"]] + [""]
    lines += ["## Metrics (calibrated probabilities)", ""] + _table(result["metrics"]) + [""]
    lines += [
        "| true \\ predicted | normal | pneumonia |",
        "|---|---|---|",
        f"| normal | {tn} | {fp} |",
        f"| pneumonia | {fn} | {tp} |",
        "",
        "![ROC curve](roc.png) ![Precision-recall curve](pr.png)",
        "",
        "![Confusion matrix](confusion.png)",
        "",
        "## Calibration",
        "",
        f"Temperature scaling fitted on the validation split: T = {cal['temperature']:.4f} "
        f"(validation NLL {cal['val_nll_before']:.4f} → {cal['val_nll_after']:.4f}).",
        "",
        f"| {result['split']} split | ECE ({len(cal['after']['bins']['counts'])} bins) | "
        "Brier score | NLL |",
        "|---|---|---|---|",
    ]
    for key in ("before", "after"):
        part = cal[key]
        lines.append(
            f"| {key} calibration | {part['ece']:.4f} | {part['brier']:.4f} | {part['nll']:.4f} |"
        )
    lines += ["", "![Reliability diagram](calibration.png)", "", "## Subgroups by view position",
              ""]
    views = result["subgroups"]["view"]
    if not views:
        lines.append("View position unknown for this data.")
    for view, group in views.items():
        lines += [f"### {view}: {group['n']} images, {group['positives']} with pneumonia", ""]
        lines += _table(group["metrics"]) + [""]
    lines += ["", f"*{DISCLAIMER}*", ""]
    return "\n".join(lines)
