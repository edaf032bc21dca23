"""Training across processes and machines: the cluster settings and `jax.distributed`.

Every process of a run starts the same command and calls `initialize(settings(...))`
before any JAX computation. Then `jax.devices()` lists the devices of all processes,
`keras.distribution.DataParallel` spans them, each process reads its own share of
the training shards, and process 0 alone writes the run folder (`is_writer`).

Settings, per value the first one given wins:

    --coordinator HOST:PORT  PNEUMOKERAS_COORDINATOR    process 0's address; its
                                                        coordinator listens there
    --num-processes N        PNEUMOKERAS_NUM_PROCESSES  processes in the run
    --process-id I           PNEUMOKERAS_PROCESS_ID     this process, 0 .. N-1

A value still missing comes from the cluster environment that `jax.distributed`
detects itself: SLURM (`srun`: SLURM_NTASKS, SLURM_PROCID; coordinator on the
step's first node, port from the job id, or JAX_COORDINATOR_PORT) or Open MPI
(`mpirun`: OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_RANK). With no coordinator
given there, JAX picks it and its coordinator listens as JAX does by default
(every interface; JAX_COORDINATOR_BIND_ADDRESS narrows it). One process (none of
this set, or N = 1) is plain single-process training.

Before joining, `initialize` checks in a moment what would otherwise end in a
timeout or an abort: two processes of one machine given the same process id
(`claim_process_id`) and process 0's coordinator port already in use
(`check_coordinator_port`). Once joined, `train` first has every process compare
its settings and data (`agree`): one line naming the first difference, in every
process.

Timeouts, in seconds:

    PNEUMOKERAS_INIT_TIMEOUT       (300) how long processes wait for all N to join;
                                   also how long a finishing process waits for the
                                   others at exit
    PNEUMOKERAS_HEARTBEAT_TIMEOUT  (100) a process silent this long is taken for
                                   dead and JAX ends the others

A process that dies makes the others stop at their next cross-process step (the
all-reduce connection breaks: exit 1, one line `... lost another process ...`),
at the latest after the heartbeat timeout (if JAX's heartbeat check comes first,
JAX ends them itself: exit 134 after its fatal log line "Terminating process
because the JAX distributed service detected fatal errors"). One that never
arrives makes the others stop after the init timeout (exit 1, one line).

Only the JAX backend: TensorFlow's `MultiWorkerMirroredStrategy` fails in Keras
3's `fit` (keras-team/keras#20585).

This module imports JAX only when a run has more than one process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pneumokeras.errors import UserError
from pneumokeras.utils import locking, network

COORDINATOR_VARIABLE = "PNEUMOKERAS_COORDINATOR"
NUM_PROCESSES_VARIABLE = "PNEUMOKERAS_NUM_PROCESSES"
PROCESS_ID_VARIABLE = "PNEUMOKERAS_PROCESS_ID"
INIT_TIMEOUT_VARIABLE = "PNEUMOKERAS_INIT_TIMEOUT"
HEARTBEAT_TIMEOUT_VARIABLE = "PNEUMOKERAS_HEARTBEAT_TIMEOUT"
DEFAULT_INIT_TIMEOUT = 300  # seconds; JAX's own default
DEFAULT_HEARTBEAT_TIMEOUT = 100  # seconds; JAX's own default
# JAX itself gives up this much later than our own init watchdog, so the
# watchdog's one-line message comes first (JAX's is a fatal log and a stack dump).
_JAX_TIMEOUT_MARGIN = 10

TENSORFLOW_REFUSAL = (
    "multi-process training runs under KERAS_BACKEND=jax only: Keras 3's fit fails with "
    "TensorFlow's MultiWorkerMirroredStrategy (keras-team/keras#20585)"
)

# The cluster environments `jax.distributed` detects (jax/_src/clusters), with the
# variables that must all be present and those giving (process count, process id).
_CLUSTERS = {
    "SLURM": (
        ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"),
        ("SLURM_NTASKS", "SLURM_PROCID"),
    ),
    "Open MPI": (("OMPI_MCA_orte_hnp_uri",), ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")),
}

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ClusterSettings:
    """Where this process stands in a training run.

    Attributes:
        num_processes: processes in the run (1: single-process training).
        process_id: this process, 0 .. num_processes - 1 (0 writes the run folder).
        coordinator: `HOST:PORT` of process 0's coordinator; None lets JAX find it
            in the cluster environment (SLURM, Open MPI).
        source: where the settings came from (for messages).
        init_timeout: seconds to wait for all processes to join.
        heartbeat_timeout: seconds of silence after which a process is taken for dead.
    """

    num_processes: int = 1
    process_id: int = 0
    coordinator: str | None = None
    source: str = "single process"
    init_timeout: int = DEFAULT_INIT_TIMEOUT
    heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT

    @property
    def multi_process(self) -> bool:
        return self.num_processes > 1


def _integer(value: Any, name: str, minimum: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise UserError(f"{name} must be a whole number, not {value!r}") from None
    if number < minimum:
        raise UserError(f"{name} must be at least {minimum}, not {number}")
    return number


def _check_address(address: str, name: str) -> str:
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"{name} must be HOST:PORT (port 1-65535), not {address!r}")
    return address.strip()


def _detected_cluster(environ: Mapping[str, str]) -> tuple[str, str, str] | None:
    """(name, process count, process id) of a SLURM or Open MPI environment, else None."""
    for name, (required, (count, rank)) in _CLUSTERS.items():
        if all(key in environ for key in required) and count in environ and rank in environ:
            return name, environ[count], environ[rank]
    return None


def settings(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClusterSettings:
    """The cluster settings from flags, then PNEUMOKERAS_* variables, then SLURM/Open MPI.

    Args:
        coordinator: `HOST:PORT` (the `--coordinator` flag), or None.
        num_processes: `--num-processes`, or None.
        process_id: `--process-id`, or None.
        environ: the environment (default `os.environ`).

    Raises:
        UserError: a malformed value, a process id out of range, or a multi-process
            run with a value that is neither given nor found in a cluster environment.
    """
    env = os.environ if environ is None else environ
    init_timeout = _integer(
        env.get(INIT_TIMEOUT_VARIABLE, DEFAULT_INIT_TIMEOUT), INIT_TIMEOUT_VARIABLE, 1
    )
    heartbeat_timeout = _integer(
        env.get(HEARTBEAT_TIMEOUT_VARIABLE, DEFAULT_HEARTBEAT_TIMEOUT),
        HEARTBEAT_TIMEOUT_VARIABLE,
        1,
    )
    single = ClusterSettings(init_timeout=init_timeout, heartbeat_timeout=heartbeat_timeout)
    # Each value: (value, where it came from), the flag first, then our variable.
    values: dict[str, tuple[Any, str]] = {}
    for flag, value, variable in (
        ("--coordinator", coordinator, COORDINATOR_VARIABLE),
        ("--num-processes", num_processes, NUM_PROCESSES_VARIABLE),
        ("--process-id", process_id, PROCESS_ID_VARIABLE),
    ):
        if value is not None:
            values[flag] = (value, flag)
        elif env.get(variable, "").strip():
            values[flag] = (env[variable], variable)
    source = "flags and environment"
    cluster = _detected_cluster(env)
    if cluster is not None:
        name, cluster_count, cluster_rank = cluster
        source = name if not values else f"{name} and flags"
        values.setdefault("--num-processes", (cluster_count, f"{name}'s process count"))
        values.setdefault("--process-id", (cluster_rank, f"{name}'s process id"))
    if not values:
        return single
    if "--num-processes" not in values:
        raise UserError(
            f"{' and '.join(v[1] for v in values.values())} given without --num-processes "
            f"(or {NUM_PROCESSES_VARIABLE})"
        )
    count_value, count_name = values["--num-processes"]
    count = _integer(count_value, count_name, minimum=1)
    rank_value, rank_name = values.get("--process-id", (0, "--process-id"))
    rank = _integer(rank_value, rank_name, minimum=0)
    if rank >= count:
        raise UserError(
            f"{rank_name} is {rank} but a run of {count} process(es) numbers them 0..{count - 1}"
        )
    if count == 1:
        return single
    missing = [
        f"{flag} (or {variable})"
        for flag, variable in (
            ("--process-id", PROCESS_ID_VARIABLE),
            ("--coordinator", COORDINATOR_VARIABLE),
        )
        if flag not in values and not (flag == "--coordinator" and cluster is not None)
    ]
    if missing:
        raise UserError(f"a run of {count} processes needs {' and '.join(missing)}")
    address = values.get("--coordinator")
    return dataclasses.replace(
        single,
        num_processes=count,
        process_id=rank,
        coordinator=_check_address(*address) if address else None,
        source=source,
    )


def check_backend(cluster: ClusterSettings, backend: str) -> None:
    """Raises UserError when a multi-process run is asked for under another backend than JAX."""
    if cluster.multi_process and backend != "jax":
        raise UserError(TENSORFLOW_REFUSAL)


def hard_exit(message: str, code: int) -> NoReturn:
    """Prints `error: message` on stderr and ends the process at once with `code`.

    Used when a multi-process run fails: a normal exit would first wait in JAX's
    shutdown barrier for the other processes (one of which may be dead) and then
    end with JAX's fatal log and a stack dump instead of this one line.
    """
    sys.stdout.flush()
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    os._exit(code)


# Locks on this machine's process ids (see `claim_process_id`), held until the process ends.
_CLAIMED: list[int] = []


def claim_process_id(cluster: ClusterSettings) -> int | None:
    """Takes this machine's lock on the run's `--process-id` for the rest of the process.

    Two processes of one run started with the same id on one machine would
    otherwise wait for each other until the init timeout and then blame the
    coordinator (or, once the run has started, make JAX abort every process).
    The lock is a file in the user's temporary folder, named by the coordinator's
    address and the id (`utils.locking`: released by the kernel when the process
    ends, however it ends). Processes on other machines are not seen.

    Returns:
        The descriptor holding the lock (None for a single process or without a
        coordinator address, where a cluster manager numbers the processes).

    Raises:
        UserError: another process on this machine holds the id, named.
    """
    if not cluster.multi_process or cluster.coordinator is None:
        return None
    folder = Path(tempfile.gettempdir()) / f"pneumokeras-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    address = "".join(c if c.isalnum() or c in ".-" else "_" for c in cluster.coordinator)
    path = folder / f"run-{address}-process-{cluster.process_id}.lock"
    try:
        fd = locking.acquire(path)
    except locking.LockedError as err:
        raise UserError(
            f"--process-id {cluster.process_id} is taken: {err.who} joins the run at "
            f"{cluster.coordinator} as process {cluster.process_id}; give each process its own "
            f"--process-id, 0..{cluster.num_processes - 1}"
        ) from None
    _CLAIMED.append(fd)
    return fd


def check_coordinator_port(
    cluster: ClusterSettings, environ: Mapping[str, str] | None = None
) -> None:
    """In process 0, checks that its coordinator can listen where it is told to.

    JAX would otherwise fail deep inside with "Failed to start RPC server" (exit 1,
    the port not named) while the other processes wait for the init timeout.

    Raises:
        UserError: the port is in use, the host does not resolve, or it is not an
            address of this machine.
    """
    if not cluster.multi_process or cluster.process_id != 0 or cluster.coordinator is None:
        return
    env = os.environ if environ is None else environ
    address = env.get("JAX_COORDINATOR_BIND_ADDRESS") or cluster.coordinator
    host, port = network.host_and_port(address)
    network.check_can_listen(
        host,
        port,
        "process 0 runs the run's coordinator there: give --coordinator a free port of "
        "process 0's machine",
        "process 0 runs the run's coordinator at --coordinator: start it on that host",
    )


def initialize(cluster: ClusterSettings, backend: str | None = None) -> None:
    """Joins the run's processes through `jax.distributed`; a no-op for one process.

    Call before any JAX computation (and before building a model). First, fast
    checks that would otherwise end in the init timeout or a JAX abort: this
    machine's process ids are distinct (`claim_process_id`) and process 0's
    coordinator port is free (`check_coordinator_port`). The coordinator
    (process 0) listens on the address given, not on every interface
    (JAX_COORDINATOR_BIND_ADDRESS overrides). Keras'
    `keras.distribution.initialize` would also agree on one random seed across
    processes when none was set; `train` always sets `train.seed` in every
    process (`keras.utils.set_random_seed`), which gives every process the same
    initial weights, so nothing more is needed here.

    If not all processes have joined after `cluster.init_timeout` seconds, this
    process prints one line and exits with code 1 (JAX can only abort there).

    Args:
        cluster: from `settings`.
        backend: the Keras backend (default: KERAS_BACKEND, else tensorflow).

    Raises:
        UserError: a backend other than JAX, JAX already started, a process id
            taken on this machine, or a coordinator port that cannot be used.
    """
    if not cluster.multi_process:
        return
    check_backend(cluster, backend or os.environ.get("KERAS_BACKEND", "tensorflow"))
    import jax
    from jax._src import xla_bridge  # backends_are_initialized: no public equivalent

    if jax.distributed.is_initialized():
        return
    if xla_bridge.backends_are_initialized():
        raise UserError("JAX started before the processes joined; initialize first")
    claim_process_id(cluster)
    check_coordinator_port(cluster)
    where = cluster.coordinator or f"the coordinator {cluster.source} names"
    watchdog = threading.Timer(
        cluster.init_timeout,
        hard_exit,
        args=(
            f"process {cluster.process_id}: not all {cluster.num_processes} processes joined "
            f"at {where} within {cluster.init_timeout} s ({INIT_TIMEOUT_VARIABLE}); start "
            "every process with the same --coordinator and --num-processes and its own "
            "--process-id",
            1,
        ),
    )
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address=cluster.coordinator,
            num_processes=cluster.num_processes,
            process_id=cluster.process_id,
            initialization_timeout=cluster.init_timeout + _JAX_TIMEOUT_MARGIN,
            heartbeat_timeout_seconds=cluster.heartbeat_timeout,
            shutdown_timeout_seconds=cluster.init_timeout,
            coordinator_bind_address=(
                os.environ.get("JAX_COORDINATOR_BIND_ADDRESS") or cluster.coordinator
            ),
        )
    finally:
        watchdog.cancel()


def _jax_distributed() -> Any:
    """The `jax` module when `jax.distributed` was initialised in this process, else None."""
    jax = sys.modules.get("jax")
    if jax is None or not jax.distributed.is_initialized():
        return None
    return jax


def process_count() -> int:
    """Processes in this run (1 unless `initialize` joined several)."""
    jax = _jax_distributed()
    return 1 if jax is None else jax.process_count()


def process_index() -> int:
    """This process's index in the run, 0 .. process_count() - 1."""
    jax = _jax_distributed()
    return 0 if jax is None else jax.process_index()


