"""Tests of pneumokeras.sources.findings: a findings CSV → labelled images (names only)."""

from __future__ import annotations

import csv

import pytest
from layout_fixtures import write_chexpert, write_nih

from pneumokeras.errors import UserError
from pneumokeras.sources.findings import parse_label
from pneumokeras.sources.layouts import LayoutOptions, list_images

ALLOWED = "1 (positive), 0 (negative), -1 (uncertain), blank"


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
        ("2.0", "1", "drop", (None, f"label '2.0' is none of {ALLOWED}")),
        ("0.5", "1", "negative", (None, f"label '0.5' is none of {ALLOWED}")),
        ("1", "1.0", "drop", (1, "")),
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


# ------------------------------------------------------------------ issue #24


def _write_csv(path, rows, header=("Image Index", "Finding Labels", "Patient ID")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_rows_that_disagree_drop_the_image_and_identical_ones_count_once(tmp_path):
    images, labels = write_nih(tmp_path, patients=6)  # patients 2 and 5 positive
    with open(labels, newline="") as handle:
        rows = list(csv.reader(handle))
    by_name = {row[0]: row for row in rows[1:]}
    normal, positive, repeated = "00000001_000.png", "00000002_000.png", "00000003_000.png"
    assert (by_name[normal][1], by_name[positive][1]) == ("No Finding", "Cardiomegaly|Pneumonia")
    appended = [
        [normal, "Pneumonia", *by_name[normal][2:]],  # another label
        by_name[repeated],  # the same row again
        [*by_name[positive][:3], "77", *by_name[positive][4:]],  # another patient
    ]
    with open(labels, "a", newline="") as handle:
        csv.writer(handle).writerows(appended)
    line = {name: 2 + [r[0] for r in rows[1:]].index(name) for name in by_name}
    first_appended = len(rows) + 1
    listing = list_images(images, labels, _findings())
    reasons = {(i, r) for i, _, r in listing.skipped}
    assert (
        "00000001_000",
        f"2 rows disagree on the label (lines {line[normal]}, {first_appended}); image dropped",
    ) in reasons
    assert (
        "00000002_000",
        f"2 rows disagree on the patient (lines {line[positive]}, {first_appended + 2}); "
        "image dropped",
    ) in reasons
    assert ("00000003_000", "repeated row for this image") in reasons
    assert "00000001_000" not in listing.items
    assert "00000002_000" not in listing.items
    assert "00000003_000" in listing.items


def test_numeric_labels_other_than_the_known_values_are_skipped_rows(tmp_path):
    images, labels = write_chexpert(tmp_path)
    text = labels.read_text().replace(",1.0\n", ",2.0\n", 1).replace(",0.0\n", ",0.5\n", 1)
    labels.write_text(text)
    listing = list_images(images, labels, _findings(uncertain="negative"))
    odd = sorted(r for _, _, r in listing.skipped)
    assert odd == [f"label '0.5' is none of {ALLOWED}", f"label '2.0' is none of {ALLOWED}"]
    assert len(listing.items) == 12 - 2


def test_a_bare_name_in_two_folders_and_paths_outside_images_are_refused(tmp_path):
    from PIL import Image

    root = tmp_path / "nih"
    for folder in ("images_001", "images_002"):
        (root / folder).mkdir(parents=True)
        Image.new("L", (8, 8)).save(root / folder / "twice.png")
    for name in ("once.png", "other.png"):
        Image.new("L", (8, 8)).save(root / "images_001" / name)
    Image.new("L", (8, 8)).save(tmp_path / "outside.png")
    labels = _write_csv(
        tmp_path / "labels.csv",
        [
            ["twice.png", "Pneumonia", "1"],
            ["once.png", "No Finding", "2"],
            ["images_001/other.png", "Pneumonia", "3"],
            [str(tmp_path / "outside.png"), "Pneumonia", "4"],
            ["../outside.png", "Pneumonia", "5"],
            [str(root / "images_001" / "once.png").replace("once", "again"), "Pneumonia", "6"],
        ],
    )
    Image.new("L", (8, 8)).save(root / "images_001" / "again.png")
    listing = list_images(root, labels, _findings())
    assert sorted(listing.items) == [
        str(root / "images_001" / "again"),  # absolute, inside --images: accepted
        "images_001/other",
        "once",
    ]
    reasons = {cell: reason for _, cell, reason in listing.skipped}
    assert reasons == {
        "twice.png": "file name found in 2 places: images_001/twice.png, images_002/twice.png",
        str(tmp_path / "outside.png"): "path outside --images",
        "../outside.png": "path outside --images",
    }


def test_every_image_of_one_class_is_refused(tmp_path):
    images, labels = write_nih(tmp_path)
    text = labels.read_text().replace("Cardiomegaly|Pneumonia", "Cardiomegaly")
    (tmp_path / "negative.csv").write_text(text)
    with pytest.raises(UserError, match="no image is positive"):
        list_images(images, tmp_path / "negative.csv", _findings())
    with pytest.raises(UserError, match="every image is positive") as err:
        list_images(images, labels, _findings(positive="M", label_column="Patient Gender"))
    assert "classifier needs both classes" in str(err.value)
