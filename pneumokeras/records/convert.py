"""An image folder and its labels → sharded TFRecords, a manifest and skipped.csv.

Three input layouts (`--layout`): `rsna` (DICOMs named `<patientId>.dcm` + the
RSNA label CSV, `rsna.py`), `folders` (one sub-folder per class, optionally in
`train|val|test`) and `findings` (PNG/JPEG + a findings CSV such as NIH
ChestX-ray14's or CheXpert's); the last two are listed by `layouts.py`, one
example per image, split and folded by patient. DICOMs are read by
`dicom.read_dicom`, PNG/JPEG by `images.read_image` (same square pad and area
resize; a gray picture saved as RGB is converted and listed in notes.csv, real
colour is skipped); patients.csv says which patient each of their images
belongs to.

Two passes, each resumable:

1. Encode: worker processes read every labelled image once (header and pixels),
   encode the stored-size PNG and append it to their own
   spool file under `.convert-state/`; the parent writes one index line per
   file in file-name order (view, size, where its PNG is, or why it was
   skipped), so a killed run picks up after the last indexed file. Only small
   results travel between processes, and memory stays flat: nothing per image
   is kept but its index entry.
2. Write: the patient-level split (which needs every view) and the shard layout
   are computed, then each shard is filled from the spool, written under a
   temporary name and renamed when complete; its bookkeeping is saved next to the
   spool, so a rerun skips finished shards.

Re-running the same command after a crash or kill therefore ends with files
byte-identical to an uninterrupted run. The state folder (spool included, about
the size of the output) is removed at the end. Worker processes never import
TensorFlow; the parent imports it while the workers start and decode.

Test hook: the environment variable `PNEUMOKERAS_TEST_KILL_AFTER=encode:N` (or
`write:N`) makes the process SIGKILL itself after N images indexed (or N
examples handed to the shard writer) in this run, so the kill/resume tests stop
it at a known point. Unset in normal use.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import imagecodecs
import numpy as np
import pydicom
from tqdm import tqdm

from pneumokeras.errors import UnreadableInputError, UserError
from pneumokeras.io.dicom import DicomError, check_grayscale_uint8, read_dicom
from pneumokeras.io.images import GRAY_MODES, read_image
from pneumokeras.records.manifest import (
    Grouping,
    Manifest,
    ShardInfo,
    SplitInfo,
    write_manifest,
)
from pneumokeras.sources import layouts, rsna
from pneumokeras.utils import environment
from pneumokeras.utils.fileio import atomic_open, atomic_write_json
from pneumokeras.utils.workers import WorkerPool, resolve

STATE_DIR = ".convert-state"
SPOOL_INDEX, PLAN = "spool.jsonl", "plan.json"
NOTES = "notes.csv"  # images converted with a note (a gray picture saved as RGB)
PATIENTS = "patients.csv"  # folders, findings: example id → the patient it belongs to
KILL_HOOK = "PNEUMOKERAS_TEST_KILL_AFTER"  # test hook, see `_kill_point`
# PNG settings (libpng through imagecodecs): the Paeth row filter, then zlib
# Huffman-only coding. On 256 px radiographs ≈ 0.8 ms an image against 2.6 ms for
# Pillow (which always tries all five filters per row, ≈ 1.7 ms of its time) and
# 11 ms for Pillow's default level, with files as small as Pillow's default (LZ
# matching finds little in a noisy radiograph).
PNG_FILTER = "PAETH"
PNG_STRATEGY = "HUFFMAN_ONLY"
PNG_LEVEL = 1


@dataclasses.dataclass(frozen=True)
class ConvertSummary:
    """What a conversion produced."""

    out_dir: Path
    counts: dict[str, int]
    positives: dict[str, int]
    skipped: int
    seconds: float
    resumed_shards: int
    notes: int = 0  # images converted with a note (notes.csv)


def encode_png(pixels: np.ndarray) -> bytes:
    """(H, W) uint8 → 8-bit grayscale PNG bytes (deterministic)."""
    check_grayscale_uint8(pixels)
    png = imagecodecs.PNG
    return bytes(
        imagecodecs.png_encode(
            np.ascontiguousarray(pixels),
            level=PNG_LEVEL,
            strategy=png.STRATEGY[PNG_STRATEGY],
            filter=png.FILTER[PNG_FILTER],
        )
    )


def _unlabelled_reason(path: str) -> str:
    """Worker: why a DICOM without a label row is skipped (unreadable files say so)."""
    try:
        pydicom.dcmread(path, stop_before_pixels=True)
        return "DICOM without a label row"
    except Exception:
        try:
            read_dicom(path)  # reuse dicom.py's wording for why it is unreadable
        except DicomError as dicom_err:
            return str(dicom_err)
        except Exception as other:
            return f"unreadable: {type(other).__name__}"
        return "DICOM without a label row"


# This process's open spool files: spool folder → (file name, handle).
_open_spools: dict[str, tuple[str, IO[bytes]]] = {}


def _spool_png(spool_dir: str, png: bytes) -> tuple[str, int]:
    """Appends `png` to this process's spool file; returns (file name, offset).

    Each process appends to its own `spool-<pid>.bin`, so only small results
    travel back to the parent and nothing waits on it.
    """
    if spool_dir not in _open_spools:
        name = f"spool-{os.getpid()}.bin"
        # Kept open for the worker's life; `_close_spool` closes it.
        _open_spools[spool_dir] = (name, open(Path(spool_dir) / name, "ab"))  # noqa: SIM115
    name, handle = _open_spools[spool_dir]
    offset = handle.tell()
    handle.write(png)
    handle.flush()  # on disk before the parent indexes it
    return name, offset


def _close_spool(spool_dir: str) -> None:
    """Closes this process's spool file for `spool_dir` (in-process conversions)."""
    entry = _open_spools.pop(spool_dir, None)
    if entry is not None:
        entry[1].close()


