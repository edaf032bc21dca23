"""Atomic file writes (a temporary name in the same folder, then rename) and JSON reads."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from pneumokeras.errors import UserError


def current_umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside `path` to write; renames it over `path` on success.

    For writers that take a file name (Keras `save`, TFRecord writers). The
    temporary name is `.<name>.tmp-*<suffix>` (Keras `save` wants `suffix=".keras"`;
    without one it never matches a glob for finished files), and the file gets the
    permissions a plain `open` would give (0666 less the umask; `mkstemp` alone
    gives 0600). An exception (or a kill) inside
    the block leaves `path` untouched; the temporary file is removed on exceptions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Opens a temporary file beside `path` (see `atomic_path`); renames it on success."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Writes `data` to `path` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes UTF-8 `text` to `path` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Writes `obj` as indented, key-sorted JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    """The JSON object in `path`, a record this project wrote (`what` names it in errors).

    Raises:
        UserError: the file cannot be read or parsed, or holds no JSON object:
            one line naming `what` and the path.
    """
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{what} {path} is unreadable: {err}") from err
    if not isinstance(values, dict):
        raise UserError(f"{what} {path} is not a JSON object")
    return values


def read_csv_table(path: str | Path, columns: tuple[str, ...]) -> list[list[str]]:
    """The data rows of a CSV table this project wrote, after checking its header.

    Raises:
        UserError: the file cannot be read, or does not start with the header
            `columns` (one line naming the path and saying to re-run convert).
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{path} is unreadable: {err}") from err
    if not rows or tuple(rows[0]) != columns:
        header = ",".join(rows[0]) if rows else "nothing"
        raise UserError(
            f"{path} must start with the header {','.join(columns)}, not {header}; re-run convert"
        )
    return rows[1:]
