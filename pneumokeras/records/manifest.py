"""`manifest.json` of a converted folder: one schema, one reader, one writer.

`convert` writes it last (atomically), so a folder with a manifest is complete.
Every reader goes through `load_manifest`, which checks the shards it lists and
returns a frozen `Manifest`; `Manifest.fingerprint` identifies a converted folder
(training records it in the model card, evaluation compares it). No TensorFlow:
`convert` writes the manifest from its parent process before the shard writer's
import matters, and tools that only read folders stay light.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pneumokeras.errors import UserError
from pneumokeras.utils.fileio import atomic_write_json, read_json_object

MANIFEST = "manifest.json"
FORMAT = "pneumokeras-tfrecords-1"
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    """One split: its example count, positives and shard file names (in order)."""

    count: int
    positives: int
    files: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """One shard file: its example count and size in bytes (checked on load)."""

    count: int
    bytes: int


@dataclasses.dataclass(frozen=True)
class Grouping:
    """Which patient each example belongs to.

    Attributes:
        rule: how the patient was found (e.g. `patientId (one DICOM each)`).
        patients: number of patients in the converted splits.
        file: `patients.csv` (example id → patient) when an example is an image of
            a patient with possibly several images; None for RSNA (one each).
        images: number of images, when `file` is given.
    """

    rule: str
    patients: int
    file: str | None = None
    images: int | None = None


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The converted folder's description (each key: the manual's docs/concepts/records.md).

    Attributes:
        image_size: side of the stored square images, pixels.
        splits: `train`, `val`, `test` → `SplitInfo`.
        shards: shard file name → `ShardInfo`.
        source: the input folder's name.
        source_layout: `rsna`, `folders` or `findings`.
        seed: the split seed.
        class_weights: `{"0": w0, "1": w1}` of the training split, None when a
            class is absent.
        folds: example id → fold index (empty without `--folds`).
        num_folds: K of `--folds` (0 = none).
        fold_class_weights: class weights with fold k held out, per k.
        skipped: inputs not converted (reasons in `skipped.csv`).
        patient_id_tag_mismatches: DICOMs whose PatientID tag differs from the
            file name (the file name is trusted).
        label_mapping: how labels were read (column, positive value, folders).
        grouping: which patient each example belongs to; None in old folders.
        kept_splits: the data set's own train/val/test folders were kept.
        patients_in_several_splits: patients those own splits share (0 otherwise).
        notes: RGB images of gray pictures converted to gray (`notes.csv`).
        attributes: per-example attributes file (sex, age, view, source), if any.
        extra: keys this version does not know (a newer writer's), kept on a round trip.
        stored: the JSON object as read from disk (None when built in memory): the
            fingerprint hashes exactly what the folder holds.
    """

    image_size: int
    splits: Mapping[str, SplitInfo]
    shards: Mapping[str, ShardInfo]
    source: str = ""
    source_layout: str = "rsna"
    seed: int = 0
    class_weights: Mapping[str, float] | None = None
    folds: Mapping[str, int] = dataclasses.field(default_factory=dict)
    num_folds: int = 0
    fold_class_weights: tuple[Mapping[str, float] | None, ...] = ()
    skipped: int = 0
    patient_id_tag_mismatches: int = 0
    label_mapping: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    grouping: Grouping | None = None
    kept_splits: bool = False
    patients_in_several_splits: int = 0
    notes: int = 0
    attributes: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    stored: Mapping[str, Any] | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def fingerprint(self) -> str:
        """A short hash of the manifest as stored (shards, counts, splits, folds)."""
        return fingerprint_of(self.stored if self.stored is not None else self.to_json())

    def split(self, name: str) -> SplitInfo:
        """The split `name`.

        Raises:
            UserError: the folder has no such split.
        """
        if name not in self.splits:
            raise UserError(f"unknown split {name!r}; known: {', '.join(self.splits)}")
        return self.splits[name]

    def to_json(self) -> dict[str, Any]:
        """The JSON object `manifest.json` holds (keys a newer writer added kept)."""
        known = {
            "format": FORMAT,
            "source": self.source,
            "image_size": self.image_size,
            "seed": self.seed,
            "splits": {
                name: {"count": s.count, "positives": s.positives, "files": list(s.files)}
                for name, s in self.splits.items()
            },
            "shards": {
                name: {"count": s.count, "bytes": s.bytes}
                for name, s in sorted(self.shards.items())
            },
            "class_weights": None if self.class_weights is None else dict(self.class_weights),
            "folds": dict(self.folds),
            "num_folds": self.num_folds,
            "fold_class_weights": [None if w is None else dict(w) for w in self.fold_class_weights],
            "skipped": self.skipped,
            "patient_id_tag_mismatches": self.patient_id_tag_mismatches,
            "source_layout": self.source_layout,
            "label_mapping": dict(self.label_mapping),
            "grouping": None if self.grouping is None else _grouping_json(self.grouping),
            "kept_splits": self.kept_splits,
            "patients_in_several_splits": self.patients_in_several_splits,
            "notes": self.notes,
        }
        if self.attributes is not None:
            known["attributes"] = self.attributes
        return {**self.extra, **known}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str | Path = MANIFEST) -> Manifest:
        """Builds a Manifest from its JSON object, checking the keys readers rely on.

        Folders written before a key existed get its default.

        Raises:
            UserError: a required key is missing or has the wrong type.
        """
        try:
            for key in ("image_size", "splits", "shards"):
                if key not in data:
                    raise KeyError(key)
            grouping = data.get("grouping")
            return cls(
                image_size=int(data["image_size"]),
                splits={
                    name: SplitInfo(int(s["count"]), int(s["positives"]), tuple(s["files"]))
                    for name, s in data["splits"].items()
                },
                shards={
                    name: ShardInfo(int(s["count"]), int(s["bytes"]))
                    for name, s in data["shards"].items()
                },
                source=str(data.get("source") or ""),
                source_layout=str(data.get("source_layout") or "rsna"),
                seed=int(data.get("seed") or 0),
                class_weights=_weights(data.get("class_weights")),
                folds={str(k): int(v) for k, v in (data.get("folds") or {}).items()},
                num_folds=int(data.get("num_folds") or 0),
                fold_class_weights=tuple(_weights(w) for w in data.get("fold_class_weights") or ()),
                skipped=int(data.get("skipped") or 0),
                patient_id_tag_mismatches=int(data.get("patient_id_tag_mismatches") or 0),
                label_mapping=dict(data.get("label_mapping") or {}),
                grouping=None
                if not isinstance(grouping, Mapping)
                else Grouping(
                    rule=str(grouping.get("rule", "")),
                    patients=int(grouping.get("patients") or 0),
                    file=grouping.get("file") or None,
                    images=None if grouping.get("images") is None else int(grouping["images"]),
                ),
                kept_splits=bool(data.get("kept_splits", False)),
                patients_in_several_splits=int(data.get("patients_in_several_splits") or 0),
                notes=int(data.get("notes") or 0),
                attributes=data.get("attributes") or None,
                extra={k: v for k, v in data.items() if k not in _KNOWN_KEYS},
                stored=dict(data),
            )
        except KeyError as err:
            raise UserError(f"{where} lacks {err.args[0]!r}; re-run convert") from err
        except (TypeError, ValueError, AttributeError) as err:
            raise UserError(f"{where} is malformed ({err}); re-run convert") from err


