"""`convert`'s write pass and its outputs: shards, side tables, the manifest.

The shard layout (which example goes to which shard) is computed from the
splits; each shard is filled from the spool, written under a temporary name and
renamed when complete, and its bookkeeping saved next to the spool, so a rerun
skips finished shards. The side tables (`tables.py`) and then the manifest are
written last, so a folder with a manifest is complete.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from pneumokeras.errors import UserError
from pneumokeras.records.inventory import ExampleLabel
from pneumokeras.records.manifest import Manifest, ShardInfo, SplitInfo, write_manifest
from pneumokeras.records.spool import Encoded, StepCallback, progress_bar
from pneumokeras.records.tables import Table, write_tables
from pneumokeras.sources import splits
from pneumokeras.utils.fileio import atomic_write_json

# (split, shard file name, examples) per shard, in order.
ShardLayout = list[tuple[str, str, list[str]]]


def shard_layout(
    assignment: Mapping[str, list[str]],
    seed: int,
    shard_size: int,
    shard_name: Callable[[str, int, int], str],
) -> ShardLayout:
    """Which examples go to which shard, in order."""
    # Shuffle within a split (seeded) so every shard mixes both classes.
    rng = np.random.default_rng(seed)
    layout: ShardLayout = []
    for split in splits.SPLITS:
        ids = assignment[split]
        ordered = [str(e) for e in rng.permutation(ids)] if ids else []
        count = math.ceil(len(ordered) / shard_size)
        for index in range(count):
            name = shard_name(split, index, count)
            layout.append((split, name, ordered[index * shard_size : (index + 1) * shard_size]))
    return layout


def write_shards(
    out_dir: Path,
    state_dir: Path,
    layout: ShardLayout,
    encoded: Mapping[str, Encoded],
    labels: Mapping[str, ExampleLabel],
    tfrecords: Any,
    progress: bool,
    on_step: StepCallback,
) -> tuple[dict[str, dict[str, Any]], int]:
    """Write pass: fills every shard not finished before from the spool, resuming.

    Returns:
        Per shard `{split, count, positives, bytes}`, and how many shards an
        earlier run had finished.
    """
    shard_stats: dict[str, dict[str, Any]] = {}
    todo = []
    for split, name, examples in layout:
        stat_file = state_dir / f"{name}.json"
        if (out_dir / name).is_file() and stat_file.is_file():
            shard_stats[name] = json.loads(stat_file.read_text())
        else:
            todo.append((split, name, examples))
    resumed = len(shard_stats)

    bar = progress_bar(sum(len(e) for _, _, e in todo), "writing shards", progress)
    written = 0
    spools: dict[str, IO[bytes]] = {}

    def serialized(examples: list[str]) -> Iterator[bytes]:
        nonlocal written
        for example in examples:
            entry, label = encoded[example], labels[example]
            if entry.spool not in spools:
                spools[entry.spool] = open(state_dir / entry.spool, "rb")  # noqa: SIM115
            spool = spools[entry.spool]
            spool.seek(entry.offset)
            bar.update()
            yield tfrecords.serialize_example(
                png=spool.read(entry.length),
                patient_id=example,
                label=label.label,
                boxes=label.normalised_boxes(entry.columns, entry.rows),
                view=entry.view,
                detailed_class=label.detailed_class,
            )
            written += 1
            on_step("write", written)

    try:
        for split, name, examples in todo:
            count = tfrecords.write_shard(out_dir / name, serialized(examples))
            shard_stats[name] = {
                "split": split,
                "count": count,
                "positives": sum(labels[e].label for e in examples),
                "bytes": (out_dir / name).stat().st_size,
            }
            atomic_write_json(state_dir / f"{name}.json", shard_stats[name])
    finally:
        for handle in spools.values():
            handle.close()
    bar.close()
    return shard_stats, resumed


def _class_weights_or_none(labels: Iterable[int]) -> dict[str, float] | None:
    """Manifest class weights; None when a class is absent (train then refuses)."""
    try:
        return {str(c): w for c, w in splits.class_weights(labels).items()}
    except UserError:
        return None


def build_manifest(
    layout: ShardLayout,
    shard_stats: Mapping[str, Mapping[str, Any]],
    labels: Mapping[str, ExampleLabel],
    fold_of: Mapping[str, int],
    **fields: Any,
) -> Manifest:
    """The `manifest.json` contents (see `records/manifest.py`).

    Args:
        layout: the shard layout written.
        shard_stats: per shard `{count, positives, bytes}`.
        labels: the examples' labels (fold class weights).
        fold_of: example id → fold.
        fields: the other `Manifest` fields (source, image_size, seed, num_folds,
            skipped, ...).
    """
    split_info: dict[str, SplitInfo] = {}
    for split in splits.SPLITS:
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
        _class_weights_or_none(labels[e].label for e, f in fold_of.items() if f != k)
        for k in range(fields.get("num_folds", 0))
    )
    return Manifest(
        splits=split_info,
        shards={n: ShardInfo(s["count"], s["bytes"]) for n, s in sorted(shard_stats.items())},
        class_weights=weights,
        folds=dict(fold_of),
        fold_class_weights=fold_weights,
        **fields,
    )


def finish(out_dir: Path, state_dir: Path, manifest: Manifest, tables: Mapping[str, Table]) -> None:
    """Writes the side tables, then the manifest; removes stale shards and the state folder."""
    write_tables(out_dir, tables)
    write_manifest(out_dir, manifest)
    # Remove shards of an earlier, different conversion into the same folder.
    current = set(manifest.shards)
    for stale in out_dir.glob("*.tfrecord"):
        if stale.name not in current:
            stale.unlink()
    shutil.rmtree(state_dir, ignore_errors=True)
