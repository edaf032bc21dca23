"""One meaning of `--workers` and one process pool for `synth` and `convert`.

`workers`: None = one process per core, 0 = in this process (no pool; what tests
and debuggers want), N ≥ 1 = N worker processes. Results come back in task order
whatever the count, so outputs do not depend on it.

Workers are spawned, never forked: the parent may hold threads (TensorFlow's),
and a forked copy of a threaded process can deadlock. A script that calls a
command with workers therefore needs the usual `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pneumokeras.errors import UserError


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


class WorkerPool:
    """`imap` in this process (0 workers) or over a pool of spawned processes.

    Use as a context manager; leaving it terminates the workers (results not yet
    consumed are dropped, which is what an interrupted command wants).
    """

    def __init__(self, workers: int):
        """Starts `workers` processes (none for 0); see `resolve`."""
        self.workers = workers
        self._pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 0 else None

    def imap(self, func: Callable[[Any], Any], items: Iterable, chunksize: int = 8) -> Iterator:
        """Lazily `func(item)` for each item, in order; `func` must be picklable by name."""
        if self._pool is None:
            return map(func, items)
        return self._pool.imap(func, items, chunksize=chunksize)

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