def _read_pixels(path: str, size: int) -> tuple[np.ndarray, str, int, int, str, str]:
    """Worker: a DICOM, PNG or JPEG (by suffix) → `(pixels, view, rows, columns,
    PatientID tag, note)`; pixels (size, size) uint8, note '' unless converted.
    """
    if Path(path).suffix.lower() == ".dcm":
        image = read_dicom(path, size=size)
        return image.pixels, image.view.upper(), image.rows, image.columns, image.patient_id, ""
    record = read_image(path, size)  # refuses real colour (ImageError)
    note = "" if record.mode in GRAY_MODES else f"{record.mode} image of a gray picture: made gray"
    return record.pixels, "", record.height, record.width, "", note


def _encode_task(task: tuple[str, int, str]) -> tuple:
    """Worker: one image → PNG in the spool.

    Returns:
        `(view, rows, columns, PatientID tag, spool file, offset, length, reason,
        note)`; spool file '' and a reason when the image was not usable.
    """
    path, size, spool_dir = task
    try:
        pixels, view, rows, columns, tag_id, note = _read_pixels(path, size)
        png = encode_png(pixels)
    except UnreadableInputError as err:
        return "", 0, 0, "", "", -1, 0, str(err), ""
    except Exception as err:
        return "", 0, 0, "", "", -1, 0, f"unreadable: {type(err).__name__}: {err}", ""
    spool, offset = _spool_png(spool_dir, png)
    return view, rows, columns, tag_id, spool, offset, len(png), "", note


@dataclasses.dataclass(frozen=True)
class _Encoded:
    """One spool index entry: a labelled image after the encode pass."""

    patient: str
    view: str
    rows: int
    columns: int
    id_mismatch: bool  # PatientID tag present and different from the file name
    spool: str  # spool file holding its PNG; '' when skipped
    offset: int  # of its PNG in that file; -1 when skipped
    length: int
    reason: str  # why it was skipped; '' when encoded
    note: str = ""  # how it was converted when that deserves a note (RGB → gray)

    def to_line(self) -> str:
        return json.dumps(dataclasses.astuple(self)) + "\n"


