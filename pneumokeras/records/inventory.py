"""`convert`'s inputs: which file is which labelled example, and the splits over them.

RSNA (`rsna.py`): one DICOM per patient, named `<patientId>.dcm`, paired with the
label CSV's records. The other layouts (`layouts.py`): one example per listed
image, its label, patient and CSV view from the listing. Either way convert
gets an `Inventory` (example id → file, the examples to encode in order, what
was skipped so far) and one `ExampleLabel` per example for the shard writer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pneumokeras.errors import UserError
from pneumokeras.records.manifest import Grouping
from pneumokeras.records.spool import Encoded
from pneumokeras.records.tables import PATIENTS
from pneumokeras.sources import layouts, rsna, splits
from pneumokeras.sources.listing import LayoutOptions, Listing, Skipped

# What the shard writer stores per example besides the pixels: the label, boxes
# (pixels of the original image) and detailed class. RSNA's record serves all layouts.
ExampleLabel = rsna.PatientRecord


@dataclasses.dataclass
class Inventory:
    """Which image belongs to which labelled example, and what is skipped so far.

    Examples are RSNA patients (their DICOM) or, in the other layouts, images.

    Attributes:
        files: example id → its image (the first of duplicates).
        candidates: examples with a label and an image, in encode order.
        unlabelled: sorted examples with an image but no label (RSNA).
        skipped: `(example id, file, reason)` rows for skipped.csv.
        names: example id → its file as skipped.csv and notes.csv name it
            (default: the file name).
    """

    files: dict[str, Path]
    candidates: list[str]
    unlabelled: list[str]
    skipped: list[Skipped]
    names: dict[str, str] = dataclasses.field(default_factory=dict)

    def shown(self, example: str) -> str:
        """How skipped.csv names an example's file (RSNA: the file name)."""
        return self.names.get(example) or self.files[example].name


def list_dicoms(images_dir: Path) -> list[Path]:
    """Every regular, non-hidden file in `images_dir` (sorted); non-DICOMs get skipped."""
    if not images_dir.is_dir():
        raise UserError(f"--images {images_dir} is not a folder")
    files = sorted(p for p in images_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not any(p.suffix.lower() == ".dcm" for p in files):
        raise UserError(f"no DICOM files (*.dcm) in {images_dir}")
    return files


def _match_files(files: list[Path], records: Mapping[str, ExampleLabel]) -> Inventory:
    """Pairs DICOMs (named `<patientId>.dcm`) with label records."""
    skipped: list[Skipped] = []
    by_patient: dict[str, Path] = {}
    for path in files:
        if path.stem in by_patient:
            skipped.append((path.stem, path.name, "duplicate patientId file name"))
        else:
            by_patient[path.stem] = path
    for patient in sorted(set(records) - set(by_patient)):
        skipped.append((patient, "", "label row without a DICOM file"))
    return Inventory(
        files=by_patient,
        candidates=sorted(set(by_patient) & set(records)),
        unlabelled=sorted(set(by_patient) - set(records)),
        skipped=skipped,
    )


def read_inputs(
    images_dir: Path,
    labels_csv: Path | None,
    class_info_csv: Path | None,
    options: LayoutOptions,
) -> tuple[dict[str, ExampleLabel], Inventory, Listing | None]:
    """Labels and files of any layout.

    Returns:
        Per-example labels, the inventory, and the other layouts' listing (None
        for RSNA).

    Raises:
        UserError: unusable inputs (see `rsna.read_labels`, `layouts.list_images`).
    """
    if options.layout == "rsna":
        if labels_csv is None:
            raise UserError("--layout rsna needs --labels (stage_2_train_labels.csv)")
        records = rsna.read_labels(labels_csv, class_info_csv)
        return records, _match_files(list_dicoms(images_dir), records), None
    if class_info_csv is not None:
        raise UserError("--class-info applies to --layout rsna only")
    listing = layouts.list_images(images_dir, labels_csv, options)
    items = listing.items
    inventory = Inventory(
        files={i: item.path for i, item in items.items()},
        candidates=layouts.mixed_order(list(items)),
        unlabelled=[],
        skipped=list(listing.skipped),
        names={i: item.file for i, item in items.items()},
    )
    labels = {i: ExampleLabel(i, item.label) for i, item in items.items()}
    return labels, inventory, listing


def with_listed_views(
    encoded: Mapping[str, Encoded], listing: Listing | None
) -> dict[str, Encoded]:
    """The encoded examples, each with the listing's (CSV's) view where it has one."""
    if listing is None:
        return dict(encoded)
    items = listing.items
    return {e: dataclasses.replace(x, view=items[e].view or x.view) for e, x in encoded.items()}


def split_and_fold(
    options: LayoutOptions,
    listing: Listing | None,
    labels: Mapping[str, ExampleLabel],
    encoded: Mapping[str, Encoded],
    fractions: tuple[float, float],
    folds: int,
    seed: int,
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Splits and folds of the encoded examples: RSNA by patientId, the other
    layouts by patient over their images (or the data set's own splits)."""
    usable = sorted(encoded)
    views = {e: encoded[e].view for e in usable}
    if listing is None:
        used = {e: labels[e].label for e in usable}
        drawn = splits.split_patients(used, *fractions, seed, views)
        train_val = drawn["train"] + drawn["val"]
        return drawn, splits.assign_folds(used, train_val, folds, seed) if folds else {}
    items = listing.items
    if options.keep_splits:
        drawn = layouts.kept_splits(items, usable)
    else:
        drawn = layouts.split_items(items, usable, *fractions, seed, views)
    train_val = drawn["train"] + drawn["val"]
    return drawn, layouts.assign_folds(items, train_val, folds, seed) if folds else {}


def layout_info(
    options: LayoutOptions,
    listing: Listing | None,
    assignment: Mapping[str, list[str]],
    notes: int,
) -> dict[str, Any]:
    """The manifest's account of the input layout, labels, grouping and notes
    (`Manifest` fields)."""
    used = [e for ids in assignment.values() for e in ids]
    if listing is None:
        return {
            "source_layout": "rsna",
            "label_mapping": {"column": "Target", "positive": "1"},
            "grouping": Grouping("patientId (one DICOM each)", patients=len(used)),
            "kept_splits": False,
            "patients_in_several_splits": 0,
            "notes": notes,
        }
    return {
        "source_layout": options.layout,
        "label_mapping": listing.label_mapping,
        "grouping": Grouping(
            listing.grouping,
            patients=len({listing.items[e].patient for e in used}),
            file=PATIENTS,
            images=len(used),
        ),
        "kept_splits": options.keep_splits,
        "patients_in_several_splits": layouts.patients_in_several_splits(listing.items, assignment),
        "notes": notes,
    }


def patient_rows(listing: Listing | None, examples: Iterable[str]) -> list[tuple[str, str]]:
    """patients.csv rows `(example id, patient)`; none for RSNA (one DICOM each)."""
    return [] if listing is None else [(e, listing.items[e].patient) for e in examples]
