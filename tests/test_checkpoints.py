"""keras_ebm.checkpoints: the file's own record, its digest, the fallback and the lock."""

import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest

from keras_ebm import checkpoints
from keras_ebm import training
from keras_ebm.callbacks import ResumableBackup


def _data():
    x = np.random.default_rng(0).random((16, 3)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def _train(directory, epochs, model=None, **kwargs):
    model = model or _model()
    model.fit(*_data(), epochs=epochs, batch_size=8, verbose=0,
              callbacks=[ResumableBackup(directory, **kwargs)])
    return model


def test_each_checkpoint_carries_its_own_record(tmp_path):
    directory = str(tmp_path / "c")
    _train(directory, 2, keep_checkpoints=1)
    assert sorted(os.listdir(directory)) == ["epoch-00002.weights.h5", "latest.weights.h5",
                                             "previous.weights.h5"]
    latest = checkpoints.read_record(os.path.join(directory, checkpoints.LATEST))
    previous = checkpoints.read_record(os.path.join(directory, checkpoints.PREVIOUS))
    assert (latest["epoch"], latest["step"]) == (2, 0) and previous["epoch"] == 1
    assert latest["variables"][0][1] == [3, 1] and len(latest["digest"]) == 64
    assert checkpoints.checkpoint_position(directory) == (2, 0)


def test_changed_array_bytes_are_caught_by_the_digest_and_skipped(tmp_path):
    directory = str(tmp_path / "c")
    _train(directory, 2)
    latest = os.path.join(directory, checkpoints.LATEST)
    with h5py.File(latest, "r+") as f:  # a valid HDF5 file whose weights changed
        name = next(n for n in _datasets(f) if f[n].size > 1)
        f[name][...] = f[name][()] + 1.0
    warnings = []
    path, record = checkpoints.select_checkpoint(directory, warn=warnings.append)
    assert path.endswith(checkpoints.PREVIOUS) and record["epoch"] == 1
    assert len(warnings) == 1 and "corrupt" in warnings[0] and "latest" in warnings[0]


def _datasets(h5file):
    names = []
    h5file.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    return names


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    directory = str(tmp_path / "checkpoints")  # training.fit's folder in the workdir
    _train(directory, 2)
    for name in (checkpoints.LATEST, checkpoints.PREVIOUS):
        with open(os.path.join(directory, name), "r+b") as f:
            f.truncate(100)
    with pytest.raises(checkpoints.CheckpointError, match="none of its 2 checkpoint files"):
        checkpoints.select_checkpoint(directory, warn=lambda line: None)
    with pytest.raises(checkpoints.CheckpointError):
        training.fit(_model(), _data()[0], workdir=str(tmp_path), epochs=3, batch_size=8,
                     optimizer=None, tensorboard=False, verbose=0)
    assert os.path.getsize(os.path.join(directory, checkpoints.LATEST)) == 100  # untouched


def test_a_model_without_variables_cannot_restore_and_says_so(tmp_path):
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

    directory = str(tmp_path / "c")
    _train(directory, 1)
    model = Subclassed()
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="has no variables yet.*build it before fit"):
        _train(directory, 2, model=model)


def test_fingerprint_mismatch_names_the_setting_and_other_settings_warn(tmp_path):
    directory = str(tmp_path / "c")
    _train(directory, 1, fingerprint={"queue_size": 100}, settings={"temperature": 0.2})
    path, record = checkpoints.select_checkpoint(directory)
    with pytest.raises(checkpoints.CheckpointMismatch, match="^queue_size=200 differs") as error:
        checkpoints.check_fingerprint(record, path, {"queue_size": 200})
    assert (error.value.name, error.value.saved, error.value.given) == ("queue_size", 100, 200)
    assert checkpoints.check_fingerprint(record, path, {"queue_size": 100},
                                         {"temperature": 0.5}) == [
        "temperature=0.5 differs from the checkpoint's 0.2; resuming with 0.5"]
    with pytest.raises(checkpoints.CheckpointMismatch, match="variable .* has shape"):
        checkpoints.check_fingerprint(record, path, variables=[["dense/kernel", [4, 1]],
                                                               ["dense/bias", [1]]])


def test_an_epoch_program_cannot_resume_mid_epoch():
    with pytest.raises(checkpoints.CheckpointMismatch, match="^epoch_program: .* step 3"):
        training._data_parts(None, 4, 5, 1, 3, lambda epoch, steps: (None, 1))


def test_the_workdir_lock_is_exclusive_across_processes_and_reentrant(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom keras_ebm.checkpoints import WorkdirLock\n"
         "with WorkdirLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n",
         str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(checkpoints.WorkdirBusy, match=f"in use by pid {holder.pid}"):
            with checkpoints.WorkdirLock(str(tmp_path)):
                pass
    finally:
        holder.kill()
        holder.wait()
    with checkpoints.WorkdirLock(str(tmp_path)):  # freed by the holder's death
        with checkpoints.WorkdirLock(str(tmp_path)):  # re-entrant in one process
            pass
