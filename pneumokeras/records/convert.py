"""An image folder and its labels → sharded TFRecords, a manifest and side tables.

Three input layouts (`ConvertOptions.layout`): `rsna` (DICOMs named
`<patientId>.dcm` + the RSNA label CSV, `sources/rsna.py`), `folders` (one
sub-folder per class, optionally in `train|val|test`) and `findings` (PNG/JPEG +
a findings CSV such as NIH ChestX-ray14's or CheXpert's); the last two are listed
by `sources/layouts.py`, one example per image, split and folded by patient.
Every image is read by `io.images.read_image`, the reader of `predict`, `explain`
and the app (a gray picture saved as RGB is converted and listed in notes.csv,
real colour is skipped).

`convert` is a short sequence of named steps over four modules:

1. inputs (`inventory.py`): which file is which labelled example;
2. encode pass (`spool.py`): worker processes read every labelled image once and
   spool its stored-size PNG under `OUT/.convert-state/`, the parent indexing
   each in order, so a killed run picks up after the last indexed image;
3. splits (`inventory.py`, `sources/splits.py`): by patient, once every view is
   known;
4. write pass (`writer.py`): each shard filled from the spool, written under a
   temporary name and renamed when complete; then the side tables (`tables.py`:
   skipped.csv, notes.csv, patients.csv) and last the manifest.

Re-running the same command after a crash or kill therefore ends with files
byte-identical to an uninterrupted run. The state folder (spool included, about
the size of the output) is removed at the end. Worker processes never import
TensorFlow; the parent imports it while the workers start and decode.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from pneumokeras.errors import UserError
from pneumokeras.io.png import encode_png
from pneumokeras.records import inventory, spool, writer
from pneumokeras.records.manifest import MANIFEST, Manifest
from pneumokeras.records.spool import STATE_DIR, StepCallback, no_step
from pneumokeras.records.tables import (
    NOTES,
    NOTES_COLUMNS,
    PATIENTS,
    PATIENTS_COLUMNS,
    SKIPPED,
    SKIPPED_COLUMNS,
    Table,
)
from pneumokeras.sources import splits
from pneumokeras.sources.listing import LayoutOptions
from pneumokeras.utils import environment
from pneumokeras.utils.workers import resolve

__all__ = ["STATE_DIR", "ConvertOptions", "ConvertSummary", "convert", "encode_png"]


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    """What `convert` reads, where it writes, and how (one field per CLI option).

    Attributes:
        images: RSNA: folder of `<patientId>.dcm` files; folders: the class (or
            split) folders' parent; findings: the folder the CSV's paths are in.
        out: output folder (shards, `manifest.json`, `skipped.csv`; `notes.csv`
            when an image was converted with a note; `patients.csv`, example id →
            patient, in the folders and findings layouts).
        labels: RSNA `stage_2_train_labels.csv`, or the findings CSV; None for
            the folders layout.
        class_info: RSNA only: optional `stage_2_detailed_class_info.csv`.
        layout: the layout and its options (`listing.LayoutOptions`).
        size: side of the stored square images, pixels, [16, 4096].
        val_fraction: share of patients in the validation split, [0, 1)
            (ignored when the folders layout keeps its own splits).
        test_fraction: share of patients in the test split, [0, 1) (likewise).
        folds: K > 1 assigns stratified folds over train+val patients; 0 = none.
        seed: seed of the split, folds and shard order, [0, 2**32).
        workers: decoding processes; None = all cores, 0 = in-process.
        limit: convert only the first N examples that have a label and an image
            that decodes (RSNA: by sorted patientId; other layouts: in
            `layouts.mixed_order`, so that both classes come in); None = all.
        shard_size: examples per shard, ≥ 1.
    """

    images: Path
    out: Path
    labels: Path | None = None
    class_info: Path | None = None
    layout: LayoutOptions = dataclasses.field(default_factory=LayoutOptions)
    size: int = 256
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    folds: int = 0
    seed: int = 0
    workers: int | None = None
    limit: int | None = None
    shard_size: int = 512

    def __post_init__(self) -> None:
        # Paths given as text (the CLI, scripts) become Paths.
        for name in ("images", "out", "labels", "class_info"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))

    def check(self) -> None:
        """Refuses bad values before anything is read or created (UserError)."""
        self.layout.check()
        if not 16 <= self.size <= 4096:
            raise UserError(f"--size must be in [16, 4096]; got {self.size}")
        if self.shard_size < 1:
            raise UserError(f"shard size must be ≥ 1; got {self.shard_size}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be ≥ 1; got {self.limit}")
        splits.check_seed(self.seed)
        resolve(self.workers)


@dataclasses.dataclass(frozen=True)
class ConvertSummary:
    """What a conversion produced.

    Attributes:
        out_dir: the output folder.
        counts, positives: per split, examples and positive examples.
        skipped: inputs not converted (rows of skipped.csv).
        seconds: wall time of the conversion.
        resumed_shards: shards an interrupted earlier run had finished.
        notes: images converted with a note (rows of notes.csv).
        warnings: what the user should know about the result, one line each
            (`conversion_warnings`).
    """

    out_dir: Path
    counts: dict[str, int]
    positives: dict[str, int]
    skipped: int
    seconds: float
    resumed_shards: int
    notes: int = 0
    warnings: tuple[str, ...] = ()


def check_output(options: ConvertOptions) -> None:
    """Refuses an output folder that would lose or corrupt files (UserError).

    - `--out` a file; `--out` equal to `--images` (RSNA, folders) or inside it
      (folders): the next conversion would read the output as input (files that
      are not DICOMs, a stray class folder). The findings layout reads only the
      files its CSV names, so CheXpert's `--images . --out tfrecords/chexpert` is
      fine.
    - `--labels`/`--class-info` where convert writes a file of the same name.
    - `--out` holding `.tfrecord` files but no earlier conversion (no manifest,
      no state folder): convert removes shards it did not list, so they would be
      lost.
    """
    out, images = options.out.resolve(), options.images.resolve()
    if options.out.exists() and not options.out.is_dir():
        raise UserError(f"--out {options.out} is a file, not a folder")
    # What the next conversion lists: RSNA every file of --images (not its
    # subfolders), folders every file below it; findings only what the CSV names.
    listed = out == images or (options.layout.layout == "folders" and images in out.parents)
    if options.layout.layout != "findings" and listed:
        where = "--images" if out == images else "a folder inside --images"
        raise UserError(
            f"--out {options.out} is {where} {options.images}: the next conversion would "
            "read the output as input; choose a folder outside it"
        )
    written = {MANIFEST, SKIPPED, NOTES, PATIENTS}
    for option, path in (("--labels", options.labels), ("--class-info", options.class_info)):
        if path is not None and path.resolve().parent == out and path.name in written:
            raise UserError(
                f"{option} {path} would be replaced by the {path.name} convert writes in "
                f"--out {options.out}; choose another --out"
            )
    if options.out.is_dir() and not (options.out / MANIFEST).is_file():
        foreign = sorted(p.name for p in options.out.glob("*.tfrecord"))
        if foreign and not (options.out / STATE_DIR).is_dir():
            raise UserError(
                f"--out {options.out} holds {len(foreign)} .tfrecord file(s) ({foreign[0]}, ...) "
                "but no manifest.json of an earlier conversion; convert would remove them: "
                "choose an empty folder"
            )


def _import_tfrecords() -> Any:
    """`pneumokeras.records.tfrecords` (TensorFlow), imported without TF's start-up lines."""
    environment.import_tensorflow_quietly()
    from pneumokeras.records import tfrecords

    return tfrecords


