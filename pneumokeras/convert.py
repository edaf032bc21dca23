"""RSNA folder (DICOMs + label CSV) → sharded TFRecords, a manifest and skipped.csv.

The conversion is planned first (labels, a header pass over the DICOMs, the
patient-level split and the shard layout), then shards are written one by one.
Each finished shard is renamed into place and its bookkeeping saved under
`.convert-state/`, so re-running the same command after a crash or kill skips the
finished shards and ends with files byte-identical to an uninterrupted run.

Worker processes only decode DICOMs and encode PNGs (no TensorFlow in them); the
parent process serialises examples and writes shards.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from tqdm import tqdm

from pneumokeras import rsna
from pneumokeras.dicom import DicomError, read_dicom
from pneumokeras.errors import UserError
from pneumokeras.fileio import atomic_open, atomic_write_json

STATE_DIR = ".convert-state"
# zlib level 1: about 4× faster than Pillow's default level for ~15 % larger files.
PNG_COMPRESS_LEVEL = 1


@dataclasses.dataclass(frozen=True)
class ConvertSummary:
    """What a conversion produced."""

    out_dir: Path
    counts: dict[str, int]
    positives: dict[str, int]
    skipped: int
    seconds: float
    resumed_shards: int


def encode_png(pixels: np.ndarray) -> bytes:
    """(H, W) uint8 → 8-bit grayscale PNG bytes (deterministic)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _read_header(path: str) -> tuple[str, str, int, int, str, str]:
    """Worker: (stem, view, rows, columns, PatientID tag, error reason or '')."""
    stem = Path(path).stem
    try:
        ds = pydicom.dcmread(
            path,
            stop_before_pixels=True,
            specific_tags=["ViewPosition", "Rows", "Columns", "PatientID"],
        )
        return (
            stem,
            str(ds.get("ViewPosition", "") or "").strip().upper(),
            int(ds.get("Rows", 0) or 0),
            int(ds.get("Columns", 0) or 0),
            str(ds.get("PatientID", "") or ""),
            "",
        )
    except Exception as err:  # noqa: BLE001 - any unreadable file becomes a skipped row
        try:
            read_dicom(path)  # reuse dicom.py's wording for why it is unreadable
            reason = f"unreadable header: {type(err).__name__}"
        except DicomError as dicom_err:
            reason = str(dicom_err)
        except Exception as other:  # noqa: BLE001
            reason = f"unreadable: {type(other).__name__}"
        return stem, "", 0, 0, "", reason


def _encode_task(task: tuple[str, int]) -> tuple[bytes | None, str]:
    """Worker: (PNG bytes or None, error reason or '') for one DICOM at `size`."""
    path, size = task
    try:
        return encode_png(read_dicom(path, size=size).pixels), ""
    except DicomError as err:
        return None, str(err)
    except Exception as err:  # noqa: BLE001 - one bad file must not stop the others
        return None, f"unreadable: {type(err).__name__}: {err}"


class _Mapper:
    """`imap` in-process (workers=0) or over a spawned process pool."""

    def __init__(self, workers: int):
        self._pool = None
        if workers > 0:
            # spawn: never fork a parent that may hold TensorFlow's threads.
            self._pool = multiprocessing.get_context("spawn").Pool(workers)

    def imap(self, func: Callable, items: Iterable, chunksize: int = 8) -> Iterator:
        if self._pool is None:
            return map(func, items)
        return self._pool.imap(func, items, chunksize=chunksize)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()


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


