"""The per-example attributes of a converted folder (sex, age, view, source).

`convert` writes `attributes.csv` (`sources.attributes`) and names it in the
manifest (`Manifest.attributes`). `example_attributes` gives every example of a
split its attributes, in the split's order:

- from the table when the folder has one (every example must have its row);
- from what any folder knows otherwise (folders converted before the table
  existed): the view stored in the example (`image/view`) and the manifest's
  source name; sex and age are unknown ('').

No TensorFlow: the examples' ids and views come in from the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pneumokeras.errors import UserError
from pneumokeras.records.manifest import MANIFEST, Manifest
from pneumokeras.sources.attributes import ATTRIBUTES, Attributes, read_table


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
