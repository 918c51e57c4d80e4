"""Training with ``training.distribution``: MirroredStrategy over two logical CPU devices,
and MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1.

Strategies need a fresh process (logical devices and collective ops are configured at
program startup), so these tests run their training in subprocesses, each bounded in
time and killed with its process group on a timeout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data_prep import fsdd
from pipelines.config import ConfigError
from tests.helpers import ROOT

PYTHON = sys.executable
TIMEOUT = 600  # seconds for a whole two-worker run; a run takes 1-2 minutes on 2 cores


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
           "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", **extra}
    env.pop("TF_CONFIG", None)
    return {**env, **extra}


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def _run_processes(commands: list[tuple[list[str], dict]], timeout: float = TIMEOUT):
    """Start every command at once; return their (returncode, stdout, stderr). On a
    timeout every process group is killed and the test fails."""
    procs = [subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
             for cmd, env in commands]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            results.append((proc.returncode, out, err))
    except subprocess.TimeoutExpired:
        pytest.fail(f"a process did not finish within {timeout} s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return results


def _pipeline(name: str, config: str, run_dir, sets: dict, stage: str = "all") -> list[str]:
    cmd = [PYTHON, "-m", f"pipelines.{name}", stage, "--config",
           str(ROOT / "pipelines" / "configs" / f"{config}.yaml"), "--run-dir", str(run_dir)]
    return cmd + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def _two_workers(name, config, run_dirs, sets, data_dir):
    ports = _free_ports(2)
    sets = {**sets, "training.distribution": "multi_worker"}
    results = _run_processes([
        (_pipeline(name, config, run_dirs[i], sets),
         _env(TF_CONFIG=_tf_config(ports, i), PIPELINES_DATA_DIR=str(data_dir)))
        for i in range(2)])
    for code, out, err in results:
        assert code == 0, f"a worker failed:\n{out}\n{err}"
    checksums = [re.search(r"weights checksum (\w+)", out).group(1) for _, out, _ in results]
    assert checksums[0] == checksums[1]  # both workers end with the same weights
    # Only the chief writes the run; the other worker's directory is gone.
    worker_dir = re.search(r"files go to (\S+) \(removed", results[1][1]).group(1)
    assert not Path(worker_dir).exists()
    return results


def _losses(run_dir) -> list[float]:
    history = json.loads((Path(run_dir) / "logs" / "history.json").read_text())
    return [h["loss"] for h in history]


@pytest.mark.slow
def test_two_workers_train_the_translation_smoke_model(multi30k_dir, tmp_path):
    sets = {"data.limit_train": 300, "data.limit_val": 20, "data.limit_test": 20,
            "training.epochs": 2, "training.batch_tokens": 1500}
    runs = [tmp_path / "chief", tmp_path / "worker"]  # no shared filesystem
    _two_workers("translation", "translation_smoke", runs, sets, multi30k_dir)
    assert not runs[1].exists()
    losses = _losses(runs[0])
    assert len(losses) == 2 and losses[1] < losses[0]
    assert json.loads((runs[0] / "metrics.json").read_text())["test_sentences"] == 20
    # The chief's checkpoint loads and translates, here without any cluster.
    source = tmp_path / "in.de"
    source.write_text("Ein Hund läuft.\nZwei Männer spielen Fußball.\n", encoding="utf-8")
    [(code, out, err)] = _run_processes([(
        _pipeline("translation", "translation_smoke", runs[0], sets, stage="translate")
        + ["--input", str(source)], _env(PIPELINES_DATA_DIR=str(multi30k_dir)))])
    assert code == 0, err
    assert len(out.splitlines()) == 2


@pytest.mark.slow
def test_two_workers_train_the_speech_smoke_model_in_a_shared_run_directory(data_dir, tmp_path):
    if not (data_dir / fsdd.RECORDINGS).is_dir():
        pytest.skip(f"FSDD not found under {data_dir}")
    sets = {"strings.train_count": 64, "strings.val_count": 8, "strings.test_count": 8,
            "training.epochs": 2}
    run = tmp_path / "run"
    _two_workers("speech", "speech_smoke", [run, run], sets, data_dir)
    losses = _losses(run)
    assert len(losses) == 2 and losses[1] < losses[0]
    assert "wer" in json.loads((run / "metrics.json").read_text())
    # The chief's checkpoint loads and transcribes, here without any cluster.
    paths = tmp_path / "audio.txt"
    paths.write_text(f"{next((data_dir / fsdd.RECORDINGS).glob('*.wav'))}\n")
    [(code, out, err)] = _run_processes([(
        _pipeline("speech", "speech_smoke", run, sets, stage="transcribe")
        + ["--input", str(paths)], _env(PIPELINES_DATA_DIR=str(data_dir)))], timeout=300)
    assert code == 0, err
    assert len(out.splitlines()) == 1


def _steps(tmp_path, distribution, *extra):
    out = tmp_path / f"{distribution}{'-'.join(extra)}.npz"
    [(code, stdout, err)] = _run_processes(
        [([PYTHON, "-m", "tests.distributed_steps", distribution, str(out), *extra], _env())],
        timeout=300)
    assert code == 0, err
    return np.load(out)


@pytest.mark.slow
def test_two_replicas_compute_the_same_steps_as_one_device(tmp_path):
    # Global batches of 5, 4, 1 and 3 sentences split over two logical CPU devices
    # (odd splits, and one replica with no sentence), three epochs.
    one, two = _steps(tmp_path, "none"), _steps(tmp_path, "mirrored")
    assert int(one["replicas"]) == 1 and int(two["replicas"]) == 2
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    assert one["losses"][-1] < one["losses"][0]
    weights = [k for k in one.files if k.startswith("w")]
    for k in weights:
        np.testing.assert_allclose(two[k], one[k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_mixed_bfloat16_trains_on_cpu(tmp_path):
    mixed, full = _steps(tmp_path, "none", "--mixed-precision", "mixed_bfloat16"), \
        _steps(tmp_path, "none")
    assert np.all(np.isfinite(mixed["losses"])) and mixed["losses"][-1] < mixed["losses"][0]
    # bfloat16 activations, float32 weights: close to the float32 run, not equal to it.
    np.testing.assert_allclose(mixed["losses"], full["losses"], rtol=0.05)


@pytest.mark.slow
def test_mixed_float16_two_replicas_compute_the_same_steps_as_one_device(tmp_path):
    # float16 backward passes with dynamic loss scaling: each replica's gradients are
    # weighted before the backward pass, so the replicas overflow (and skip a step) no
    # sooner than one device, and both take the same steps.
    flag = ("--mixed-precision", "mixed_float16")
    one, two = _steps(tmp_path, "none", *flag), _steps(tmp_path, "mirrored", *flag)
    assert np.all(np.isfinite(one["losses"])) and one["losses"][-1] < one["losses"][0]
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-3)


# -- bad input ------------------------------------------------------------------------------


def _translation_main(args, monkeypatch, tf_config=None):
    from pipelines import translation

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    config = str(ROOT / "pipelines" / "configs" / "translation_smoke.yaml")
    return translation.main(["train", "--config", config, *args])


def test_unknown_strategy_is_one_line(tmp_path, capsys, monkeypatch):
    code = _translation_main(["--run-dir", str(tmp_path / "run"), "--set",
                              "training.distribution=horovod"], monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "training.distribution" in err and "multi_worker" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("tf_config, message", [
    (None, "set the TF_CONFIG environment variable"),
    ("{not json", "TF_CONFIG: not valid JSON"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
     "task.index 3 is out of range"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
     "expected a list of host:port"),
    ('{"cluster": {"ps": ["h:1"]}, "task": {"type": "ps", "index": 0}}', "'ps' is not supported"),
])
def test_malformed_tf_config_is_one_line(tf_config, message, tmp_path, capsys, monkeypatch):
    code = _translation_main(["--run-dir", str(tmp_path / "run"), "--set",
                              "training.distribution=multi_worker"], monkeypatch,
                             tf_config=tf_config or "")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_unreachable_worker_is_one_line_within_the_timeout(multi30k_dir, tmp_path):
    ports = _free_ports(2)  # nothing listens on the second one
    run = tmp_path / "run"
    [(code, out, err)] = _run_processes([(
        _pipeline("translation", "translation_smoke", run,
                  {"training.distribution": "multi_worker",
                   "training.cluster_timeout_seconds": 5}),
        _env(TF_CONFIG=_tf_config(ports, 0), PIPELINES_DATA_DIR=str(multi30k_dir)))],
        timeout=120)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"no answer from 127.0.0.1:{ports[1]}" in lines[0], err
    assert "Traceback" not in err
    assert not run.exists()


def _silent_peer() -> socket.socket:
    """A listening socket that accepts connections (the kernel does) and never answers."""
    peer = socket.socket()
    peer.bind(("127.0.0.1", 0))
    peer.listen()
    return peer


def test_a_peer_that_accepts_but_is_no_worker_is_named_within_the_timeout():
    from pipelines import distribute

    own, = _free_ports(1)
    with _silent_peer() as peer:
        address = f"127.0.0.1:{peer.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(ConfigError, match=f"{address} accepts connections but did not "
                                              "answer as a TensorFlow worker within 1 s"):
            distribute.wait_for_peers([f"127.0.0.1:{own}", address], f"127.0.0.1:{own}", 1)
        assert time.monotonic() - start < 1 + 2 * distribute.ANSWER_SECONDS + 2


def test_ctrl_c_while_waiting_for_the_cluster_is_one_line(tmp_path):
    own, = _free_ports(1)
    with _silent_peer() as peer:
        proc = subprocess.Popen(
            _pipeline("translation", "translation_smoke", tmp_path / "run",
                      {"training.distribution": "multi_worker"}, stage="train"),
            env=_env(TF_CONFIG=json.dumps({
                "cluster": {"worker": [f"127.0.0.1:{own}", f"127.0.0.1:{peer.getsockname()[1]}"]},
                "task": {"type": "worker", "index": 0}})),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not _listening(own):  # it waits for its peers
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130
    assert err == "interrupted while waiting for the other workers of TF_CONFIG\n"


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_a_worker_that_dies_stops_the_chief_in_one_line_and_a_rerun_resumes(multi30k_dir,
                                                                           tmp_path):
    sets = {"data.limit_train": 600, "data.limit_val": 20, "data.limit_test": 20,
            "training.epochs": 3, "training.batch_tokens": 600,
            "training.distribution": "multi_worker", "training.cluster_timeout_seconds": 60}
    runs = [tmp_path / "chief", tmp_path / "worker"]
    ports = _free_ports(2)
    env = [_env(TF_CONFIG=_tf_config(ports, i), PIPELINES_DATA_DIR=str(multi30k_dir))
           for i in range(2)]
    logs = [open(tmp_path / f"stderr{i}", "w+") for i in range(2)]
    procs = [subprocess.Popen(_pipeline("translation", "translation_smoke", runs[i], sets),
                              env=env[i], cwd=ROOT, stdout=subprocess.PIPE, stderr=logs[i],
                              text=True, start_new_session=True) for i in range(2)]
    try:
        # Kill the second worker once the chief has finished (and saved) epoch 1.
        for line in procs[0].stdout:
            if line.startswith("[train] epoch 1:"):
                break
        os.killpg(procs[1].pid, signal.SIGKILL)
        procs[0].stdout.read()
        assert procs[0].wait(timeout=300) == 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    logs[0].seek(0)
    err = [line for line in logs[0].read().splitlines() if line.strip()]
    assert len(err) == 1 and "lost contact with the cluster during epoch 2" in err[0], err
    assert "last checkpoint is epoch 1" in err[0] and "rerun the same command" in err[0]
    state = json.loads((runs[0] / "train_state.json").read_text())
    assert state["epoch"] == 1
    # The same command on both workers resumes from the chief's checkpoint and finishes.
    results = _two_workers("translation", "translation_smoke", runs, sets, multi30k_dir)
    assert "[train] resuming after epoch 1" in results[0][1]
    assert len(_losses(runs[0])) == 3
