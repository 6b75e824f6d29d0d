"""Kill -9 a training run and rerun it: it resumes with every piece of state."""

import json
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
from keras_ebm.callbacks import checkpoint_epoch
from keras_ebm.checkpoints import select_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "tools", "train.py")
ARGS = ["--flagfile=configs/moco.flags", "--backbone=tiny_cnn", "--steps_per_epoch=2",
        "--batch_size=32", "--queue_size=100", "--projection_hidden_dims=16",
        "--projection_dim=8", "--noevaluate"]


def _run(args, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, TRAIN, *ARGS, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, **kwargs)


def _checkpoint_epoch(workdir):
    return checkpoint_epoch(os.path.join(workdir, "checkpoints"))


def _h5_arrays(path):
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return arrays


def test_killed_run_resumes_with_queue_key_encoder_and_optimizer(tmp_path):
    workdir, export_dir = tmp_path / "work", tmp_path / "export"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen([sys.executable, TRAIN, *ARGS, "--epochs=100000",
                                f"--workdir={workdir}", f"--export_dir={export_dir}"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while _checkpoint_epoch(workdir) < 3 and time.time() < deadline:
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    epoch = _checkpoint_epoch(workdir)
    assert epoch >= 3, "no checkpoint was written before the kill"
    assert not export_dir.exists(), "a killed run must not leave an export"
    # The file a rerun restores: the newest that reads back whole (a kill mid-write
    # leaves only a hidden staging file, never a half-written checkpoint).
    path, record = select_checkpoint(str(workdir / "checkpoints"))
    assert record["epoch"] == epoch and record["step"] == 0
    checkpoint = _h5_arrays(path)

    # Rerun the same command up to the checkpoint's epoch: nothing left to train, so the
    # saved model is exactly the restored state.
    result = _run([f"--epochs={epoch}", f"--workdir={workdir}", f"--export_dir={export_dir}"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Resuming from epoch {epoch}" in result.stdout
    model = keras.models.load_model(workdir / "model.keras")
    restored_path = tmp_path / "restored.weights.h5"
    model.save_weights(restored_path)
    restored = _h5_arrays(restored_path)
    model_keys = [k for k in checkpoint if not k.startswith("optimizer")]
    assert model_keys and set(model_keys) <= set(restored)
    for key in model_keys:
        np.testing.assert_array_equal(restored[key], checkpoint[key], err_msg=key)
    # The queue was filled by training (pointer and count), and the optimizer state is saved.
    assert int(model.queue.num_enqueued.numpy()) == epoch * 2 * 32
    assert any(k.startswith("optimizer") for k in checkpoint)
    assert (export_dir / "1").is_dir()


class Crash(Exception):
    pass


class CrashAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise Crash(f"simulated crash after epoch {self.epoch}")


def _run_in_process(module, args):
    module.FLAGS.unparse_flags()
    module.FLAGS(["train.py", *args])
    module.main([])


def _uninterrupted_and_resumed(module, args, tmp_path, capsys):
    """Runs `args` once straight through (a) and once crashed after epoch 2 and rerun (b).

    Checks that the crash left no model or export and that the rerun said it resumed;
    returns the two trained models (a, b).
    """
    _run_in_process(module, [*args, f"--workdir={tmp_path / 'a'}",
                             f"--export_dir={tmp_path / 'ea'}"])
    module.EXTRA_CALLBACKS.append(CrashAfterEpoch(2))
    with pytest.raises(Crash):
        _run_in_process(module, [*args, f"--workdir={tmp_path / 'b'}",
                                 f"--export_dir={tmp_path / 'eb'}"])
    assert not (tmp_path / "eb").exists() and not (tmp_path / "b" / "model.keras").exists()
    module.EXTRA_CALLBACKS.clear()
    capsys.readouterr()
    _run_in_process(module, [*args, f"--workdir={tmp_path / 'b'}",
                             f"--export_dir={tmp_path / 'eb'}"])
    assert "Resuming from epoch 2" in capsys.readouterr().out
    return (keras.models.load_model(tmp_path / "a" / "model.keras"),
            keras.models.load_model(tmp_path / "b" / "model.keras"))


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(train_module, tmp_path,
                                                                        capsys):
    tf.config.experimental.enable_op_determinism()
    # With colour jitter: its generator state is saved (RandomApply tracks it as a weight);
    # with MoCo's key shuffle over 2 batch-norm groups: drawn from the step counter.
    a, b = _uninterrupted_and_resumed(
        train_module, [*ARGS, "--epochs=4", "--seed=1", "--bn_splits=2",
                       "--augment_strength=0.5"], tmp_path, capsys)
    assert len(a.weights) == len(b.weights)
    for wa, wb in zip(a.weights, b.weights):
        # Same data order (seeded by epoch), augmentation RNG state and optimizer state.
        np.testing.assert_allclose(np.asarray(wb), np.asarray(wa), rtol=1e-5, atol=1e-6,
                                   err_msg=wa.path)


EBM_ARGS = ["--flagfile=configs/pcd_rbm.flags", "--epochs=4", "--steps_per_epoch=5",
            "--num_chains=20"]


def test_resumed_pcd_epoch_program_equals_an_uninterrupted_run(train_module, tmp_path, capsys):
    # The Gibbs noise of epoch e is a function of (--seed, e): a resumed run redraws it exactly.
    a, b = _uninterrupted_and_resumed(train_module, [*EBM_ARGS, "--epoch_program"], tmp_path,
                                      capsys)
    paths = [w.path for w in a.weights]
    assert any("chains" in p for p in paths), paths  # the persistent chains are compared too
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_allclose(np.asarray(wb), np.asarray(wa), rtol=1e-6, atol=1e-6,
                                   err_msg=wa.path)
    assert int(b.optimizer.iterations) == int(a.optimizer.iterations) == 4 * 5


@pytest.mark.parametrize("extra", [[], ["--dataset=toy:rings", "--sampler=langevin",
                                          "--toy_train_samples=400", "--toy_test_samples=100",
                                          "--grid_size=20", "--reinit_fraction=0.05"]])
def test_resumed_pcd_draws_the_same_mcmc_noise_as_an_uninterrupted_run(train_module, tmp_path,
                                                                         capsys, extra):
    # Without --epoch_program: the Gibbs / Langevin noise and the buffer's draws of update t
    # come from the stateless seed (seed, t), and t is the optimizer's (checkpointed) count.
    tf.config.experimental.enable_op_determinism()
    a, b = _uninterrupted_and_resumed(train_module, [*EBM_ARGS, *extra], tmp_path, capsys)
    assert any("chains" in w.path for w in a.weights)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_allclose(np.asarray(wb), np.asarray(wa), rtol=1e-5, atol=1e-6,
                                   err_msg=wa.path)
    assert a.get_config()["seed"] == b.get_config()["seed"]


class PoisonOnce(keras.callbacks.Callback):
    """Writes NaN into the first weight at the start of `epoch`, once per process."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.done, self.current = epoch, False, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == 1 and not self.done:
            self.done = True
            weight = self.model.trainable_weights[0]
            weight.assign(np.full(weight.shape, np.nan, weight.dtype))


def test_ebm_rollback_restarts_from_the_last_good_checkpoint(train_module, tmp_path, capsys):
    workdir = tmp_path / "w"
    train_module.EXTRA_CALLBACKS.append(PoisonOnce(2))
    _run_in_process(train_module, [*EBM_ARGS, "--on_divergence=rollback", "--max_rollbacks=2",
                                   "--rollback_lr_factor=0.5", f"--workdir={workdir}",
                                   f"--export_dir={tmp_path / 'e'}"])
    out = capsys.readouterr().out
    assert "Non-finite" in out and "Rollback 1/2" in out
    assert "Resuming from epoch 2" in out  # the checkpoint of the last good epoch
    assert "Learning rate x0.5 after 1 rollback(s)" in out
    with open(workdir / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["rollbacks"] == 1 and np.isfinite(metrics["test_log_likelihood"])
    with open(workdir / "checkpoints" / "rollbacks.json") as f:
        assert json.load(f)["rollbacks"] == 1
    assert (tmp_path / "e" / "1").is_dir()


def test_ebm_divergence_gives_up_after_max_rollbacks(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, TRAIN, *EBM_ARGS, "--learning_rate=1e38", "--on_divergence=rollback",
         "--max_rollbacks=1", f"--workdir={tmp_path / 'w'}", f"--export_dir={tmp_path / 'e'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Rollback 1/1" in result.stdout and "Traceback" not in result.stderr
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("train.py: Non-finite") and "gave up after 1 rollback(s)" in last
    assert not (tmp_path / "e").exists() and not (tmp_path / "w" / "model.keras").exists()