def _load_spool_index(state_dir: Path, candidates: list[str]) -> list[_Encoded]:
    """Entries a previous run finished, after dropping a torn tail (kill mid-write).

    Keeps the longest prefix whose lines parse, follow `candidates` in order and
    point inside existing spool files; rewrites the index to that prefix. Spool
    bytes that no entry points at (a PNG whose line was never written) are left
    unused.
    """
    index_file = state_dir / SPOOL_INDEX
    if not index_file.is_file():
        return []
    sizes: dict[str, int] = {}
    kept: list[_Encoded] = []
    with open(index_file, encoding="utf-8") as handle:
        for position, line in enumerate(handle):
            try:
                entry = _Encoded(*json.loads(line))
            except (ValueError, TypeError):
                break
            if position >= len(candidates) or entry.patient != candidates[position]:
                break
            if entry.offset >= 0:
                if entry.spool not in sizes:
                    spool_file = state_dir / entry.spool
                    sizes[entry.spool] = spool_file.stat().st_size if spool_file.is_file() else 0
                if entry.offset + entry.length > sizes[entry.spool]:
                    break
            kept.append(entry)
    with atomic_open(index_file, "w", encoding="utf-8") as handle:
        handle.writelines(entry.to_line() for entry in kept)
    return kept


def _encode_pass(
    pool: WorkerPool,
    state_dir: Path,
    candidates: list[str],
    files: dict[str, Path],
    size: int,
    limit: int | None,
    progress: bool,
    while_workers_start: Callable[[], Any],
) -> tuple[list[_Encoded], Any]:
    """Encodes `candidates` (sorted labelled patients) into the spool, resuming.

    Stops after `limit` encoded images. Returns every entry in candidate order
    and what `while_workers_start()` returned (it runs once the workers have
    their first tasks, so its time overlaps theirs).
    """
    entries = _load_spool_index(state_dir, candidates)
    encoded = sum(e.offset >= 0 for e in entries)
    todo = [] if limit is not None and encoded >= limit else candidates[len(entries) :]
    tasks = [(str(files[p]), size, str(state_dir)) for p in todo]
    results = pool.imap(_encode_task, tasks, chunksize=8)
    started = while_workers_start()
    total = len(candidates) if limit is None else min(len(candidates), limit)
    bar = _progress(total, "converting", progress)
    bar.update(min(len(entries), total))
    kill_at, indexed = _kill_point("encode"), 0
    try:
        with open(state_dir / SPOOL_INDEX, "a", encoding="utf-8") as index:
            for patient, result in zip(todo, results, strict=False):
                view, rows, columns, tag_id, spool, offset, length, reason, note = result
                mismatch = bool(tag_id) and tag_id != patient
                entry = _Encoded(
                    patient, view, rows, columns, mismatch, spool, offset, length, reason, note
                )
                index.write(entry.to_line())
                index.flush()  # a kill loses at most the images not yet indexed
                indexed += 1
                _kill_if(kill_at, indexed)
                entries.append(entry)
                bar.update()
                encoded += not reason
                if limit is not None and encoded >= limit:
                    break
    finally:
        _close_spool(str(state_dir))  # in-process conversions wrote here
    bar.close()
    return entries, started


def _class_weights_or_none(labels: Iterable[int]) -> dict[str, float] | None:
    """Manifest class weights; None when a class is absent (train then refuses)."""
    try:
        return {str(c): w for c, w in rsna.class_weights(labels).items()}
    except UserError:
        return None


