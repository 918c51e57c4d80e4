"""Training on several devices or machines with ``tf.distribute``.

``training.distribution`` picks the strategy:

- ``none``: TensorFlow's default strategy (one device), the default;
- ``mirrored``: ``tf.distribute.MirroredStrategy`` over the local GPUs (or logical CPU
  devices in tests);
- ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the machines the
  standard ``TF_CONFIG`` environment variable lists, each running the same command.

Batches stay global: the input pipeline builds the same global batch on every worker
(it is seeded), and each replica takes its own slice of it (``distributed_batches``).
The trainer averages the loss over the real tokens or utterances of the global batch,
so N replicas compute the gradient one device would.

In a cluster only the chief (``chief:0``, or ``worker:0`` without a chief job) writes the
run; the other workers work in a temporary run directory that is removed at exit, and
take the chief's training state and weights when training starts (``broadcast``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from pipelines.config import ConfigError
from pipelines.training_config import DISTRIBUTIONS


class ClusterError(RuntimeError):
    """The cluster failed during training (a worker died or became unreachable)."""


# Errors TensorFlow raises in a collective when a peer is gone or the collectives were
# aborted by the strategy's health check.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
               tf.errors.CancelledError, tf.errors.AbortedError)


@dataclass
class Role:
    """This process's place in the cluster."""

    is_chief: bool = True
    index: int = 0  # this worker's position among all tasks (0 for the chief)
    count: int = 1  # number of worker processes
    description: str = "single process"


def parse_tf_config(text: str | None) -> tuple[dict, str, int]:
    """``(cluster, task_type, task_index)`` of a ``TF_CONFIG`` value, checked.

    Raises ConfigError naming what is wrong with it.
    """
    where = "TF_CONFIG"
    if not text:
        raise ConfigError("training.distribution=multi_worker: set the TF_CONFIG environment "
                          'variable, e.g. {"cluster": {"worker": ["host1:12345", '
                          '"host2:12345"]}, "task": {"type": "worker", "index": 0}}')
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not valid JSON ({e})") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise ConfigError(f"{where}: expected an object with a \"cluster\" mapping of job "
                          "names to lists of host:port addresses")
    for job, addresses in cluster.items():
        if job not in ("chief", "worker"):
            raise ConfigError(f"{where}: cluster job {job!r} is not supported (only chief "
                              "and worker: MultiWorkerMirroredStrategy)")
        if (not isinstance(addresses, list) or not addresses
                or not all(isinstance(a, str) and a.rpartition(":")[2].isdigit()
                           for a in addresses)):
            raise ConfigError(f"{where}: cluster.{job}: expected a list of host:port "
                              f"addresses, got {addresses!r}")
    if len(cluster.get("chief", [])) > 1:
        raise ConfigError(f"{where}: cluster.chief: at most one chief")
    task = spec.get("task")
    if not isinstance(task, dict):
        raise ConfigError(f"{where}: expected a \"task\" object with \"type\" and \"index\"")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in cluster:
        raise ConfigError(f"{where}: task.type {task_type!r} is not a job of the cluster "
                          f"({', '.join(cluster)})")
    if not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        raise ConfigError(f"{where}: task.index {index!r} is out of range for "
                          f"{len(cluster[task_type])} {task_type} address(es)")
    return cluster, task_type, index


def role_of(cluster: dict, task_type: str, index: int) -> Role:
    tasks = [("chief", i) for i in range(len(cluster.get("chief", [])))]
    tasks += [("worker", i) for i in range(len(cluster.get("worker", [])))]
    position = tasks.index((task_type, index))
    return Role(position == 0, position, len(tasks), f"{task_type} {index} of "
                f"{len(tasks)} processes")


_started: tuple[str, tf.distribute.Strategy, Role] | None = None


def start(distribution: str, timeout_seconds: float) -> Role:
    """Create the strategy of ``distribution`` for this process and return its role.

    For ``multi_worker`` this must run before TensorFlow executes anything ("Collective
    ops must be configured at program startup"), so the command line calls it before the
    first stage. It waits for every worker of ``TF_CONFIG``: ConfigError if they are not
    all up within ``timeout_seconds``.
    """
    global _started
    if distribution == "multi_worker":  # a bad TF_CONFIG is reported first
        cluster, task_type, index = parse_tf_config(os.environ.get("TF_CONFIG"))
    if _started is not None:
        if _started[0] != distribution:
            raise ConfigError(f"training.distribution: this process already trains with "
                              f"{_started[0]!r}; a process can use one strategy")
        return _started[2]
    if distribution == "none":
        _started = (distribution, tf.distribute.get_strategy(), Role())
    elif distribution == "mirrored":
        _started = (distribution, tf.distribute.MirroredStrategy(), Role())
    elif distribution == "multi_worker":
        role = role_of(cluster, task_type, index)
        addresses = [a for job in ("chief", "worker") for a in cluster.get(job, [])]
        # The strategy's constructor waits for the other workers without a deadline (and
        # without letting Python run), so wait for them here first.
        wait_for_peers(addresses, cluster[task_type][index], timeout_seconds)
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as e:
            if "program startup" in str(e):
                raise RuntimeError("distribute.start must run before TensorFlow executes "
                                   "any operation") from e
            raise
        _started = (distribution, strategy, role)
    else:
        raise ConfigError(f"training.distribution: unknown strategy {distribution!r}; "
                          f"expected one of {', '.join(DISTRIBUTIONS)}")
    return _started[2]


