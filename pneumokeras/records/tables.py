"""The side tables of a converted folder (CSV files beside the shards and manifest).

- `skipped.csv` (`patientId,file,reason`): every input not converted and why;
  always written.
- `notes.csv` (`patientId,file,note`): images converted with a note (a gray
  picture saved as RGB made gray, an EXIF orientation applied); only when any.
- `patients.csv` (`patientId,patient`): folders and findings layouts, example id
  → the patient it belongs to (the manifest names it under `grouping.file`).

`write_tables` is the one place `convert` writes them.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from pneumokeras.utils.fileio import atomic_open

SKIPPED = "skipped.csv"
SKIPPED_COLUMNS = ("patientId", "file", "reason")
NOTES = "notes.csv"
NOTES_COLUMNS = ("patientId", "file", "note")
PATIENTS = "patients.csv"
PATIENTS_COLUMNS = ("patientId", "patient")

# A side table: its header and its rows (written sorted).
Table = tuple[Sequence[str], Sequence[Sequence[str]]]


def write_tables(out_dir: Path, tables: Mapping[str, Table]) -> None:
    """Writes each side table (file name → header and rows) atomically, rows sorted.

    skipped.csv is always written; any other table without rows is removed, so a
    reused output folder keeps no stale table.
    """
    for name, (header, rows) in tables.items():
        if not rows and name != SKIPPED:
            (out_dir / name).unlink(missing_ok=True)
            continue
        with atomic_open(out_dir / name, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(sorted(tuple(row) for row in rows))
