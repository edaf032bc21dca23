"""Tests for pneumokeras.records.attribute_table: a converted folder's attributes per example."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from pneumokeras.errors import UserError
from pneumokeras.records import attribute_table as attributes
from pneumokeras.records.manifest import Manifest
from pneumokeras.sources import attributes as attributes_module
from pneumokeras.sources.attributes import ATTRIBUTES, Attributes, write_table


def _manifest(table: str | None) -> Manifest:
    return Manifest(image_size=32, splits={}, shards={}, source="rsna", attributes=table)


def test_without_a_table_the_view_and_source_are_known(tmp_path):
    table = attributes.read_attributes(tmp_path, _manifest(None))
    assert table is None
    out = attributes.example_attributes(["a", "b"], ["ap", ""], table, "rsna")
    assert out == [Attributes(view="AP", source="rsna"), Attributes(source="rsna")]


def test_with_a_table(tmp_path):
    write_table(
        tmp_path / ATTRIBUTES,
        {"a": Attributes("F", "62", "", "rsna"), "b": Attributes("M", "90+", "PA", "rsna")},
    )
    table = attributes.read_attributes(tmp_path, _manifest(ATTRIBUTES))
    out = attributes.example_attributes(["b", "a"], ["PA", "AP"], table, "ignored")
    # The table's values; the stored view where the table has none.
    assert out == [Attributes("M", "90+", "PA", "rsna"), Attributes("F", "62", "AP", "rsna")]
    with pytest.raises(UserError, match=r"no row in attributes\.csv"):
        attributes.example_attributes(["c"], [""], table, "rsna")


def test_a_named_table_that_is_missing(tmp_path):
    with pytest.raises(UserError, match="is missing; re-run convert"):
        attributes.read_attributes(tmp_path, _manifest(ATTRIBUTES))
    assert json.dumps(_manifest(ATTRIBUTES).to_json()["attributes"]) == '"attributes.csv"'


# ---------------------------------------------------------------- convert collects them


def _table(out: Path) -> dict[str, Attributes]:
    from pneumokeras.records.manifest import load_manifest

    manifest = load_manifest(out)
    assert manifest.attributes == ATTRIBUTES
    return attributes.read_attributes(out, manifest)


def test_convert_records_rsna_attributes_from_the_dicom_tags(tmp_path):
    import pydicom
    from factories import convert_synth

    from pneumokeras.synth import IMAGES_DIR, generate

    synth = tmp_path / "synth"
    generate(synth, patients=12, size=64, seed=4, workers=0, progress=False)
    files = sorted((synth / IMAGES_DIR).glob("*.dcm"))
    # Unreadable and edge values: never a crash; a note, and the value left empty.
    odd = {0: ("O", "4XY"), 1: ("F", "095Y"), 2: ("M", "006M")}
    for index, (sex, age) in odd.items():
        ds = pydicom.dcmread(files[index])
        with warnings.catch_warnings():  # pydicom warns of the invalid Age String
            warnings.simplefilter("ignore")
            ds.PatientSex, ds.PatientAge = sex, age
        ds.save_as(files[index])
    out = tmp_path / "tf"
    summary = convert_synth(synth, out, size=32)
    table = _table(out)
    assert len(table) == sum(summary.counts.values()) == 12
    for path in files[3:]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        row = table[path.stem]
        assert row.sex == ds.PatientSex
        assert row.age == attributes_module.parse_age(str(ds.PatientAge))[0] != ""
        assert row.view == ds.ViewPosition
        assert row.source == IMAGES_DIR
    assert table[files[0].stem].sex == table[files[0].stem].age == ""
    assert (table[files[1].stem].sex, table[files[1].stem].age) == ("F", "90+")
    assert table[files[2].stem].age == "0"
    notes = (out / "notes.csv").read_text().splitlines()
    assert notes[0] == "patientId,file,note"
    noted = [line for line in notes[1:] if line.startswith(files[0].stem)]
    assert len(noted) == 2  # sex 'O' and age '4XY'
    assert summary.notes == len(notes) - 1


def test_convert_records_findings_attributes_and_none_for_class_folders(tmp_path):
    from layout_fixtures import write_chexpert, write_kermany, write_nih

    from pneumokeras.records.convert import ConvertOptions, convert
    from pneumokeras.records.manifest import load_manifest
    from pneumokeras.sources.listing import LayoutOptions

    def run(images, labels, out, layout, **extra):
        options = ConvertOptions(
            images=images, labels=labels, out=out, size=32, workers=0,
            layout=LayoutOptions(layout, **extra),
        )  # fmt: skip
        return convert(options, progress=False)

    images, labels = write_nih(tmp_path / "nih", patients=6)
    run(images, labels, tmp_path / "nih_tf", "findings")
    table = _table(tmp_path / "nih_tf")
    assert table["00000001_000"] == Attributes("M", "50", "PA", "nih")
    assert table["00000002_000"].view == "AP"
    images, labels = write_chexpert(tmp_path / "chexpert")
    run(images, labels, tmp_path / "chexpert_tf", "findings")
    row = next(iter(_table(tmp_path / "chexpert_tf").values()))
    assert (row.sex, row.age, row.view) == ("F", "60", "AP")
    # A column named by the user; it must exist.
    run(images, labels, tmp_path / "named", "findings", age_column="Age", sex_column="Sex")
    with pytest.raises(UserError, match="--sex-column 'Gender' is not a column"):
        run(images, labels, tmp_path / "bad", "findings", sex_column="Gender")
    with pytest.raises(UserError, match="--age-column applies to --layout findings only"):
        run(images, None, tmp_path / "bad2", "folders", age_column="Age")
    # Class folders record none; a reused output folder keeps no stale table.
    write_kermany(tmp_path / "kermany")
    out = tmp_path / "nih_tf"
    for stale in out.glob("*.tfrecord"):
        stale.unlink()
    (out / "manifest.json").unlink()
    run(tmp_path / "kermany", None, out, "folders")
    assert load_manifest(out).attributes is None
    assert not (out / ATTRIBUTES).exists()