_KNOWN_KEYS = frozenset(
    {
        "format",
        "source",
        "image_size",
        "seed",
        "splits",
        "shards",
        "class_weights",
        "folds",
        "num_folds",
        "fold_class_weights",
        "skipped",
        "patient_id_tag_mismatches",
        "source_layout",
        "label_mapping",
        "grouping",
        "kept_splits",
        "patients_in_several_splits",
        "notes",
        "attributes",
    }
)


def _grouping_json(grouping: Grouping) -> dict[str, Any]:
    out: dict[str, Any] = {"rule": grouping.rule}
    if grouping.file is not None:
        out["file"] = grouping.file
    out["patients"] = grouping.patients
    if grouping.images is not None:
        out["images"] = grouping.images
    return out


def _weights(value: Any) -> Mapping[str, float] | None:
    return None if value is None else {str(k): float(v) for k, v in dict(value).items()}


def fingerprint_of(data: Mapping[str, Any]) -> str:
    """A short hash of a manifest's JSON object (the value model cards record)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_manifest(data_dir: str | Path) -> Manifest:
    """Reads `manifest.json` and checks the presence and size of every shard it lists.

    Raises:
        UserError: no manifest, an unreadable or malformed one, or a missing or
            truncated shard.
    """
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST
    if not path.is_file():
        raise UserError(f"{data_dir} has no {MANIFEST}; create it with `python cli.py convert`")
    manifest = Manifest.from_json(read_json_object(path, "manifest"), path)
    for split, info in manifest.splits.items():
        for name in info.files:
            shard = data_dir / name
            if not shard.is_file():
                raise UserError(f"shard {shard} listed in the manifest is missing")
            expected = manifest.shards[name].bytes if name in manifest.shards else None
            if shard.stat().st_size != expected:
                raise UserError(
                    f"shard {shard} is corrupt: {shard.stat().st_size} bytes, "
                    f"manifest says {expected} (split {split})"
                )
    return manifest


def write_manifest(data_dir: str | Path, manifest: Manifest) -> Path:
    """Writes `manifest.json` atomically; returns its path."""
    path = Path(data_dir) / MANIFEST
    atomic_write_json(path, manifest.to_json())
    return path