# What a worker's address answers to an HTTP/2 client preface, while that worker waits
# for the others (``wait_for_peers``' listener) and once it runs TensorFlow's gRPC server
# (an HTTP/2 SETTINGS frame). Anything else there (a program that accepts connections
# and says nothing) is not a worker, and would keep TensorFlow waiting forever.
WAITING_BANNER = b"rnn-toolkit worker, waiting for its cluster\n"
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ANSWER_SECONDS = 3.0


def wait_for_peers(addresses: list[str], own: str, timeout_seconds: float) -> None:
    """Listen on this worker's own address and wait until every other address answers
    as a worker (``WAITING_BANNER``: its worker waits likewise; or TensorFlow's server).

    Raises ConfigError if that takes longer than ``timeout_seconds``, naming the
    addresses that did not answer (or answered as something else), or if this worker's
    port is taken. Ctrl-C interrupts the wait (KeyboardInterrupt).
    """
    port = int(own.rpartition(":")[2])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", port))
    except OSError as e:
        listener.close()
        raise ConfigError(f"TF_CONFIG: this worker's address {own}: cannot listen on port "
                          f"{port} ({e.strerror})") from None
    listener.listen()
    done = threading.Event()
    answering = threading.Thread(target=_answer_peers, args=(listener, done), daemon=True)
    answering.start()
    deadline = time.monotonic() + timeout_seconds
    pending = {a: "down" for a in addresses if a != own}
    try:
        while pending:
            for address in list(pending):
                pending[address] = _probe(address)
                if pending[address] == "worker":
                    del pending[address]
            if pending and time.monotonic() > deadline:
                silent = [a for a, state in pending.items() if state == "silent"]
                if silent:
                    raise ConfigError(
                        f"training.distribution=multi_worker: {', '.join(silent)} accepts "
                        f"connections but did not answer as a TensorFlow worker within "
                        f"{timeout_seconds:g} s; is another program using that port?")
                raise ConfigError(
                    f"training.distribution=multi_worker: no answer from {', '.join(pending)} "
                    f"within {timeout_seconds:g} s; start the same command on every worker "
                    "of TF_CONFIG (or raise training.cluster_timeout_seconds)")
            if pending:
                time.sleep(0.5)
    finally:
        done.set()
        answering.join()
        listener.close()


def _answer_peers(listener: socket.socket, done: threading.Event) -> None:
    """Answer every connection to ``listener`` with ``WAITING_BANNER`` until ``done``."""
    listener.settimeout(0.2)
    while not done.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        with conn, contextlib.suppress(OSError):
            conn.settimeout(ANSWER_SECONDS)
            conn.sendall(WAITING_BANNER)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(1024):  # read the peer's preface: closing with unread data
                pass  # would reset the connection, and could lose the banner


def _probe(address: str) -> str:
    """``worker`` if a worker answers at ``address``, ``silent`` if something accepts
    connections there but does not answer as one, ``down`` if nothing does."""
    host, _, port = address.rpartition(":")
    try:
        conn = socket.create_connection((host, int(port)), timeout=1)
    except OSError:
        return "down"
    reply = b""
    with conn, contextlib.suppress(OSError):
        conn.settimeout(ANSWER_SECONDS)
        conn.sendall(HTTP2_PREFACE)
        while len(reply) < len(WAITING_BANNER) and (data := conn.recv(1024)):
            reply += data
            if reply[3:4] == b"\x04":  # an HTTP/2 frame of type SETTINGS: a gRPC server
                return "worker"
    return "worker" if reply.startswith(WAITING_BANNER) else "silent"


def current(distribution: str) -> tuple[tf.distribute.Strategy, Role]:
    """The strategy (and role) ``start`` made for ``distribution``; ``none`` and
    ``mirrored`` are started here if need be."""
    if _started is None or _started[0] != distribution:
        if distribution == "multi_worker" and _started is None:
            raise ConfigError("training.distribution=multi_worker: the cluster must be "
                              "started (distribute.start) before TensorFlow runs anything")
        start(distribution, 0)
    return _started[1], _started[2]


