"""Resumable training for every method: epoch-ordered data, checkpoints you can trust,
divergence guard, rollback, preemption and atomic saves.

`fit(model, x, workdir=..., epochs=..., batch_size=...)` is what `tools/train.py`
runs, in a few lines for a library user:

- **Epoch-ordered data.** Epoch e shuffles the examples with the stateless seed
  (seed, e), so a rerun that resumes at epoch k, step s sees exactly the
  batches an uninterrupted run sees from there on.
- **Checkpoints.** Every epoch, all variables (weights, optimizer, queues, banks,
  chains, EMA encoders) go to `<workdir>/checkpoints` as one file that carries
  its own epoch, step and fingerprint (`keras_ebm.checkpoints`), fsynced and
  renamed into place. A rerun picks the newest file that reads back whole
  *before* building its data, so the data order follows the checkpoint
  actually restored. A checkpoint written with another state-shaping setting
  (`fingerprint`) is refused with `CheckpointMismatch`.
- **One owner.** The workdir is locked for the whole call (`WorkdirLock`); a
  second run on it gets `WorkdirBusy` with the holder's pid.
- **Divergence.** `NonFiniteGuard` raises at the first non-finite loss, energy
  or weight, before the epoch is saved: the checkpoint stays the last good
  one, optimizer state included. The workdir is marked; a rerun raises
  `Diverged` again at once, unless `on_divergence="rollback"`, which restarts
  from the last checkpoint with the learning rate times `rollback_lr_factor`
  (at most `max_rollbacks` times).
- **Preemption.** On SIGTERM the run saves at the end of the current step and
  raises `Preempted`; the rerun resumes at that step.
- **Atomic saves.** `save_model` writes `model.keras` under a unique temporary
  name, fsyncs it and renames it into place.

TensorFlow-only (tf.data).
"""

import contextlib
import dataclasses
import json
import os
import sys

import keras
import tensorflow as tf

from keras_ebm import checkpoints
from keras_ebm.callbacks import EpochTensorBoard
from keras_ebm.callbacks import NonFiniteError
from keras_ebm.callbacks import NonFiniteGuard
from keras_ebm.callbacks import Preempted
from keras_ebm.callbacks import ResumableBackup
from keras_ebm.checkpoints import CheckpointError
from keras_ebm.checkpoints import CheckpointMismatch
from keras_ebm.checkpoints import WorkdirBusy
from keras_ebm.checkpoints import WorkdirLock
from keras_ebm.data.datasets import epoch_ordered_batches
from keras_ebm.evaluation.collapse import CollapseMonitor

__all__ = ["CheckpointError", "CheckpointMismatch", "Diverged", "Preempted", "TrainingResult",
           "WorkdirBusy", "WorkdirLock", "epoch_ordered_dataset", "fit", "save_model"]

ROLLBACKS_FILE = "rollbacks.json"


class Diverged(FloatingPointError):
    """Training met a non-finite loss, energy or weight (after any rollbacks)."""


@dataclasses.dataclass
class TrainingResult:
    """What `fit` returns.

    Attributes:
        history: the `keras.callbacks.History` of the last `model.fit` call
            (only the epochs run by this call).
        initial_epoch: the epoch this call resumed from (0 for a fresh run).
        initial_step: the step within that epoch it resumed from (0 unless
            the last run was preempted mid-epoch).
        checkpoint_epoch: the epoch of the checkpoint restored (above
            `initial_epoch` when `epochs` is below it: nothing was trained).
        rollbacks: how many times the run rolled back (counted across reruns).
        steps_per_epoch: updates per epoch.
    """

    history: keras.callbacks.History
    initial_epoch: int
    rollbacks: int
    steps_per_epoch: int
    initial_step: int = 0
    checkpoint_epoch: int = 0

    @property
    def epochs_run(self):
        return len(self.history.history.get("loss", []))


