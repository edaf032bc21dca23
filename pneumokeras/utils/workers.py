"""One meaning of `--workers` and one process pool for `synth` and `convert`.

`workers`: None = one process per core, 0 = in this process (no pool; what tests
and debuggers want), N ≥ 1 = N worker processes. Results come back in task order
whatever the count, so outputs do not depend on it.

Workers are spawned, never forked: the parent may hold threads (TensorFlow's),
and a forked copy of a threaded process can deadlock. A script that calls a
command with workers therefore needs the usual `if __name__ == "__main__":` guard.

A worker that dies (killed for memory, or a child that cannot start) is an
error, not a wait: `multiprocessing.Pool` would start a replacement and wait
forever for the task the dead one held.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.pool import Pool as PoolType
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from pneumokeras.errors import PneumokerasError, UserError

Item = TypeVar("Item")
Result = TypeVar("Result")

# How often (seconds) a waiting `imap` checks that no worker has died.
WORKER_CHECK_SECONDS = 2.0


class WorkerDiedError(PneumokerasError, RuntimeError):
    """A worker process ended while the pool was in use; its task is lost."""


def resolve(workers: int | None, tasks: int | None = None) -> int:
    """Number of worker processes to start; 0 means work in this process.

    Args:
        workers: None (all cores), 0 (in-process) or a positive count.
        tasks: when given, no more processes than tasks are started.

    Raises:
        UserError: `workers` is not an integer ≥ 0.
    """
    if workers is None:
        workers = os.cpu_count() or 1
    elif isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UserError(f"--workers must be an integer ≥ 0 (0: in this process); got {workers!r}")
    return workers if tasks is None else min(workers, tasks)


def _processes(pool: PoolType) -> list[BaseProcess]:
    """The pool's worker processes now (those it replaced a dead one with included).

    `multiprocessing.Pool` keeps them in its private `_pool` list and offers no
    public way to see them; watching them is how a death is noticed.
    """
    return list(pool._pool)  # type: ignore[attr-defined]


def _chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """`items` in lists of `size` (the last one shorter), lazily."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, max(1, size))):
        yield chunk


def _run_chunk(task: tuple[Callable[[Any], Any], list[Any]]) -> list[Any]:
    """In a worker: `func` over one chunk."""
    func, chunk = task
    return [func(item) for item in chunk]


class WorkerPool:
    """`imap` in this process (0 workers) or over a pool of spawned processes.

    Use as a context manager; leaving it terminates the workers (results not yet
    consumed are dropped, which is what an interrupted command wants).
    """

    def __init__(self, workers: int):
        """Starts `workers` processes (none for 0); see `resolve`."""
        self.workers = workers
        self._pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 0 else None
        self._pids: set[int] = set()
        if self._pool is not None:
            self._pids.update(p.pid for p in _processes(self._pool) if p.pid is not None)

    def imap(
        self, func: Callable[[Item], Result], items: Iterable[Item], chunksize: int = 8
    ) -> Iterator[Result]:
        """Lazily `func(item)` for each item, in order; `func` must be picklable by name."""
        if self._pool is None:
            return map(func, items)
        # Chunks made here: `Pool.imap` with chunksize 1 returns the iterator whose
        # `next(timeout)` lets the wait be checked (a larger one hides it).
        tasks = ((func, chunk) for chunk in _chunks(items, chunksize))
        return self._watched(self._pool.imap(_run_chunk, tasks, chunksize=1))

    def _watched(self, results: Any) -> Iterator[Any]:
        """The chunks' results in order; raises `WorkerDiedError` once a worker has died."""
        while True:
            try:
                yield from results.next(timeout=WORKER_CHECK_SECONDS)
            except StopIteration:
                return
            except multiprocessing.TimeoutError:
                self._check_workers()

    def _check_workers(self) -> None:
        # A healthy pool never replaces its workers (no maxtasksperchild): a
        # process that has exited, or a worker the pool started to replace one
        # (pids beyond the first ones), means a death.
        processes = _processes(self._pool) if self._pool is not None else []
        self._pids.update(p.pid for p in processes if p.pid is not None)
        dead = [p for p in processes if p.exitcode is not None]
        if dead or len(self._pids) > self.workers:
            code = dead[0].exitcode if dead else "unknown"
            self.close()
            raise WorkerDiedError(
                f"a worker process died (exit code {code}); if it was killed for memory, "
                "rerun with fewer --workers"
            )

    def close(self) -> None:
        """Stops the worker processes (idempotent)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
