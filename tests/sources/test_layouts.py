"""Tests of pneumokeras.sources.layouts: class folders and findings CSVs → labelled images,
patient-level splits and folds. Names and labels only: no pixels, no Keras."""

from __future__ import annotations

import csv
import functools
import operator

import pytest
from layout_fixtures import add_odd_files, write_chexpert, write_kermany, write_nih

from pneumokeras.errors import UserError
from pneumokeras.sources import layouts
from pneumokeras.sources.layouts import LayoutOptions, list_images, parse_label

FOLDERS = LayoutOptions("folders")


def _findings(**kwargs) -> LayoutOptions:
    return LayoutOptions("findings", **kwargs)


# ------------------------------------------------------------------ folders


def test_kermany_tree_lists_every_image_with_label_id_and_patient(tmp_path):
    write_kermany(tmp_path)
    odd = add_odd_files(tmp_path)
    listing = list_images(tmp_path, None, FOLDERS)
    items = listing.items
    assert len(items) == 36 + 4  # the odd images are listed; decoding judges them
    item = items["train/PNEUMONIA/person1_bacteria_2"]
    assert (item.label, item.patient, item.file, item.split) == (
        1,
        "person1",
        "train/PNEUMONIA/person1_bacteria_2.jpeg",
        "",
    )
    assert items["train/PNEUMONIA/person1_virus_9"].patient == "person1"
    normal = items["val/NORMAL/IM-1001-0001"]
    assert (normal.label, normal.patient) == (0, "val/NORMAL/IM-1001-0001")  # its own patient
    assert list(items) == sorted(items)
    assert listing.label_mapping == {"class_folders": {"NORMAL": 0, "PNEUMONIA": 1}}
    assert listing.skipped == [
        ("train/NORMAL/notes", "train/NORMAL/notes.txt", "not an image file (.txt)")
    ]
    assert odd["png16"].with_suffix("").relative_to(tmp_path).as_posix() in items


@pytest.mark.parametrize(
    "names, labels",
    [(("normal", "pneumonia"), (0, 1)), (("Negative", "POSITIVE"), (0, 1)), (("0", "1"), (0, 1))],
)
def test_class_folder_names_map_in_any_case(tmp_path, names, labels):
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.png").write_bytes(b"")
    items = list_images(tmp_path, None, FOLDERS).items
    assert [items[f"{n}/a"].label for n in names] == list(labels)
    assert all(item.split == "" for item in items.values())


def test_unknown_class_folder_is_one_line_naming_it_and_the_accepted_names(tmp_path):
    write_kermany(tmp_path)
    (tmp_path / "test" / "COVID").mkdir()
    (tmp_path / "__MACOSX").mkdir()  # ignored, as are hidden folders
    (tmp_path / ".cache").mkdir()
    with pytest.raises(UserError) as err:
        list_images(tmp_path, None, FOLDERS)
    message = str(err.value)
    assert "\n" not in message
    assert "COVID" in message
    for accepted in ("normal", "negative", "pneumonia", "positive"):
        assert accepted in message


def test_keep_splits_uses_the_data_sets_folders_and_needs_all_three(tmp_path):
    write_kermany(tmp_path)
    listing = list_images(tmp_path, None, LayoutOptions("folders", keep_splits=True))
    ids = list(listing.items)
    kept = layouts.kept_splits(listing.items, ids)
    assert {s: len(v) for s, v in kept.items()} == {"train": 12, "val": 12, "test": 12}
    assert all(i.startswith(f"{s}/") for s, v in kept.items() for i in v)
    assert layouts.patients_in_several_splits(listing.items, kept) == 0

    (tmp_path / "val").rename(tmp_path / "elsewhere")
    with pytest.raises(UserError, match=r"stray|neither"):  # an unknown folder among splits
        list_images(tmp_path, None, LayoutOptions("folders", keep_splits=True))
    (tmp_path / "elsewhere").rename(tmp_path.parent / "val-moved")
    with pytest.raises(UserError, match="missing: val"):
        list_images(tmp_path, None, LayoutOptions("folders", keep_splits=True))
    # Without --keep-splits two split folders are simply pooled.
    assert len(list_images(tmp_path, None, FOLDERS).items) == 24


def test_keep_splits_without_split_folders_is_refused(tmp_path):
    (tmp_path / "NORMAL").mkdir()
    (tmp_path / "NORMAL" / "a.png").write_bytes(b"")
    with pytest.raises(UserError, match="--keep-splits needs train/, val/ and test/"):
        list_images(tmp_path, None, LayoutOptions("folders", keep_splits=True))


