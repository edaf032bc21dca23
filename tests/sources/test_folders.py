"""Tests of pneumokeras.sources.folders: class folders → labelled images (names only)."""

from __future__ import annotations

import os

import pytest
from layout_fixtures import add_odd_files, write_kermany

from pneumokeras.errors import UserError
from pneumokeras.sources import layouts
from pneumokeras.sources.layouts import LayoutOptions, list_images

FOLDERS = LayoutOptions("folders")


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
        ("train/NORMAL/notes.txt", "train/NORMAL/notes.txt", "not an image file (.txt)")
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
    for name in ("NORMAL/a.png", "NORMAL/a.jpeg", "PNEUMONIA/b.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    listing = list_images(tmp_path, None, FOLDERS)
    assert list(listing.items) == ["NORMAL/a", "PNEUMONIA/b"]
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


# ------------------------------------------------------------------ issue #24


@pytest.mark.parametrize("present, label", [("NORMAL", 0), ("Pneumonia", 1)])
def test_one_class_only_is_refused_naming_it(tmp_path, present, label):
    (tmp_path / present).mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / present / name).write_bytes(b"")
    with pytest.raises(UserError) as err:
        list_images(tmp_path, None, FOLDERS)
    message = str(err.value)
    assert message.startswith(f"only label {label} images ({present}: 2) in {tmp_path}")
    assert f"add a folder for label {1 - label}" in message
    assert "\n" not in message


def test_files_are_judged_by_content_hidden_ones_ignored_and_links_reported(tmp_path, dicoms):
    from PIL import Image

    normal, pneumonia = tmp_path / "NORMAL", tmp_path / "PNEUMONIA"
    (normal / ".thumbs").mkdir(parents=True)
    pneumonia.mkdir()
    (pneumonia / "1.2.840.113619.2.55.3").write_bytes(dicoms[0].read_bytes())
    Image.new("L", (8, 8)).save(normal / "a.png")
    Image.new("L", (8, 8)).save(normal / "scan.tif")
    Image.new("L", (8, 8)).save(normal / ".hidden.png")
    Image.new("L", (8, 8)).save(normal / ".thumbs" / "t.png")
    (normal / "Thumbs.db").write_bytes(b"\0\1\2")
    os.symlink(normal / "moved.png", normal / "gone.png")
    listing = list_images(tmp_path, None, FOLDERS)
    assert sorted(listing.items) == ["NORMAL/a", "PNEUMONIA/1.2.840.113619.2.55.3"]
    assert sorted(listing.skipped) == [
        ("NORMAL/Thumbs.db", "NORMAL/Thumbs.db", "not an image file (.db)"),
        (
            "NORMAL/gone",
            "NORMAL/gone.png",
            f"broken symbolic link (its target {normal / 'moved.png'} does not exist)",
        ),
        (
            "NORMAL/scan.tif",
            "NORMAL/scan.tif",
            "unsupported format TIFF (DICOM, PNG and JPEG are read)",
        ),
    ]
