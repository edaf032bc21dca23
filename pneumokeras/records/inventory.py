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
from pneumokeras.io.formats import DICOM_SUFFIXES, detect_format, file_problem
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
    """Every non-hidden file in `images_dir` (sorted, dangling links included: they
    get their skipped row); a file that is no DICOM is skipped when read.

    Raises:
        UserError: not a folder, or no DICOM in it (by suffix or content).
    """
    if not images_dir.is_dir():
        raise UserError(f"--images {images_dir} is not a folder")
    files = sorted(p for p in images_dir.iterdir() if not p.name.startswith(".") and not p.is_dir())
    if not any(_is_dicom(p) for p in files):
        raise UserError(f"no DICOM files in {images_dir} (none named *.dcm or holding one)")
    return files


def _is_dicom(path: Path) -> bool:
    """A `.dcm`/`.dicom` name, or DICOM content (the `DICM` marker)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        return not file_problem(path) and detect_format(path) == "DICOM"
    except OSError:
        return False


def patient_of_file(path: Path) -> str:
    """RSNA: the patientId a DICOM's file name gives: the name without `.dcm`/`.dicom`
    (any case); a name without that suffix is the id whole (`1.2.840.10008.3`)."""
    return path.stem if path.suffix.lower() in DICOM_SUFFIXES else path.name


def _match_files(files: list[Path], records: Mapping[str, ExampleLabel]) -> Inventory:
    """Pairs DICOMs (named `<patientId>.dcm`, or `<patientId>` alone) with label records."""
    skipped: list[Skipped] = []
    by_patient: dict[str, Path] = {}
    seen: set[str] = set()  # patients with a file, usable or not
    for path in files:
        patient = patient_of_file(path)
        problem = file_problem(path)  # a dangling link: its row says so
        if patient in seen:
            skipped.append((patient, path.name, "duplicate patientId file name"))
        elif problem:
            skipped.append((patient, path.name, problem))
        else:
            by_patient[patient] = path
        seen.add(patient)
    for patient in sorted(set(records) - seen):
        skipped.append((patient, "", "label row without a DICOM file"))
    return Inventory(
        files=by_patient,
        candidates=sorted(set(by_patient) & set(records)),
        unlabelled=sorted(set(by_patient) - set(records)),
        skipped=skipped,
    )


def _check_both_classes(images_dir: Path, labels: list[int]) -> None:
    """Refuses RSNA inputs whose labelled DICOMs are all of one class (as the other
    layouts refuse such a listing): a classifier needs both."""
    if labels and len(set(labels)) == 1:
        raise UserError(
            f"every labelled DICOM in {images_dir} ({len(labels)}) has Target {labels[0]}; "
            "a classifier needs both classes"
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
        inv = _match_files(list_dicoms(images_dir), records)
        _check_both_classes(images_dir, [records[p].label for p in inv.candidates])
        return records, inv, None
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
