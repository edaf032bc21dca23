"""Tests for pneumokeras.sources.attributes: reading sex, age and view from tags and cells."""

from __future__ import annotations

import pytest

from pneumokeras.errors import UserError
from pneumokeras.sources import attributes as attrs
from pneumokeras.sources.attributes import Attributes


@pytest.mark.parametrize(
    "text, expected",
    [
        ("M", "M"),
        ("f", "F"),
        (" Male ", "M"),
        ("Female", "F"),
        ("", ""),
        (None, ""),
        ("Unknown", ""),
        ("U", ""),
    ],
)
def test_parse_sex(text, expected):
    assert attrs.parse_sex(text) == (expected, None)


def test_parse_sex_other_values_are_noted():
    value, note = attrs.parse_sex("O")
    assert value == ""
    assert "not M or F" in note
    assert attrs.parse_sex("x?")[0] == ""


@pytest.mark.parametrize(
    "text, expected",
    [
        ("062Y", "62"),
        ("62", "62"),
        ("62.7", "62"),
        (" 045y ", "45"),
        ("006M", "0"),
        ("018M", "1"),
        ("025M", "2"),
        ("010W", "0"),
        ("104W", "1"),  # 728 days: under two years
        ("003D", "0"),
        ("730D", "1"),  # 730 days < 2 × 365.25
        ("731D", "2"),
        ("89", "89"),
        ("089Y", "89"),
        ("90", "90+"),
        ("095Y", "90+"),
        ("120", "90+"),
        ("", ""),
        (None, ""),
    ],
)
def test_parse_age(text, expected):
    assert attrs.parse_age(text) == (expected, None)


@pytest.mark.parametrize("text", ["4XY", "-3", "62 years", "Y", "414", "1e3"])
def test_unreadable_ages_are_empty_with_a_note(text):
    value, note = attrs.parse_age(text)
    assert value == ""
    assert note
    assert repr(text) in note


def test_parse_view():
    assert attrs.parse_view("ap") == ("AP", None)
    assert attrs.parse_view(" PA ") == ("PA", None)
    assert attrs.parse_view("LL") == ("LL", None)
    assert attrs.parse_view("", "Lateral") == ("LATERAL", None)
    assert attrs.parse_view("", "Frontal") == ("", None)
    assert attrs.parse_view("AP", "Frontal") == ("AP", None)
    value, note = attrs.parse_view("A/P?")
    assert value == ""
    assert "not a view code" in note


def test_parse_collects_notes_and_never_raises():
    parsed = attrs.parse("O", "4XY", "AP", "rsna")
    assert parsed.attributes == Attributes(sex="", age="", view="AP", source="rsna")
    assert len(parsed.notes) == 2
    parsed = attrs.parse("F", "094Y", "PA", "rsna")
    assert parsed.attributes == Attributes("F", "90+", "PA", "rsna")
    assert parsed.notes == ()


def test_findings_columns_nih_and_chexpert():
    nih = ["Image Index", "Finding Labels", "Patient ID", "Patient Age", "Patient Gender",
           "View Position"]  # fmt: skip
    columns = attrs.find_columns(nih)
    assert columns == attrs.Columns("Patient Gender", "Patient Age", "View Position", None)
    row = {"Patient Gender": "M", "Patient Age": "58", "View Position": "PA"}
    assert attrs.from_row(row, columns, "nih").attributes == Attributes("M", "58", "PA", "nih")
    chexpert = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "Pneumonia"]
    columns = attrs.find_columns(chexpert)
    assert columns == attrs.Columns("Sex", "Age", "AP/PA", "Frontal/Lateral")
    lateral = {"Sex": "Female", "Age": "91", "Frontal/Lateral": "Lateral", "AP/PA": ""}
    assert attrs.from_row(lateral, columns, "chexpert").attributes == Attributes(
        "F", "90+", "LATERAL", "chexpert"
    )
    named = attrs.find_columns(["img", "gender", "years"], sex_column="gender", age_column="years")
    assert (named.sex, named.age, named.view) == ("gender", "years", None)
    with pytest.raises(UserError, match="--age-column 'AGE' is not a column"):
        attrs.find_columns(chexpert, age_column="AGE")
    assert attrs.find_columns(["Path", "Label"]) == attrs.Columns()


def test_table_round_trip_and_refusals(tmp_path):
    rows = {
        "b": Attributes("F", "90+", "PA", "nih"),
        "a,1": Attributes("", "", "", "nih"),  # a comma in an id is quoted
        "c": Attributes("M", "7", "LATERAL", "chexpert"),
    }
    path = attrs.write_table(tmp_path / attrs.ATTRIBUTES, rows)
    assert path.read_text().splitlines()[0] == "example_id,sex,age,view,source"
    assert attrs.read_table(path) == rows
    bad = tmp_path / "bad.csv"
    for text, message in [
        ("id,sex\n", "must start with the header"),
        ("", "must start with the header"),
        ("example_id,sex,age,view,source\nx,M,62\n", "line 2"),
        ("example_id,sex,age,view,source\nx,M,62,AP,s\nx,F,1,PA,s\n", "given twice"),
        ("example_id,sex,age,view,source\nx,male,62,AP,s\n", "sex 'male' is not a stored"),
        ("example_id,sex,age,view,source\nx,M,062Y,AP,s\n", "age '062Y' is not a stored"),
        ("example_id,sex,age,view,source\nx,M,95,AP,s\n", "age '95' is not a stored"),
    ]:
        bad.write_text(text)
        with pytest.raises(UserError, match=message):
            attrs.read_table(bad)
    with pytest.raises(UserError, match="unreadable"):
        attrs.read_table(tmp_path / "none.csv")


def test_age_bands():
    assert attrs.age_band_labels((18, 40, 60, 80)) == ["<18", "18–39", "40–59", "60–79", "80+"]
    ages = ["0", "17", "18", "39", "40", "79", "80", "90+", ""]
    assert attrs.age_bands(ages, (18, 40, 60, 80)) == [
        "<18", "<18", "18–39", "18–39", "40–59", "60–79", "80+", "80+", "",
    ]  # fmt: skip
    assert attrs.age_band("65", (65,)) == "65+"
    assert attrs.age_band("64", (65,)) == "<65"
    for edges in [(), (40, 18), (0, 10), (95,), (1.5,)]:
        with pytest.raises(ValueError, match="age band"):
            attrs.age_band_labels(edges)