def _side_tables(
    inv: inventory.Inventory,
    skipped: list[spool.Encoded],
    encoded: dict[str, spool.Encoded],
    patients: list[tuple[str, str]],
) -> dict[str, Table]:
    """skipped.csv, notes.csv and patients.csv rows (see `tables.py`)."""
    skipped_rows = [*inv.skipped, *((e.example, inv.shown(e.example), e.reason) for e in skipped)]
    notes = [(e, inv.shown(e), x.note) for e, x in encoded.items() if x.note]
    return {
        SKIPPED: (SKIPPED_COLUMNS, skipped_rows),
        NOTES: (NOTES_COLUMNS, notes),
        PATIENTS: (PATIENTS_COLUMNS, patients),
    }


def conversion_warnings(manifest: Manifest) -> tuple[str, ...]:
    """What a converted folder's user should know, one line each.

    - Patients in more than one of the data set's own splits (`--keep-splits`;
      the real Kermany set has some): their images are not independent across
      the splits, so validation and test scores are optimistic.
    - A training split of one class: `train` refuses it (no class weights).
    """
    warnings = []
    shared = manifest.patients_in_several_splits
    if shared:
        warnings.append(
            f"{shared} patient(s) have images in more than one of the data set's own splits "
            "(--keep-splits): those splits are not independent, so validation and test "
            "scores will be optimistic; without --keep-splits the images are split by patient"
        )
    if manifest.class_weights is None:
        train = manifest.splits["train"]
        warnings.append(
            f"the training split holds one class only ({train.positives} positive of "
            f"{train.count}): train needs both; convert more examples or lower --val/--test"
        )
    return tuple(warnings)


