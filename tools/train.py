r"""Trains a keras_ebm method, evaluates it and exports it for TF Serving.

    python tools/train.py --flagfile=configs/moco.flags
    python tools/train.py --method=simclr --dataset=digits --epochs=100
    python tools/train.py --flagfile=configs/pcd_rbm.flags

Flags -> `keras_ebm.presets.build` -> `keras_ebm.training.fit` -> evaluation ->
`keras_ebm.export`. A flag left unset takes the method's preset value
(`keras_ebm.presets.defaults(method)`). Writes into --workdir: TensorBoard logs
(tb/), checkpoints (checkpoints/, a rerun resumes there), model.keras and
metrics.json; exports a SavedModel to <export_dir>/<version>/.

Bad input prints one line naming the flag or file, exits with status 2 and
writes no export; a diverged run, or a collapsed one (--collapse_monitor: the effective
rank of 512 training images' embeddings, each epoch), exits with status 1 and exports nothing.
"""

import contextlib
import json
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ebm_recipes  # noqa: E402  (the EBM flags, data and evaluation)
import train_flags  # noqa: E402, F401  (the other flags)
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from keras_ebm import presets  # noqa: E402

REPO = train_flags.REPO
FLAGS = flags.FLAGS
EXTRA_CALLBACKS = []  # appended to every fit (tests simulate crashes with it)
class UsageError(Exception):
    """Bad input: one line, exit status 2."""


