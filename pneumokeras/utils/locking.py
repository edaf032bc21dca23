"""An exclusive lock held by one process at a time, named by a file (`fcntl.flock`).

`hold_lock(path)` takes the lock or raises `LockedError` at once (it never waits),
naming the process that holds it: the lock file records its pid, host and start
time. The kernel releases a `flock` lock when its process ends, however it ends
(`kill -9` included), so a lock file left behind by a dead process is taken over
without a stale-lock check; on Linux NFS clients `flock` is an NFS lock, so the
lock also works for a folder shared between machines.

Used where two processes must not work on the same thing: a training run folder
(`training.run_folder`), a cross-validation folder while it is aggregated, and a
process id of a multi-process run on one machine (`training.distributed`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from pneumokeras.errors import UserError


@dataclasses.dataclass(frozen=True)
class LockHolder:
    """The process holding a lock, as its lock file records it."""

    pid: int
    host: str
    since: str  # local time it took the lock, `YYYY-mm-dd HH:MM:SS`

    def describe(self) -> str:
        """`pid 123 on host abc, since 2025-01-01 12:00:00`."""
        return f"pid {self.pid} on host {self.host}, since {self.since}"


class LockedError(UserError):
    """Another process holds the lock; `holder` says which (None when it did not say yet)."""

    def __init__(self, path: Path, holder: LockHolder | None, message: str = "") -> None:
        self.path = path
        self.holder = holder
        super().__init__(message or f"{path} is held by {self.who}")

    @property
    def who(self) -> str:
        """`another process (pid 123 on host abc, since …)`."""
        return "another process" + (f" ({self.holder.describe()})" if self.holder else "")


def _read_holder(fd: int) -> LockHolder | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        values = json.loads(os.read(fd, 4096).decode("utf-8"))
        return LockHolder(int(values["pid"]), str(values["host"]), str(values["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the holder has not written its name yet


def _open_locked(path: Path) -> int:
    """An open descriptor of `path` holding its lock.

    Raises:
        LockedError: another process holds it.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockedError(path, holder) from None
        # The previous holder removes the file as it lets go: a lock taken on a file
        # no longer at `path` locks nothing, so open the new one and try again.
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            return fd
        os.close(fd)


@contextlib.contextmanager
def hold_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Holds the lock named by `path` (created if missing) while the block runs.

    The file records this process (pid, host, time) and is removed when the block
    ends; its folder must exist.

    Raises:
        LockedError: another process holds the lock (at once; this never waits).
    """
    fd = acquire(path)
    try:
        yield
    finally:
        release(path, fd)


def acquire(path: str | os.PathLike[str]) -> int:
    """Takes the lock named by `path` for good (until `release` or the process ends).

    Returns:
        The open descriptor that holds it.

    Raises:
        LockedError: another process holds it.
    """
    path = Path(path)
    fd = _open_locked(path)
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
    return fd


def release(path: str | os.PathLike[str], fd: int) -> None:
    """Removes the lock file (still holding the lock), then lets the lock go."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.close(fd)
