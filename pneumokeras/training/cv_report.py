"""report.md of a cross-validation, rendered from its `CVResult` (nothing computed here)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pneumokeras.evaluation import report
from pneumokeras.models.ensemble import ENSEMBLE_FILE
from pneumokeras.training.out_of_fold import FOLD_METRICS

if TYPE_CHECKING:
    from pneumokeras.training.cv import CVResult


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _examples(result: CVResult) -> str:
    """`40 train+val patients, 12 with pneumonia`, or images of patients when they differ."""
    if result.patients == result.examples:
        return f"{result.examples} train+val patients, {result.positives} with pneumonia"
    return (
        f"{result.examples} train+val images ({result.positives} with pneumonia) of "
        f"{result.patients} patients"
    )


def render_report(result: CVResult, roc_file: str) -> str:
    """report.md: data, threshold, per-fold table, pooled metrics, the ensemble.

    Args:
        result: what `cv.aggregate` computed.
        roc_file: the ROC figure's file name beside the report.
    """
    cal = result.calibration
    lines = [
        f"# Cross-validation: {result.num_folds} folds",
        "",
        f"> **{report.DISCLAIMER}**",
        "",
        f"- data: `{result.data_dir}` (source {result.data_source or 'unknown'}); "
        f"{_examples(result)}, each predicted once by the fold model that did not train "
        "on it; the test split was not used",
        f"- threshold **{result.threshold:.4f}** ({result.threshold_method}, chosen on the "
        "pooled out-of-fold predictions), the same for every fold",
        f"- temperature {result.temperature:.3f} — {cal['explanation']}",
        "",
        "## Per fold (held-out fold, pooled threshold)",
        "",
        "| fold | n | positives | " + " | ".join(FOLD_METRICS.values()) + " |",
        "|---" * (3 + len(FOLD_METRICS)) + "|",
    ]
    for fold in result.folds:
        scores = fold.scores
        values = " | ".join(_fmt(scores.metrics[name]) for name in FOLD_METRICS)
        lines.append(f"| {scores.fold} | {scores.n} | {scores.positives} | {values} |")
    lines.append(
        "| **mean ± sd** | | | "
        + " | ".join(
            f"{_fmt(result.summary[n].mean)} ± {_fmt(result.summary[n].sd)}" for n in FOLD_METRICS
        )
        + " |"
    )
    lines += [
        "",
        f"![ROC curves of the folds]({roc_file})",
        "",
        "## Pooled out-of-fold metrics (95 % intervals)",
        "",
        *report.metric_table(result.pooled),
        "",
        "## Ensemble",
        "",
        f"`{ENSEMBLE_FILE}` averages the {result.num_folds} fold models' probabilities; "
        f"its card `{Path(ENSEMBLE_FILE).with_suffix('.json')}` holds the threshold and "
        "temperature above. They were fitted on single-model out-of-fold predictions: the "
        "ensemble's own test-split figures come from `evaluate`.",
        "",
        f"*{report.DISCLAIMER}*",
        "",
    ]
    return "\n".join(lines)
