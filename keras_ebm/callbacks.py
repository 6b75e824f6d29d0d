"""Training guards and checkpoints: non-finite detection, resumable backups with k snapshots,
and an epoch-frequency TensorBoard callback."""

import logging
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from keras_ebm import checkpoints
from keras_ebm import keras_compat


class NonFiniteError(FloatingPointError):
    """Raised by `NonFiniteGuard(raise_error=True)` when a monitored value is not finite."""


@keras.saving.register_keras_serializable(package="keras_ebm")
class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss or energy and restores the last good weights.

    After every batch (with `steps_per_execution=N`, every compiled call of N
    batches) it checks the monitored logs (by default every metric a
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

    # Reads `batch` as the last step of a compiled call: several steps per call are fine
    # (`keras_ebm.methods.method.acts_per_batch`).
    multi_step_calls_ok = True

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
        self._first_batch = None
        self._previous_first_step = 1
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

    def on_train_batch_begin(self, batch, logs=None):
        self._first_batch = batch

    def on_train_batch_end(self, batch, logs=None):
        # With `steps_per_execution=N` Keras calls this once per N steps (batch is
        # the last of them): the check then covers every step of the call, since a
        # non-finite value makes the epoch's running means and the weights non-finite.
        first_batch = getattr(self, "_first_batch", None)
        count = 1 if first_batch is None else max(1, batch - first_batch + 1)
        self._first_batch = None
        first_step = self._step + 1
        self._step += count
        bad = self._bad_quantity(logs)
        if bad is None:
            self._shift()
            self._previous_first_step = first_step
            return
        name, value = bad
        self.stopped_step = self._step
        if count == 1:
            self.message = (
                f"Non-finite {name} (= {value}) at training step {self._step} "
                f"(batch {batch}); stopped training and restored the weights used by step "
                f"{self._step - 1}, the last step with finite values."
            )
        else:
            restored = getattr(self, "_previous_first_step", 1)
            self.message = (
                f"Non-finite {name} (= {value}) at training step {self._step}, within steps "
                f"{first_step}-{self._step} (batches {batch - count + 1}-{batch}, one compiled "
                f"call of {count} steps); stopped training and restored the weights used by "
                f"step {restored}, the first step of the last call with finite values."
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

    # Reads `batch` as the last step of a compiled call: several steps per call are fine
    # (`keras_ebm.methods.method.acts_per_batch`).
    multi_step_calls_ok = True

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("update_freq", "epoch")
        super().__init__(*args, **kwargs)

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch":
            logs = None  # the per-batch scalars would go to no writer
        super().on_train_batch_end(batch, logs)


def checkpoint_epoch(backup_dir):
    """The epochs done by the checkpoint a rerun resumes from in `backup_dir` (0 if none)."""
    return checkpoints.checkpoint_position(backup_dir)[0]


class Preempted(Exception):
    """Raised by `ResumableBackup` after it saved the step at which a stop was requested.

    Attributes: epoch (epochs done), step (steps done in the next epoch).
    """

    def __init__(self, epoch, step):
        self.epoch, self.step = epoch, step
        super().__init__(f"preempted: saved the checkpoint at epoch {epoch}, step {step}")


class ResumableBackup(keras.callbacks.Callback):
    """Saves every piece of training state each epoch; a rerun resumes from it.

    Every epoch it saves all of the model's variables (weights, batch-norm
    statistics, queues, memory banks, persistent chains, momentum encoders,
    random-generator states) and the optimizer's, as one checkpoint file that
    carries its own record (epoch, step, fingerprint, variables: see
    `keras_ebm.checkpoints`), fsynced and renamed into place: the rename is
    the one commit point. The previous file is kept as
    `previous.weights.h5`, so a checkpoint damaged after the fact falls back
    to the one before. The weights file is the one `model.save_weights`
    writes (`model.load_weights` reads it), written without Keras's per-call
    walk of the model, which leaks native memory over long runs.

    On `on_train_begin` it restores the newest checkpoint that reads back
    whole (or the one chosen beforehand by `keras_ebm.training.fit`) and
    prints "Resuming from epoch N ...". Used alone in `model.fit`, it makes
    Keras start at the restored epoch.

    `request_stop()` (e.g. from a SIGTERM handler) makes it save at the end
    of the current step and raise `Preempted`; the rerun resumes mid-epoch
    when its data skip the steps done (`keras_ebm.training.fit` does).

    With `keep_checkpoints=k > 0` it also keeps a snapshot of each of the k
    newest epochs, `epoch-NNNNN.weights.h5` (the state after epoch N), and
    deletes older ones: at most k + 2 weight files.

    Args:
        backup_dir: folder of the checkpoints (inside the run's workdir).
        keep_checkpoints: int >= 0, per-epoch snapshots kept. Defaults to 0.
        fingerprint: dict of the settings that shape the state; a checkpoint
            written with other values is refused (`CheckpointMismatch`).
        settings: dict of other settings, recorded; differences are warned about.
        steps_per_epoch: int or None, recorded with each save.
        save: bool, write checkpoints (False on non-chief workers). Defaults to True.

    Example:

    >>> backup = ResumableBackup("runs/moco/checkpoints", keep_checkpoints=3)
    >>> model.fit(data, epochs=100, callbacks=[backup])
    >>> backup.snapshots()   # the 3 newest epochs' files
    """

    # Reads `batch` as the last step of a compiled call: several steps per call are fine
    # (`keras_ebm.methods.method.acts_per_batch`).
    multi_step_calls_ok = True

    def __init__(self, backup_dir, keep_checkpoints=0, fingerprint=None, settings=None,
                 steps_per_epoch=None, save=True):
        super().__init__()
        if int(keep_checkpoints) < 0:
            raise ValueError(f"keep_checkpoints must be >= 0, got {keep_checkpoints}")
        self.backup_dir = os.fspath(backup_dir)
        self.keep_checkpoints = int(keep_checkpoints)
        self.fingerprint = dict(fingerprint or {})
        self.settings = dict(settings or {})
        self.steps_per_epoch = steps_per_epoch
        self.save = bool(save)
        self.resumed_epoch = 0
        self.resumed_step = 0
        self.step_offset = 0  # steps of the current epoch done before this fit call
        self.stop_requested = False
        self._restore = "auto"  # or (path, record) chosen beforehand, or None
        self._writer = None
        self._epoch = 0

    def select(self, warn=None):
        """Chooses the checkpoint to restore and checks it against this run.

        Returns `(path, record, warnings)` (`(None, None, [])` if there is
        none); the next `on_train_begin` restores that file.

        Raises:
            CheckpointMismatch: the checkpoint was written by another model
                or with another state-shaping setting.
        """
        path, record = checkpoints.select_checkpoint(self.backup_dir, warn=warn)
        warnings = []
        if path is not None:
            warnings = checkpoints.check_fingerprint(
                record, path, self.fingerprint, self.settings,
                checkpoints.variable_shapes(self.model) if self.model is not None else None)
        self._restore = (path, record) if path is not None else None
        return path, record, warnings

    def request_stop(self):
        """Save at the end of the current step and raise `Preempted` (safe in a signal handler)."""
        self.stop_requested = True

    def on_train_begin(self, logs=None):
        if self._restore == "auto":
            if not self.model.weights and checkpoints.candidates(self.backup_dir):
                raise ValueError(
                    f"ResumableBackup: the model has no variables yet, so the checkpoint in "
                    f"{self.backup_dir} cannot be restored; build it before fit (call it on a "
                    "batch, or model.build(input_shape))")
            self.select()
            if self._restore is not None:
                keras_compat.set_initial_epoch(self.model, int(self._restore[1]["epoch"]))
        if self._restore is None:
            return
        path, record = self._restore
        self._restore = None
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)  # its slots must exist to load
        self.model.load_weights(path)
        self.resumed_epoch, self.resumed_step = int(record["epoch"]), int(record["step"])
        where = f"epoch {self.resumed_epoch}" + (
            f", step {self.resumed_step}" if self.resumed_step else "")
        print(f"Resuming from {where} (checkpoint {path})", flush=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not self.stop_requested:
            return
        step = self.step_offset + batch + 1
        if self.params.get("steps") and batch + 1 >= self.params["steps"]:
            return  # the epoch's last step: on_epoch_end saves it and stops
        self._save(self._epoch, step)
        raise Preempted(self._epoch, step)

    def on_epoch_end(self, epoch, logs=None):
        self.step_offset = 0
        self._save(epoch + 1, 0)
        if self.stop_requested:
            raise Preempted(epoch + 1, 0)

    def snapshots(self):
        """Paths of the kept per-epoch snapshots, oldest first."""
        return sorted(p for p in checkpoints.candidates(self.backup_dir)
                      if checkpoints.SNAPSHOT.fullmatch(os.path.basename(p)))

    def _save(self, epoch, step):
        if not self.save:
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        if self._writer is None or self._writer.model is not self.model:
            self._writer = keras_compat.weights_file_writer(self.model)
        latest = os.path.join(self.backup_dir, checkpoints.LATEST)
        record = {"epoch": epoch, "step": step, "steps_per_epoch": self.steps_per_epoch,
                  "fingerprint": self.fingerprint, "settings": self.settings,
                  "variables": checkpoints.variable_shapes(self.model),
                  "keras_ebm_version": _version()}
        staging = checkpoints.prepare_checkpoint(self._writer, checkpoints.staging_name(latest),
                                                 record)
        if os.path.exists(latest):  # keep the previous checkpoint: fallback if latest is damaged
            os.replace(latest, os.path.join(self.backup_dir, checkpoints.PREVIOUS))
        checkpoints.commit(staging, latest)  # the commit point: this file says where it stands
        if not self.keep_checkpoints or step:
            return
        snapshot = os.path.join(self.backup_dir, f"epoch-{epoch:05d}.weights.h5")
        staging = checkpoints.staging_name(snapshot)
        shutil.copyfile(latest, staging)
        checkpoints.commit(staging, snapshot)  # a kill never leaves a half-written snapshot
        for old in self.snapshots()[:-self.keep_checkpoints]:
            os.remove(old)


def _version():
    from keras_ebm import __version__

    return __version__


_WeightsFileWriter = keras_compat.weights_file_writer  # the backup's writer (tests use it)
