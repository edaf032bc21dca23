"""`convert`'s encode pass: every labelled image read once, its PNG spooled to disk.

Worker processes read each image (header and pixels), encode the stored-size PNG
and append it to their own spool file under `.convert-state/`; the parent writes
one index line per example in encode order (`Encoded`: view, size, where its PNG
is, or why it was skipped), so a killed run picks up after the last indexed
example. Only small results travel between processes, and memory stays flat:
nothing per image is kept but its index entry. `Encoded.from_image` is the one
place an example's entry is built from the image read (its header facts).

The state folder's plan (`open_state`) fingerprints the files and settings the
spool depends on; a change means starting over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import pydicom
from tqdm import tqdm

from pneumokeras.errors import UnreadableInputError
from pneumokeras.io.dicom import DicomError, read_dicom
from pneumokeras.io.images import read_image
from pneumokeras.io.png import ENCODER_SETTINGS, encode_png
from pneumokeras.io.record import ImageRecord
from pneumokeras.utils.fileio import atomic_open, atomic_write_json
from pneumokeras.utils.workers import WorkerPool

STATE_DIR = ".convert-state"
SPOOL_INDEX, PLAN = "spool.jsonl", "plan.json"

# Test hook: called as `on_step(phase, done)` after each image indexed (`encode`)
# and each example handed to the shard writer (`write`), counting this run's.
StepCallback = Callable[[str, int], None]


def no_step(phase: str, done: int) -> None:
    """The default `StepCallback`: nothing."""


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One spool index entry: a labelled example after the encode pass.

    Attributes:
        example: the example's id (RSNA patientId, or the image id).
        view: the DICOM's ViewPosition, upper case; '' for PNG/JPEG.
        rows, columns: the stored image's height and width, pixels.
        id_mismatch: RSNA: a PatientID tag present and different from the file name.
        spool: the spool file holding its PNG; '' when skipped.
        offset: of its PNG in that file; -1 when skipped.
        length: of its PNG, bytes.
        reason: why it was skipped; '' when encoded.
        note: how it was converted when that deserves a note (notes.csv); ''.
    """

    example: str
    view: str
    rows: int
    columns: int
    id_mismatch: bool
    spool: str
    offset: int
    length: int
    reason: str
    note: str = ""

    @classmethod
    def from_image(
        cls,
        example: str,
        record: ImageRecord,
        spool: str,
        offset: int,
        length: int,
        check_patient_tag: bool,
    ) -> Encoded:
        """The one place an example's entry is built from the image read: its view,
        stored size, PatientID check and note, and where its PNG is in the spool.

        Args:
            check_patient_tag: RSNA: flag a PatientID tag that differs from `example`.
        """
        tag = record.patient_id
        return cls(
            example=example,
            view=record.view.upper(),
            rows=record.height,
            columns=record.width,
            id_mismatch=check_patient_tag and bool(tag) and tag != example,
            spool=spool,
            offset=offset,
            length=length,
            reason="",
            note=record.note,
        )

    @classmethod
    def skipped(cls, example: str, reason: str) -> Encoded:
        """The entry of an example whose image was not usable."""
        return cls(example, "", 0, 0, False, "", -1, 0, reason)

    def to_line(self) -> str:
        return json.dumps(dataclasses.asdict(self)) + "\n"


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


@dataclasses.dataclass(frozen=True)
class _Task:
    """One image for a worker to encode."""

    example: str
    path: str
    size: int
    spool_dir: str
    rsna: bool  # RSNA layout: DICOM only, the file name is the patient (compare the tag)


def _encode_task(task: _Task) -> Encoded:
    """Worker: one image → its PNG in the spool and its index entry."""
    try:
        record = read_image(task.path, task.size)  # by content; refuses real colour
        if task.rsna and record.format != "DICOM":
            return Encoded.skipped(task.example, f"not a DICOM file ({record.format} content)")
        png = encode_png(record.pixels)
    except UnreadableInputError as err:
        return Encoded.skipped(task.example, str(err))
    except Exception as err:
        return Encoded.skipped(task.example, f"unreadable: {type(err).__name__}: {err}")
    spool, offset = _spool_png(task.spool_dir, png)
    return Encoded.from_image(task.example, record, spool, offset, len(png), task.rsna)


def load_spool_index(state_dir: Path, candidates: Sequence[str]) -> list[Encoded]:
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
    kept: list[Encoded] = []
    with open(index_file, encoding="utf-8") as handle:
        for position, line in enumerate(handle):
            try:
                entry = Encoded(**json.loads(line))
            except (ValueError, TypeError):
                break
            if position >= len(candidates) or entry.example != candidates[position]:
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


def progress_bar(total: int, desc: str, enabled: bool) -> tqdm:
    """A tqdm bar on stderr (images/s and ETA), or a silent one."""
    return tqdm(
        total=total,
        desc=desc,
        unit="img",
        disable=not enabled,
        dynamic_ncols=True,
        smoothing=0.1,
        leave=False,
    )


