"""Two MultiWorkerMirroredStrategy workers on 127.0.0.1 train SimCLR through tools/train.py.

Each worker is a subprocess with its own TF_CONFIG (two free local ports),
running the same command with the same --workdir and --export_dir (a shared
file system). Only the chief (worker 0) writes checkpoints, model.keras,
metrics.json and the SavedModel; the other worker trains in lockstep (and
embeds for the evaluation, which is collective) and restores the chief's
checkpoint on a rerun. About 40 s on 2 CPU cores.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TRAIN = ROOT / "tools" / "train.py"
TIMEOUT = 150  # seconds for both workers; a hung collective must not hang the suite
ARGS = ["--flagfile=configs/simclr.flags", "--strategy=multi_worker", "--backbone=tiny_cnn",
        "--epochs=1", "--steps_per_epoch=2", "--batch_size=32", "--projection_hidden_dims=16",
        "--projection_dim=8", "--evaluate=true", "--probe_draws=1"]


def free_ports(count):
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_workers(tmp_path, num_workers=2, extra=()):
    """Starts every worker, waits for all; returns [(returncode, log text)] by task index."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(num_workers)]}
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    processes, logs = [], []
    try:
        for index in range(num_workers):
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1",
                       PYTHONPATH=pythonpath,
                       TF_CONFIG=json.dumps({"cluster": cluster,
                                             "task": {"type": "worker", "index": index}}))
            log = open(tmp_path / f"worker{index}.{len(extra)}.log", "w+")
            logs.append(log)
            processes.append(subprocess.Popen(
                [sys.executable, str(TRAIN), *ARGS, f"--workdir={tmp_path / 'w'}",
                 f"--export_dir={tmp_path / 'export'}", *extra],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        for process in processes:
            process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    results = []
    for process, log in zip(processes, logs):
        log.seek(0)
        results.append((process.returncode, log.read()))
        log.close()
    return results


def test_two_workers_train_simclr_and_only_the_chief_writes(tmp_path):
    results = run_workers(tmp_path)
    for index, (returncode, log) in enumerate(results):
        assert returncode == 0, f"worker {index} exited with {returncode}:\n{log[-4000:]}"
        assert "2 replica(s)" in log, log[-4000:]

    workdir = tmp_path / "w"
    # The chief: the model, the metrics (with the evaluation) and one export version.
    assert (workdir / "model.keras").is_file()
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["replicas"] == 2
    assert "simclr (trained)" in metrics["evaluation"]
    assert metrics["export"] == str(tmp_path / "export" / "1")
    assert (tmp_path / "export" / "1" / "saved_model.pb").is_file()
    assert sorted(os.listdir(tmp_path / "export")) == ["1"]  # no staging folder left
    assert "Resuming" not in results[1][1]
    # A rerun with one more epoch: every worker restores the chief's checkpoint of epoch 1.
    results = run_workers(tmp_path, extra=["--epochs=2", "--evaluate=false"])
    for index, (returncode, log) in enumerate(results):
        assert returncode == 0, f"worker {index} exited with {returncode}:\n{log[-4000:]}"
        assert "Resuming from epoch 1 " in log, log[-4000:]
    assert sorted(os.listdir(tmp_path / "export")) == ["1", "2"]


def test_a_lost_worker_ends_the_chief_with_one_line(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    processes = []
    try:
        for index in range(2):
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1",
                       PYTHONPATH=pythonpath,
                       TF_CONFIG=json.dumps({"cluster": cluster,
                                             "task": {"type": "worker", "index": index}}))
            processes.append(subprocess.Popen(
                [sys.executable, str(TRAIN), *ARGS, "--epochs=100000", "--evaluate=false",
                 "--collective_timeout=20", f"--workdir={tmp_path / 'w'}",
                 f"--export_dir={tmp_path / 'export'}"],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        latest = tmp_path / "w" / "checkpoints" / "latest.weights.h5"
        deadline = time.time() + TIMEOUT
        while not latest.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert latest.exists(), "no checkpoint before the kill"
        processes[1].kill()
        start = time.time()
        _, stderr = processes[0].communicate(timeout=120)  # a hang fails here
        assert time.time() - start < 120
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert processes[0].returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    last = [line for line in stderr.splitlines() if line.startswith("train.py:")][-1]
    assert "a collective failed" in last and "a worker was lost" in last, last
    assert not (tmp_path / "export").exists()


if os.environ.get("KERAS_EBM_SKIP_DISTRIBUTE"):
    pytestmark = pytest.mark.skip("KERAS_EBM_SKIP_DISTRIBUTE is set")


def test_two_workers_train_on_a_streamed_folder(tmp_path):
    # Each worker reads its own files of every epoch (distribute_datasets_from_function;
    # tests/data/test_streaming.py checks the shares are disjoint and cover the epoch).
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for i in range(120):
        os.makedirs(tmp_path / "images" / f"c{i % 3}", exist_ok=True)
        tf.io.write_file(str(tmp_path / "images" / f"c{i % 3}" / f"{i:04d}.png"),
                         tf.io.encode_png(rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)))
    results = run_workers(tmp_path, extra=[f"--dataset=folder:{tmp_path / 'images'}",
                                           "--stream=always", "--evaluate=false"])
    for index, (returncode, log) in enumerate(results):
        assert returncode == 0, f"worker {index} exited with {returncode}:\n{log[-4000:]}"
        assert "2 replica(s)" in log and "(84 examples" in log, log[-4000:]
    assert (tmp_path / "w" / "model.keras").is_file()
    assert (tmp_path / "export" / "1" / "saved_model.pb").is_file()