# -- data -------------------------------------------------------------------------------


def replica_slice(batch, replica, replicas):
    """``(share, rows)``: rows ``[rows * r // n, rows * (r + 1) // n)`` of every tensor
    of ``batch``, the share of replica ``r`` of ``n``, and their number. Shares differ by
    at most one row. A batch of fewer rows than replicas leaves some replicas no row;
    they get the first row as a stand-in (some layers cannot run on an empty batch), and
    ``rows`` 0 tells the step to give it no weight."""
    total = tf.shape(tf.nest.flatten(batch)[0], out_type=tf.int64)[0]
    start, end = total * replica // replicas, total * (replica + 1) // replicas
    rows = end - start
    start, end = tf.where(rows > 0, start, 0), tf.where(rows > 0, end, 1)
    return tf.nest.map_structure(lambda t: t[start:end], batch), rows


def distributed_batches(strategy: tf.distribute.Strategy, make_dataset):
    """``make_dataset()``'s global ``(x, y)`` batches as per-replica ``(x, y, rows)``
    shares (``replica_slice``; one replica: the batches themselves, ``rows`` None).

    Every input pipeline (one per worker) builds the same global batches; worker ``p``
    with ``L`` local replicas yields, for each global batch, the shares of replicas
    ``p*L .. p*L+L-1``, which ``tf.distribute`` hands to its replicas in that order.
    """
    def dataset_fn(context: tf.distribute.InputContext):
        dataset = make_dataset()
        replicas = context.num_replicas_in_sync
        if replicas == 1:
            return dataset
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local

        def shares(x, y):
            def share(r):
                (x_r, y_r), rows = replica_slice((x, y), r, replicas)
                return x_r, y_r, rows

            return tf.data.Dataset.range(first, first + local).map(share)

        return dataset.flat_map(shares).prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(dataset_fn)


# -- sharing the chief's state ------------------------------------------------------------


def broadcast_arrays(strategy: tf.distribute.Strategy, role: Role, arrays: list[np.ndarray]
                     ) -> list[np.ndarray]:
    """The chief's values of ``arrays`` (same shapes and dtypes on every worker).

    An all-reduce in which only the chief's first replica contributes: adding zeros is
    exact, so the chief's values arrive unchanged. Without other workers, ``arrays``.
    """
    if role.count == 1 or not arrays:
        return arrays
    # One flat vector per dtype (a collective takes one dtype); collectives reduce floats
    # and 64-bit integers, so other integer types travel as int64.
    wire = [a.astype(np.int64) if np.issubdtype(a.dtype, np.integer) else a for a in arrays]
    groups = {}
    for position, a in enumerate(wire):
        groups.setdefault(a.dtype, []).append(position)
    flat = [np.concatenate([wire[i].ravel() for i in group]) for group in groups.values()]

    reduced = strategy.experimental_local_results(_chief_values(strategy, flat))[0]
    result = [None] * len(arrays)
    for group, values in zip(groups.values(), reduced, strict=True):
        values = np.asarray(values)
        offset = 0
        for i in group:
            size = arrays[i].size
            result[i] = values[offset:offset + size].reshape(arrays[i].shape).astype(
                arrays[i].dtype)
            offset += size
    return result


@tf.function(reduce_retracing=True)
def _chief_values(strategy, flat):
    def contribute(*values):
        ctx = tf.distribute.get_replica_context()
        first = tf.equal(ctx.replica_id_in_sync_group, 0)
        return [ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.where(first, v, tf.zeros_like(v)))
                for v in values]

    return strategy.run(contribute, args=tuple(flat))


def weights_checksum(variables) -> str:
    """A short hash of the values of ``variables``: equal on workers that agree."""
    digest = hashlib.sha256()
    for v in variables:
        digest.update(np.ascontiguousarray(v.numpy()).tobytes())
    return digest.hexdigest()[:16]


def broadcast_json(strategy: tf.distribute.Strategy, role: Role, value):
    """The chief's ``value`` (anything JSON can hold)."""
    if role.count == 1:
        return value
    data = np.frombuffer(json.dumps(value).encode(), np.uint8) if role.is_chief \
        else np.zeros(0, np.uint8)
    (size,) = broadcast_arrays(strategy, role, [np.array([data.size], np.int64)])
    padded = np.zeros(int(size[0]), np.int32)
    padded[:data.size] = data
    (received,) = broadcast_arrays(strategy, role, [padded])
    return json.loads(received.astype(np.uint8).tobytes().decode())


def broadcast_variables(strategy: tf.distribute.Strategy, role: Role, variables) -> None:
    """Give ``variables`` the chief's values on every worker."""
    if role.count == 1:
        return
    values = broadcast_arrays(strategy, role, [np.asarray(v.numpy()) for v in variables])
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)