def test_patient_pattern_overrides_the_grouping(tmp_path):
    for name in ("NORMAL/pat7-a.png", "NORMAL/pat7-b.png", "PNEUMONIA/pat8-a.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    listing = list_images(tmp_path, None, LayoutOptions("folders", patient_pattern=r"(pat\d+)-"))
    assert [i.patient for i in listing.items.values()] == ["pat7", "pat7", "pat8"]
    assert repr(r"(pat\d+)-") in listing.grouping
    for bad, why in (("(unclosed", "not a regular expression"), (r"pat\d+", "needs a group")):
        with pytest.raises(UserError, match=why):
            LayoutOptions("folders", patient_pattern=bad).check()


def test_same_name_with_another_suffix_is_skipped_not_merged(tmp_path):
    (tmp_path / "NORMAL").mkdir()
    (tmp_path / "NORMAL" / "a.png").write_bytes(b"")
    (tmp_path / "NORMAL" / "a.jpeg").write_bytes(b"")
    listing = list_images(tmp_path, None, FOLDERS)
    assert list(listing.items) == ["NORMAL/a"]
    assert listing.items["NORMAL/a"].file == "NORMAL/a.jpeg"
    assert listing.skipped == [
        ("NORMAL/a", "NORMAL/a.png", "another file has the same name and id")
    ]


def test_empty_or_missing_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        list_images(tmp_path / "nope", None, FOLDERS)
    with pytest.raises(UserError, match="no class folders"):
        list_images(tmp_path, None, FOLDERS)
    (tmp_path / "NORMAL").mkdir()
    with pytest.raises(UserError, match="no PNG/JPEG/DICOM files"):
        list_images(tmp_path, None, FOLDERS)
    with pytest.raises(UserError, match="--labels is not used"):
        list_images(tmp_path, tmp_path / "x.csv", FOLDERS)


# ------------------------------------------------------------------ options


@pytest.mark.parametrize(
    "options, message",
    [
        (LayoutOptions("kermany"), "--layout must be one of rsna, folders, findings"),
        (LayoutOptions("findings", uncertain="maybe"), "--uncertain must be one of"),
        (LayoutOptions("folders", label_column="x"), "--label-column applies to --layout findings"),
        (LayoutOptions("rsna", positive="1"), "--positive applies to --layout findings"),
        (LayoutOptions("findings", keep_splits=True), "--keep-splits applies to --layout folders"),
        (LayoutOptions("rsna", patient_pattern="(x)"), "--patient-pattern applies"),
    ],
)
def test_options_of_another_layout_are_refused(options, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        options.check()


# ------------------------------------------------------------------ findings


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


def test_mixed_order_is_fixed_and_mixes_the_class_folders():
    ids = [f"NORMAL/IM-{i:04d}" for i in range(20)] + [f"PNEUMONIA/person{i}" for i in range(20)]
    order = layouts.mixed_order(ids)
    assert sorted(order) == sorted(ids)
    assert order == layouts.mixed_order(ids[::-1])
    assert {i.split("/")[0] for i in order[:8]} == {"NORMAL", "PNEUMONIA"}


def test_findings_repeated_and_empty_rows_are_skipped(tmp_path):
    images, labels = write_nih(tmp_path, patients=3)
    with open(labels) as handle:
        rows = list(csv.reader(handle))
    with open(labels, "a", newline="") as handle:
        csv.writer(handle).writerows([rows[1], ["", *rows[1][1:]]])
    listing = list_images(images, labels, _findings())
    assert ("00000001_000", "00000001_000.png", "repeated row for this image") in listing.skipped
    assert any(r.endswith("empty Image Index") for _, _, r in listing.skipped)


# ------------------------------------------------------------------ splits and folds


def test_multi_image_patients_are_never_in_two_splits_or_folds(tmp_path):
    images, labels = write_nih(tmp_path, patients=30)
    items = list_images(images, labels, _findings()).items
    ids = list(items)
    for seed in range(4):
        splits = layouts.split_items(items, ids, 0.2, 0.2, seed, {i: items[i].view for i in ids})
        assert sorted(functools.reduce(operator.iadd, splits.values(), [])) == ids
        assert layouts.patients_in_several_splits(items, splits) == 0
        assert all(splits[s] for s in splits)
        fold_of = layouts.assign_folds(items, splits["train"] + splits["val"], 3, seed)
        folds_of_patient: dict[str, set[int]] = {}
        for image_id, fold in fold_of.items():
            folds_of_patient.setdefault(items[image_id].patient, set()).add(fold)
        assert all(len(f) == 1 for f in folds_of_patient.values())
        assert set(fold_of.values()) == {0, 1, 2}
    # A patient is positive when any image is: 10 positive patients of 30.
    records = layouts._patient_records(items, layouts._groups(items, ids))
    assert sum(r.label for r in records.values()) == 10


def test_folds_need_enough_patients_of_each_class(tmp_path):
    images, labels = write_nih(tmp_path, patients=6)  # 2 positive patients
    items = list_images(images, labels, _findings()).items
    with pytest.raises(UserError, match="needs at least 3 patients of each class"):
        layouts.assign_folds(items, list(items), 3, 0)