def list_dicoms(images_dir: Path) -> list[Path]:
    """Every regular, non-hidden file in `images_dir` (sorted); non-DICOMs get skipped."""
    if not images_dir.is_dir():
        raise UserError(f"--images {images_dir} is not a folder")
    files = sorted(p for p in images_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not any(p.suffix.lower() == ".dcm" for p in files):
        raise UserError(f"no DICOM files (*.dcm) in {images_dir}")
    return files


def _plan_fingerprint(**kwargs: Any) -> str:
    return hashlib.sha256(json.dumps(kwargs, sort_keys=True).encode()).hexdigest()


def _file_identity(path: Path) -> list[Any]:
    """Name, size and modification time: a changed file invalidates the spool."""
    stat = path.stat()
    return [path.name, stat.st_size, stat.st_mtime_ns]


def _import_tfrecords() -> Any:
    """`pneumokeras.records.tfrecords` (TensorFlow), imported without TF's start-up lines."""
    environment.import_tensorflow_quietly()
    from pneumokeras.records import tfrecords

    return tfrecords


def _progress(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        unit="img",
        disable=not enabled,
        dynamic_ncols=True,
        smoothing=0.1,
        leave=False,
    )


def _kill_point(phase: str) -> int | None:
    """Test hook: after how many steps of `phase` this process kills itself, or None.

    `PNEUMOKERAS_TEST_KILL_AFTER=encode:N` stops the run with SIGKILL once N
    images of this run are indexed; `write:N` once N examples have gone to the
    shard writer (the kill then lands inside a shard). Kill/resume tests use it to
    stop at a known point; unset, nothing happens.
    """
    wanted, _, count = os.environ.get(KILL_HOOK, "").partition(":")
    return int(count) if wanted == phase else None


def _kill_if(kill_at: int | None, done: int) -> None:
    if done == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


def _check_arguments(size: int, shard_size: int, limit: int | None, seed: int) -> None:
    """Refuses bad arguments before anything is read or created."""
    if not 16 <= size <= 4096:
        raise UserError(f"--size must be in [16, 4096]; got {size}")
    if shard_size < 1:
        raise UserError(f"shard size must be ≥ 1; got {shard_size}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be ≥ 1; got {limit}")
    rsna.check_seed(seed)


@dataclasses.dataclass
class _Inventory:
    """Which image belongs to which labelled example, and what is skipped so far.

    Examples are RSNA patients (their DICOM) or, in the other layouts, images.
    """

    by_patient: dict[str, Path]  # example id → its image (the first of duplicates)
    candidates: list[str]  # examples with a label and an image, in encode order
    unlabelled: list[str]  # sorted examples with an image but no label (RSNA)
    skipped: list[tuple[str, str, str]]  # (example id, file, reason)
    names: dict[str, str] = dataclasses.field(default_factory=dict)  # id → file as shown

    def shown(self, patient: str) -> str:
        """How skipped.csv names an example's file (RSNA: the file name)."""
        return self.names.get(patient) or self.by_patient[patient].name


def _match_files(files: list[Path], records: dict[str, rsna.PatientRecord]) -> _Inventory:
    """Pairs DICOMs (named `<patientId>.dcm`) with label records."""
    skipped: list[tuple[str, str, str]] = []
    by_patient: dict[str, Path] = {}
    for path in files:
        if path.stem in by_patient:
            skipped.append((path.stem, path.name, "duplicate patientId file name"))
        else:
            by_patient[path.stem] = path
    for patient in sorted(set(records) - set(by_patient)):
        skipped.append((patient, "", "label row without a DICOM file"))
    return _Inventory(
        by_patient=by_patient,
        candidates=sorted(set(by_patient) & set(records)),
        unlabelled=sorted(set(by_patient) - set(records)),
        skipped=skipped,
    )


def _read_inputs(
    images_dir: Path,
    labels_csv: str | Path | None,
    class_info_csv: str | Path | None,
    options: layouts.LayoutOptions,
) -> tuple[dict[str, rsna.PatientRecord], _Inventory, layouts.Listing | None]:
    """Labels and files of any layout: per-example records, the inventory, and the
    other layouts' listing (None for RSNA)."""
    if options.layout == "rsna":
        if labels_csv is None:
            raise UserError("--layout rsna needs --labels (stage_2_train_labels.csv)")
        records = rsna.read_labels(labels_csv, class_info_csv)
        return records, _match_files(list_dicoms(images_dir), records), None
    if class_info_csv is not None:
        raise UserError("--class-info applies to --layout rsna only")
    listing = layouts.list_images(images_dir, labels_csv, options)
    items = listing.items
    inventory = _Inventory(
        by_patient={i: item.path for i, item in items.items()},
        candidates=layouts.mixed_order(list(items)),
        unlabelled=[],
        skipped=list(listing.skipped),
        names={i: item.file for i, item in items.items()},
    )
    return {i: rsna.PatientRecord(i, item.label) for i, item in items.items()}, inventory, listing


def _usable(
    encoded: dict[str, _Encoded], listing: layouts.Listing | None, where: str
) -> dict[str, _Encoded]:
    """The encoded examples, with the CSV's view where it has one; refuses none."""
    if not encoded:
        raise UserError(f"no {'DICOM' if listing is None else 'image'} in {where} and decodes")
    if listing is None:
        return encoded
    items = listing.items
    return {p: dataclasses.replace(e, view=items[p].view or e.view) for p, e in encoded.items()}


def _split_and_fold(
    options: layouts.LayoutOptions,
    listing: layouts.Listing | None,
    records: dict[str, rsna.PatientRecord],
    encoded: dict[str, _Encoded],
    fractions: tuple[float, float],
    folds: int,
    seed: int,
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Splits and folds of the encoded examples: RSNA by patientId, the other
    layouts by patient over their images (or the data set's own splits)."""
    usable = sorted(encoded)
    views = {p: encoded[p].view for p in usable}
    if listing is None:
        used = {p: records[p] for p in usable}
        splits = rsna.split_patients(used, *fractions, seed, views)
        train_val = splits["train"] + splits["val"]
        return splits, rsna.assign_folds(used, train_val, folds, seed) if folds else {}
    items = listing.items
    if options.keep_splits:
        splits = layouts.kept_splits(items, usable)
    else:
        splits = layouts.split_items(items, usable, *fractions, seed, views)
    train_val = splits["train"] + splits["val"]
    return splits, layouts.assign_folds(items, train_val, folds, seed) if folds else {}


def _layout_info(
    options: layouts.LayoutOptions,
    listing: layouts.Listing | None,
    splits: dict[str, list[str]],
    encoded: dict[str, _Encoded],
) -> dict[str, Any]:
    """The manifest's account of the input layout, labels, grouping and notes (`Manifest`
    fields)."""
    used = [p for ids in splits.values() for p in ids]
    notes = sum(bool(e.note) for e in encoded.values())
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
            patients=len({listing.items[p].patient for p in used}),
            file=PATIENTS,
            images=len(used),
        ),
        "kept_splits": options.keep_splits,
        "patients_in_several_splits": layouts.patients_in_several_splits(listing.items, splits),
        "notes": notes,
    }


def _tables(
    inventory: _Inventory, listing: layouts.Listing | None, encoded: dict[str, _Encoded]
) -> dict[str, tuple[list[str], list[tuple[str, ...]]]]:
    """notes.csv and patients.csv: file name → (header, rows); no rows, no file."""
    notes = [(p, inventory.shown(p), e.note) for p, e in encoded.items() if e.note]
    patients = [] if listing is None else [(p, listing.items[p].patient) for p in encoded]
    return {
        NOTES: (["patientId", "file", "note"], notes),
        PATIENTS: (["patientId", "patient"], patients),
    }


def _open_state(
    out_dir: Path, size: int, limit: int | None, inventory: _Inventory
) -> tuple[Path, dict[str, Any]]:
    """Creates or reuses `.convert-state/`; returns it and its plan.

    A spool made from other files or settings is discarded; temporary files of a
    killed run (never complete) are removed.
    """
    state_dir = out_dir / STATE_DIR
    plan_file = state_dir / PLAN
    # What the spool depends on: a change means starting over.
    spool_fingerprint = _plan_fingerprint(
        size=size,
        limit=limit,
        png=[PNG_FILTER, PNG_STRATEGY, PNG_LEVEL, imagecodecs.__version__],
        files=[_file_identity(inventory.by_patient[p]) for p in inventory.candidates],
    )
    plan = json.loads(plan_file.read_text()) if plan_file.is_file() else {}
    if plan.get("spool") != spool_fingerprint:
        shutil.rmtree(state_dir, ignore_errors=True)
        plan = {"spool": spool_fingerprint}
    state_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan_file, plan)
    for leftover in [*out_dir.glob(".*.tmp-*"), *state_dir.glob(".*.tmp-*")]:
        leftover.unlink()
    return state_dir, plan