def convert(
    options: ConvertOptions, progress: bool = True, on_step: StepCallback = no_step
) -> ConvertSummary:
    """Converts an image folder and its labels to sharded TFRecords (resumable).

    Args:
        options: inputs, output folder and settings (`ConvertOptions`).
        progress: show progress bars on stderr.
        on_step: test hook, called as `on_step(phase, done)` after each image
            indexed in the encode pass (`"encode"`) and each example handed to
            the shard writer (`"write"`), counting this run's; kill/resume tests
            pass one that stops the process at a known point.

    Raises:
        UserError: unusable inputs (no images, unreadable labels, bad options).
    """
    start = time.perf_counter()
    options.check()
    check_output(options)
    workers = resolve(options.workers)
    labels, inv, listing = inventory.read_inputs(
        options.images, options.labels, options.class_info, options.layout
    )
    job = spool.EncodeJob(
        candidates=inv.candidates,
        files=inv.files,
        unlabelled=inv.unlabelled,
        size=options.size,
        limit=options.limit,
        rsna=listing is None,
    )
    state_dir, plan = spool.open_state(options.out, job)

    encoded_list, skipped, tfrecords = spool.encode_all(
        workers, state_dir, job, progress, on_step, _import_tfrecords
    )
    if not encoded_list:
        kind = "DICOM" if listing is None else "image"
        raise UserError(f"no {kind} in {options.images} matches a label and decodes")
    encoded = inventory.with_listed_views({e.example: e for e in encoded_list}, listing)
    fractions = (options.val_fraction, options.test_fraction)
    assignment, fold_of = inventory.split_and_fold(
        options.layout, listing, labels, encoded, fractions, options.folds, options.seed
    )

    layout = writer.shard_layout(assignment, options.seed, options.shard_size, tfrecords.shard_name)
    spool.forget_other_layouts(
        state_dir,
        plan,
        seed=options.seed,
        val=options.val_fraction,
        test=options.test_fraction,
        folds=options.folds,
        layout=layout,
        labels=[(e, labels[e].label, encoded[e].view) for e in sorted(encoded)],
    )
    shard_stats, resumed = writer.write_shards(
        options.out, state_dir, layout, encoded, labels, tfrecords, progress, on_step
    )
    tables = _side_tables(inv, skipped, encoded, inventory.patient_rows(listing, encoded))
    skipped_count = len(tables[SKIPPED][1])
    notes_count = len(tables[NOTES][1])
    manifest = writer.build_manifest(
        layout,
        shard_stats,
        labels,
        fold_of,
        source=options.images.resolve().name,
        image_size=options.size,
        seed=options.seed,
        num_folds=options.folds,
        skipped=skipped_count,
        patient_id_tag_mismatches=sum(e.id_mismatch for e in encoded.values()),
        **inventory.layout_info(options.layout, listing, assignment, notes_count),
    )
    writer.finish(options.out, state_dir, manifest, tables)
    return ConvertSummary(
        out_dir=options.out,
        counts={s: manifest.splits[s].count for s in splits.SPLITS},
        positives={s: manifest.splits[s].positives for s in splits.SPLITS},
        skipped=skipped_count,
        seconds=time.perf_counter() - start,
        resumed_shards=resumed,
        notes=notes_count,
        warnings=conversion_warnings(manifest),
    )
