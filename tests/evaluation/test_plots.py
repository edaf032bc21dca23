"""Tests for pneumokeras.evaluation.plots: valid PNGs, the threshold marker, one-class splits.

No Keras (runs once).
"""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

from pneumokeras.evaluation import plots
from pneumokeras.evaluation.calibration import calibrate, calibration_summary
from pneumokeras.evaluation.metrics import classification_metrics

RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 2, 120)
PROBS = np.clip(0.4 * LABELS + 0.6 * RNG.random(120), 0, 1)


def _point(labels, probs, threshold):
    return {
        k: (None if np.isnan(v) else v)
        for k, v in classification_metrics(labels, probs, threshold).items()
    }


def _calibration(labels, raw, temperature, applied=True):
    calibrated = calibrate(raw, temperature)
    summary = calibration_summary(labels, raw, calibrated, bins=10)
    return calibrated, {
        "temperature": temperature,
        "applied": applied,
        "split_nll_before": summary["before"]["nll"],
        "split_nll_after": summary["after"]["nll"],
        **summary,
    }


def _legend(fig) -> list[str]:
    return [label for ax in fig.axes for label in ax.get_legend_handles_labels()[1]]


def _texts(fig) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def _assert_png(data: bytes) -> None:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    image.verify()
    assert image.format == "PNG"
    assert min(image.size) > 200


def test_roc_and_pr_show_the_curve_and_the_operating_point():
    point = _point(LABELS, PROBS, 0.5)
    roc = plots.roc_figure(LABELS, PROBS, 0.5, point)
    assert "threshold 0.500" in _legend(roc)
    assert any("AUC" in x for x in _legend(roc))
    marker = next(line for line in roc.axes[0].lines if line.get_label() == "threshold 0.500")
    assert marker.get_xydata()[0] == pytest.approx([1 - point["specificity"], point["recall"]])
    pr = plots.pr_figure(LABELS, PROBS, 0.5, point)
    assert "threshold 0.500" in _legend(pr)
    assert f"prevalence {LABELS.mean():.3f}" in _legend(pr)
    marker = next(line for line in pr.axes[0].lines if line.get_label() == "threshold 0.500")
    assert marker.get_xydata()[0] == pytest.approx([point["recall"], point["precision"]])
    for fig in (roc, pr):
        _assert_png(plots.to_png(fig))


def test_pr_leaves_out_an_undefined_operating_point():
    point = _point(LABELS, PROBS, 1.0)  # nothing predicted positive: precision undefined
    assert point["precision"] is None
    assert not any(
        x.startswith("threshold") for x in _legend(plots.pr_figure(LABELS, PROBS, 1.0, point))
    )


def test_confusion_matrix_shows_counts_and_row_shares():
    fig = plots.confusion_figure([[30, 10], [5, 15]], 0.42)
    texts = _texts(fig)
    assert "30\n75 % of row" in texts
    assert "15\n75 % of row" in texts
    assert "5\n25 % of row" in texts
    assert fig.axes[0].get_title() == "Confusion matrix (threshold 0.420)"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["normal", "pneumonia"]
    _assert_png(plots.to_png(fig))


def test_calibration_diagram_labels_before_and_after():
    calibrated, cal = _calibration(LABELS, PROBS, 0.5)
    fig = plots.calibration_figure(LABELS, PROBS, calibrated, cal)
    legend = _legend(fig)
    assert f"before, ECE {cal['before']['ece']:.3f}" in legend
    assert any(x.startswith("after (T = 0.50") for x in legend)
    bars = [p.get_height() for p in fig.axes[1].patches]
    assert sum(bars) == 2 * 120  # counts per bin, before and after
    _assert_png(plots.to_png(fig))
    # A temperature kept at 1, and one that made the split's NLL worse, say so.
    _, kept = _calibration(LABELS, PROBS, 1.0, applied=False)
    assert any(
        "kept at 1" in x for x in _legend(plots.calibration_figure(LABELS, PROBS, PROBS, kept))
    )
    worse_probs, worse = _calibration(LABELS, PROBS, 10.0)
    assert worse["split_nll_after"] > worse["split_nll_before"]
    assert any(
        "NLL worse" in x
        for x in _legend(plots.calibration_figure(LABELS, PROBS, worse_probs, worse))
    )


def test_one_class_split_gives_undefined_curves_and_valid_pngs():
    labels = np.zeros(20, int)
    probs = np.linspace(0.05, 0.6, 20)
    point = _point(labels, probs, 0.5)
    roc = plots.roc_figure(labels, probs, 0.5, point)
    pr = plots.pr_figure(labels, probs, 0.5, point)
    assert "ROC undefined: the split holds one class" in _texts(roc)
    assert "precision-recall undefined" in _texts(pr)
    calibrated, cal = _calibration(labels, probs, 1.0, applied=False)
    figures = (
        roc,
        pr,
        plots.confusion_figure([[18, 2], [0, 0]], 0.5),
        plots.calibration_figure(labels, probs, calibrated, cal),
    )
    assert "0\n-" in _texts(figures[2])  # the empty pneumonia row has no share
    for fig in figures:
        _assert_png(plots.to_png(fig))


def test_no_pyplot_figures_are_created():
    point = _point(LABELS, PROBS, 0.5)
    calibrated, cal = _calibration(LABELS, PROBS, 0.5)
    for fig in (
        plots.roc_figure(LABELS, PROBS, 0.5, point),
        plots.pr_figure(LABELS, PROBS, 0.5, point),
        plots.confusion_figure([[1, 2], [3, 4]], 0.5),
        plots.calibration_figure(LABELS, PROBS, calibrated, cal),
    ):
        plots.to_png(fig)
    pyplot = sys.modules.get("matplotlib.pyplot")  # imported by scikit-learn's displays
    assert pyplot is None or pyplot.get_fignums() == []


def _png(figure) -> Image.Image:
    return Image.open(io.BytesIO(plots.to_png(figure)))


def test_forest_figure_one_panel_per_attribute_with_small_groups_as_text():
    from pneumokeras.evaluation import subgroups
    from pneumokeras.sources.attributes import Attributes

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    probs = np.clip(0.3 * labels + 0.7 * rng.random(400), 0, 1)
    attributes = [
        Attributes(sex="F" if i % 2 else "M", view="LL" if i < 5 else "AP" if i % 3 else "PA")
        for i in range(400)
    ]
    analysis = subgroups.analyse(
        labels,
        probs,
        np.arange(400),
        0.5,
        attributes,
        ["sex", "view"],
        subgroups.Settings(resamples=20),
    )
    figure = plots.forest_figure(analysis, overall_auc=0.7)
    assert len(figure.axes) == 2
    assert figure.axes[0].get_title().startswith("sex")
    texts = [t.get_text() for t in figure.axes[1].texts]
    assert any(t.startswith("too small") or t.startswith("no ") for t in texts)  # LL
    assert _png(figure).format == "PNG"
    with pytest.raises(ValueError, match="at least one"):
        plots.forest_figure({**analysis, "attributes": []}, None)


def test_compare_roc_figure_draws_every_model():
    other = np.clip(PROBS + RNG.normal(0, 0.2, PROBS.size), 0, 1)
    figure = plots.compare_roc_figure(
        LABELS, {"a": PROBS, "b": other}, {"a": 0.5, "b": 0.4}, {"a": 0.8, "b": 0.7}
    )
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert any(label.startswith("a (AUC 0.800)") for label in labels)
    assert any(label.startswith("b (AUC 0.700)") for label in labels)
    assert _png(figure).size[0] > 100