def fail(message, status=2, hard=False):
    """Prints one line and exits; `hard` skips the interpreter's shutdown (see below)."""
    print(f"train.py: {'error: ' if status == 2 else ''}{message}", file=sys.stderr)
    if hard:
        with contextlib.suppress(OSError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        fail(str(error).splitlines()[0])


def overrides():
    """The flags the preset reads, where given: {name: value}."""
    keys = presets.defaults(FLAGS.method)
    values = {k: FLAGS[k].value for k in keys if k in FLAGS and FLAGS[k].value is not None}
    if FLAGS.jit_compile != "auto" or FLAGS.method in presets.SSL_METHODS:
        values["jit_compile"] = use_xla()
    return values


def validate_flags():
    """Checks every flag before anything is built or written."""
    if FLAGS.method not in presets.METHODS:  # absl's enum checks the command line only
        raise UsageError(f"--method={FLAGS.method!r}: choose one of {', '.join(presets.METHODS)}")
    given = {name: FLAGS[name].value for name in FLAGS if FLAGS[name].value is not None}
    try:
        presets.check_settings(given)
    except presets.SettingError as error:
        raise UsageError(f"--{error}") from None
    if FLAGS.keep_checkpoints < 0:
        raise UsageError(f"--keep_checkpoints={FLAGS.keep_checkpoints} must be >= 0")
    if not 0.0 <= FLAGS.collapse_min_rank_ratio < 1.0:
        raise UsageError(f"--collapse_min_rank_ratio={FLAGS.collapse_min_rank_ratio} must be in "
                         "[0, 1)")
    ebm_recipes.validate(FLAGS, FLAGS.method in presets.SSL_METHODS, UsageError)
    present = [name for name in FLAGS if FLAGS[name].present]
    for name in presets.ignored_settings(FLAGS.method, present):
        print(f"train.py: warning: --{name} is ignored by --method={FLAGS.method}",
              file=sys.stderr)


def use_xla():  # an explicit --jit_compile, or auto for SSL methods: XLA on GPUs and TPUs
    from keras_ebm.distribute import default_jit_compile

    return default_jit_compile(FLAGS.jit_compile, FLAGS.strategy)


def train(workdir, export_dir):
    from keras_ebm import distribute
    from keras_ebm import training

    ssl = FLAGS.method in presets.SSL_METHODS
    try:  # the strategy comes before any TensorFlow op (multi-worker collectives)
        strategy = distribute.get_strategy(
            FLAGS.strategy, collective_timeout=FLAGS.collective_timeout) if ssl else None
    except ValueError as error:
        raise UsageError(f"--strategy={FLAGS.strategy}: {error}") from None
    chief = distribute.is_chief(strategy) if ssl else True
    try:  # one owner per workdir, from here to the export (the chief's; workers share it)
        with training.WorkdirLock(workdir) if chief else contextlib.nullcontext():
            return run(strategy, chief, workdir, export_dir)
    except training.WorkdirBusy as error:
        raise UsageError(f"--workdir={error}") from None


def run(strategy, chief, workdir, export_dir):
    import keras
    import tensorflow as tf

    import keras_ebm
    from keras_ebm import distribute
    from keras_ebm import evaluation as probes
    from keras_ebm import training

    ssl = FLAGS.method in presets.SSL_METHODS
    keras.utils.set_random_seed(FLAGS.seed)
    keras.mixed_precision.set_global_policy(
        "float32" if FLAGS.mixed_precision == "none" else f"mixed_{FLAGS.mixed_precision}")
    try:
        if ssl:
            dataset = keras_ebm.data.load(
                FLAGS.dataset, data_dir=FLAGS.data_dir, image_size=FLAGS.image_size,
                max_train_examples=FLAGS.max_train_examples,
                max_image_pixels=FLAGS.max_image_pixels,
                stream={"always": True, "never": False}.get(FLAGS.stream, "auto"))
            x_train = dataset.standin()  # the train images, or a zero-copy stand-in
            kind = None
        else:
            x_train, x_test, kind = ebm_recipes.load_data(FLAGS.dataset, FLAGS)
    except (ValueError, keras_ebm.data.DataError) as error:
        raise UsageError(f"--dataset: {error}".replace("--dataset: --", "--")) from None
    config = presets.resolve(FLAGS.method, overrides(), kind)
    state, settings = presets.fingerprint(FLAGS.method, config, x_train.shape[1:])
    steps = min(presets.default_steps_per_epoch(config, len(x_train)),
                FLAGS.steps_per_epoch or len(x_train))
    try:
        with strategy.scope() if ssl else contextlib.nullcontext():
            model = presets.build(FLAGS.method, x_train, steps_per_epoch=steps, **overrides())
            if FLAGS.sync_batch_norm:
                distribute.sync_batch_norm(model)
        dataset_fn = ebm_recipes.epoch_program_data(model, x_train, config, FLAGS)
    except presets.SettingError as error:
        raise UsageError(f"--{error}") from None
    except ValueError as error:
        if str(error).startswith("--"):
            raise UsageError(str(error)) from None
        raise
    results = {}
    if ssl and FLAGS.evaluate:
        results = probes.evaluation_rows(dataset, {"encoder at init": model.encoder},
                                         num_draws=FLAGS.probe_draws, seed=FLAGS.seed,
                                         raw_pixels=True, evaluate=chief,
                                         max_examples=FLAGS.max_eval_examples)
    print(f"Training {FLAGS.method} on {FLAGS.dataset} ({len(x_train)} examples, {steps} "
          f"steps/epoch, {config['epochs']} epochs" + (f", backbone {config['backbone']}, "
          f"{strategy.num_replicas_in_sync} replica(s))" if ssl else ")"), flush=True)
    monitor = [presets.collapse_monitor(dataset, min_effective_rank=FLAGS.collapse_min_rank,
                                        min_rank_ratio=FLAGS.collapse_min_rank_ratio)
               ] if ssl and FLAGS.collapse_monitor else []
    start = time.perf_counter()
    try:
        result = training.fit(
            model, dataset if ssl else x_train, workdir=workdir, epochs=config["epochs"],
            batch_size=min(config["batch_size"], len(x_train)), seed=FLAGS.seed,
            steps_per_epoch=steps, with_index=FLAGS.method == "pirl",
            keep_checkpoints=FLAGS.keep_checkpoints, on_divergence=FLAGS.on_divergence,
            max_rollbacks=FLAGS.max_rollbacks, rollback_lr_factor=FLAGS.rollback_lr_factor,
            optimizer=presets.optimizer_factory(FLAGS.method, steps, kind, **overrides()),
            jit_compile=config["jit_compile"], callbacks=[*monitor, *EXTRA_CALLBACKS],
            verbose=1 if sys.stdout.isatty() else 2, dataset_fn=dataset_fn, chief=chief,
            fingerprint={**state, "dataset": FLAGS.dataset, "num_examples": len(x_train)},
            settings=settings, warn=lambda line: print(f"train.py: {line}", file=sys.stderr))
    except training.CheckpointMismatch as error:
        raise UsageError(f"--{error}" if error.name in FLAGS else str(error)) from None
    except training.CheckpointError as error:
        raise UsageError(f"--workdir: {error}") from None
    except (training.Diverged, probes.CollapseError) as error:
        checkpoints = os.path.join(workdir, "checkpoints")
        saved = os.path.isdir(checkpoints) and any(
            name.endswith(".weights.h5") for name in os.listdir(checkpoints))
        record = ""
        if isinstance(error, probes.CollapseError) and chief:
            # The monitor's per-epoch ranks, stds and kNN up to the collapse (for plots).
            record = monitor[0].save_record(os.path.join(workdir, "collapse.json"),
                                            method=FLAGS.method)
            record = f"; the monitor's record is in {record}"
        fail(f"{error}; nothing was exported" + (
            f" (the last good epoch's checkpoint is in {checkpoints})" if saved else
            " and no epoch was checkpointed (the run collapsed in its first epoch)") + record,
            status=1)
    except tf.errors.OpError as error:
        if ssl and dataset.streaming and isinstance(error, tf.errors.InvalidArgumentError):
            raise UsageError(f"--dataset: {keras_ebm.data.streaming.file_error(error)}") from None
        if FLAGS.strategy != "multi_worker":
            raise
        cause = next((line.strip() for line in error.message.splitlines() if any(
            word in line for word in ("aborted", "Deadline", "timed out", "Socket"))), "lost peer")
        # A failed eager all-reduce leaves TF's ThreadPool open (cross_device_ops never closes
        # it when pool.map raises): a normal exit then prints the pool's __del__ traceback at
        # shutdown, or waits on the broken collective runtime. The checkpoints are closed
        # files by now; TensorBoard's last buffered events may be lost.
        fail(f"--strategy=multi_worker: a collective failed ({cause}): "
             "a worker was lost or timed out; rerun every worker to resume from the last "
             "checkpoint", status=1, hard=True)
    except training.Preempted as error:
        fail(f"stopped by SIGTERM; saved the checkpoint of epoch {error.epoch}"
             + (f", step {error.step}" if error.step else "") + f" in "
             f"{os.path.join(workdir, 'checkpoints')}; rerun the same command to resume",
             status=143)
    seconds = time.perf_counter() - start
    if not result.epochs_run:
        print(f"Nothing to train: the checkpoint is at epoch {result.checkpoint_epoch} "
              f"(--epochs={config['epochs']}); exporting it")
    history = {k: float(v[-1]) for k, v in result.history.history.items() if v}
    metrics = {"method": FLAGS.method, "dataset": FLAGS.dataset, "epochs": config["epochs"],
               "batch_size": config["batch_size"], "train_seconds": round(seconds, 1),
               "rollbacks": result.rollbacks, **{f"final_{k}": v for k, v in history.items()},
               **{k: [float(v) for v in result.history.history[k]] for k in (
                   "effective_rank", "embedding_std", "projection_rank", "projection_std")
                  if k in result.history.history},
               **({"knn_accuracy": monitor[0].knn_history()}
                  if monitor and monitor[0].knn_data is not None else {}),
               **({"backbone": config["backbone"], "replicas": strategy.num_replicas_in_sync}
                  if ssl else {})}
    if ssl and FLAGS.evaluate:
        results.update(probes.evaluation_rows(dataset, {f"{FLAGS.method} (trained)": model.encoder},
                                              num_draws=FLAGS.probe_draws, seed=FLAGS.seed,
                                              evaluate=chief, max_examples=FLAGS.max_eval_examples))
    if not chief:
        return metrics  # only the chief writes the model, the export and the metrics
    if not ssl:
        metrics.update(ebm_recipes.evaluate(model, x_train, x_test, FLAGS, workdir))
    metrics["model"] = training.save_model(model, os.path.join(workdir, "model.keras"))
    metrics["export"] = ebm_recipes.export(model, export_dir, x_train.shape[1:],
                                           None if ssl else kind)
    if results:
        metrics["evaluation"] = results
        print("\n" + probes.format_table(results))
    else:  # log-likelihoods and energies in nats
        print("\n" + "\n".join(f"{k:<40}{v:>14.4f}{' nats' * ('likelihood' in k)}"
                               for k, v in metrics.items() if isinstance(v, float)))
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, default=float)
    print(f"\nTrained in {seconds:.0f} s. Model: {metrics['model']}. SavedModel: "
          f"{metrics['export']}. Metrics: {os.path.join(workdir, 'metrics.json')}")
    return metrics


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        validate_flags()
        export_dir = FLAGS.export_dir or os.path.join(REPO, "saved_models", FLAGS.method)
        try:
            from keras_ebm.export import check_export_dir

            check_export_dir(export_dir)
        except ValueError as error:
            raise UsageError(f"--export_dir={error}") from None
        created = not os.path.exists(FLAGS.workdir)
        ebm_recipes.prepare_workdir(FLAGS.workdir, UsageError)
        try:
            train(FLAGS.workdir, export_dir)
        except UsageError:
            # A setting refused once the data are known: leave no workdir behind.
            if created and set(os.listdir(FLAGS.workdir)) <= {".lock"}:
                shutil.rmtree(FLAGS.workdir, ignore_errors=True)
            raise
    except UsageError as error:
        fail(str(error))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
