"""Multi-process training: cluster settings, and two JAX processes on loopback.

The end-to-end tests start `cli.py train` twice (1 CPU device each) and share
one run across their assertions to keep the time down (`killed_and_resumed`).
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from pneumokeras.config import load_config
from pneumokeras.errors import UserError
from pneumokeras.records import pipeline as data
from pneumokeras.records.manifest import load_manifest
from pneumokeras.training import distributed

ROOT = Path(__file__).resolve().parents[2]
JAX_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="multi-process training runs under JAX only"
)
# The heartbeat timeout the end-to-end runs use: a process left alone must stop
# within it (plus start-up slack), not after JAX's default 100 s.
HEARTBEAT = 30
# data.batch_size 6: 3 per process; 16 validation examples leave a partial last
# batch (5 x 3 + 1), which a validation over one share or whole batches only would miss.
SETTINGS = [
    "data.image_size=64",
    "data.batch_size=6",
    "data.deterministic=true",
    "model.name=resnet10",  # ResNet18's layers, half the blocks: half the compiling
    "model.filters=8",
    "train.learning_rate=3e-3",
    "train.distribute=auto",
    "augment.flip=false",
    "augment.rotation_degrees=0",
    "augment.brightness=0",
    "augment.contrast=0",
]


# ---------------------------------------------------------------- settings


def test_settings_from_flags_then_variables():
    env = {
        distributed.COORDINATOR_VARIABLE: "10.0.0.1:1234",
        distributed.NUM_PROCESSES_VARIABLE: "4",
        distributed.PROCESS_ID_VARIABLE: "3",
        distributed.HEARTBEAT_TIMEOUT_VARIABLE: "20",
    }
    got = distributed.settings(environ=env)
    assert (got.coordinator, got.num_processes, got.process_id) == ("10.0.0.1:1234", 4, 3)
    assert got.multi_process
    assert got.heartbeat_timeout == 20
    assert got.init_timeout == distributed.DEFAULT_INIT_TIMEOUT
    flags = distributed.settings("host:99", 2, 1, environ=env)
    assert (flags.coordinator, flags.num_processes, flags.process_id) == ("host:99", 2, 1)
    assert not distributed.settings(environ={}).multi_process
    assert not distributed.settings(num_processes=1, environ={}).multi_process


def test_settings_from_slurm_and_open_mpi():
    slurm = {
        "SLURM_JOB_ID": "7",
        "SLURM_STEP_NODELIST": "node[01-02]",
        "SLURM_NTASKS": "8",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
    }
    got = distributed.settings(environ=slurm)
    assert (got.num_processes, got.process_id, got.coordinator) == (8, 5, None)
    assert got.source == "SLURM"
    # A coordinator given explicitly is used (and bound to) under SLURM too.
    assert distributed.settings("node01:5000", environ=slurm).coordinator == "node01:5000"
    # One task (sbatch without srun -n) is plain single-process training.
    one_task = {**slurm, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}
    assert not distributed.settings(environ=one_task).multi_process
    ompi = {"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "2"}
    got = distributed.settings(environ={**ompi, "OMPI_COMM_WORLD_RANK": "1"})
    assert (got.num_processes, got.process_id, got.source) == (2, 1, "Open MPI")


@pytest.mark.parametrize(
    "args, env, message",
    [
        (("h:1", None, None), {}, "given without --num-processes"),
        ((None, 2, 0), {}, r"needs --coordinator \(or PNEUMOKERAS_COORDINATOR\)"),
        (("h:1", 2, None), {}, r"needs --process-id \(or PNEUMOKERAS_PROCESS_ID\)"),
        (("h:1", 2, 2), {}, r"--process-id is 2 but a run of 2 process\(es\) numbers them 0..1"),
        (("h", 2, 0), {}, "must be HOST:PORT"),
        (("h:70000", 2, 0), {}, "must be HOST:PORT"),
        (("h:1", 0, 0), {}, "--num-processes must be at least 1"),
        ((None, None, None), {"PNEUMOKERAS_NUM_PROCESSES": "two"}, "must be a whole number"),
        (("h:1", 2, 0), {"PNEUMOKERAS_INIT_TIMEOUT": "0"}, "INIT_TIMEOUT must be at least 1"),
    ],
)
def test_settings_errors_are_one_line(args, env, message):
    with pytest.raises(UserError, match=message) as info:
        distributed.settings(*args, environ=env)
    assert "\n" not in str(info.value)


def test_single_process_helpers_need_no_jax():
    assert distributed.process_count() == 1
    assert distributed.is_writer()
    assert distributed.all_gather(np.array([3])).tolist() == [[3]]
    assert distributed.on_writer(lambda: 5) == 5
    assert distributed.peer_failure(ValueError("shape mismatch")) is None
    lost = distributed.peer_failure(
        ValueError("UNKNOWN: Gloo all-reduce failed: Connection closed by peer [127.0.0.1]:1")
    )
    assert "lost another process" in lost
    assert "restart all processes" in lost


@pytest.mark.backend
def test_each_process_reads_its_own_share_for_the_same_number_of_steps(converted_dir):
    config = load_config(None, SETTINGS)
    shares = []
    for index in range(2):
        dataset, steps = data.training_dataset(
            converted_dir, config, drop_remainder=True, shard=(2, index), batch_size=3
        )
        batches = [x.numpy() for x, _ in dataset]
        # 48 training examples: shares of 32 and 16, yet 8 batches of 3 in each.
        assert steps == len(batches) == int(dataset.cardinality()) == 48 // 2 // 3
        assert {b.shape[0] for b in batches} == {3}
        shares.append({image.tobytes() for b in batches for image in b})
    assert not shares[0] & shares[1]


@pytest.mark.backend
def test_fewer_shard_files_than_processes_are_shared_by_record(converted_dir):
    config = load_config(None, SETTINGS)
    assert len(load_manifest(converted_dir).splits["train"].files) == 3
    shares = []
    for index in range(4):
        dataset, steps = data.training_dataset(
            converted_dir, config, drop_remainder=True, shard=(4, index), batch_size=3
        )
        batches = [x.numpy() for x, _ in dataset]
        assert steps == len(batches) == 48 // 4 // 3
        shares.append({image.tobytes() for b in batches for image in b})
    assert all(shares)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not shares[i] & shares[j], (i, j)


def test_a_process_id_taken_on_this_machine_is_named_at_once():
    cluster = distributed.settings(f"127.0.0.1:{_free_port()}", 3, 2, environ={})
    fd = distributed.claim_process_id(cluster)
    try:
        with pytest.raises(UserError) as info:
            distributed.claim_process_id(cluster)
        message = str(info.value)
        assert message.startswith(
            f"--process-id 2 is taken: another process (pid {os.getpid()} on host "
        )
        assert message.endswith(
            f"joins the run at {cluster.coordinator} as process 2; give each process its "
            "own --process-id, 0..2"
        )
    finally:
        distributed._CLAIMED.remove(fd)
        os.close(fd)
    # Another id, or the same id of another run, is free.
    other = distributed.settings(cluster.coordinator, 3, 1, environ={})
    fd = distributed.claim_process_id(other)
    assert isinstance(fd, int)
    distributed._CLAIMED.remove(fd)
    os.close(fd)
    assert distributed.claim_process_id(distributed.settings(environ={})) is None


def test_a_coordinator_port_in_use_is_named_before_joining():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cluster = distributed.settings(f"127.0.0.1:{port}", 2, 0, environ={})
        with pytest.raises(UserError, match=rf"^127\.0\.0\.1:{port} is in use; process 0 "):
            distributed.check_coordinator_port(cluster, environ={})
        # Only process 0 listens there.
        distributed.check_coordinator_port(
            distributed.settings(cluster.coordinator, 2, 1, environ={}), environ={}
        )
    distributed.check_coordinator_port(cluster, environ={})  # free again
    remote = distributed.settings("192.0.2.1:8476", 2, 0, environ={})  # TEST-NET-1
    with pytest.raises(
        UserError, match=r"192\.0\.2\.1 is not an address of this machine; process 0 runs"
    ):
        distributed.check_coordinator_port(remote, environ={})


def test_agreement_of_a_single_process_needs_no_jax():
    distributed.agree({"data.batch_size": 4})
    distributed.agree({}, failure=UserError("not raised here: the caller raises it"))


# ---------------------------------------------------------------- processes


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(backend="jax", **extra):
    return {
        **os.environ,
        "KERAS_BACKEND": backend,
        "JAX_PLATFORMS": "cpu",
        "JAX_NUM_CPU_DEVICES": "1",
        distributed.HEARTBEAT_TIMEOUT_VARIABLE: str(HEARTBEAT),
        distributed.INIT_TIMEOUT_VARIABLE: "120",
        **extra,
    }


def _start(converted_dir, out, port, index, *settings, env=None, backend="jax", hooks=()):
    """`cli.py train` as process `index`; `hooks`: options of tests/training_hooks.py."""
    program = [str(ROOT / "tests" / "training_hooks.py"), *hooks, "--"] if hooks else []
    args = [sys.executable, *(program or [str(ROOT / "cli.py")])]
    args += ["train", "--data", str(converted_dir)]
    args += ["--out", str(out), *[a for s in [*SETTINGS, *settings] for a in ("--set", s)]]
    args += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    args += ["--process-id", str(index)]
    return subprocess.Popen(
        args,
        env=_env(backend, **(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(processes, timeout=600):
    """(returncode, stdout, stderr, end time) of each process."""
    deadline = time.monotonic() + timeout
    ended = [None] * len(processes)
    while None in ended and time.monotonic() < deadline:
        for i, process in enumerate(processes):
            if ended[i] is None and process.poll() is not None:
                ended[i] = time.monotonic()
        time.sleep(0.2)
    results = []
    for process, end in zip(processes, ended, strict=True):
        if end is None:
            process.kill()
        stdout, stderr = process.communicate()
        results.append((process.returncode, stdout, stderr, end))
    return results


def _two(converted_dir, out0, out1, *settings, hooks0=(), hooks1=(), settings1=(), **kwargs):
    port = _free_port()
    processes = [
        _start(converted_dir, out0, port, 0, *settings, hooks=hooks0, **kwargs),
        _start(converted_dir, out1, port, 1, *settings, *settings1, hooks=hooks1, **kwargs),
    ]
    return _wait(processes), [process.pid for process in processes]


# Three steps per epoch, two epochs; process 1 is killed at the end of epoch 1.
RUN = ["train.epochs=2", "train.steps_per_epoch=3"]
KILL_1 = ("--kill-after-epoch", "1")

# One process over 2 local devices fed the very global batches of the two-process
# run: each global batch is process 0's part then process 1's part, as DataParallel
# lays the two processes' devices out. (Each part shuffles with its own seed, see
# `data.PROCESS_SEED_STRIDE`, so the two parts keep separate tf.data shuffle states
# in one process, as they do in two.) Killed at the end of epoch 1, like the run.
REFERENCE = """
import json, sys
import tensorflow as tf
from pneumokeras.records import pipeline as data
from pneumokeras.records.manifest import load_manifest
from pneumokeras.training import train
from pneumokeras.config import load_config
from training_hooks import KillAfterEpoch

