"""Tests for pneumokeras.evaluation.subgroups: planted gaps in synthetic scores.

Scores are drawn so that one subgroup is ranked worse (a planted AUC gap) or
missed more often (a planted sensitivity gap); the analysis must find that
subgroup, put the gap's interval above zero, and leave a subgroup without a
planted gap with an interval that covers zero. Small and one-class subgroups get
their counts and no number.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumokeras.errors import UserError
from pneumokeras.evaluation import metrics, subgroups
from pneumokeras.sources.attributes import Attributes

SETTINGS = subgroups.Settings(resamples=400, seed=3, min_class_count=10)


def _population(n: int = 3000, seed: int = 0, auc_gap: bool = True):
    """Images with sex, age and view; women's scores separate the classes less well."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    sex = np.where(rng.random(n) < 0.5, "F", "M")
    view = np.where(rng.random(n) < 0.6, "AP", "PA")
    ages = rng.integers(20, 95, n)
    separation = np.where((sex == "F") & auc_gap, 0.6, 1.8)
    logits = rng.normal(size=n) + separation * labels - 1.0
    probs = 1 / (1 + np.exp(-logits))
    attributes = [
        Attributes(sex=s, age="90+" if a >= 90 else str(a), view=v, source="synthetic")
        for s, a, v in zip(sex, ages, view, strict=True)
    ]
    patients = np.array([f"p{i}" for i in range(n)])
    return labels, probs, patients, attributes


def test_a_planted_auc_gap_is_found_and_excludes_zero():
    labels, probs, patients, attributes = _population()
    result = subgroups.analyse(
        labels, probs, patients, 0.4, attributes, ["sex", "view", "age"], SETTINGS
    )
    sex = result["by"]["sex"]
    assert list(sex["groups"]) == ["F", "M"]
    female = np.array([a.sex == "F" for a in attributes])
    assert sex["groups"]["F"]["metrics"]["roc_auc"]["value"] == pytest.approx(
        roc_auc_score(labels[female], probs[female])
    )
    gap = sex["gaps"]["roc_auc"]
    assert (gap["high"], gap["low"]) == ("M", "F")
    assert gap["difference"] > 0.15
    assert gap["ci95"][0] > 0
    assert gap["excludes_zero"]
    assert gap["ci95"][0] < gap["difference"] < gap["ci95"][1]
    # View has no planted gap: its AUC gap's interval covers zero.
    view_gap = result["by"]["view"]["gaps"]["roc_auc"]
    assert view_gap["ci95"][0] <= 0 <= view_gap["ci95"][1]
    assert not view_gap["excludes_zero"]
    # The largest gap over every attribute and metric is the planted one (or its
    # consequence at the threshold), on sex.
    assert result["largest_gap"]["attribute"] == "sex"
    assert result["largest_gap"]["low"] == "F"
    # Age bands in reading order, 90+ in the top band.
    assert list(result["by"]["age"]["groups"]) == ["18–39", "40–59", "60–79", "80+"]
    assert sum(g["n"] for g in result["by"]["age"]["groups"].values()) == labels.size


def test_subgroup_metrics_match_the_metrics_module_and_intervals_cover_them():
    labels, probs, patients, attributes = _population(n=1500, seed=1, auc_gap=False)
    result = subgroups.analyse(labels, probs, patients, 0.35, attributes, ["view"], SETTINGS)
    rows = np.array([a.view == "PA" for a in attributes])
    expected = metrics.classification_metrics(labels[rows], probs[rows], 0.35)
    group = result["by"]["view"]["groups"]["PA"]
    assert group["n"] == rows.sum()
    assert group["patients"] == rows.sum()
    assert group["positives"] == labels[rows].sum()
    table = group["metrics"]
    assert table["sensitivity"]["value"] == pytest.approx(expected["recall"])
    assert table["specificity"]["value"] == pytest.approx(expected["specificity"])
    assert table["ppv"]["value"] == pytest.approx(expected["precision"])
    assert table["ece"]["value"] == pytest.approx(
        metrics.expected_calibration_error(labels[rows], probs[rows])
    )
    tp = int(((probs >= 0.35) & (labels == 1) & rows).sum())
    assert table["sensitivity"]["ci95"] == pytest.approx(
        list(metrics.wilson_interval(tp, int(labels[rows].sum())))
    )
    for name in subgroups.METRICS:
        low, high = table[name]["ci95"]
        assert low <= table[name]["value"] <= high, name
    assert table["roc_auc"]["ci_method"] == "bootstrap"
    assert table["roc_auc"]["resamples"] == SETTINGS.resamples
    assert table["sensitivity"]["ci_method"] == "wilson"


