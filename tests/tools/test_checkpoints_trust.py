"""Checkpoints you can trust, through tools/train.py as a scheduler would run it.

A diverged run never advances or exports; a damaged checkpoint falls back to the one before
and the data follow it; a changed state-shaping flag is refused by name; a second run on a
held workdir is refused; SIGTERM saves the current step and the rerun resumes there.
"""

import os
import signal
import subprocess
import sys
import time

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_ebm  # noqa: F401  (registers the classes model.keras needs)
from keras_ebm import checkpoints
from keras_ebm.callbacks import checkpoint_epoch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "tools", "train.py")
ARGS = ["--flagfile=configs/moco.flags", "--backbone=tiny_cnn", "--batch_size=32",
        "--queue_size=100", "--projection_hidden_dims=16", "--projection_dim=8", "--noevaluate"]


def _popen(args, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, TRAIN, *ARGS, *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _run(args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, TRAIN, *ARGS, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("train.py:")]


def _run_in_process(module, args):
    module.FLAGS.unparse_flags()
    module.FLAGS(["train.py", *args])
    module.main([])


def _assert_same_weights(a, b, atol=1e-5):
    assert len(a.weights) == len(b.weights)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_allclose(np.asarray(wb), np.asarray(wa), rtol=1e-5, atol=atol,
                                   err_msg=wa.path)


def test_a_diverged_run_never_advances_its_checkpoint_nor_exports(tmp_path):
    # The scenario, rerun the way a scheduler retries a failed job.
    workdir, export_dir = tmp_path / "w", tmp_path / "e"
    args = ["--steps_per_epoch=6", "--epochs=4", "--warmup_epochs=0", "--learning_rate=1e30",
            f"--workdir={workdir}", f"--export_dir={export_dir}"]
    epochs = []
    for attempt in range(6):
        result = _run(args)
        assert result.returncode == 1, (attempt, result.stderr[-2000:])
        assert "Traceback" not in result.stderr
        last = _error_lines(result.stderr)[-1]
        assert "Non-finite" in last and "nothing was exported" in last, last
        if attempt:
            assert "diverged before" in last, last  # refused at once: the workdir is marked
        epochs.append(checkpoint_epoch(str(workdir / "checkpoints")))
        assert not export_dir.exists() and not (workdir / "model.keras").exists()
    assert epochs == [epochs[0]] * 6, epochs
    assert (workdir / "checkpoints" / checkpoints.DIVERGED_FILE).is_file()


class StopAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt(f"killed after epoch {self.epoch}")


class SigtermAt(keras.callbacks.Callback):
    """Sends this process SIGTERM after batch `batch` of epoch `epoch` (once)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.current, self.sent = epoch, batch, None, False

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.current, batch) == (self.epoch, self.batch) and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def _uninterrupted(module, args, tmp_path):
    _run_in_process(module, [*args, f"--workdir={tmp_path / 'a'}",
                             f"--export_dir={tmp_path / 'ea'}"])
    return keras.models.load_model(tmp_path / "a" / "model.keras")


def test_truncated_checkpoint_falls_back_and_the_data_follow_it(train_module, tmp_path, capsys):
    tf.config.experimental.enable_op_determinism()
    args = [*ARGS, "--steps_per_epoch=3", "--epochs=4", "--seed=1", "--keep_checkpoints=0"]
    a = _uninterrupted(train_module, args, tmp_path)
    workdir = tmp_path / "b"
    train_module.EXTRA_CALLBACKS.append(StopAfterEpoch(3))
    with pytest.raises(KeyboardInterrupt):
        _run_in_process(train_module, [*args, f"--workdir={workdir}",
                                       f"--export_dir={tmp_path / 'eb'}"])
    train_module.EXTRA_CALLBACKS.clear()
    latest = workdir / "checkpoints" / checkpoints.LATEST
    assert checkpoint_epoch(str(workdir / "checkpoints")) == 3
    with open(latest, "r+b") as f:
        f.truncate(os.path.getsize(latest) // 2)
    capsys.readouterr()
    _run_in_process(train_module, [*args, f"--workdir={workdir}",
                                   f"--export_dir={tmp_path / 'eb'}"])
    captured = capsys.readouterr()
    assert "Resuming from epoch 2 " in captured.out, captured.out
    assert "skipping checkpoint" in captured.err and "latest.weights.h5" in captured.err
    assert (tmp_path / "eb" / "1").is_dir()
    _assert_same_weights(a, keras.models.load_model(workdir / "model.keras"))


def test_corrupt_checkpoint_record_falls_back_without_a_traceback(tmp_path):
    workdir, export_dir = tmp_path / "w", tmp_path / "e"
    args = ["--steps_per_epoch=2", f"--workdir={workdir}", f"--export_dir={export_dir}"]
    assert _run([*args, "--epochs=2"]).returncode == 0
    latest = workdir / "checkpoints" / checkpoints.LATEST
    with h5py.File(latest, "r+") as f:
        f.attrs[checkpoints.RECORD] = "{not json"
    (workdir / "checkpoints" / "training_metadata.json").write_text("{garbage")  # old name
    result = _run([*args, "--epochs=3"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "skipping checkpoint" in result.stderr and "unreadable" in result.stderr
    assert "Resuming from epoch 2 " in result.stdout  # the previous copy, also epoch 2 here
    assert checkpoint_epoch(str(workdir / "checkpoints")) == 3


def test_a_changed_state_flag_is_refused_by_name_and_others_are_warned(tmp_path):
    workdir, export_dir = tmp_path / "w", tmp_path / "e"
    args = ["--steps_per_epoch=2", f"--workdir={workdir}", f"--export_dir={export_dir}"]
    assert _run([*args, "--epochs=1"]).returncode == 0
    result = _run([*args, "--epochs=2", "--queue_size=200"])
    lines = _error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("train.py: error: --queue_size=200 differs") and "100" in lines[0]
    assert "Traceback" not in result.stderr
    assert checkpoint_epoch(str(workdir / "checkpoints")) == 1
    result = _run([*args, "--epochs=2", "--temperature=0.3"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warning: temperature=0.3 differs from the checkpoint's 0.2" in result.stderr


def test_a_second_run_on_a_held_workdir_is_refused_and_the_first_finishes(tmp_path):
    workdir, export_dir = tmp_path / "w", tmp_path / "e"
    args = ["--steps_per_epoch=4", f"--workdir={workdir}", f"--export_dir={export_dir}"]
    first = _popen([*args, "--epochs=80"])
    try:
        deadline = time.time() + 120
        while not (workdir / "checkpoints").is_dir() and time.time() < deadline:
            time.sleep(0.2)
        start = time.time()
        second = _run([*args, "--epochs=80"], timeout=60)
        assert time.time() - start < 30
        lines = _error_lines(second.stderr)
        assert second.returncode == 2 and len(lines) == 1, second.stderr[-2000:]
        assert f"is in use by pid {first.pid}" in lines[0] and "--workdir" in lines[0]
        assert first.poll() is None, "the first run ended before the second was refused"
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err[-2000:]
    assert (export_dir / "1").is_dir() and not (export_dir / "2").exists()
    assert checkpoint_epoch(str(workdir / "checkpoints")) == 80


def test_sigterm_stops_within_30_s_and_the_rerun_resumes_mid_epoch(tmp_path):
    workdir, export_dir = tmp_path / "w", tmp_path / "e"
    args = ["--steps_per_epoch=6", "--epochs=1000", f"--workdir={workdir}",
            f"--export_dir={export_dir}"]
    process = _popen(args)
    try:
        deadline = time.time() + 180
        while checkpoint_epoch(str(workdir / "checkpoints")) < 2 and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)  # somewhere inside an epoch
        process.send_signal(signal.SIGTERM)
        start = time.time()
        out, err = process.communicate(timeout=60)
        stopped_in = time.time() - start
    finally:
        if process.poll() is None:
            process.kill()
    assert stopped_in < 30, stopped_in
    assert process.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    last = _error_lines(err)[-1]
    assert "stopped by SIGTERM" in last and "rerun the same command" in last, last
    assert not export_dir.exists()
    epoch, step = checkpoints.checkpoint_position(str(workdir / "checkpoints"))
    result = _run([*args[:1], f"--epochs={epoch + 1}", *args[2:]])
    assert result.returncode == 0, result.stderr[-2000:]
    where = f"epoch {epoch}, step {step}" if step else f"epoch {epoch} "
    assert f"Resuming from {where}" in result.stdout


def test_a_run_stopped_mid_epoch_ends_with_the_weights_of_an_uninterrupted_one(
        train_module, tmp_path, capsys):
    tf.config.experimental.enable_op_determinism()
    # Colour jitter (its generator state is a weight) and MoCo's key shuffle over 2 groups.
    args = [*ARGS, "--steps_per_epoch=4", "--epochs=3", "--seed=1", "--bn_splits=2",
            "--augment_strength=0.5"]
    a = _uninterrupted(train_module, args, tmp_path)
    workdir = tmp_path / "b"
    train_module.EXTRA_CALLBACKS.append(SigtermAt(epoch=1, batch=1))
    with pytest.raises(SystemExit) as stopped:
        _run_in_process(train_module, [*args, f"--workdir={workdir}",
                                       f"--export_dir={tmp_path / 'eb'}"])
    assert stopped.value.code == 143
    train_module.EXTRA_CALLBACKS.clear()
    assert checkpoints.checkpoint_position(str(workdir / "checkpoints")) == (1, 3)
    assert not (tmp_path / "eb").exists()
    capsys.readouterr()
    _run_in_process(train_module, [*args, f"--workdir={workdir}",
                                   f"--export_dir={tmp_path / 'eb'}"])
    assert "Resuming from epoch 1, step 3" in capsys.readouterr().out
    b = keras.models.load_model(workdir / "model.keras")
    _assert_same_weights(a, b)
    assert int(b.optimizer.iterations) == int(a.optimizer.iterations) == 3 * 4


def test_an_unwritable_export_dir_and_a_huge_queue_are_refused_before_training(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    for args, expected in [([f"--export_dir={a_file}"], f"--export_dir={a_file} cannot be "
                                                          "written: it is a file"),
                           (["--queue_size=1000000000", f"--export_dir={tmp_path / 'e'}"],
                            "--queue_size=1000000000 must be <= 1048576 (it sizes memory)")]:
        result = _run([*args, f"--workdir={tmp_path / 'w'}"])
        lines = _error_lines(result.stderr)
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
        assert lines[0] == f"train.py: error: {expected}"
        assert not (tmp_path / "w" / "checkpoints").exists() and not (tmp_path / "e").exists()