def _decode_all(
    workers: int,
    state_dir: Path,
    inventory: _Inventory,
    size: int,
    limit: int | None,
    progress: bool,
) -> tuple[dict[str, _Encoded], Any]:
    """Encode pass over a worker pool; adds every unusable file to the skipped rows.

    Returns:
        The encoded patients' spool entries, and the `tfrecords` module (imported
        by the parent while the workers start).
    """
    by_patient, skipped = inventory.by_patient, inventory.skipped
    with WorkerPool(workers) as pool:
        unlabelled = [str(by_patient[p]) for p in inventory.unlabelled]
        reasons = pool.imap(_unlabelled_reason, unlabelled)
        for patient, reason in zip(inventory.unlabelled, reasons, strict=True):
            skipped.append((patient, by_patient[patient].name, reason))
        entries, tfrecords = _encode_pass(
            pool,
            state_dir,
            inventory.candidates,
            by_patient,
            size,
            limit,
            progress,
            # TensorFlow (parent only) loads while the workers start and decode;
            # without workers there is nothing to overlap, so it loads after the
            # encode pass (a stop or a kill while encoding never waits for it).
            while_workers_start=_import_tfrecords if workers else lambda: None,
        )
    if tfrecords is None:
        tfrecords = _import_tfrecords()
    for entry in entries:
        if entry.reason:
            skipped.append((entry.patient, inventory.shown(entry.patient), entry.reason))
    return {e.patient: e for e in entries if not e.reason}, tfrecords


