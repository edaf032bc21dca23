"""The Markdown evaluation report (`report.md`), rendered from the metrics.json dict.

Renders values only; nothing is computed here. The probabilities are called
"calibrated" only when a fitted temperature was applied and did not make the
evaluated split's NLL worse (`probability_words`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DISCLAIMER = "Research and education only; not for diagnosis or any clinical decision."
PLOTS = ("roc.png", "pr.png", "confusion.png", "calibration.png")
SUBGROUP_PLOT = "subgroups.png"  # written when an attribute was analysed
METRIC_LABELS = {
    "accuracy": "Accuracy",
    "precision": "Precision (PPV)",
    "recall": "Recall (sensitivity)",
    "specificity": "Specificity",
    "f1": "F1",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC (average precision)",
    "brier": "Brier score",
    "tn": "True negatives",
    "fp": "False positives",
    "fn": "False negatives",
    "tp": "True positives",
}
CI_METHOD_LABELS = {
    "wilson": "Wilson score",
    "bootstrap": "patient bootstrap",
    "none": "none (a count)",
}
THRESHOLD_HOW = {
    "youden": "maximising Youden's J on the validation split",
    "f1": "maximising F1 on the validation split",
    "manual": "given by the user",
}


def calibration_hurt(calibration: Mapping[str, Any]) -> bool:
    """Whether the applied temperature raised the evaluated split's NLL."""
    return bool(calibration["applied"]) and (
        calibration["split_nll_after"] > calibration["split_nll_before"]
    )


def probability_words(calibration: Mapping[str, Any]) -> str:
    """What to call the reported probabilities: calibrated, or what they are instead."""
    if not calibration["applied"]:
        return "uncalibrated"
    return "temperature-scaled" if calibration_hurt(calibration) else "calibrated"


