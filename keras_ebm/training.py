"""Resumable training for every method: epoch-ordered data, checkpoints, divergence guard,
rollback and atomic saves.

`fit(model, x, workdir=..., epochs=..., batch_size=...)` is what `tools/train.py`
runs, in a few lines for a library user:

- **Epoch-ordered data.** Epoch e shuffles the examples with the stateless seed
  (seed, e), so a rerun that resumes at epoch k sees exactly the batches an
  uninterrupted run sees from epoch k on.
- **Checkpoints.** Every epoch, all variables (weights, optimizer, queues, banks,
  chains, EMA encoders) go to `<workdir>/checkpoints` (`ResumableBackup`); a
  rerun of the same call resumes from the last one. k per-epoch snapshots are
  kept.
- **Divergence.** `NonFiniteGuard` stops at the first non-finite loss, energy
  or weight, before the epoch is saved, and restores the last good weights.
  With `on_divergence="rollback"` training restarts from the last checkpoint
  with the learning rate times `rollback_lr_factor` (at most `max_rollbacks`
  times); otherwise `Diverged` is raised.
- **Atomic saves.** `save_model` writes `model.keras` under a temporary name
  and renames it into place: a kill never leaves a half-written file.

TensorFlow-only (tf.data).
"""

import dataclasses
import json
import os

import keras
import tensorflow as tf

from keras_ebm.callbacks import EpochTensorBoard
from keras_ebm.callbacks import NonFiniteError
from keras_ebm.callbacks import NonFiniteGuard
from keras_ebm.callbacks import ResumableBackup
from keras_ebm.callbacks import checkpoint_epoch
from keras_ebm.data.datasets import epoch_ordered_indices

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
        rollbacks: how many times the run rolled back (counted across reruns).
        steps_per_epoch: updates per epoch.
    """

    history: keras.callbacks.History
    initial_epoch: int
    rollbacks: int
    steps_per_epoch: int

    @property
    def epochs_run(self):
        return len(self.history.history.get("loss", []))


def epoch_ordered_dataset(x, batch_size, seed=0, initial_epoch=0, epochs=None,
                          steps_per_epoch=None, with_index=False):
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

    Returns:
        A `tf.data.Dataset` of batches.

    Example:

    >>> data = epoch_ordered_dataset(x_train, 256, seed=0, initial_epoch=5, epochs=100)
    >>> model.fit(data, epochs=100, initial_epoch=5, steps_per_epoch=len(x_train) // 256)
    """
    x = tf.constant(x)
    indices = epoch_ordered_indices(len(x), batch_size, seed=seed, initial_epoch=initial_epoch,
                                    epochs=epochs, steps_per_epoch=steps_per_epoch)

    def gather(i):
        return (tf.gather(x, i), i) if with_index else tf.gather(x, i)

    return indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def save_model(model, path):
    """Saves `model` as a `.keras` file atomically (written aside, then renamed into place)."""
    directory, name = os.path.split(os.path.abspath(path))
    staging = os.path.join(directory, f".{name}.{os.getpid()}.tmp.keras")
    model.save(staging)
    os.replace(staging, path)
    return path