original = data.training_dataset

def both_shares(data_dir, config, shard=(1, 0), batch_size=None, **kwargs):
    parts = [original(data_dir, config, shard=(2, i), batch_size=batch_size // 2, **kwargs)
             for i in range(2)]
    steps = parts[0][1]
    merged = tf.data.Dataset.zip(tuple(p for p, _ in parts)).map(
        lambda a, b: tf.nest.map_structure(lambda x, y: tf.concat([x, y], 0), a, b))
    return merged.apply(tf.data.experimental.assert_cardinality(steps)), steps

data.training_dataset = both_shares
config = load_config(None, json.loads(sys.argv[3]))
train.train(sys.argv[1], sys.argv[2], config, verbose=0, callbacks=[KillAfterEpoch(1)])
"""


@pytest.fixture(scope="module")
def killed_and_resumed(converted_dir, tmp_path_factory):
    """One two-process run, shared by the end-to-end tests to keep them few.

    Phase 1: process 1 (given its own --out, which it must never touch) is killed
    at the end of epoch 1; process 0 must then stop on its own. Both are gone, as
    after a crash. Phase 2: both are started again (process 1 now with the run
    folder, whose backup it restores too) and finish the run. The reference is one
    process over two devices, killed at the end of epoch 1 as well.
    """
    root = tmp_path_factory.mktemp("two")
    run, dumps = root / "run", root / "weights"
    dumps.mkdir()
    phase1, pids1 = _two(converted_dir, run, root / "never-written", *RUN, hooks1=KILL_1)
    epoch1 = {name: (run / name).read_bytes() for name in ("model.keras", "history.csv")}
    state1 = {
        "history": _history(run),
        "record": json.loads((run / "run.json").read_text()),
        "backup": (run / "backup").is_dir(),
    }
    dump = ("--dump-weights", str(dumps))
    phase2, pids2 = _two(converted_dir, run, run, *RUN, hooks0=dump, hooks1=dump)
    reference = subprocess.run(
        [
            sys.executable,
            "-c",
            REFERENCE,
            str(converted_dir),
            str(root / "one"),
            json.dumps([*SETTINGS, *RUN]),
        ],
        env={**_env(), "JAX_NUM_CPU_DEVICES": "2", "PYTHONPATH": str(ROOT / "tests")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert reference.returncode == -signal.SIGKILL, reference.stderr[-3000:]
    return {
        "root": root,
        "run": run,
        "phase1": phase1,
        "phase2": phase2,
        "writer_pids": (pids1[0], pids2[0]),
        "epoch1": epoch1,
        "state1": state1,
        "dumps": dumps,
    }


def _weights(path):
    with np.load(path) as loaded:
        return [loaded[name] for name in sorted(loaded.files)]


def _keras_weights(model_bytes, tmp_path):
    """The weight arrays inside a .keras file (its model.weights.h5), by path."""
    import h5py

    tmp_path.mkdir(parents=True, exist_ok=True)
    archive = tmp_path / "model.zip"
    archive.write_bytes(model_bytes)
    with zipfile.ZipFile(archive) as opened:
        opened.extract("model.weights.h5", tmp_path)
    arrays = {}
    with h5py.File(tmp_path / "model.weights.h5") as weights:
        weights.visititems(
            lambda name, item: (
                arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
            )
        )
    return arrays


def _history(run_dir):
    with open(Path(run_dir) / "history.csv") as handle:
        return list(csv.DictReader(handle))


E2E = [JAX_ONLY, pytest.mark.backend, pytest.mark.slow]


def _e2e(test):
    for mark in reversed(E2E):
        test = mark(test)
    return test


@_e2e
def test_a_killed_process_stops_the_other_within_the_heartbeat_timeout(killed_and_resumed):
    (code0, _, err0, end0), (code1, _, _, end1) = killed_and_resumed["phase1"]
    assert code1 == -signal.SIGKILL
    assert code0 == 1, err0[-3000:]
    last = err0.strip().splitlines()[-1]
    assert last.startswith("error: "), err0[-3000:]
    assert "lost another process" in last, err0[-3000:]
    assert "restart all processes with the same command" in last
    assert end0 - end1 < HEARTBEAT + 10  # the stated bound: the heartbeat timeout
    state = killed_and_resumed["state1"]
    assert [int(r["epoch"]) for r in state["history"]] == [1]
    assert state["record"]["status"] == "running"
    assert state["backup"]


@_e2e
def test_restarting_both_resumes_and_ends_with_identical_weights(killed_and_resumed):
    (code0, out0, err0, _), (code1, out1, err1, _) = killed_and_resumed["phase2"]
    assert code0 == 0, (err0 + err1)[-3000:]
    assert code1 == 0, (err0 + err1)[-3000:]
    assert "Epoch 1/" not in out0
    assert "Epoch 2/2" in out0
    assert out0.strip().splitlines()[-1].startswith("best epoch")
    assert out1.strip().splitlines()[-1] == "process 1 of 2 finished"
    run = killed_and_resumed["run"]
    assert [int(r["epoch"]) for r in _history(run)] == [1, 2]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert not (run / "backup").exists()
    dumps = killed_and_resumed["dumps"]
    first, second = _weights(dumps / "process-0.npz"), _weights(dumps / "process-1.npz")
    assert len(first) == len(second) > 10
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


@_e2e
def test_only_process_0_writes_the_run_folder(killed_and_resumed):
    run = killed_and_resumed["run"]
    # In phase 1 process 1 had another --out: it never created, read or wrote it.
    assert not (killed_and_resumed["root"] / "never-written").exists()
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["history.csv", "logs", "model.json", "model.keras", "run.json"]
    )
    # TensorBoard names its files after the writing process: process 0 of each phase.
    events = list((run / "logs").rglob("events.out.tfevents.*"))
    writers = {int(path.name.split(".")[-3]) for path in events}
    assert events
    assert writers <= set(killed_and_resumed["writer_pids"])
    assert json.loads((run / "model.json").read_text())["devices"] == 2


@_e2e
def test_validation_covers_the_whole_split(killed_and_resumed, converted_dir):
    run = killed_and_resumed["run"]
    card = json.loads((run / "model.json").read_text())
    config = load_config(None, SETTINGS)
    images, labels = [], []
    for x, y in data.evaluation_dataset(converted_dir, "val", config):
        images.append(x.numpy())
        labels.append(y.numpy())
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert len(labels) == 16
    assert 16 % 6
    model = keras.saving.load_model(run / "model.keras")
    probabilities = np.asarray(model.predict(images, batch_size=16, verbose=0))
    accuracy = float(np.mean(probabilities.argmax(1) == labels.argmax(1)))
    auc = keras.metrics.AUC(multi_label=True, num_labels=2)
    auc.update_state(labels, probabilities)
    # 16 patients: accuracy is k/16 (k/15 or k/12 with a share or whole batches only).
    assert card["validation"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert card["validation"]["auc"] == pytest.approx(float(auc.result()), abs=1e-4)


@_e2e
def test_two_processes_equal_one_process_over_two_devices(killed_and_resumed, tmp_path):
    # Epoch 1's model: the same global batches, so the same model to float rounding.
    root = killed_and_resumed["root"]
    two = _keras_weights(killed_and_resumed["epoch1"]["model.keras"], tmp_path / "two")
    one = _keras_weights((root / "one" / "model.keras").read_bytes(), tmp_path / "one")
    assert sorted(two) == sorted(one)
    assert len(two) > 10
    for name in two:
        np.testing.assert_allclose(two[name], one[name], atol=1e-5, err_msg=name)
    # The reference is plain data parallelism over two devices of one process.
    assert json.loads((root / "one" / "model.json").read_text())["devices"] == 2
    loss = float(killed_and_resumed["state1"]["history"][0]["loss"])
    assert loss == pytest.approx(float(_history(root / "one")[0]["loss"]), rel=1e-5)


def test_tensorflow_is_refused_in_one_line(converted_dir, tmp_path):
    process = _start(converted_dir, tmp_path / "run", 9, 0, backend="tensorflow")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert stderr.strip().splitlines() == [f"error: {distributed.TENSORFLOW_REFUSAL}"]
    assert "keras-team/keras#20585" in stderr
    assert "KERAS_BACKEND=jax" in stderr
    assert not (tmp_path / "run").exists()


@JAX_ONLY
@pytest.mark.backend
def test_a_batch_that_does_not_divide_by_the_devices_is_refused(monkeypatch):
    # As in each process of a run of two, one device each (every process refuses
    # alike: they agreed on their settings when they joined, which the end-to-end
    # test below checks with two real processes).
    import jax

    from pneumokeras.training import train

    monkeypatch.setattr(distributed, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "device_count", lambda: 2)
    config = load_config(None, [*SETTINGS, "data.batch_size=5"])
    with pytest.raises(UserError) as info:
        train._distribution_scope(config)
    assert str(info.value) == (
        "data.batch_size 5 (the global batch) must divide by the 2 devices of the 2 processes"
    )
    assert keras.distribution.distribution() is None


@JAX_ONLY
@pytest.mark.backend
def test_processes_started_with_other_settings_stop_naming_the_difference(converted_dir, tmp_path):
    results, _ = _two(
        converted_dir, tmp_path / "run", tmp_path / "run", settings1=("data.batch_size=4",)
    )
    for code, _, stderr, _ in results:
        assert code == 2, stderr[-3000:]
        assert stderr.strip().splitlines()[-1] == (
            "error: the processes of this run differ: data.batch_size is 6 in process 0 but 4 "
            "in process 1; start every process with the same settings and data"
        )
    assert not (tmp_path / "run").exists()


def _listening(port):
    """Local addresses (hex, as /proc/net/tcp* shows them) listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                address, hex_port = fields[1].split(":")
                if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
                    found.append(address)
    return found


# How long the process left alone waits (counted from its call to initialize, after
# its imports): the test waits it out, idle.
ALONE_TIMEOUT = 3


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc/net/tcp")
def test_a_process_that_never_arrives_stops_the_other(tmp_path):
    port = _free_port()
    code = (
        "from pneumokeras.training import distributed as d; "
        f"d.initialize(d.settings('127.0.0.1:{port}', 2, 0), 'jax'); print('joined')"
    )
    env = {**_env(), distributed.INIT_TIMEOUT_VARIABLE: str(ALONE_TIMEOUT)}
    start = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    addresses = []
    while process.poll() is None and not addresses:
        addresses = _listening(port)
        time.sleep(0.2)
    stdout, stderr = process.communicate(timeout=120)
    seconds = time.monotonic() - start
    # The coordinator listens on the address given only (127.0.0.1, maybe IPv4-mapped
    # IPv6), not on every interface (all zeros).
    assert addresses
    assert set(addresses) <= {"0100007F", "0000000000000000FFFF00000100007F"}
    assert process.returncode == 1
    assert "joined" not in stdout
    assert stderr.strip().splitlines()[-1] == (
        f"error: process 0: not all 2 processes joined at 127.0.0.1:{port} within "
        f"{ALONE_TIMEOUT} s "
        "(PNEUMOKERAS_INIT_TIMEOUT); start every process with the same --coordinator and "
        "--num-processes and its own --process-id"
    )
    assert seconds < ALONE_TIMEOUT + 60  # the timeout, plus importing JAX