def _metrics_heading(calibration: Mapping[str, Any]) -> str:
    words = probability_words(calibration)
    if not calibration["applied"]:
        return f"## Metrics ({words} probabilities; temperature kept at 1)"
    if calibration_hurt(calibration):
        return (
            f"## Metrics ({words} probabilities, T = {calibration['temperature']:.3f}; "
            "calibration made this split's NLL worse)"
        )
    return f"## Metrics ({words} probabilities)"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def metric_table(metrics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Markdown table rows: metric, value, 95 % interval, how the interval was made.

    A bootstrap interval of zero width (every resample gave the same value, e.g. F1
    0 when nothing is predicted positive) is marked, with a note under the table.
    """
    lines = ["| metric | value | 95 % CI | CI method |", "|---|---|---|---|"]
    degenerate = False
    for name, label in METRIC_LABELS.items():
        entry = metrics[name]
        low, high = entry["ci95"]
        if entry["ci_method"] == "none":
            interval = "—"
        elif low is None:
            interval = "n/a"
        else:
            interval = f"{_fmt(low)} – {_fmt(high)}"
            if entry["ci_method"] == "bootstrap" and low == high:
                interval += " ¹"
                degenerate = True
        method = CI_METHOD_LABELS[entry["ci_method"]]
        lines.append(f"| {label} | {_fmt(entry['value'])} | {interval} | {method} |")
    if degenerate:
        lines += [
            "",
            "¹ zero width: every bootstrap resample gave the same value, which "
            "says little about its uncertainty.",
        ]
    return lines


def _count(value: Any, noun: str) -> str:
    return f"{value} {noun}" if value is not None else f"{noun}: not recorded"


def _data_sets(result: Mapping[str, Any]) -> list[str]:
    """Which data set the model was trained on and which it is tested on, in words.

    Empty for a metrics.json dict without `data_sets` (written before external
    validation existed).
    """
    sets = result.get("data_sets")
    if not sets:
        return []
    trained, tested = sets["trained_on"], sets["evaluated_on"]
    if trained["recorded"]:
        splits = ", ".join(f"{name} {count}" for name, count in trained["splits"].items())
        training = (
            f"- **trained on**: source **{trained['source'] or 'unknown'}** (layout "
            f"{trained['layout'] or 'not recorded'}), `{trained['data_dir']}`: "
            f"{_count(trained['images'], 'images')} ({splits}), "
            f"{_count(trained['positives'], 'with pneumonia')}, "
            f"{_count(trained['patients'], 'patients')}; manifest fingerprint "
            f"{trained['fingerprint']}"
        )
    else:
        training = "- **trained on**: not recorded in the model card"
    splits = ", ".join(f"{name} {count}" for name, count in tested["splits"].items())
    lines = [
        "## Data sets",
        "",
        training,
        f"- **tested on**: source **{tested['source'] or 'unknown'}** (layout "
        f"{tested['layout'] or 'not recorded'}), `{tested['data_dir']}`, split "
        f"**{tested['split']}** ({splits}): {tested['images']} images of "
        f"{tested['patients']} patients, {tested['positives']} with pneumonia; manifest "
        f"fingerprint {tested['fingerprint']}",
    ]
    if result.get("external"):
        cal = trained.get("calibrated_on") or {}
        if result.get("trained_here"):
            verdict = (
                f"- **evaluated as external data ({result['provenance']}), but the model was "
                "trained on this converted folder** (the same manifest fingerprint): this is "
                "not an external validation."
            )
        else:
            verdict = (
                f"- **external validation**: the model did not train on this data "
                f"({result['provenance']})."
            )
        lines += [
            verdict,
            f"- **threshold and temperature come from the training data set**: the model "
            f"card's own, fitted on the {cal.get('fitted_on') or 'val'} split of "
            f"`{cal.get('data_dir') or trained['data_dir']}` "
            f"({_count(cal.get('patients'), 'patients')}); nothing was fitted on the tested "
            "data" + (" except in the re-fit comparison below." if result.get("refit") else "."),
        ]
    else:
        fitted = (
            "kept from the model card's out-of-fold fit"
            if result["calibration"].get("fitted_on") == "oof"
            else "fitted on this data's validation split"
        )
        lines.append(
            f"- **internal evaluation**: {result.get('provenance', 'the model’s own data set')}; "
            f"threshold and temperature are {fitted}."
        )
    return [*lines, ""]


def _header(result: Mapping[str, Any]) -> list[str]:
    threshold, boot = result["threshold"], result["bootstrap"]
    words = probability_words(result["calibration"])
    how = THRESHOLD_HOW[threshold["method"]]
    if result.get("external") and threshold["method"] != "manual":
        how = f"the model's own from its card, {how} of its training data"
    return [
        "# Pneumonia classifier evaluation",
        "",
        f"> **{DISCLAIMER}**",
        "",
        f"- model: `{result['model']}` (Keras backend {result['backend']})",
        f"- data: `{result['data_dir']}` (source {result['data_source'] or 'unknown'}), "
        f"split **{result['split']}**: {result['n']} images of {result['patients']} patients, "
        f"{result['positives']} with pneumonia",
        f"- decision threshold: **{threshold['value']:.4f}** on the {words} pneumonia "
        f"probability ({how})",
        f"- {boot['level']:.0%} confidence intervals: Wilson score intervals for the "
        "proportions (accuracy, precision, recall, specificity); a percentile bootstrap "
        f"over patients ({boot['resamples']} resamples, seed {boot['seed']}) for F1, "
        "ROC-AUC, PR-AUC and the Brier score; none for the counts. Threshold and "
        "temperature are held fixed.",
        "",
    ]


def _calibration(result: Mapping[str, Any]) -> list[str]:
    cal, split = result["calibration"], result["split"]
    own = cal.get("source") == "model card"
    where = "training data's validation split" if own else "validation split"
    validation = (
        f"{where[0].upper()}{where[1:]}: {cal['val_n']} images of {cal['val_patients']} "
        f"patients ({cal['val_positives']} with pneumonia, {cal['val_negatives']} without)."
    )
    intro = (
        f"Temperature from the model card — {cal['explanation']}. "
        if own
        else f"Temperature scaling on the validation split — {cal['explanation']}. "
    )
    lines = [
        "## Calibration",
        "",
        intro + validation,
        "",
        "| NLL (nats per image) | before | after |",
        "|---|---|---|",
        f"| {where} | {cal['val_nll_before']:.4f} | {cal['val_nll_after']:.4f} |",
        f"| {split} split | {cal['split_nll_before']:.4f} | {cal['split_nll_after']:.4f} |",
        "",
    ]
    if calibration_hurt(cal):
        lines += [
            f"**Calibration made the {split} split worse**: its NLL rose from "
            f"{cal['split_nll_before']:.4f} to {cal['split_nll_after']:.4f}. The probabilities "
            "above are temperature-scaled, not better calibrated.",
            "",
        ]
    lines += [
        f"| {split} split | ECE ({len(cal['after']['bins']['counts'])} bins) | Brier score | NLL |",
        "|---|---|---|---|",
    ]
    for key in ("before", "after"):
        part = cal[key]
        lines.append(
            f"| {key} calibration | {part['ece']:.4f} | {part['brier']:.4f} | {part['nll']:.4f} |"
        )
    return [*lines, "", "![Reliability diagram](calibration.png)"]


REFIT_ROWS = {
    "temperature": "Temperature T",
    "threshold": "Threshold",
    "sensitivity": "Sensitivity (recall)",
    "specificity": "Specificity",
    "f1": "F1",
    "ece": "ECE",
    "brier": "Brier score",
    "nll": "NLL (nats per image)",
    "roc_auc": "ROC-AUC (unchanged by T)",
}


def _images_of_patients(part: Mapping[str, Any]) -> str:
    """`N images (P positive) of M patients (Q with pneumonia)`: images and patients apart."""
    patients = f"{part['patients']} patients"
    if "positive_patients" in part:  # absent from metrics.json files written before it
        patients += f" ({part['positive_patients']} with pneumonia)"
    return f"{part['n']} images ({part['positives']} positive) of {patients}"


def _refit(refit: Mapping[str, Any]) -> list[str]:
    """The own-vs-refit table: what re-fitting on part of the new data would change."""
    part, held, fit = refit["refit_part"], refit["held_out"], refit["fit"]
    lines = [
        "## Own vs re-fitted threshold and temperature",
        "",
        f"A seeded (seed {refit['seed']}), class-stratified {refit['fraction']:.0%} of the "
        f"patients ({_images_of_patients(part)}) re-fits the temperature and then the "
        f"threshold "
        f"({THRESHOLD_HOW[refit['threshold_method']].replace('the validation split', 'that part')}"
        f"); temperature: {fit['explanation']}. Both are scored on the other "
        f"{_images_of_patients(held)}. The model card is not changed.",
        "",
        "| held-out part | model's own (training data) | re-fitted on this data |",
        "|---|---|---|",
    ]
    for key, label in REFIT_ROWS.items():
        digits = 4 if key in ("temperature", "threshold", "ece", "brier", "nll") else 3
        lines.append(
            f"| {label} | {_fmt(refit['own'][key], digits)} | {_fmt(refit['refit'][key], digits)} |"
        )
    return [
        *lines,
        "",
        "Lower ECE, Brier score and NLL are better. A large gain from re-fitting says the "
        "model's probabilities and operating point do not carry over to this data set as "
        "they are; the re-fitted numbers are what a site would get after re-fitting on a "
        "labelled sample of its own (a smaller sample moves them more).",
        "",
    ]


def render_report(result: Mapping[str, Any]) -> str:
    """The Markdown report of one evaluation.

    Args:
        result: the dict written to metrics.json by `evaluate.evaluate_run`.

    Returns:
        Markdown text embedding the four PNGs by relative path.
    """
    (tn, fp), (fn, tp) = result["confusion_matrix"]["matrix"]
    lines = _header(result) + _data_sets(result)
    if result["warnings"]:
        lines += ["**Warnings**", ""] + [f"- {w}" for w in result["warnings"]] + [""]
    lines += [_metrics_heading(result["calibration"]), ""]
    lines += [*metric_table(result["metrics"]), ""]
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
    ]
    lines += _calibration(result)
    if result.get("refit"):
        lines += _refit(result["refit"])
    lines += subgroup_section(result.get("subgroups"))
    lines += ["", f"*{DISCLAIMER}*", ""]
    return "\n".join(lines)


SUBGROUP_METRICS = {
    "roc_auc": "ROC-AUC",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "ppv": "PPV",
    "ece": "ECE",
}
ATTRIBUTE_TITLES = {"sex": "Sex", "age": "Age band", "view": "View position", "source": "Source"}


def _with_interval(entry: Mapping[str, Any]) -> str:
    low, high = entry["ci95"]
    if entry["value"] is None:
        return "n/a"
    if low is None:
        return _fmt(entry["value"])
    return f"{_fmt(entry['value'])} ({_fmt(low)} – {_fmt(high)})"


def _gap_line(metric: str, gap: Mapping[str, Any]) -> str:
    label = SUBGROUP_METRICS[metric]
    if not gap["estimable"]:
        return f"- {label}: not estimable ({gap['reason']})"
    low, high = gap["ci95"]
    interval = "no interval" if low is None else f"95 % CI {_fmt(low)} – {_fmt(high)}"
    verdict = "**the interval excludes 0**" if gap["excludes_zero"] else "the interval includes 0"
    return (
        f"- {label}: {gap['high']} − {gap['low']} = {_fmt(gap['difference'])} "
        f"({interval}); {verdict}"
    )


def gap_words(gap: Mapping[str, Any]) -> str:
    """One line for a gap (`subgroups.largest_gap`): what, between which subgroups, how sure.

    E.g. `sensitivity by view, AP − PA = 0.210 (95 % CI 0.050 – 0.370, excludes 0)`.
    """
    low, high = gap["ci95"]
    interval = (
        "no interval"
        if low is None
        else f"95 % CI {_fmt(low)} – {_fmt(high)}, "
        + ("excludes 0" if gap["excludes_zero"] else "includes 0")
    )
    return (
        f"{SUBGROUP_METRICS[gap['metric']]} by {gap['attribute']}, {gap['high']} − {gap['low']} "
        f"= {_fmt(gap['difference'])} ({interval})"
    )


def subgroup_tables(subgroups: Mapping[str, Any]) -> list[str]:
    """One table per analysed attribute (subgroups as rows), each followed by its gaps."""
    lines: list[str] = []
    header = " | ".join(SUBGROUP_METRICS.values())
    for name in subgroups["attributes"]:
        analysis = subgroups["by"][name]
        lines += [
            f"### {ATTRIBUTE_TITLES.get(name, name)}",
            "",
            f"| subgroup | images | patients | positives | {header} |",
            "|---|---|---|---|" + "---|" * len(SUBGROUP_METRICS),
        ]
        for value, group in analysis["groups"].items():
            counts = f"| {value} | {group['n']} | {group['patients']} | {group['positives']} |"
            if not group["estimable"]:
                blank = " |" * (len(SUBGROUP_METRICS) - 1)
                lines.append(f"{counts} *{group['reason']}* |{blank}")
                continue
            cells = " | ".join(_with_interval(group["metrics"][m]) for m in SUBGROUP_METRICS)
            lines.append(f"{counts} {cells} |")
        lines += ["", "Largest gap between two subgroups (high − low):", ""]
        lines += [_gap_line(metric, gap) for metric, gap in analysis["gaps"].items()]
        lines.append("")
    return lines


def subgroup_section(subgroups: Mapping[str, Any] | None) -> list[str]:
    """The report's "Subgroups" section: tables, gaps, what was not analysed, how to read it."""
    lines = ["## Subgroups", ""]
    if not subgroups or not (subgroups["attributes"] or subgroups.get("not_analysed")):
        return [*lines, "No subgroup analysis was asked for (`--by none`).", ""]
    settings = subgroups["settings"]
    if subgroups["attributes"]:
        lines += [
            f"At the decision threshold {settings['threshold']:.4f}. Intervals (95 %): "
            f"ROC-AUC and ECE ({settings['ece_bins']} bins) from a patient-level bootstrap "
            f"({settings['resamples']} resamples, seed {settings['seed']}); sensitivity, "
            "specificity and PPV Wilson score intervals. A subgroup with fewer than "
            f"{settings['min_class_count']} positive or negative images shows its counts "
            "and no metric. A gap compares the known subgroups with the highest and lowest "
            "value (never `unknown`), its interval from the same bootstrap, paired. Age "
            f"bands: {', '.join(settings['age_band_labels'])}.",
            "",
            "![Subgroup ROC-AUC](subgroups.png)",
            "",
            *subgroup_tables(subgroups),
            "The intervals treat patients as independent of each other and the subgroups "
            "as fixed; the largest of several gaps is chosen after looking, so it is biased "
            "upwards and its interval is not corrected for that choice: read a gap whose "
            "interval excludes 0 as a reason to look closer, not as proof.",
            "",
        ]
    else:
        lines += ["No attribute has two or more known subgroups in this data.", ""]
    skipped = subgroups.get("not_analysed") or {}
    if skipped:
        lines.append(
            "Not analysed: " + "; ".join(f"{name}: {why}" for name, why in skipped.items()) + "."
        )
        lines.append("")
    return lines