_Layout = list[tuple[str, str, list[str]]]  # (split, shard name, patients) per shard


def _shard_layout(
    splits: dict[str, list[str]], seed: int, shard_size: int, shard_name: Callable
) -> _Layout:
    """Which patients go to which shard, in order."""
    # Shuffle within a split (seeded) so every shard mixes both classes.
    rng = np.random.default_rng(seed)
    layout: _Layout = []
    for split in rsna.SPLITS:
        ordered = [str(p) for p in rng.permutation(splits[split])] if splits[split] else []
        count = math.ceil(len(ordered) / shard_size)
        for index in range(count):
            name = shard_name(split, index, count)
            layout.append((split, name, ordered[index * shard_size : (index + 1) * shard_size]))
    return layout


def _forget_other_layouts(state_dir: Path, plan: dict[str, Any], fingerprint: str) -> None:
    """Drops the bookkeeping of shards written for another layout (they are rewritten)."""
    if plan.get("layout") != fingerprint:
        for stat_file in state_dir.glob("*.tfrecord.json"):
            stat_file.unlink()
        atomic_write_json(state_dir / PLAN, {**plan, "layout": fingerprint})


def _write_shards(
    out_dir: Path,
    state_dir: Path,
    layout: _Layout,
    encoded: dict[str, _Encoded],
    records: dict[str, rsna.PatientRecord],
    tfrecords: Any,
    progress: bool,
) -> tuple[dict[str, dict[str, Any]], int]:
    """Write pass: fills every shard not finished before from the spool, resuming.

    Returns:
        Per shard `{split, count, positives, bytes}`, and how many shards an
        earlier run had finished.
    """
    shard_stats: dict[str, dict[str, Any]] = {}
    todo = []
    for split, name, patients in layout:
        stat_file = state_dir / f"{name}.json"
        if (out_dir / name).is_file() and stat_file.is_file():
            shard_stats[name] = json.loads(stat_file.read_text())
        else:
            todo.append((split, name, patients))
    resumed = len(shard_stats)

    bar = _progress(sum(len(p) for _, _, p in todo), "writing shards", progress)
    kill_at, written = _kill_point("write"), 0
    spools: dict[str, IO[bytes]] = {}

    def examples(patients: list[str]) -> Iterator[bytes]:
        nonlocal written
        for patient in patients:
            _kill_if(kill_at, written)
            entry, record = encoded[patient], records[patient]
            if entry.spool not in spools:
                spools[entry.spool] = open(state_dir / entry.spool, "rb")  # noqa: SIM115
            spool = spools[entry.spool]
            spool.seek(entry.offset)
            bar.update()
            written += 1
            yield tfrecords.serialize_example(
                png=spool.read(entry.length),
                patient_id=patient,
                label=record.label,
                boxes=record.normalised_boxes(entry.columns, entry.rows),
                view=entry.view,
                detailed_class=record.detailed_class,
            )

    try:
        for split, name, patients in todo:
            count = tfrecords.write_shard(out_dir / name, examples(patients))
            shard_stats[name] = {
                "split": split,
                "count": count,
                "positives": sum(records[p].label for p in patients),
                "bytes": (out_dir / name).stat().st_size,
            }
            atomic_write_json(state_dir / f"{name}.json", shard_stats[name])
    finally:
        for handle in spools.values():
            handle.close()
    bar.close()
    return shard_stats, resumed