def is_writer() -> bool:
    """True in the process that writes the run folder (process 0; the only one alone)."""
    return process_index() == 0


def all_gather(values: Any) -> Any:
    """Every process's `values` (a NumPy array), stacked: shape `(processes, *values.shape)`.

    A collective: every process must call it, with the same shape and dtype.
    """
    import numpy as np

    if process_count() == 1:
        return np.asarray(values)[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(values)))


def on_writer(step: Callable[[], T]) -> T | None:
    """Runs `step` on process 0 only, then makes every process share its outcome.

    A collective: every process must call it at the same point. Returns the
    step's result on process 0 and None elsewhere; when the step raised on
    process 0, it raises there and the other processes raise a UserError
    pointing to process 0's message, so that all of them stop together instead
    of waiting for a process that has left.
    """
    if process_count() == 1:
        return step()
    import numpy as np

    result, error = None, None
    if is_writer():
        try:
            result = step()
        except Exception as exc:
            error = exc
    failed = all_gather(np.array([error is not None], np.int32))
    if error is not None:
        raise error
    if int(failed[0, 0]):
        raise UserError("process 0 stopped (its error line says why); this process stops too")
    return result


def _shown(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value)


def agree(facts: Mapping[str, Any], failure: BaseException | None = None) -> None:
    """Checks that every process of the run holds the same `facts`; a collective.

    Called once the processes have joined, before they do anything together:
    processes started with other settings or data would otherwise train side by
    side until one fails obscurely (a NaN loss, a C++ check failure in another).
    A process that already failed (`failure`, e.g. no data on its machine) says
    so to the others, so that all stop at once.

    Args:
        facts: flat `{name: JSON value}`, in the order to report differences
            (`train.run_facts`).
        failure: this process's own error, raised here after the others know.

    Raises:
        UserError: in every process, naming the first fact that differs (its
            value in process 0 and in the first process that differs), or the
            process that failed and its message; `failure` itself in the process
            that failed.
    """
    if process_count() == 1:
        return
    import numpy as np

    said = (str(failure).strip().splitlines() or [type(failure).__name__])[0] if failure else ""
    payload = json.dumps({"failure": said, "facts": dict(facts)}, default=str).encode("utf-8")
    lengths = all_gather(np.array([len(payload)], np.int32))[:, 0]
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: len(payload)] = np.frombuffer(payload, np.uint8)
    rows = all_gather(padded)
    everyone = [
        json.loads(bytes(row[: int(size)]).decode("utf-8"))
        for row, size in zip(rows, lengths, strict=True)
    ]
    if failure is not None:
        raise failure
    for index, other in enumerate(everyone):
        if other["failure"]:
            raise UserError(f"process {index} stopped: {other['failure']}")
    first = everyone[0]["facts"]
    for index, other in enumerate(everyone[1:], start=1):
        theirs = other["facts"]
        for name in dict.fromkeys([*first, *theirs]):
            if first.get(name) != theirs.get(name):
                raise UserError(
                    f"the processes of this run differ: {name} is {_shown(first.get(name))} in "
                    f"process 0 but {_shown(theirs.get(name))} in process {index}; start every "
                    "process with the same settings and data"
                )


# Substrings of the errors JAX raises when a peer process is gone (Gloo on CPU,
# the coordination service everywhere, NCCL on GPUs).
_PEER_LOST = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Gloo",
    "heartbeat",
    "coordination service",
    "NCCL",
)


def peer_failure(exc: BaseException) -> str | None:
    """A one-line explanation when `exc` says another process of the run is gone, else None."""
    text = str(exc)
    if not any(marker.lower() in text.lower() for marker in _PEER_LOST):
        return None
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return (
        f"process {process_index()} of {process_count()} lost another process of the run "
        f"({first[:200]}); restart all processes with the same command to resume"
    )