def epoch_ordered_dataset(x, batch_size, seed=0, initial_epoch=0, epochs=None,
                          steps_per_epoch=None, with_index=False, initial_step=0):
    """Training batches of `x` whose order depends only on (seed, epoch).

    Args:
        x: array [num_examples, ...] (float32).
        batch_size: int, examples per batch (full batches only).
        seed: int, the shuffle seed. Defaults to 0.
        initial_epoch: int, first epoch produced (a resumed run). Defaults to 0.
        epochs: int or None, end epoch (exclusive); None repeats forever.
        steps_per_epoch: int or None, batches per epoch; None (and at most)
            `len(x) // batch_size`.
        with_index: bool, yield `(batch, indices)`, the index of each example
            in `x` (PIRL's memory bank). Defaults to False.
        initial_step: int, batches of `initial_epoch` to skip (a run resumed
            mid-epoch). Defaults to 0.

    Returns:
        A `tf.data.Dataset` of batches.

    Example:

    >>> data = epoch_ordered_dataset(x_train, 256, seed=0, initial_epoch=5, epochs=100)
    >>> model.fit(data, epochs=100, initial_epoch=5, steps_per_epoch=len(x_train) // 256)
    """
    return epoch_ordered_batches(x, batch_size, seed=seed, initial_epoch=initial_epoch,
                                 epochs=epochs, steps_per_epoch=steps_per_epoch,
                                 with_index=with_index, initial_step=initial_step)


def save_model(model, path):
    """Saves `model` as a `.keras` file atomically (unique temporary name, fsync, rename)."""
    staging = checkpoints.staging_name(path) + ".keras"
    try:
        model.save(staging)
        checkpoints.commit(staging, os.path.abspath(path))
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(staging)
        raise
    return path


