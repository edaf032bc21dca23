"""The run folder: its record (`run.json`), who may use it, and whether a run may resume there.

A run folder describes one run. `run.json` records the settings, the data's
manifest fingerprint, the fold and the backend, and the run's `status`
(`running` until the last epoch, then `finished`). `prepare_run_dir` lets a run
start in a new or empty folder, resume an unfinished run with the same settings,
or replace a run with `overwrite`; anything else is refused before the folder
changes. `run_lock` keeps a second process out of a folder a run is using (the
hidden `.lock` file, see `utils.locking`); it is released when the run ends,
however it ends.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import keras

from pneumokeras.config import Config
from pneumokeras.errors import UserError
from pneumokeras.models.model_card import CARD_FILE, MODEL_FILE
from pneumokeras.records.manifest import Manifest
from pneumokeras.utils.fileio import atomic_write_json, read_json_object
from pneumokeras.utils.locking import LockedError, acquire, release

RUN_RECORD = "run.json"
LOCK_FILE = ".lock"
# What `train` writes into a run folder (and `overwrite` removes).
RUN_OUTPUTS = (MODEL_FILE, CARD_FILE, "history.csv", RUN_RECORD, "logs", "backup")
# Settings that do not change a trained model (read by evaluate and explain): a run
# resumes, and cv's folds belong together, whatever they say.
UNTRAINED_SECTIONS = ("evaluate", "explain")


class RunInUseError(LockedError):
    """Another process is using the run folder; `folder` is that folder."""

    def __init__(self, folder: Path, locked: LockedError) -> None:
        super().__init__(
            locked.path,
            locked.holder,
            f"{folder} is in use by {locked.who}: wait for that run to end, or choose "
            "another --out",
        )
        self.folder = folder


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Holds `run_dir`'s lock while the block runs.

    The folder is created when missing, and removed again when the block ends
    with nothing written into it (a run refused or failed before it started).

    Raises:
        RunInUseError: another process holds it.
    """
    created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    try:
        fd = acquire(path)
    except LockedError as err:
        raise RunInUseError(run_dir, err) from None
    try:
        yield
    finally:
        release(path, fd)
        for folder in created:  # deepest first; only while still empty
            with contextlib.suppress(OSError):
                folder.rmdir()


def run_record(config: Config, manifest: Manifest, fold: int | None, status: str) -> dict[str, Any]:
    """The content of `run.json` for a run of `config` on `manifest`'s data."""
    return {
        "status": status,
        "config": config.to_dict(),
        "data_fingerprint": manifest.fingerprint,
        "data_source": manifest.source,
        "fold": fold,
        "backend": keras.backend.backend(),
    }


def setting_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: Iterable[str] = UNTRAINED_SECTIONS
) -> list[str]:
    """`section.key: old → new` for every setting that differs, sections in `ignore` aside.

    Args:
        old, new: settings as `Config.to_dict()` gives them (`{section: {key: value}}`).
        ignore: sections left out of the comparison.
    """
    skipped = set(ignore)
    out = []
    for section in sorted((set(old) | set(new)) - skipped):
        before_section, after_section = old.get(section) or {}, new.get(section) or {}
        for name in sorted(set(before_section) | set(after_section)):
            before, after = before_section.get(name), after_section.get(name)
            if before != after:
                out.append(f"{section}.{name}: {before} → {after}")
    return out


def record_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between two run records: data, fold, backend, then the trained settings."""
    out = [
        f"{key}: {recorded.get(key)} → {current[key]}"
        for key in ("data_fingerprint", "fold", "backend")
        if recorded.get(key) != current[key]
    ]
    return out + setting_differences(recorded.get("config", {}), current["config"])


def listed(changes: list[str], most: int = 3) -> str:
    """The first `most` differences joined for a one-line message (`…` when there are more)."""
    return "; ".join(changes[:most]) + (" …" if len(changes) > most else "")


def read_run_record(run_dir: Path) -> dict[str, Any] | None:
    """The folder's run.json, or None when it has none.

    Raises:
        UserError: a run.json that cannot be read.
    """
    path = run_dir / RUN_RECORD
    if not path.is_file():
        return None
    return read_json_object(path, "run record")


def prepare_run_dir(
    run_dir: Path,
    config: Config,
    manifest: Manifest,
    fold: int | None,
    overwrite: bool,
) -> bool:
    """Makes `run_dir` ready for this run; returns True when it resumes an unfinished one.

    Raises:
        UserError: a finished run (without `overwrite`), an unfinished run with
            other settings, data, fold or backend, or a folder that is not empty
            and holds no run record.
    """
    current = run_record(config, manifest, fold, "running")
    record_path = run_dir / RUN_RECORD
    entries = (
        sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE) if run_dir.is_dir() else []
    )
    if entries and overwrite:
        for name in RUN_OUTPUTS:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    elif entries:
        recorded = read_run_record(run_dir)
        if recorded is None:
            what = "files of a run" if set(entries) & set(RUN_OUTPUTS) else "other files"
            raise UserError(
                f"{run_dir} is not empty and holds {what} without a {RUN_RECORD}; "
                "choose a new --out, or pass --overwrite to replace the run"
            )
        if recorded.get("status") == "finished":
            raise UserError(
                f"{run_dir} holds a finished run; choose a new --out, or pass --overwrite "
                "to replace it"
            )
        changed = record_differences(recorded, current)
        if changed:
            raise UserError(
                f"{run_dir} holds an unfinished run with other settings ({listed(changed)}); "
                "rerun with the same settings to resume it, or pass --overwrite"
            )
        return True
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record_path, current)
    return False


def finish_run_dir(run_dir: Path) -> None:
    """Marks the run finished in its record (a rerun is then refused)."""
    record = read_json_object(run_dir / RUN_RECORD, "run record")
    atomic_write_json(run_dir / RUN_RECORD, {**record, "status": "finished"})


def is_finished(record: Mapping[str, Any] | None) -> bool:
    """Whether a run record (or None: no record) says the run finished."""
    return record is not None and record.get("status") == "finished"