def read_rollbacks(checkpoint_dir):
    """How many times the run in `checkpoint_dir` rolled back (0 if never)."""
    try:
        with open(os.path.join(checkpoint_dir, ROLLBACKS_FILE)) as f:
            return int(json.load(f)["rollbacks"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _write_rollbacks(checkpoint_dir, rollbacks, message):
    os.makedirs(checkpoint_dir, exist_ok=True)
    staging = os.path.join(checkpoint_dir, ROLLBACKS_FILE + ".tmp")
    with open(staging, "w") as f:
        json.dump({"rollbacks": rollbacks, "last_divergence": message}, f, indent=2)
    os.replace(staging, os.path.join(checkpoint_dir, ROLLBACKS_FILE))


def fit(model, x, *, workdir, epochs, batch_size, optimizer=None, seed=0, steps_per_epoch=None,
        with_index=False, keep_checkpoints=3, on_divergence="stop", max_rollbacks=3,
        rollback_lr_factor=0.5, jit_compile="auto", tensorboard=True, callbacks=(),
        verbose="auto", dataset_fn=None):
    """Trains `model` on `x`, resumably: a rerun of the same call continues where it stopped.

    Args:
        model: a keras_ebm method (any `keras.Model` whose `fit` takes batches of `x`).
        x: array [num_examples, ...], the training set.
        workdir: folder of the checkpoints (`checkpoints/`) and TensorBoard logs (`tb/`).
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
            last good epoch) or "rollback". Defaults to "stop".
        max_rollbacks: int, most rollbacks before giving up. Defaults to 3.
        rollback_lr_factor: float in (0, 1), learning-rate factor per rollback.
        jit_compile: passed to `compile` when `optimizer` is given. Defaults to "auto".
        tensorboard: bool, write epoch scalars to `<workdir>/tb`. Defaults to True.
        callbacks: more Keras callbacks.
        verbose: `model.fit` verbosity. Defaults to "auto".
        dataset_fn: None, or `dataset_fn(initial_epoch, steps) -> (dataset,
            fit_steps_per_epoch)` to feed other epoch-ordered data (e.g.
            `ContrastiveDivergence.epoch_dataset`, one element per epoch).

    Returns:
        A `TrainingResult`.

    Raises:
        Diverged: on a non-finite loss, energy or weight (after any rollbacks).

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
    num_batches = len(x) // int(batch_size)
    if num_batches < 1:
        raise ValueError(f"batch_size={batch_size} is larger than the {len(x)} examples")
    steps = num_batches if steps_per_epoch is None else min(num_batches, int(steps_per_epoch))
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    backup = ResumableBackup(checkpoint_dir, keep_checkpoints=keep_checkpoints)
    # raise_error: the exception leaves fit before the epoch ends, so the
    # diverged epoch is never saved over the last good checkpoint.
    guard = NonFiniteGuard(raise_error=True)
    extra = [EpochTensorBoard(os.path.join(workdir, "tb"))] if tensorboard else []
    if not model.built:
        model.build((None, *x.shape[1:]))
    initial_weights = [w.copy() for w in model.get_weights()]
    rollbacks = read_rollbacks(checkpoint_dir)
    while True:
        if optimizer is not None:
            lr_scale = rollback_lr_factor ** rollbacks
            with model.distribute_strategy.scope():  # the optimizer lives in the strategy
                model.compile(optimizer=optimizer(lr_scale) if callable(optimizer)
                              else optimizer, jit_compile=jit_compile)
        initial_epoch = min(checkpoint_epoch(checkpoint_dir), int(epochs))
        if dataset_fn is None:
            data, fit_steps = epoch_ordered_dataset(
                x, batch_size, seed=seed, initial_epoch=initial_epoch, epochs=epochs,
                steps_per_epoch=steps, with_index=with_index), steps
        else:
            data, fit_steps = dataset_fn(initial_epoch, steps)
        if rollbacks:
            print(f"Learning rate x{rollback_lr_factor ** rollbacks:g} after {rollbacks} "
                  f"rollback(s) (rollback_lr_factor={rollback_lr_factor})", flush=True)
        try:
            history = model.fit(data, epochs=epochs, steps_per_epoch=fit_steps, shuffle=False,
                                callbacks=[backup, guard, *extra, *callbacks], verbose=verbose)
            return TrainingResult(history, initial_epoch, rollbacks, steps)
        except NonFiniteError as error:
            message = str(error).rstrip(".")
            if on_divergence != "rollback":
                raise Diverged(message) from None
            if rollbacks >= max_rollbacks:
                raise Diverged(f"{message}; gave up after {rollbacks} rollback(s) "
                               f"(max_rollbacks={max_rollbacks})") from None
            rollbacks += 1
            _write_rollbacks(checkpoint_dir, rollbacks, message)
            restart = checkpoint_epoch(checkpoint_dir)
            if not restart:
                model.set_weights(initial_weights)  # diverged in the first epoch: start over
            print(f"{message}. Rollback {rollbacks}/{max_rollbacks}: restarting from "
                  + (f"the checkpoint of epoch {restart}" if restart else "the initial weights")
                  + f" with the learning rate x{rollback_lr_factor ** rollbacks:g}", flush=True)