def _manifest(
    source: str,
    size: int,
    seed: int,
    layout: _Layout,
    shard_stats: dict[str, dict[str, Any]],
    records: dict[str, rsna.PatientRecord],
    fold_of: dict[str, int],
    folds: int,
    skipped: int,
    mismatches: int,
    layout_info: dict[str, Any],
) -> Manifest:
    """The `manifest.json` contents (see DESIGN.md and `records/manifest.py`)."""
    split_info: dict[str, SplitInfo] = {}
    for split in rsna.SPLITS:
        names = [name for s, name, _ in layout if s == split]
        split_info[split] = SplitInfo(
            count=sum(shard_stats[n]["count"] for n in names),
            positives=sum(shard_stats[n]["positives"] for n in names),
            files=tuple(names),
        )
    train_count = split_info["train"].count
    train_pos = split_info["train"].positives
    weights = _class_weights_or_none([1] * train_pos + [0] * (train_count - train_pos))
    # Class weights for training with fold k held out: from the other folds' labels.
    fold_weights = tuple(
        _class_weights_or_none(records[p].label for p, f in fold_of.items() if f != k)
        for k in range(folds)
    )
    return Manifest(
        source=source,
        image_size=size,
        seed=seed,
        splits=split_info,
        shards={n: ShardInfo(s["count"], s["bytes"]) for n, s in sorted(shard_stats.items())},
        class_weights=weights,
        folds=fold_of,
        num_folds=folds,
        fold_class_weights=fold_weights,
        skipped=skipped,
        patient_id_tag_mismatches=mismatches,
        **layout_info,
    )


