"""The Markdown report of a paired comparison (`compare.md`), rendered from compare.json.

Renders values only; nothing is computed here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pneumokeras.evaluation.report import DISCLAIMER

__all__ = ["DISCLAIMER", "render"]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def _signed(value: Any) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _interval(ci: list[Any], signed: bool = False) -> str:
    low, high = ci
    if low is None:
        return "n/a"
    show = _signed if signed else _fmt
    return f"{show(low)} – {show(high)}"


def _p(value: Any) -> str:
    if value is None:
        return "n/a"
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def _models(record: Mapping[str, Any]) -> list[str]:
    lines = [
        "## Models",
        "",
        "| model | input | threshold | T | ROC-AUC | 95 % CI (bootstrap) | 95 % CI (DeLong) "
        "| sensitivity (95 % CI) | specificity (95 % CI) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in record["models"]:
        auc, sens, spec = m["roc_auc"], m["sensitivity"], m["specificity"]
        threshold = f"{m['threshold']:.4f}" + ("" if m["fitted"] else " ²")
        lines.append(
            f"| {m['name']} | {m['input_size']} px | {threshold} | {m['temperature']:.3f} | "
            f"{_fmt(auc['value'])} | {_interval(auc['ci95'])} | {_interval(auc['delong_ci95'])} "
            f"| {_fmt(sens['value'])} ({_interval(sens['ci95'])}) "
            f"| {_fmt(spec['value'])} ({_interval(spec['ci95'])}) |"
        )
    lines += ["", "Files:", ""]
    for m in record["models"]:
        ensemble = f", an ensemble of {m['members']} models" if m["members"] else ""
        lines.append(
            f"- **{m['name']}**: `{m['path']}`{ensemble}; read `{m['data_dir']}`; {m['provenance']}"
        )
    if not all(m["fitted"] for m in record["models"]):
        lines += ["", "² threshold and temperature never fitted (the card's defaults)."]
    return [*lines, ""]


def _auc_pairs(record: Mapping[str, Any]) -> list[str]:
    lines = [
        "## ROC-AUC differences",
        "",
        "| a | b | ΔAUC (b − a) | 95 % CI (paired bootstrap) | DeLong SE | z | p | p (Holm) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pair in record["pairs"]:
        auc = pair["roc_auc"]
        test = auc["delong"]
        se = f"{test['variance'] ** 0.5:.4f}" if test["estimable"] else "0 (not estimable)"
        z = _fmt(test["z"], 2)
        lines.append(
            f"| {pair['a']} | {pair['b']} | {_signed(auc['difference'])} | "
            f"{_interval(auc['ci95'], signed=True)} | {se} | {z} | {_p(test['p_value'])} | "
            f"{_p(test['p_holm'])} |"
        )
    return [*lines, ""]


def _decision_pairs(record: Mapping[str, Any], metric: str, cases: str) -> list[str]:
    lines = [
        f"| a | b | Δ{metric} (b − a) | 95 % CI (paired bootstrap) | right by a only | "
        "right by b only | McNemar exact p |",
        "|---|---|---|---|---|---|---|",
    ]
    for pair in record["pairs"]:
        entry = pair[metric]
        test = entry["mcnemar"]
        lines.append(
            f"| {pair['a']} | {pair['b']} | {_signed(entry['difference'])} | "
            f"{_interval(entry['ci95'], signed=True)} | {test['a_only']} | {test['b_only']} | "
            f"{_p(test['p_value'])} |"
        )
    return [f"### {metric.capitalize()} (on the {cases})", "", *lines, ""]


def render(record: Mapping[str, Any]) -> str:
    """compare.md from the compare.json object (`compare.compare_run`)."""
    boot = record["bootstrap"]
    folders = ", ".join(f"`{d}` ({size} px)" for size, d in record["data_dirs"].items())
    lines = [
        f"# Paired comparison of {len(record['models'])} models",
        "",
        f"> **{DISCLAIMER}**",
        "",
        f"- data: {folders}, split **{record['split']}**: {record['n']} images of "
        f"{record['patients']} patients, {record['positives']} with pneumonia; every model "
        "scored the same images (checked by example id, label and patient)",
        "- each model at its own decision threshold and temperature (its model card); "
        "nothing fitted here",
        f"- intervals 95 %: a paired percentile bootstrap over patients ({boot['resamples']} "
        f"resamples, seed {boot['seed']}; both models on the same resampled patients), "
        "DeLong's normal interval for each AUC, Wilson score intervals for sensitivity and "
        "specificity",
        "",
    ]
    if record["warnings"]:
        lines += ["**Warnings**", ""] + [f"- {w}" for w in record["warnings"]] + [""]
    lines += _models(record)
    lines += ["![ROC curves of every model](roc.png)", ""]
    lines += _auc_pairs(record)
    lines += [
        "## Sensitivity and specificity differences at each model's threshold",
        "",
        *_decision_pairs(record, "sensitivity", "images with pneumonia"),
        *_decision_pairs(record, "specificity", "images without"),
        "## How to read this",
        "",
        "- ΔAUC is b's ROC-AUC minus a's on the same images. DeLong's test (DeLong, DeLong & "
        "Clarke-Pearson, Biometrics 1988) accounts for the two models being scored on the "
        "same images; p (Holm) corrects for comparing several pairs. A paired bootstrap "
        "interval that excludes 0 agrees with a small p.",
        "- Sensitivity and specificity differences come from each model's own threshold: a "
        "model may trade one for the other without ranking better. McNemar's exact test "
        "counts the images only one of the two models decides right.",
        "- DeLong and McNemar treat images as independent and the bootstrap treats patients "
        "as independent; with several images per patient, read the bootstrap interval. No "
        "interval covers a change of hospital, scanner or population (see `evaluate "
        "--split all` on external data).",
        "- The per-image probabilities are in `compare.csv` to redo any of this elsewhere.",
        "",
        f"*{DISCLAIMER}*",
        "",
    ]
    return "\n".join(lines)