@dataclasses.dataclass(frozen=True)
class EncodeJob:
    """What the encode pass reads: examples in encode order and their files.

    Attributes:
        candidates: labelled examples with an image, in encode order.
        files: example id → its image file.
        unlabelled: examples with an image but no label (RSNA), sorted.
        size: side of the stored square images, pixels.
        limit: stop after this many examples encoded; None = all.
        rsna: RSNA layout: DICOM content only; compare the DICOM PatientID tag with
            the example id (its file name).
    """

    candidates: list[str]
    files: dict[str, Path]
    unlabelled: list[str]
    size: int
    limit: int | None
    rsna: bool


def _encode_pass(
    pool: WorkerPool,
    state_dir: Path,
    job: EncodeJob,
    progress: bool,
    on_step: StepCallback,
    while_workers_start: Callable[[], Any],
) -> tuple[list[Encoded], Any]:
    """Encodes `job.candidates` into the spool, resuming.

    Returns every entry in candidate order and what `while_workers_start()`
    returned (it runs once the workers have their first tasks, so its time
    overlaps theirs).
    """
    entries = load_spool_index(state_dir, job.candidates)
    encoded = sum(e.offset >= 0 for e in entries)
    limit = job.limit
    todo = [] if limit is not None and encoded >= limit else job.candidates[len(entries) :]
    tasks = (_Task(e, str(job.files[e]), job.size, str(state_dir), job.rsna) for e in todo)
    results = pool.imap(_encode_task, tasks, chunksize=8)
    started = while_workers_start()
    total = len(job.candidates) if limit is None else min(len(job.candidates), limit)
    bar = progress_bar(total, "converting", progress)
    bar.update(min(len(entries), total))
    indexed = 0
    try:
        with open(state_dir / SPOOL_INDEX, "a", encoding="utf-8") as index:
            for entry in results:
                index.write(entry.to_line())
                index.flush()  # a kill loses at most the images not yet indexed
                indexed += 1
                on_step("encode", indexed)
                entries.append(entry)
                bar.update()
                encoded += not entry.reason
                if limit is not None and encoded >= limit:
                    break
    finally:
        _close_spool(str(state_dir))  # in-process conversions wrote here
    bar.close()
    return entries, started


def encode_all(
    workers: int,
    state_dir: Path,
    job: EncodeJob,
    progress: bool,
    on_step: StepCallback,
    import_writer: Callable[[], Any],
) -> tuple[list[Encoded], list[Encoded], Any]:
    """The encode pass over a worker pool.

    Returns:
        The entries of the examples encoded, of those skipped (unlabelled RSNA
        files included), and what `import_writer()` returned: it runs while the
        workers start and decode (with no workers, after the pass, so that a
        stop or kill while encoding never waits for it).
    """
    with WorkerPool(workers) as pool:
        paths = [str(job.files[e]) for e in job.unlabelled]
        reasons = pool.imap(_unlabelled_reason, paths)
        unlabelled = [
            Encoded.skipped(e, reason) for e, reason in zip(job.unlabelled, reasons, strict=True)
        ]
        entries, writer = _encode_pass(
            pool,
            state_dir,
            job,
            progress,
            on_step,
            while_workers_start=import_writer if workers else lambda: None,
        )
    if writer is None:
        writer = import_writer()
    encoded = [e for e in entries if not e.reason]
    return encoded, unlabelled + [e for e in entries if e.reason], writer


def _fingerprint(**kwargs: Any) -> str:
    return hashlib.sha256(json.dumps(kwargs, sort_keys=True).encode()).hexdigest()


def _file_identity(path: Path) -> list[Any]:
    """Name, size and modification time: a changed file invalidates the spool."""
    stat = path.stat()
    return [path.name, stat.st_size, stat.st_mtime_ns]


def open_state(out_dir: Path, job: EncodeJob) -> tuple[Path, dict[str, Any]]:
    """Creates or reuses `OUT/.convert-state/`; returns it and its plan.

    A spool made from other files or settings is discarded; temporary files of a
    killed run (never complete) are removed.
    """
    state_dir = out_dir / STATE_DIR
    plan_file = state_dir / PLAN
    # What the spool depends on: a change means starting over.
    spool_fingerprint = _fingerprint(
        size=job.size,
        limit=job.limit,
        png=list(ENCODER_SETTINGS),
        files=[_file_identity(job.files[e]) for e in job.candidates],
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


def forget_other_layouts(state_dir: Path, plan: dict[str, Any], **layout: Any) -> None:
    """Drops the bookkeeping of shards written for another shard layout (they are rewritten).

    Args:
        layout: everything the shard contents depend on besides the spool (seed,
            fractions, folds, which example goes to which shard, labels).
    """
    fingerprint = _fingerprint(**layout)
    if plan.get("layout") != fingerprint:
        for stat_file in state_dir.glob("*.tfrecord.json"):
            stat_file.unlink()
        atomic_write_json(state_dir / PLAN, {**plan, "layout": fingerprint})
