"""Tests for pneumokeras.utils.locking: one holder at a time, named, gone with its process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pneumokeras.utils import locking


def test_a_second_holder_is_refused_with_the_first_ones_name(tmp_path):
    path = tmp_path / "x.lock"
    with locking.hold_lock(path):
        with pytest.raises(locking.LockedError) as info:
            locking.acquire(path)  # another open file: refused, even in this process
        holder = info.value.holder
        assert holder is not None
        assert holder.pid == os.getpid()
        assert info.value.who.startswith(f"another process (pid {os.getpid()} on host ")
    assert not path.exists()  # removed by its holder
    fd = locking.acquire(path)  # and free again
    locking.release(path, fd)


def test_a_lock_of_a_killed_process_is_free_at_once(tmp_path):
    path = tmp_path / "x.lock"
    code = (
        "import sys, time; from pneumokeras.utils import locking; "
        "locking.acquire(sys.argv[1]); print('held', flush=True); time.sleep(600)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(locking.LockedError, match=f"pid {child.pid}"):
            locking.acquire(path)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert path.exists()  # left behind by the killed process, but not held
    start = time.monotonic()
    fd = locking.acquire(path)
    assert time.monotonic() - start < 1
    locking.release(path, fd)