def _finish(
    out_dir: Path,
    state_dir: Path,
    manifest: Manifest,
    skipped: list[tuple[str, str, str]],
    tfrecords: Any,
    tables: dict[str, tuple[list[str], list[tuple[str, ...]]]],
) -> None:
    """Writes skipped.csv, the other `tables` that have rows (notes.csv,
    patients.csv: name → (header, rows)) and the manifest; removes stale shards,
    stale tables and the state folder."""
    tables = {tfrecords.SKIPPED: (["patientId", "file", "reason"], skipped), **tables}
    for name, (header, rows) in tables.items():
        if not rows and name != tfrecords.SKIPPED:
            (out_dir / name).unlink(missing_ok=True)
            continue
        with atomic_open(out_dir / name, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(sorted(rows))
    write_manifest(out_dir, manifest)
    # Remove shards of an earlier, different conversion into the same folder.
    current = set(manifest.shards)
    for stale in out_dir.glob("*.tfrecord"):
        if stale.name not in current:
            stale.unlink()
    shutil.rmtree(state_dir, ignore_errors=True)


def convert(
    images_dir: str | Path,
    labels_csv: str | Path | None,
    out_dir: str | Path,
    class_info_csv: str | Path | None = None,
    size: int = 256,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    folds: int = 0,
    seed: int = 0,
    workers: int | None = None,
    limit: int | None = None,
    shard_size: int = 512,
    progress: bool = True,
    layout: str | layouts.LayoutOptions = "rsna",
) -> ConvertSummary:
    """Converts an image folder and its labels to sharded TFRecords (resumable).

    Args:
        images_dir: RSNA: folder of `<patientId>.dcm` files; folders: the class
            (or split) folders' parent; findings: the folder the CSV's paths are in.
        labels_csv: RSNA `stage_2_train_labels.csv`, or the findings CSV; None
            for the folders layout.
        out_dir: output folder (shards, `manifest.json`, `skipped.csv`;
            `notes.csv` when an image was converted with a note; `patients.csv`,
            example id → patient, in the folders and findings layouts).
        class_info_csv: RSNA only: optional `stage_2_detailed_class_info.csv`.
        size: side of the stored square images, pixels.
        val_fraction: share of patients in the validation split, [0, 1)
            (ignored when the folders layout keeps its own splits).
        test_fraction: share of patients in the test split, [0, 1) (likewise).
        folds: K > 1 assigns stratified folds over train+val patients.
        seed: seed of the split, folds and shard order, [0, 2**32).
        workers: decoding processes; None = all cores, 0 = in-process.
        limit: convert only the first N examples that have a label and an image
            that decodes (RSNA: by sorted patientId; other layouts: in
            `layouts.mixed_order`, so that both classes come in).
        shard_size: examples per shard.
        progress: show progress bars on stderr.
        layout: `rsna`, `folders` or `findings`, or `layouts.LayoutOptions` with
            that layout's options.

    Raises:
        UserError: unusable inputs (no images, unreadable labels, bad arguments).
    """
    # Long by its docstring and the manifest's arguments; each step is one call.
    start = time.perf_counter()
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    options = layouts.LayoutOptions(layout) if isinstance(layout, str) else layout
    options.check()
    _check_arguments(size, shard_size, limit, seed)
    workers = resolve(workers)
    records, inventory, listing = _read_inputs(images_dir, labels_csv, class_info_csv, options)
    state_dir, plan = _open_state(out_dir, size, limit, inventory)

    encoded, tfrecords = _decode_all(workers, state_dir, inventory, size, limit, progress)
    encoded = _usable(encoded, listing, f"{images_dir} matches a label in {labels_csv}")
    fractions = (val_fraction, test_fraction)
    splits, fold_of = _split_and_fold(options, listing, records, encoded, fractions, folds, seed)

    layout_plan = _shard_layout(splits, seed, shard_size, tfrecords.shard_name)
    labels = [(p, records[p].label, encoded[p].view) for p in sorted(encoded)]
    _forget_other_layouts(
        state_dir,
        plan,
        _plan_fingerprint(
            seed=seed,
            val=val_fraction,
            test=test_fraction,
            folds=folds,
            layout=layout_plan,
            labels=labels,
        ),
    )
    shard_stats, resumed = _write_shards(
        out_dir, state_dir, layout_plan, encoded, records, tfrecords, progress
    )
    skipped = inventory.skipped
    manifest = _manifest(
        str(images_dir.resolve().name),
        size,
        seed,
        layout_plan,
        shard_stats,
        records,
        fold_of,
        folds,
        len(skipped),
        sum(e.id_mismatch for e in encoded.values()),
        _layout_info(options, listing, splits, encoded),
    )
    tables = _tables(inventory, listing, encoded)
    _finish(out_dir, state_dir, manifest, skipped, tfrecords, tables)

    return ConvertSummary(
        out_dir=out_dir,
        counts={s: manifest.splits[s].count for s in rsna.SPLITS},
        positives={s: manifest.splits[s].positives for s in rsna.SPLITS},
        skipped=len(skipped),
        seconds=time.perf_counter() - start,
        resumed_shards=resumed,
        notes=len(tables[NOTES][1]),
    )
