"""The per-example attributes of a converted folder (sex, age, view, source).

`convert` collects them (`collect`: RSNA from each DICOM's PatientSex,
PatientAge and ViewPosition tags, read in the encode pass; findings CSVs from
their columns; class folders have none), writes `attributes.csv`
(`sources.attributes`) and names it in the manifest (`Manifest.attributes`).
`example_attributes` gives every example of a split its attributes, in the
split's order:

- from the table when the folder has one (every example must have its row);
- from what any folder knows otherwise (folders converted before the table
  existed): the view stored in the example (`image/view`) and the manifest's
  source name; sex and age are unknown ('').

No TensorFlow: the examples' ids and views come in from the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from pneumokeras.errors import UserError
from pneumokeras.records.manifest import MANIFEST, Manifest
from pneumokeras.sources import attributes as attrs
from pneumokeras.sources.attributes import ATTRIBUTES, Attributes, read_table
from pneumokeras.sources.listing import LayoutOptions, Listing


def collect(
    layout: LayoutOptions,
    labels_csv: Path | None,
    listing: Listing | None,
    tags: Mapping[str, tuple[str, str, str]],
    source: str,
) -> tuple[dict[str, Attributes], list[tuple[str, str]]]:
    """Every converted example's attributes, and a note per value that could not be read.

    Args:
        layout: the conversion's layout options (findings: the columns named).
        labels_csv: the findings CSV (findings only).
        listing: the folders/findings listing; None for RSNA.
        tags: example id → its DICOM `(PatientSex, PatientAge, ViewPosition)` as
            read in the encode pass ('' each for PNG/JPEG).
        source: the data set's name (the manifest's source).

    Returns:
        `({example id: Attributes}, [(example id, note)])`; empty for class
        folders, which record none.

    Raises:
        UserError: a findings CSV that cannot be read, or a named column it lacks.
    """
    if layout.layout == "folders":
        return {}, []
    if layout.layout == "findings":
        if labels_csv is None or listing is None:
            raise ValueError("the findings layout needs its CSV and listing")
        _, parsed = attrs.read_findings(
            labels_csv,
            str(listing.label_mapping["image_column"]),
            source,
            sex_column=layout.sex_column,
            age_column=layout.age_column,
            view_column=layout.view_column,
        )
        found = {e: parsed.get(e, attrs.Parsed(Attributes(source=source))) for e in tags}
    else:
        found = {e: attrs.parse(*tags[e], source) for e in tags}
    notes = [(e, note) for e, item in sorted(found.items()) for note in item.notes]
    return {e: item.attributes for e, item in found.items()}, notes


def read_attributes(data_dir: str | Path, manifest: Manifest) -> dict[str, Attributes] | None:
    """The folder's attribute table, or None when its manifest names none.

    Raises:
        UserError: the named file is missing or malformed.
    """
    if not manifest.attributes:
        return None
    path = Path(data_dir) / manifest.attributes
    if not path.is_file():
        raise UserError(f"{path} (named in {Path(data_dir) / MANIFEST}) is missing; re-run convert")
    return read_table(path)


def example_attributes(
    example_ids: Sequence[str],
    views: Sequence[str],
    table: dict[str, Attributes] | None,
    source: str,
) -> list[Attributes]:
    """Each example's attributes, in the order of `example_ids`.

    Args:
        example_ids: the examples' ids (`image/patient_id`).
        views: their stored views (`image/view`; '' when unknown), used when the
            table has no view for an example or there is no table.
        table: `read_attributes` of their folder, or None.
        source: the manifest's source name (used without a table).

    Raises:
        UserError: a table that lacks one of the examples (a table of another
            conversion).
    """
    if len(example_ids) != len(views):
        raise ValueError(f"{len(example_ids)} example ids but {len(views)} views")
    out = []
    for example, view in zip(example_ids, views, strict=True):
        if table is None:
            out.append(Attributes(view=view.upper(), source=source))
            continue
        if example not in table:
            raise UserError(
                f"example {example!r} has no row in {ATTRIBUTES}: the file belongs to "
                "another conversion; re-run convert"
            )
        row = table[example]
        out.append(
            row if row.view or not view else Attributes(row.sex, row.age, view.upper(), row.source)
        )
    return out
