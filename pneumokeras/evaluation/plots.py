"""The evaluation figures: ROC, precision-recall, confusion matrix, reliability diagram,
and the ROC curves of the cross-validation folds.

Drawn with scikit-learn's displays (`RocCurveDisplay`, `PrecisionRecallDisplay`,
`ConfusionMatrixDisplay`, `CalibrationDisplay`) on the axes of a plain matplotlib
`Figure` rendered by the Agg canvas, so no pyplot figure (global state, a GUI
backend) is ever created. Each `*_figure` function returns the `Figure`; `to_png`
renders one. Values at the decision threshold (the operating point, the counts,
ECE) come in from the metrics; the displays compute only the curves they draw.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

from pneumokeras.models.model_card import CLASS_NAMES

DPI = 110


def to_png(fig: Figure) -> bytes:
    """PNG bytes of a figure (Agg canvas, tight bounding box, 110 dpi)."""
    FigureCanvasAgg(fig)  # Agg, without touching pyplot's global backend
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _undefined(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)


def _one_class(labels: np.ndarray) -> bool:
    return np.unique(labels).size < 2


def roc_figure(
    labels: np.ndarray, probs: np.ndarray, threshold: float, point: Mapping[str, float | None]
) -> Figure:
    """ROC curve with the chance line and the operating point at `threshold`.

    Args:
        labels: (N,) int, 1 = pneumonia.
        probs: (N,) pneumonia probabilities.
        threshold: the decision threshold (for the marker's label).
        point: metric values at the threshold: `recall`, `specificity` (None when
            undefined).
    """
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    if _one_class(labels):
        _undefined(ax, "ROC undefined: the split holds one class")
    else:
        RocCurveDisplay.from_predictions(labels, probs, ax=ax, name="ROC", plot_chance_level=True)
        if point["recall"] is not None and point["specificity"] is not None:
            ax.plot(
                1 - point["specificity"],
                point["recall"],
                "o",
                color="C3",
                label=f"threshold {threshold:.3f}",
            )
        ax.legend(loc="lower right")
    _roc_axes(ax, "ROC curve")
    return fig


def _roc_axes(ax: Any, title: str) -> None:
    """The axes of a ROC figure: rates from 0 to 1, labelled, titled."""
    ax.set(
        xlabel="1 - specificity (false positive rate)",
        ylabel="sensitivity (recall)",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=title,
    )


def pr_figure(
    labels: np.ndarray, probs: np.ndarray, threshold: float, point: Mapping[str, float | None]
) -> Figure:
    """Precision-recall curve with the prevalence line and the operating point.

    Args: as `roc_figure`; `point` gives `recall` and `precision` (the marker is
    left out when precision is undefined: nothing predicted positive).
    """
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    if _one_class(labels):
        _undefined(ax, "precision-recall undefined: the split holds one class")
    else:
        PrecisionRecallDisplay.from_predictions(
            labels,
            probs,
            ax=ax,
            name="PR",
            plot_chance_level=True,
            chance_level_kw={"label": f"prevalence {np.mean(labels):.3f}"},
        )
        if point["precision"] is not None and point["recall"] is not None:
            ax.plot(
                point["recall"],
                point["precision"],
                "o",
                color="C3",
                label=f"threshold {threshold:.3f}",
            )
        ax.legend(loc="upper right")
    ax.set(
        xlabel="recall (sensitivity)",
        ylabel="precision (PPV)",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title="Precision-recall curve",
    )
    return fig


def confusion_figure(matrix: Sequence[Sequence[int]], threshold: float) -> Figure:
    """Confusion matrix, rows true `[normal, pneumonia]`, columns predicted; counts and row %.

    Args:
        matrix: 2×2 counts `[[tn, fp], [fn, tp]]`.
        threshold: the decision threshold (title).
    """
    counts = np.asarray(matrix, dtype=int)
    fig = Figure(figsize=(4.5, 4))
    ax = fig.add_subplot()
    display = ConfusionMatrixDisplay(counts, display_labels=list(CLASS_NAMES))
    display.plot(ax=ax, cmap="Blues", values_format="d", colorbar=True)
    totals = counts.sum(axis=1)
    for (row, col), count in np.ndenumerate(counts):
        share = f"{100 * count / totals[row]:.0f} %" if totals[row] else "-"
        display.text_[row, col].set_text(f"{count}\n{share} of row")
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix (threshold {threshold:.3f})")
    return fig


def calibration_figure(
    labels: np.ndarray, raw: np.ndarray, calibrated: np.ndarray, calibration: Mapping[str, Any]
) -> Figure:
    """Reliability diagram before and after temperature scaling, with counts per bin.

    Args:
        labels: (N,) int, 1 = pneumonia.
        raw: (N,) uncalibrated pneumonia probabilities.
        calibrated: (N,) after temperature scaling.
        calibration: metrics.json's `calibration` entry: `temperature`, `applied`,
            `split_nll_before`/`_after`, and `before`/`after` each with `ece` and
            `bins.counts` (the bin count is taken from there).
    """
    bins = len(calibration["before"]["bins"]["counts"])
    fig = Figure(figsize=(5.5, 7))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    if not calibration["applied"]:
        after = "after (T kept at 1)"
    elif calibration["split_nll_after"] > calibration["split_nll_before"]:
        after = f"after (T = {calibration['temperature']:.2f}, NLL worse)"
    else:
        after = f"after (T = {calibration['temperature']:.2f})"
    width = 1.0 / bins
    left = np.linspace(0.0, 1.0, bins + 1)[:-1]
    for offset, (probs, name, key) in enumerate(
        [(raw, "before", "before"), (calibrated, after, "after")]
    ):
        part = calibration[key]
        CalibrationDisplay.from_predictions(
            labels,
            probs,
            n_bins=bins,
            strategy="uniform",
            ax=top,
            ref_line=offset == 0,
            name=f"{name}, ECE {part['ece']:.3f}",
            color=f"C{offset}",
        )
        bottom.bar(
            left + width * (0.25 + 0.5 * offset),
            part["bins"]["counts"],
            width=width / 2,
            align="center",
            color=f"C{offset}",
            label=name,
        )
    top.set(
        xlabel="",
        ylabel="observed pneumonia rate",
        xlim=(0, 1),
        ylim=(0, 1),
        title="Reliability diagram (equal-width bins)",
    )
    top.legend(loc="upper left")
    bottom.set(xlabel="predicted pneumonia probability", ylabel="count per bin")
    bottom.legend(loc="upper center", fontsize="small")
    return fig


def cv_roc_figure(fold_labels: Sequence[np.ndarray], fold_probs: Sequence[np.ndarray]) -> Figure:
    """The K folds' ROC curves on their held-out patients, and their mean ± 1 sd.

    The mean curve averages the folds' sensitivities on a common grid of
    1 - specificity (vertical averaging, Fawcett, Pattern Recognition Letters
    2006); its legend gives the mean ± sd of the folds' ROC-AUCs. A fold holding
    one class has no curve and is left out, with a note in its legend entry.

    Args:
        fold_labels: per fold, (N_k,) int, 1 = pneumonia.
        fold_probs: per fold, (N_k,) pneumonia probabilities of its held-out model.
    """
    from sklearn.metrics import auc, roc_curve

    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot()
    grid = np.linspace(0.0, 1.0, 201)
    curves, aucs = [], []
    for k, (labels, probs) in enumerate(zip(fold_labels, fold_probs, strict=True)):
        if _one_class(labels):
            ax.plot([], [], lw=1, label=f"fold {k}: one class, no curve")
            continue
        fpr, tpr, _ = roc_curve(labels, probs)
        aucs.append(auc(fpr, tpr))
        ax.plot(fpr, tpr, lw=1, alpha=0.6, label=f"fold {k} (AUC {aucs[-1]:.3f})")
        curve = np.interp(grid, fpr, tpr)
        curve[0] = 0.0
        curves.append(curve)
    if curves:
        mean, sd = np.mean(curves, axis=0), np.std(curves, axis=0)
        mean[-1] = 1.0
        spread = f" ± {np.std(aucs, ddof=1):.3f}" if len(aucs) > 1 else ""
        ax.plot(grid, mean, color="k", lw=2, label=f"mean (AUC {np.mean(aucs):.3f}{spread})")
        ax.fill_between(
            grid,
            np.clip(mean - sd, 0, 1),
            np.clip(mean + sd, 0, 1),
            color="grey",
            alpha=0.2,
            label="± 1 sd",
        )
    else:
        _undefined(ax, "ROC undefined: every fold holds one class")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="chance")
    ax.legend(loc="lower right", fontsize="small")
    ax.set(
        xlabel="1 - specificity (false positive rate)",
        ylabel="sensitivity (recall)",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=f"ROC of the {len(fold_labels)} held-out folds",
    )
    return fig


def forest_figure(subgroups: Mapping[str, Any], overall_auc: float | None) -> Figure:
    """Subgroup ROC-AUCs with their intervals, one panel per attribute (a forest plot).

    Subgroups too small for a number are listed with their counts and no point.

    Args:
        subgroups: metrics.json's `subgroups` (`subgroups.analyse`); at least one
            attribute.
        overall_auc: the whole split's ROC-AUC (a dashed line), or None.
    """
    names = list(subgroups["attributes"])
    if not names:
        raise ValueError("forest_figure needs at least one analysed attribute")
    by = subgroups["by"]
    sizes = [len(by[name]["groups"]) for name in names]
    fig = Figure(figsize=(7, 1.2 + 0.42 * sum(sizes) + 0.5 * len(names)))
    axes = fig.subplots(len(names), 1, sharex=True, height_ratios=[s + 0.6 for s in sizes])
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, names, strict=True):
        groups = by[name]["groups"]
        positions = np.arange(len(groups))[::-1]
        labels = []
        for y, (value, group) in zip(positions, groups.items(), strict=True):
            auc = group["metrics"]["roc_auc"]
            labels.append(f"{value}  (n {group['n']}, {group['positives']}+)")
            if auc["value"] is None:
                ax.text(0.02, y, group["reason"] or "not estimable", va="center", fontsize=8,
                        color="grey", transform=ax.get_yaxis_transform())  # fmt: skip
                continue
            low, high = auc["ci95"]
            error = [[auc["value"] - low], [high - auc["value"]]] if low is not None else None
            ax.errorbar(auc["value"], y, xerr=error, fmt="s", color="C0", capsize=3)
        if overall_auc is not None:
            ax.axvline(overall_auc, color="C3", ls="--", lw=1, label=f"all {overall_auc:.3f}")
            ax.legend(loc="lower left", fontsize="small")
        ax.axvline(0.5, color="grey", lw=0.5)
        gap = by[name]["gaps"]["roc_auc"]
        title = name
        if gap["estimable"] and gap["ci95"][0] is not None:
            title += (
                f": AUC gap {gap['high']} − {gap['low']} = {gap['difference']:.3f} "
                f"({gap['ci95'][0]:.3f} – {gap['ci95'][1]:.3f})"
            )
        ax.set(yticks=positions, yticklabels=labels, ylim=(-0.7, len(groups) - 0.3), title=title)
    axes[-1].set(xlim=(0, 1), xlabel="ROC-AUC (95 % patient-bootstrap interval)")
    return fig


def compare_roc_figure(
    labels: np.ndarray,
    probs: Mapping[str, np.ndarray],
    thresholds: Mapping[str, float],
    aucs: Mapping[str, float],
) -> Figure:
    """The ROC curves of several models on the same images, each with its operating point.

    Args:
        labels: (N,) int, 1 = pneumonia, both classes.
        probs: model name → (N,) calibrated pneumonia probabilities.
        thresholds: model name → its decision threshold.
        aucs: model name → its ROC-AUC (legend).
    """
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot()
    for k, (name, values) in enumerate(probs.items()):
        color = f"C{k % 10}"
        RocCurveDisplay.from_predictions(
            labels,
            values,
            ax=ax,
            name=f"{name} (AUC {aucs[name]:.3f})",
            curve_kwargs={"color": color},
            plot_chance_level=k == 0,
        )
        decided = np.asarray(values) >= thresholds[name]
        sensitivity = decided[labels == 1].mean()
        specificity = (~decided[labels == 0]).mean()
        ax.plot(1 - specificity, sensitivity, "o", color=color)
    ax.legend(loc="lower right", fontsize="small")
    _roc_axes(ax, "ROC curves on the same images (dots: each model's threshold)")
    return fig
