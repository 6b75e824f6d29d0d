"""Training guards and checkpoints: non-finite detection, resumable backups with k snapshots,
and an epoch-frequency TensorBoard callback."""

import json
import logging
import os
import re
import shutil

import keras
import numpy as np
import tensorflow as tf

from keras_ebm import keras_compat

_SNAPSHOT = re.compile(r"epoch-\d{5}\.weights\.h5")


class NonFiniteError(FloatingPointError):
    """Raised by `NonFiniteGuard(raise_error=True)` when a monitored value is not finite."""


@keras.saving.register_keras_serializable(package="keras_ebm")
class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss or energy and restores the last good weights.

    After every batch it checks the monitored logs (by default every metric a
    method reports: loss, energy_data, energy_samples, ...). On a NaN or an
    infinity it restores the weights (trainable and non-trainable, so
    persistent chains too) saved after the last finite batch, sets
    `model.stop_training`, and reports which quantity failed at which step
    in `self.message`, in the log and, if `raise_error`, as `NonFiniteError`.
    It never replaces a NaN with a number.

    Args:
        monitor: sequence of log names to check, or None for all logs.
            Defaults to None.
        raise_error: bool, raise `NonFiniteError` after restoring. Defaults to False.
        check_weights: bool, also check that every weight is finite (catches
            energies whose metrics are still finite). Defaults to True.

    Example:

    >>> guard = NonFiniteGuard()
    >>> model.fit(x, epochs=100, callbacks=[guard])
    >>> guard.stopped_step, guard.message

    Reference:
        The reference EBM codebases (Du & Mordatch 2019; Nijkamp et al. 2020)
        report divergence as the main failure mode of MCMC-trained EBMs.
    """

    def __init__(self, monitor=None, raise_error=False, check_weights=True):
        super().__init__()
        self.monitor = None if monitor is None else tuple(monitor)
        self.raise_error = bool(raise_error)
        self.check_weights = bool(check_weights)
        self.stopped_step = None
        self.message = None
        self._good_weights = None
        self._step = 0

    def on_train_begin(self, logs=None):
        # The weights after step k are only known to be good once step k + 1
        # has computed finite energies with them: keep the last validated set.
        # Both sets are TensorFlow variables updated by one compiled function
        # per step: no NumPy copy of the model per step.
        self._weights = list(self.model.weights)
        snapshot = lambda: [tf.Variable(w.value, trainable=False)  # noqa: E731
                            for w in self._weights]
        with tf.init_scope():
            self._good_weights, self._candidate_weights = snapshot(), snapshot()
        weights, good, candidate = self._weights, self._good_weights, self._candidate_weights
        float_weights = [w for w in weights if w.dtype.startswith(("float", "bfloat"))]

        @tf.function(autograph=False)
        def shift():
            for good_value, candidate_value, weight in zip(good, candidate, weights):
                good_value.assign(candidate_value)
                candidate_value.assign(weight.value)

        @tf.function(autograph=False)
        def all_finite():
            return tf.reduce_all([tf.reduce_all(tf.math.is_finite(w.value))
                                  for w in float_weights] or [True])

        self._shift, self._all_finite = shift, all_finite
        self._step = 0
        self.stopped_step = None
        self.message = None

    def _bad_quantity(self, logs):
        for name, value in (logs or {}).items():
            if self.monitor is not None and name not in self.monitor:
                continue
            value = np.asarray(value)
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                return name, value
        if self.check_weights and not bool(self._all_finite()):
            for variable in self.model.weights:  # name the first culprit
                value = np.asarray(variable)
                if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                    return f"weight {variable.path}", float("nan")
        return None

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        bad = self._bad_quantity(logs)
        if bad is None:
            self._shift()
            return
        name, value = bad
        self.stopped_step = self._step
        self.message = (
            f"Non-finite {name} (= {value}) at training step {self._step} "
            f"(batch {batch}); stopped training and restored the weights used by step "
            f"{self._step - 1}, the last step with finite values."
        )
        logging.error(self.message)
        for weight, good_value in zip(self._weights, self._good_weights):
            weight.assign(good_value)
        self.model.stop_training = True
        if self.raise_error:
            raise NonFiniteError(self.message)

    def get_config(self):
        return {"monitor": self.monitor, "raise_error": self.raise_error,
                "check_weights": self.check_weights}


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` that makes no per-batch summary calls at `update_freq="epoch"`.

    At epoch frequency Keras's callback still calls `tf.summary.scalar` for
    every metric after every batch, with no default writer, so nothing is
    written; each such call grows the process's native memory (about 8 KiB
    per epoch of 4 batches in the MoCo digits soak, docs/resume.md "Soak"). This
    subclass skips those calls and writes the same event files: the epoch
    scalars (`epoch_loss`, ..., `epoch_learning_rate`), the graph and any
    profile. Other update frequencies behave as Keras's.

    Args:
        *args, **kwargs: `keras.callbacks.TensorBoard` arguments;
            `update_freq` defaults to "epoch".

    Example:

    >>> model.fit(data, epochs=500, callbacks=[EpochTensorBoard("runs/moco/tb")])
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("update_freq", "epoch")
        super().__init__(*args, **kwargs)

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch":
            logs = None  # the per-batch scalars would go to no writer
        super().on_train_batch_end(batch, logs)


def checkpoint_epoch(backup_dir):
    """The epoch a rerun resumes from: the last one the backup in `backup_dir` saved (0 if none)."""
    return _saved_epoch(os.path.join(backup_dir, "training_metadata.json"))


def _saved_epoch(metadata_path):
    try:
        with open(metadata_path) as f:
            return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that says when it resumes a run and keeps k snapshots.

    Every epoch it saves all of the model's variables (weights, batch-norm
    statistics, queues, memory banks, persistent chains, momentum encoders,
    random-generator states) and the optimizer's, with a copy of the previous
    save in case a crash corrupts the newest. Each file is written under a
    temporary name and renamed into place. The weights file is the one
    `model.save_weights` writes (`model.load_weights` reads it), written
    without Keras's per-call walk of the model, which leaks native memory
    over long runs. A rerun of the same command loads them and continues
    from the next epoch, printing "Resuming from epoch N ...".

    With `keep_checkpoints=k > 0` it also keeps a snapshot of each of the k
    newest epochs, `epoch-NNNNN.weights.h5` (the state after epoch N), and
    deletes older ones, so the folder stays bounded over any number of
    epochs: at most k + 2 weight files.

    Args:
        backup_dir: folder of the backup (inside the run's workdir).
        keep_checkpoints: int >= 0, per-epoch snapshots kept. Defaults to 0.
        **kwargs: `keras.callbacks.BackupAndRestore` arguments; by default the
            backup is kept when training ends (`delete_checkpoint=False`) and
            double-checkpointed.

    Example:

    >>> backup = ResumableBackup("runs/moco/checkpoints", keep_checkpoints=3)
    >>> model.fit(data, epochs=100, callbacks=[backup])
    >>> backup.snapshots()   # the 3 newest epochs' files
    """

    def __init__(self, backup_dir, keep_checkpoints=0, **kwargs):
        kwargs.setdefault("delete_checkpoint", False)
        kwargs.setdefault("double_checkpoint", True)
        super().__init__(backup_dir, **kwargs)
        if int(keep_checkpoints) < 0:
            raise ValueError(f"keep_checkpoints must be >= 0, got {keep_checkpoints}")
        self.keep_checkpoints = int(keep_checkpoints)
        self.resumed_epoch = 0
        self._writer = None
        self._epoch = 0  # what the next save records: epochs done, last batch seen
        self._batch = 0
        self._batches_since_save = 0

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # Keras loads the backup, if there is one
        self.resumed_epoch = _saved_epoch(keras_compat.backup_paths(self)[1])
        if self.resumed_epoch:
            print(f"Resuming from epoch {self.resumed_epoch} (checkpoint in {self.backup_dir})",
                  flush=True)

    def snapshots(self):
        """Paths of the kept per-epoch snapshots, oldest first."""
        if not os.path.isdir(self.backup_dir):
            return []
        names = sorted(n for n in os.listdir(self.backup_dir) if _SNAPSHOT.fullmatch(n))
        return [os.path.join(self.backup_dir, n) for n in names]

    # Keras's BackupAndRestore saves from these two hooks (through its private
    # `_save_model`); this callback saves from them through `_save_backup`.
    def on_epoch_end(self, epoch, logs=None):
        self._epoch, self._batch = epoch + 1, 0
        if self.save_freq == "epoch":
            self._save_backup()

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        # Keras's count, which allows steps_per_execution > 1.
        self._batches_since_save += batch + 1 if batch <= self._batch else batch - self._batch
        self._batch = batch
        if self._batches_since_save >= self.save_freq:
            self._batches_since_save = 0
            self._save_backup()

    def _save_backup(self):
        # What Keras's BackupAndRestore saves, in the files it loads, with two changes:
        # the files are written to a temporary name and renamed into place, and the
        # weights go through `keras_compat.weights_file_writer` instead of
        # `model.save_weights` (which grows the process's native memory by about
        # 70 KiB per call between train steps: docs/resume.md, "Soak").
        weights_path, metadata_path = keras_compat.backup_paths(self)
        os.makedirs(self.backup_dir, exist_ok=True)
        if self.double_checkpoint:
            for path in (weights_path, metadata_path):
                if os.path.exists(path):
                    shutil.copyfile(path, path + ".tmp")
                    os.replace(path + ".tmp", path + ".bkp")
        if self._writer is None or self._writer.model is not self.model:
            self._writer = keras_compat.weights_file_writer(self.model)
        self._writer.write(weights_path + ".tmp")
        with open(metadata_path + ".tmp", "w") as f:
            f.write(json.dumps({"epoch": self._epoch, "batch": self._batch}))
        os.replace(weights_path + ".tmp", weights_path)
        os.replace(metadata_path + ".tmp", metadata_path)
        if not self.keep_checkpoints:
            return
        snapshot = os.path.join(self.backup_dir, f"epoch-{self._epoch:05d}.weights.h5")
        staging = snapshot + ".tmp"
        shutil.copyfile(weights_path, staging)
        os.replace(staging, snapshot)  # a kill never leaves a half-written snapshot
        for old in self.snapshots()[:-self.keep_checkpoints]:
            os.remove(old)


_WeightsFileWriter = keras_compat.weights_file_writer  # the backup's writer (tests use it)
