"""Tests of the phantoms' subgroups and the planted gap (pneumokeras/synth/subgroups.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pneumokeras import synth
from pneumokeras.errors import UserError
from pneumokeras.synth.subgroups import attribute_of


@pytest.mark.parametrize(
    "age, band", [(1, "<18"), (17, "<18"), (18, "18-39"), (59, "40-59"), (79, "60-79"), (92, "80+")]
)
def test_age_bands(age: int, band: str) -> None:
    assert synth.age_band(age) == band


def test_phantoms_have_plausible_sex_age_and_view() -> None:
    specs = [synth.sample_patient(synth.patient_seed(0, i), synth.NORMAL) for i in range(1500)]
    ages = np.array([s.age for s in specs])
    assert 0.85 <= np.mean((ages >= 18) & (ages < 80)) <= 0.99  # adults mostly
    assert (ages < 18).sum() >= 15  # some children
    assert (ages >= 90).sum() >= 2  # and some over 89
    assert 0.45 <= np.mean([s.sex == "M" for s in specs]) <= 0.7
    assert {s.view for s in specs} == {"AP", "PA"}
    assert {synth.age_band(a) for a in ages} == {name for name, _, _ in synth.AGE_BANDS}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("sex=F", synth.SubgroupGap("sex", "F", 0.5)),
        ("sex=m:0.3", synth.SubgroupGap("sex", "M", 0.3)),
        ("age=80+:0", synth.SubgroupGap("age", "80+", 0.0)),
        ("age=<18", synth.SubgroupGap("age", "<18", 0.5)),
        ("view=ap:1", synth.SubgroupGap("view", "AP", 1.0)),
    ],
)
def test_parse_subgroup_gap(text: str, expected: synth.SubgroupGap) -> None:
    assert synth.parse_subgroup_gap(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("sex", "ATTRIBUTE=VALUE"),
        ("race=A", "unknown attribute"),
        ("sex=X", "no subgroup 'X'"),
        ("age=90+", "no subgroup"),
        ("view=AP:1.5", "FACTOR"),
        ("view=AP:half", "FACTOR"),
    ],
)
def test_bad_subgroup_gaps_are_refused(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        synth.parse_subgroup_gap(text)


def _rows(folder: Path) -> dict[str, list[str]]:
    with open(folder / synth.LABELS_CSV, newline="") as handle:
        rows: dict[str, list[str]] = {}
        for row in csv.DictReader(handle):
            rows.setdefault(row["patientId"], []).append(",".join(row.values()))
    return rows


def test_the_gap_changes_only_that_subgroups_opacities(tmp_path: Path) -> None:
    kwargs = dict(patients=24, size=64, positive_fraction=0.6, seed=5, workers=0, progress=False)
    gap = synth.SubgroupGap("sex", "F", 0.4)
    synth.generate(tmp_path / "plain", **kwargs)
    synth.generate(tmp_path / "gap", subgroup_gap=gap, **kwargs)
    # Same patients, classes and boxes.
    assert _rows(tmp_path / "plain") == _rows(tmp_path / "gap")
    changed = {"F": 0, "M": 0}
    for path in sorted((tmp_path / "plain" / synth.IMAGES_DIR).glob("*.dcm")):
        other = tmp_path / "gap" / synth.IMAGES_DIR / path.name
        ds = pydicom.dcmread(path)
        positive = _rows(tmp_path / "plain")[path.stem][0].endswith(",1")
        differs = path.read_bytes() != other.read_bytes()
        # Only positives of the subgroup change, and each of them does.
        assert differs == (positive and ds.PatientSex == "F"), (path.stem, ds.PatientSex)
        if differs:
            # Fainter opacities: the image is darker (less dense) than without the gap.
            assert pydicom.dcmread(other).pixel_array.sum() < ds.pixel_array.sum()
        changed[ds.PatientSex] += differs
    assert changed["F"] >= 2
    assert changed["M"] == 0


@pytest.mark.parametrize("attribute", ["age", "view"])
def test_the_gap_scales_the_opacities_of_the_subgroup(attribute: str) -> None:
    specs = [synth.sample_patient(synth.patient_seed(2, i), synth.LUNG_OPACITY) for i in range(40)]
    value = attribute_of(specs[0], attribute)
    gap = synth.SubgroupGap(attribute, value, 0.25)
    for i, spec in enumerate(specs):
        gapped = synth.sample_patient(synth.patient_seed(2, i), synth.LUNG_OPACITY, gap=gap)
        inside = attribute_of(spec, attribute) == value
        expected = [b.amplitude * (0.25 if inside else 1.0) for b in spec.opacities]
        assert [b.amplitude for b in gapped.opacities] == pytest.approx(expected)
        assert synth.boxes(gapped, 128) == synth.boxes(spec, 128)
