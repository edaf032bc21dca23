"""Tests for pneumokeras.records.attribute_table: a converted folder's attributes per example."""

from __future__ import annotations

import json

import pytest

from pneumokeras.errors import UserError
from pneumokeras.records import attribute_table as attributes
from pneumokeras.records.manifest import Manifest
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