def read_rollbacks(checkpoint_dir):
    """How many times the run in `checkpoint_dir` rolled back (0 if never)."""
    try:
        with open(os.path.join(checkpoint_dir, ROLLBACKS_FILE)) as f:
            return int(json.load(f)["rollbacks"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _write_rollbacks(checkpoint_dir, rollbacks, message):
    checkpoints.write_json(os.path.join(checkpoint_dir, ROLLBACKS_FILE),
                           {"rollbacks": rollbacks, "last_divergence": message})


def _warn(line):
    print(line, file=sys.stderr, flush=True)


def _agree_across_workers(model, position):
    """Under multi-worker training, checks that every worker restores the same checkpoint."""
    from keras_ebm import distribute

    strategy = model.distribute_strategy
    if not distribute.in_multi_worker_mode(strategy):
        return
    value = float(position[0] * 2**20 + position[1])

    def replica_fn():
        context = tf.distribute.get_replica_context()
        return context.all_reduce("sum", tf.constant([value, value * value, 1.0], tf.float64))

    reduce = tf.function(lambda: strategy.run(replica_fn), autograph=False)
    total, squares, count = (float(v) for v in strategy.experimental_local_results(
        reduce())[0].numpy())
    if abs(total - count * value) > 0.5 or abs(squares - count * value * value) > 0.5:
        raise ValueError(
            f"the workers found different checkpoints (this one: epoch {position[0]}, step "
            f"{position[1]}); give every worker the same workdir on a shared file system: the "
            "chief writes the checkpoints and every worker restores them")


def _batches(model, x, batch_size, seed, steps, with_index):
    """`batches(initial_epoch, end_epoch, initial_step)`: epoch-ordered training data of `x`.

    `x` is an array or a dataset (`keras_ebm.data.ImageDataset`,
    `StreamingImages`). A streamed dataset under multi-worker training is
    read through `distribute_datasets_from_function`, so each worker reads
    its own files.
    """
    from keras_ebm import distribute

    def batches(first, end, step):
        if not hasattr(x, "train_batches"):
            return epoch_ordered_batches(x, batch_size, seed=seed, initial_epoch=first,
                                         epochs=end, steps_per_epoch=steps,
                                         with_index=with_index, initial_step=step)
        read = lambda context=None: x.train_batches(  # noqa: E731
            batch_size, seed=seed, initial_epoch=first, epochs=end, steps_per_epoch=steps,
            with_index=with_index, initial_step=step, input_context=context)
        strategy = model.distribute_strategy
        if getattr(x, "streaming", False) and distribute.in_multi_worker_mode(strategy):
            return strategy.distribute_datasets_from_function(read)
        return read()

    return batches


def _data_parts(batches, epochs, steps, epoch, step, dataset_fn):
    """[(dataset, fit steps, first epoch, end epoch, steps already done)] for the model.fit calls.

    A run resumed mid-epoch first finishes that epoch (the data skip the steps
    already done), then runs the remaining epochs.
    """
    if dataset_fn is not None:
        if step:
            raise CheckpointMismatch("epoch_program", None, None, None, detail=(
                f"epoch_program: the checkpoint is at epoch {epoch}, step {step} (mid-epoch), "
                "which an epoch-at-once dataset_fn cannot resume; resume without it to finish "
                "that epoch"))
        data, fit_steps = dataset_fn(epoch, steps)
        return [(data, fit_steps, epoch, epochs, 0)]
    parts = []
    if step and epoch < epochs:
        parts.append((batches(epoch, epoch + 1, step), steps - step, epoch, epoch + 1, step))
        epoch += 1
    if epoch < epochs or not parts:
        parts.append((batches(epoch, epochs, 0), steps, epoch, epochs, 0))
    return parts


def fit(model, x, *, workdir, epochs, batch_size, optimizer=None, seed=0, steps_per_epoch=None,
        with_index=False, keep_checkpoints=3, on_divergence="stop", max_rollbacks=3,
        rollback_lr_factor=0.5, jit_compile="auto", tensorboard=True, callbacks=(),
        verbose="auto", dataset_fn=None, fingerprint=None, settings=None, chief=True,
        preemptible=True, warn=None):
    """Trains `model` on `x`, resumably: a rerun of the same call continues where it stopped.

    Args:
        model: a keras_ebm method (any `keras.Model` whose `fit` takes batches of `x`).
        x: the training set: an array [num_examples, ...], or a dataset of
            `keras_ebm.data.load` (in memory, or `StreamingImages` read from
            disk batch by batch).
        workdir: folder of the checkpoints (`checkpoints/`) and TensorBoard logs
            (`tb/`); locked for the duration of the call.
        epochs: int, the total number of epochs (a resumed run trains the rest).
        batch_size: int, examples per update.
        optimizer: a `keras.optimizers.Optimizer`, or a callable
            `optimizer(lr_scale) -> Optimizer` (needed for rollback, which
            rebuilds it with a smaller learning rate), or None to keep the
            model's compiled optimizer. Defaults to None.
        seed: int, seed of the epoch order. Defaults to 0.
        steps_per_epoch: int or None, at most this many updates per epoch.
        with_index: bool, batches are `(x, indices)` (PIRL). Defaults to False.
        keep_checkpoints: int >= 0, per-epoch snapshots kept. Defaults to 3.
        on_divergence: "stop" (raise `Diverged`; the last checkpoint is the
            last good epoch and the workdir stays marked) or "rollback".
        max_rollbacks: int, most rollbacks before giving up. Defaults to 3.
        rollback_lr_factor: float in (0, 1), learning-rate factor per rollback.
        jit_compile: passed to `compile` when `optimizer` is given. Defaults to "auto".
        tensorboard: bool, write epoch scalars to `<workdir>/tb`. Defaults to True.
        callbacks: more Keras callbacks. A `keras_ebm.evaluation.CollapseMonitor`
            among them runs before the checkpoint and TensorBoard (see
            `keras_ebm.presets.collapse_monitor`); its `CollapseError` propagates.
        verbose: `model.fit` verbosity. Defaults to "auto".
        dataset_fn: None, or `dataset_fn(initial_epoch, steps) -> (dataset,
            fit_steps_per_epoch)` to feed other epoch-ordered data (e.g.
            `ContrastiveDivergence.epoch_dataset`, one element per epoch).
        fingerprint: dict of the settings that shape the training state
            (method, backbone, queue size, optimizer, ...). It is written into
            every checkpoint; resuming with another value raises
            `CheckpointMismatch` naming the setting. Batch size, seed and steps
            per epoch (the data order) are always part of it.
        settings: dict of other settings (learning rate, temperature): recorded,
            and a resume with other values prints a warning line.
        chief: bool, this process writes the checkpoints, logs and markers
            (False on non-chief multi-worker workers, which restore the
            chief's checkpoints from the same workdir). Defaults to True.
        preemptible: bool, on SIGTERM save at the current step and raise
            `Preempted` (main thread only). Defaults to True.
        warn: callable taking one line, for warnings (default: stderr).

    Returns:
        A `TrainingResult`.

    Raises:
        Diverged: on a non-finite loss, energy or weight (after any rollbacks),
            or at once when the workdir's run diverged before (unless rollback).
        Preempted: after a SIGTERM, once the checkpoint of the current step is saved.
        CheckpointMismatch: the workdir's checkpoint was written with another
            state-shaping setting or another model.
        CheckpointError: the workdir holds checkpoint files but none reads back.
        WorkdirBusy: another process is training in `workdir`.

    Example:

    >>> model = keras_ebm.presets.build("simclr", x_train, epochs=50)
    >>> result = keras_ebm.training.fit(model, x_train, workdir="runs/simclr", epochs=50,
    ...                                 batch_size=256)
    >>> keras_ebm.training.save_model(model, "runs/simclr/model.keras")
    """
    if on_divergence not in ("stop", "rollback"):
        raise ValueError(f"on_divergence must be 'stop' or 'rollback', got {on_divergence!r}")
    if on_divergence == "rollback" and not callable(optimizer):
        raise ValueError("on_divergence='rollback' needs optimizer=<callable lr_scale -> "
                         "optimizer>, to rebuild the optimizer with a smaller learning rate")
    warn = warn or _warn
    num_examples = x.num_examples if hasattr(x, "train_batches") else len(x)
    example_shape = x.image_shape if hasattr(x, "train_batches") else x.shape[1:]
    num_batches = num_examples // int(batch_size)
    if num_batches < 1:
        raise ValueError(f"batch_size={batch_size} is larger than the {num_examples} examples")
    steps = num_batches if steps_per_epoch is None else min(num_batches, int(steps_per_epoch))
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    fingerprint = {"batch_size": int(batch_size), "seed": int(seed), "steps_per_epoch": steps,
                   **(fingerprint or {})}
    with WorkdirLock(workdir) if chief else contextlib.nullcontext():
        if chief:
            checkpoints.remove_stale_staging(checkpoint_dir)
            checkpoints.remove_stale_staging(workdir)
        backup = ResumableBackup(checkpoint_dir, keep_checkpoints=keep_checkpoints,
                                 fingerprint=fingerprint, settings=settings,
                                 steps_per_epoch=steps, save=chief)
        # raise_error: the exception leaves fit before the epoch ends, so the
        # diverged epoch is never saved over the last good checkpoint.
        guard = NonFiniteGuard(raise_error=True)
        extra = ([EpochTensorBoard(os.path.join(workdir, "tb"))] if tensorboard and chief
                 else [])
        if not model.built:
            model.build((None, *example_shape))
        backup.set_model(model)
        initial_weights = [w.copy() for w in model.get_weights()]
        rollbacks = read_rollbacks(checkpoint_dir)
        earlier = checkpoints.diverged_message(checkpoint_dir)
        if earlier is not None:
            if on_divergence != "rollback":
                raise Diverged(f"{earlier.rstrip('.')}; this workdir's run diverged before: "
                               "rerun with on_divergence='rollback' to restart from the last "
                               "good checkpoint with a lower learning rate, or use a new workdir")
            rollbacks = _roll_back(checkpoint_dir, earlier, rollbacks, max_rollbacks,
                                   rollback_lr_factor, chief)
        restart_from_scratch = False
        # A collapse monitor runs before the checkpoint (a collapsed epoch is not saved)
        # and TensorBoard (which then logs its effective rank).
        monitors = [c for c in callbacks if isinstance(c, CollapseMonitor)]
        others = [c for c in callbacks if not isinstance(c, CollapseMonitor)]
        history = keras.callbacks.History()
        history.history, history.epoch = {}, []
        while True:
            if optimizer is not None:
                lr_scale = rollback_lr_factor ** rollbacks
                with model.distribute_strategy.scope():  # the optimizer lives in the strategy
                    model.compile(optimizer=optimizer(lr_scale) if callable(optimizer)
                                  else optimizer, jit_compile=jit_compile)
            path, record, warnings = backup.select(warn=warn)
            for line in warnings:
                warn(f"warning: {line}")
            if path is None and restart_from_scratch:
                model.set_weights(initial_weights)  # diverged in the first epoch: start over
            epoch, step = (int(record["epoch"]), int(record["step"])) if record else (0, 0)
            _agree_across_workers(model, (epoch, step))
            restored_epoch = epoch
            if epoch >= int(epochs):
                epoch, step = int(epochs), 0
            batches = _batches(model, x, batch_size, seed, steps, with_index)
            parts = _data_parts(batches, int(epochs), steps, epoch, step, dataset_fn)
            if rollbacks:
                print(f"Learning rate x{rollback_lr_factor ** rollbacks:g} after {rollbacks} "
                      f"rollback(s) (rollback_lr_factor={rollback_lr_factor})", flush=True)
            try:
                with checkpoints.on_sigterm(backup.request_stop) if preemptible else (
                        contextlib.nullcontext()):
                    for data, fit_steps, first, end, offset in parts:
                        backup.step_offset = offset
                        part = model.fit(data, epochs=end, initial_epoch=first,
                                         steps_per_epoch=fit_steps, shuffle=False,
                                         callbacks=[guard, *monitors, backup, *extra,
                                                    *others],
                                         verbose=verbose)
                        for key, values in part.history.items():
                            history.history.setdefault(key, []).extend(values)
                        history.epoch.extend(getattr(part, "epoch", []))
                return TrainingResult(history, epoch, rollbacks, steps, initial_step=step,
                                      checkpoint_epoch=restored_epoch)
            except NonFiniteError as error:
                message = str(error).rstrip(".")
                if on_divergence != "rollback":
                    if chief:
                        checkpoints.mark_diverged(checkpoint_dir, message)
                    raise Diverged(message) from None
                rollbacks = _roll_back(checkpoint_dir, message, rollbacks, max_rollbacks,
                                       rollback_lr_factor, chief)
                restart_from_scratch = True


def _roll_back(checkpoint_dir, message, rollbacks, max_rollbacks, rollback_lr_factor, chief):
    """Counts one more rollback, or marks the workdir and raises `Diverged` past the maximum."""
    if rollbacks >= max_rollbacks:
        message = (f"{message}; gave up after {rollbacks} rollback(s) "
                   f"(max_rollbacks={max_rollbacks})")
        if chief:
            checkpoints.mark_diverged(checkpoint_dir, message)
        raise Diverged(message) from None
    rollbacks += 1
    if chief:
        _write_rollbacks(checkpoint_dir, rollbacks, message)
        checkpoints.clear_diverged(checkpoint_dir)
    epoch, step = checkpoints.checkpoint_position(checkpoint_dir)
    print(f"{message}. Rollback {rollbacks}/{max_rollbacks}: restarting from "
          + (f"the checkpoint of epoch {epoch}" + (f", step {step}" if step else "")
             if epoch or step else "the initial weights")
          + f" with the learning rate x{rollback_lr_factor ** rollbacks:g}", flush=True)
    return rollbacks