def test_a_planted_sensitivity_gap_at_the_threshold():
    rng = np.random.default_rng(5)
    n = 2000
    labels = (rng.random(n) < 0.4).astype(int)
    view = np.where(rng.random(n) < 0.5, "AP", "PA")
    # Positives on PA films mostly score below the threshold: PA sensitivity is low.
    probs = np.where(labels == 1, np.where(view == "PA", 0.3, 0.8), 0.2) + rng.normal(0, 0.1, n)
    probs = np.clip(probs, 0, 1)
    attributes = [Attributes(view=v) for v in view]
    result = subgroups.analyse(
        labels, probs, np.arange(n).astype(str), 0.5, attributes, ["view"], SETTINGS
    )
    gap = result["by"]["view"]["gaps"]["sensitivity"]
    assert (gap["high"], gap["low"]) == ("AP", "PA")
    assert gap["difference"] > 0.5
    assert gap["excludes_zero"]
    assert result["largest_gap"]["metric"] == "sensitivity"


def test_small_one_class_and_unknown_subgroups_get_counts_and_no_number():
    labels, probs, patients, attributes = _population(n=800, seed=2)
    # 6 lateral films, 2 positive; 5 films of view unknown; one "RL" film, negative.
    attributes = list(attributes)
    for i in range(6):
        attributes[i] = Attributes(view="LL", sex=attributes[i].sex)
    labels[:6] = [1, 1, 0, 0, 0, 0]
    for i in range(6, 11):
        attributes[i] = Attributes(view="")
    attributes[11] = Attributes(view="RL")
    labels[11] = 0
    result = subgroups.analyse(labels, probs, patients, 0.4, attributes, ["view"], SETTINGS)
    groups = result["by"]["view"]["groups"]
    assert list(groups) == ["AP", "LL", "PA", "RL", "unknown"]
    small = groups["LL"]
    assert (small["n"], small["positives"], small["negatives"]) == (6, 2, 4)
    assert not small["estimable"]
    assert small["reason"] == "too small: 2 positive and 4 negative images (fewer than 10)"
    assert all(entry["value"] is None for entry in small["metrics"].values())
    assert groups["RL"]["reason"] == "no positive images: one class only"
    assert groups["unknown"]["n"] == 5
    # Gaps only between known subgroups large enough: AP and PA.
    for gap in result["by"]["view"]["gaps"].values():
        assert {gap["high"], gap["low"]} <= {"AP", "PA"}


def test_gaps_that_cannot_be_estimated_say_why():
    labels, probs, patients, _ = _population(n=400, seed=3)
    one = [Attributes(view="AP") for _ in labels]
    result = subgroups.analyse(labels, probs, patients, 0.4, one, ["view"], SETTINGS)
    assert result["by"]["view"]["gaps"]["roc_auc"] == {
        "estimable": False,
        "reason": "one subgroup only (AP)",
    }
    assert result["largest_gap"] is None
    tiny = [Attributes(view="PA" if i < 8 else "AP") for i in range(labels.size)]
    result = subgroups.analyse(labels, probs, patients, 0.4, tiny, ["view"], SETTINGS)
    gap = result["by"]["view"]["gaps"]["roc_auc"]
    assert not gap["estimable"]
    assert "fewer than two subgroups large enough" in gap["reason"]


def test_patients_in_two_subgroups_are_resampled_with_all_their_images():
    labels, probs, _, attributes = _population(n=600, seed=4)
    patients = np.repeat(np.arange(300), 2).astype(str)  # two films each: one AP, one PA
    attributes = [Attributes(view="AP" if i % 2 == 0 else "PA") for i in range(600)]
    result = subgroups.analyse(labels, probs, patients, 0.4, attributes, ["view"], SETTINGS)
    groups = result["by"]["view"]["groups"]
    assert groups["AP"]["patients"] == groups["PA"]["patients"] == 300
    assert result["settings"]["unit"] == "patient"


def test_choose_attributes():
    attributes = [
        Attributes(sex="F", view="AP", source="a"),
        Attributes(sex="M", view="AP", source="a"),
        Attributes(view="PA", source="a"),
    ]
    chosen, skipped = subgroups.choose_attributes(None, attributes)
    assert chosen == ["sex", "view"]
    assert skipped == {"age": "unknown for every image", "source": "one value only (a)"}
    chosen, skipped = subgroups.choose_attributes(["source"], attributes)
    assert chosen == ["source"]
    assert skipped["sex"] == "not asked for (--by)"
    with pytest.raises(UserError, match="no evaluated image has its age recorded"):
        subgroups.choose_attributes(["age"], attributes)
    with pytest.raises(UserError, match="unknown attribute 'race'"):
        subgroups.choose_attributes(["race"], attributes)
    with pytest.raises(UserError, match="twice"):
        subgroups.choose_attributes(["sex", "sex"], attributes)
