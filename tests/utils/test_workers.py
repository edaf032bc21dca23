"""The shared meaning of --workers and the pool behind it (pneumokeras/utils/workers.py)."""

import os

import pytest

from pneumokeras.errors import UserError
from pneumokeras.utils.workers import WorkerPool, resolve


def _pid_and_square(value: int) -> tuple[int, int]:
    return os.getpid(), value * value


def _die_on_three(value: int) -> int:
    if value == 3:
        os._exit(9)  # as a worker killed for memory ends
    return value


def test_none_means_every_core_and_tasks_cap_the_count():
    assert resolve(None) == (os.cpu_count() or 1)
    assert resolve(0) == 0
    assert resolve(3) == 3
    assert resolve(8, tasks=2) == 2
    assert resolve(0, tasks=5) == 0


@pytest.mark.parametrize("workers", [-1, 1.5, True, "2"])
def test_bad_counts_are_one_line_user_errors(workers):
    with pytest.raises(UserError, match="--workers") as info:
        resolve(workers)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_zero_works_here_n_in_n_processes_results_in_order(workers):
    with WorkerPool(workers) as pool:
        results = list(pool.imap(_pid_and_square, range(20), chunksize=3))
    assert [square for _, square in results] == [v * v for v in range(20)]
    pids = {pid for pid, _ in results}
    if workers == 0:
        assert pids == {os.getpid()}
    else:
        assert os.getpid() not in pids
        assert 1 <= len(pids) <= workers


def test_leaving_the_block_stops_the_workers():
    pool = WorkerPool(1)
    with pool:
        (pid, _), *_ = pool.imap(_pid_and_square, [1])
    assert pool._pool is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    pool.close()  # idempotent


def test_a_worker_that_dies_is_an_error_not_a_wait(monkeypatch):
    from pneumokeras.utils import workers

    monkeypatch.setattr(workers, "WORKER_CHECK_SECONDS", 0.2)
    pool = WorkerPool(2)
    with pool, pytest.raises(workers.WorkerDiedError, match="a worker process died") as info:
        list(pool.imap(_die_on_three, range(8), chunksize=1))
    assert "--workers" in str(info.value)
    assert "\n" not in str(info.value)
    assert pool._pool is None  # stopped