def convert(
    images_dir: str | Path,
    labels_csv: str | Path,
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
) -> ConvertSummary:
    """Converts an RSNA-layout folder to sharded TFRecords (resumable).

    Args:
        images_dir: folder of `<patientId>.dcm` files.
        labels_csv: RSNA `stage_2_train_labels.csv`.
        out_dir: output folder (shards, `manifest.json`, `skipped.csv`).
        class_info_csv: optional `stage_2_detailed_class_info.csv`.
        size: side of the stored square images, pixels.
        val_fraction, test_fraction: shares of patients held out, [0, 1).
        folds: K > 1 assigns stratified folds over train+val patients.
        seed: seed of the split, folds and shard order.
        workers: decoding processes; None = all cores, 0 = in-process.
        limit: convert only the first N patients (sorted by id) that have both a
            DICOM and a label.
        shard_size: examples per shard.
        progress: show progress bars on stderr.

    Raises:
        UserError: unusable inputs (no DICOMs, unreadable labels, bad arguments).
    """
    start = time.perf_counter()
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not 16 <= size <= 4096:
        raise UserError(f"--size must be in [16, 4096]; got {size}")
    if shard_size < 1:
        raise UserError(f"shard size must be ≥ 1; got {shard_size}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be ≥ 1; got {limit}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 0:
        raise UserError(f"--workers must be ≥ 0; got {workers}")

    records = rsna.read_labels(labels_csv, class_info_csv)
    files = list_dicoms(images_dir)
    skipped: list[tuple[str, str, str]] = []  # (patientId, file, reason)

    by_patient: dict[str, Path] = {}
    for path in files:
        if path.stem in by_patient:
            skipped.append((path.stem, path.name, "duplicate patientId file name"))
        else:
            by_patient[path.stem] = path
    for patient in sorted(set(records) - set(by_patient)):
        skipped.append((patient, "", "label row without a DICOM file"))

    mapper = _Mapper(workers)
    try:
        candidates = sorted(set(by_patient))
        headers: dict[str, tuple[str, int, int]] = {}
        mismatched_ids = 0
        bar = _progress(len(candidates), "reading headers", progress)
        for patient, view, rows, cols, tag_id, reason in mapper.imap(
            _read_header, [str(by_patient[p]) for p in candidates], chunksize=32
        ):
            bar.update()
            if reason:
                skipped.append((patient, by_patient[patient].name, reason))
            elif patient not in records:
                skipped.append((patient, by_patient[patient].name, "DICOM without a label row"))
            else:
                headers[patient] = (view, rows, cols)
                mismatched_ids += bool(tag_id) and tag_id != patient
        bar.close()

        usable = sorted(headers)
        if limit is not None:
            usable = usable[:limit]
        if not usable:
            raise UserError(f"no DICOM in {images_dir} matches a label in {labels_csv}")
        used = {p: records[p] for p in usable}
        views = {p: headers[p][0] for p in usable}
        splits = rsna.split_patients(used, val_fraction, test_fraction, seed, views)
        fold_of = (
            rsna.assign_folds(used, splits["train"] + splits["val"], folds, seed) if folds else {}
        )

        from pneumokeras import tfrecords  # parent only: worker processes stay TF-free

        # Shuffle within a split (seeded) so every shard mixes both classes.
        rng = np.random.default_rng(seed)
        layout: list[tuple[str, str, list[str]]] = []  # (split, shard name, patients)
        for split in rsna.SPLITS:
            ordered = list(rng.permutation(splits[split])) if splits[split] else []
            count = math.ceil(len(ordered) / shard_size)
            for index in range(count):
                name = tfrecords.shard_name(split, index, count)
                layout.append((split, name, ordered[index * shard_size : (index + 1) * shard_size]))

        fingerprint = _plan_fingerprint(
            size=size,
            seed=seed,
            val=val_fraction,
            test=test_fraction,
            folds=folds,
            limit=limit,
            shard_size=shard_size,
            layout=layout,
            png_level=PNG_COMPRESS_LEVEL,
        )
        state_dir = out_dir / STATE_DIR
        plan_file = state_dir / "plan.json"
        if (
            plan_file.is_file()
            and json.loads(plan_file.read_text()).get("fingerprint") != fingerprint
        ):
            shutil.rmtree(state_dir)  # a different command ran here before: start over
        atomic_write_json(plan_file, {"fingerprint": fingerprint})
        # Temporary files of a killed run are never complete: drop them.
        for leftover in [*out_dir.glob(".*.tmp-*"), *state_dir.glob(".*.tmp-*")]:
            leftover.unlink()

        shard_stats: dict[str, dict[str, Any]] = {}
        resumed = 0
        todo = []
        for split, name, patients in layout:
            stat_file = state_dir / f"{name}.json"
            if (out_dir / name).is_file() and stat_file.is_file():
                shard_stats[name] = json.loads(stat_file.read_text())
                resumed += 1
            else:
                todo.append((split, name, patients))

        bar = _progress(sum(len(p) for _, _, p in todo), "converting", progress)
        for split, name, patients in todo:
            shard_skipped: list[list[str]] = []
            positives = 0

            def examples(
                patients: list[str] = patients, shard_skipped: list[list[str]] = shard_skipped
            ) -> Iterator[bytes]:
                nonlocal positives
                tasks = [(str(by_patient[p]), size) for p in patients]
                for patient, (png, reason) in zip(
                    patients, mapper.imap(_encode_task, tasks), strict=True
                ):
                    bar.update()
                    if png is None:
                        shard_skipped.append([patient, by_patient[patient].name, reason])
                        continue
                    record = records[patient]
                    _, rows, cols = headers[patient]
                    positives += record.label
                    yield tfrecords.serialize_example(
                        png=png,
                        patient_id=patient,
                        label=record.label,
                        boxes=record.normalised_boxes(cols, rows),
                        view=views[patient],
                        detailed_class=record.detailed_class,
                    )

            count = tfrecords.write_shard(out_dir / name, examples())
            shard_stats[name] = {
                "split": split,
                "count": count,
                "positives": positives,
                "bytes": (out_dir / name).stat().st_size,
                "skipped": shard_skipped,
            }
            atomic_write_json(state_dir / f"{name}.json", shard_stats[name])
        bar.close()
    finally:
        mapper.close()

    for _, name, _ in layout:
        skipped.extend(tuple(row) for row in shard_stats[name]["skipped"])
    skipped.sort()

    split_info: dict[str, dict[str, Any]] = {}
    for split in rsna.SPLITS:
        names = [name for s, name, _ in layout if s == split]
        split_info[split] = {
            "count": sum(shard_stats[n]["count"] for n in names),
            "positives": sum(shard_stats[n]["positives"] for n in names),
            "files": names,
        }
    train_count = split_info["train"]["count"]
    train_pos = split_info["train"]["positives"]
    weights = _class_weights_or_none([1] * train_pos + [0] * (train_count - train_pos))
    converted = {p for _, _, patients in layout for p in patients} - {
        row[0] for stats in shard_stats.values() for row in stats["skipped"]
    }
    fold_of = {p: f for p, f in fold_of.items() if p in converted}
    # Class weights for training with fold k held out: from the other folds' labels.
    fold_weights = [
        _class_weights_or_none(records[p].label for p, f in fold_of.items() if f != k)
        for k in range(folds)
    ]
    manifest = {
        "format": "pneumokeras-tfrecords-1",
        "source": str(images_dir.resolve().name),
        "image_size": size,
        "seed": seed,
        "splits": split_info,
        "shards": {
            n: {"count": s["count"], "bytes": s["bytes"]} for n, s in sorted(shard_stats.items())
        },
        "class_weights": weights,
        "folds": fold_of,
        "num_folds": folds,
        "fold_class_weights": fold_weights,
        "skipped": len(skipped),
        "patient_id_tag_mismatches": mismatched_ids,
    }
    with atomic_open(out_dir / tfrecords.SKIPPED, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["patientId", "file", "reason"])
        writer.writerows(skipped)
    atomic_write_json(out_dir / tfrecords.MANIFEST, manifest)

    # Remove shards of an earlier, different conversion into the same folder.
    current = {name for _, name, _ in layout}
    for stale in out_dir.glob("*.tfrecord"):
        if stale.name not in current:
            stale.unlink()
    shutil.rmtree(state_dir, ignore_errors=True)

    return ConvertSummary(
        out_dir=out_dir,
        counts={s: split_info[s]["count"] for s in rsna.SPLITS},
        positives={s: split_info[s]["positives"] for s in rsna.SPLITS},
        skipped=len(skipped),
        seconds=time.perf_counter() - start,
        resumed_shards=resumed,
    )
