"""Tests of pneumokeras.sources.findings: a findings CSV → labelled images (names only)."""

from __future__ import annotations

import csv

import pytest
from layout_fixtures import write_chexpert, write_nih

from pneumokeras.errors import UserError
from pneumokeras.sources.findings import parse_label
from pneumokeras.sources.layouts import LayoutOptions, list_images


def _findings(**kwargs) -> LayoutOptions:
    return LayoutOptions("findings", **kwargs)


@pytest.mark.parametrize(
    "cell, positive, uncertain, expected",
    [
        ("Cardiomegaly|Pneumonia", "Pneumonia", "drop", (1, "")),
        ("pneumonia", "Pneumonia", "drop", (1, "")),
        ("No Finding", "Pneumonia", "drop", (0, "")),
        ("Pneumonia_like|Effusion", "Pneumonia", "drop", (0, "")),
        ("", "Pneumonia", "drop", (0, "")),
        ("1.0", "1", "drop", (1, "")),
        ("0.0", "1", "drop", (0, "")),
        ("", "1", "drop", (0, "")),  # not mentioned: negative
        ("-1.0", "1", "negative", (0, "")),
        ("-1.0", "1", "positive", (1, "")),
        ("-1.0", "1", "drop", (None, "uncertain label (-1) dropped (--uncertain drop)")),
        ("yes", "1", "drop", (None, "label 'yes' is not a number")),
    ],
)
def test_parse_label(cell, positive, uncertain, expected):
    assert parse_label(cell, positive, uncertain) == expected


def test_nih_csv_defaults_come_from_its_header(tmp_path):
    images, labels = write_nih(tmp_path)
    listing = list_images(images, labels, _findings())
    items = listing.items
    assert len(items) == 24
    first = items["00000002_000"]
    assert (first.label, first.patient, first.view) == (1, "2", "AP")
    assert first.path == images / "images_001" / "images" / "00000002_000.png"
    assert items["00000002_001"].label == 0  # Effusion only
    assert sum(i.label for i in items.values()) == 4
    assert listing.skipped == [("99999999_000", "99999999_000.png", "image file not found")]
    assert listing.label_mapping["column"] == "Finding Labels"
    assert listing.label_mapping["positive"] == "Pneumonia"
    assert listing.grouping == "patient column 'Patient ID'"


@pytest.mark.parametrize(
    "uncertain, count, positives", [("drop", 10, 4), ("negative", 12, 4), ("positive", 12, 6)]
)
def test_chexpert_uncertain_labels_under_each_rule(tmp_path, uncertain, count, positives):
    images, labels = write_chexpert(tmp_path)
    listing = list_images(images, labels, _findings(uncertain=uncertain))
    items = listing.items
    assert (len(items), sum(i.label for i in items.values())) == (count, positives)
    some = items["CheXpert-v1.0-small/train/patient00002/study2/view1_frontal"]
    assert (some.patient, some.view) == ("patient00002", "AP")
    reasons = [r for _, _, r in listing.skipped]
    assert reasons == ["uncertain label (-1) dropped (--uncertain drop)"] * (12 - count)
    assert listing.label_mapping["column"] == "Pneumonia"
    assert listing.label_mapping["positive"] == "1"
    # --images may also be the CheXpert folder itself, the one the paths start with.
    again = list_images(images / "CheXpert-v1.0-small", labels, _findings(uncertain=uncertain))
    assert list(again.items) == list(items)


def test_findings_columns_named_explicitly_and_missing_ones(tmp_path):
    images, labels = write_nih(tmp_path)
    listing = list_images(
        images,
        labels,
        _findings(label_column="Finding Labels", positive="Effusion", patient_column="Follow-up #"),
    )
    assert sum(i.label for i in listing.items.values()) == 8  # every second follow-up
    assert listing.items["00000002_001"].patient == "1"
    with pytest.raises(UserError) as err:
        list_images(images, labels, _findings(label_column="Pneumonia"))
    message = str(err.value)
    assert "--label-column 'Pneumonia' is not a column" in message
    assert "Finding Labels" in message
    bare = tmp_path / "bare.csv"
    bare.write_text("file,y\na.png,1\n")
    with pytest.raises(UserError, match="no image column found; name it with --image-column"):
        list_images(images, bare, _findings())
    with pytest.raises(UserError, match="needs --labels"):
        list_images(images, None, _findings())


def test_findings_without_any_positive_say_which_values_the_column_has(tmp_path):
    images, labels = write_nih(tmp_path)
    with pytest.raises(UserError) as err:
        list_images(images, labels, _findings(positive="Hernia"))
    message = str(err.value)
    assert "no image is positive" in message
    assert "'No Finding'" in message
    assert "--positive 'Hernia'" in message


def test_findings_repeated_and_empty_rows_are_skipped(tmp_path):
    images, labels = write_nih(tmp_path, patients=3)
    with open(labels) as handle:
        rows = list(csv.reader(handle))
    with open(labels, "a", newline="") as handle:
        csv.writer(handle).writerows([rows[1], ["", *rows[1][1:]]])
    listing = list_images(images, labels, _findings())
    assert ("00000001_000", "00000001_000.png", "repeated row for this image") in listing.skipped
    assert any(r.endswith("empty Image Index") for _, _, r in listing.skipped)
