"""From a method's name to a trained, evaluated and exported model in one call.

`run` is what `tools/train.py` does; the CLI only turns its flags into a
`RunConfig`. Each field of `RunConfig` has the name of its flag:

    >>> import keras_ebm
    >>> result = keras_ebm.experiment.run(
    ...     method="moco", dataset="digits", workdir="runs/moco",
    ...     settings={"epochs": 20, "queue_size": 1024})
    >>> result.metrics["evaluation"], result.metrics["export"]
    >>> result.model.encoder  # the trained keras.Model

`run` loads the data (`keras_ebm.data`), builds the preset
(`keras_ebm.presets.build`), trains it resumably (`keras_ebm.training.fit`:
checkpoints, divergence guard, rollback, preemption), evaluates it (linear
probes and kNN for the self-supervised methods; exact or calibrated
likelihoods, samples and figures for the energies:
`keras_ebm.evaluation.evaluate_energy`), saves `<workdir>/model.keras` and
`<workdir>/metrics.json`, and exports a SavedModel to
`<export_dir>/<version>/`. A rerun with the same workdir resumes.

Errors:

- **Bad input** (a setting out of range or unfit for the data, an unreadable
  dataset or workdir, a checkpoint of another setting) raises
  `keras_ebm.presets.SettingError` before anything is exported; its message
  starts with the name of the field or setting (`"keep_checkpoints=-1 must be
  >= 0"`), and a workdir that `run` created is removed again.
- **A run that stops** (divergence, collapse, SIGTERM, a lost worker) raises
  `RunStopped`, whose message says where the last good checkpoint is;
  nothing is exported.
"""

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time

from keras_ebm import presets

SettingError = presets.SettingError
STOP_REASONS = ("diverged", "collapsed", "preempted", "lost_worker")


class RunStopped(RuntimeError):
    """Training stopped before its last epoch and nothing was exported.

    Attributes:
        reason: "diverged" (a non-finite loss, energy or weight), "collapsed"
            (the collapse monitor), "preempted" (SIGTERM: the rerun resumes at
            the saved step) or "lost_worker" (a multi-worker collective failed).
    """

    def __init__(self, message, reason):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass
class RunConfig:
    """Everything `run` needs; each field is the `tools/train.py` flag of the same name.

    Attributes:
        method: one of `keras_ebm.presets.METHODS`.
        dataset: "digits", "binary_digits", "toy:<rings|moons|8gaussians|
            checkerboard>", "tfds:NAME", "folder:PATH" or "tfrecord:DIR".
        workdir: checkpoints, TensorBoard logs, model.keras and metrics.json.
        export_dir: the TF Serving base path; None: `<workdir>/saved_model`.
        settings: the preset's settings to override, e.g. `{"epochs": 50,
            "temperature": 0.1}` (`keras_ebm.presets.defaults(method)` lists
            them). A setting that only other methods read is dropped with a
            warning.
        seed: the random seed of the weights, the data order and the draws.
        jit_compile: "auto" (XLA on GPUs and TPUs, and where an EBM preset asks
            for it), "true"/True or "false"/False.
        mixed_precision: "none", "bfloat16" or "float16".
        strategy: "default", "mirrored", "multi_worker" (TF_CONFIG) or "tpu";
            self-supervised methods only. collective_timeout: seconds a
            multi-worker collective waits for a lost peer.
        sync_batch_norm: synchronised batch norm across replicas.
        steps_per_epoch: at most this many updates per epoch (None: all).
        keep_checkpoints, on_divergence, max_rollbacks, rollback_lr_factor:
            as in `keras_ebm.training.fit`.
        collapse_monitor, collapse_min_rank, collapse_min_rank_ratio: the
            self-supervised methods' collapse monitor
            (`keras_ebm.presets.collapse_monitor`).
        evaluate, probe_draws, max_eval_examples: the self-supervised methods'
            linear probes and kNN before and after training.
        data_dir, image_size, max_train_examples, max_image_pixels, stream:
            image loading (`keras_ebm.data.load`; stream "auto", "always" or
            "never").
        toy_train_samples, toy_test_samples: points of a 2-D toy.
        grid_size, ais: the energies' evaluation (quadrature grid on 2-D toys;
            AIS estimate of an RBM's log Z).
        epoch_program: cd/pcd on an RBM: each epoch as one XLA program.
        callbacks: more Keras callbacks for every fit.
        verbose: print progress and the results table.
        warn: callable taking one warning line; None: stderr.
    """

    method: str = "moco"
    dataset: str = "digits"
    workdir: str = os.path.join("runs", "default")
    export_dir: str = None
    settings: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    jit_compile: object = "auto"
    mixed_precision: str = "none"
    strategy: str = "default"
    collective_timeout: int = 600
    sync_batch_norm: bool = False
    steps_per_epoch: int = None
    keep_checkpoints: int = 3
    on_divergence: str = "stop"
    max_rollbacks: int = 3
    rollback_lr_factor: float = 0.5
    collapse_monitor: bool = True
    collapse_min_rank: float = 1.05
    collapse_min_rank_ratio: float = presets.COLLAPSE_MIN_RANK_RATIO
    evaluate: bool = True
    probe_draws: int = None
    max_eval_examples: int = None
    data_dir: str = None
    image_size: int = None
    max_train_examples: int = None
    max_image_pixels: int = None
    stream: str = "auto"
    toy_train_samples: int = 10000
    toy_test_samples: int = 5000
    grid_size: int = 200
    ais: bool = False
    epoch_program: bool = False
    callbacks: list = dataclasses.field(default_factory=list)
    verbose: bool = True
    warn: object = None

    def __post_init__(self):
        if self.max_image_pixels is None:
            from keras_ebm.data.datasets import DEFAULT_MAX_IMAGE_PIXELS

            self.max_image_pixels = DEFAULT_MAX_IMAGE_PIXELS
        if isinstance(self.jit_compile, bool):
            self.jit_compile = str(self.jit_compile).lower()

    @property
    def ssl(self):
        return self.method in presets.SSL_METHODS

    def validate(self):
        """Raises `SettingError` naming the first bad field or setting.

        Checks every field before anything is built or written. Returns the
        names in `settings` that only other methods read (`run` warns about
        them and drops them).
        """
        if self.method not in presets.METHODS:
            raise SettingError(f"method={self.method!r}: choose one of "
                               f"{', '.join(presets.METHODS)}")
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name not in ("settings", "callbacks", "warn")}
        presets.check_settings({**options, **{k: v for k, v in self.settings.items()
                                              if v is not None}})
        choices = {"jit_compile": ("auto", "true", "false"),
                   "mixed_precision": ("none", "bfloat16", "float16"),
                   "strategy": ("default", "mirrored", "multi_worker", "tpu"),
                   "on_divergence": ("stop", "rollback"), "stream": ("auto", "always", "never")}
        for name, allowed in choices.items():
            if options[name] not in allowed:
                raise SettingError(f"{name}={options[name]!r}: choose one of "
                                   f"{', '.join(allowed)}")
        if self.keep_checkpoints < 0:  # max_rollbacks: >= 1 (check_settings)
            raise SettingError(f"keep_checkpoints={self.keep_checkpoints} must be >= 0")
        if not 0.0 <= self.collapse_min_rank_ratio < 1.0:
            raise SettingError(f"collapse_min_rank_ratio={self.collapse_min_rank_ratio} must "
                               "be in [0, 1)")
        if not self.ssl and self.strategy != "default":
            raise SettingError(f"strategy={self.strategy}: the EBM recipes train on one device "
                               "(the keras_ebm EBM methods themselves run under tf.distribute)")
        if self.epoch_program and self.method not in ("cd", "pcd"):
            raise SettingError(f"epoch_program is for method=cd|pcd with an RBM, not "
                               f"method={self.method}")
        known = set().union(*(presets.defaults(m, kind) for m in presets.METHODS
                              for kind in (None, "toy")))
        for name in self.settings:
            if name in ("seed", "jit_compile"):
                raise SettingError(f"{name}: a field of RunConfig, not a preset setting")
            if name not in known:
                raise SettingError(f"{name}: no method has this setting")
        return presets.ignored_settings(self.method, list(self.settings))

    def overrides(self):
        """The preset settings this run sets: the given ones the method reads, seed, XLA."""
        from keras_ebm.distribute import default_jit_compile

        read = presets.defaults(self.method)
        values = {k: v for k, v in self.settings.items() if k in read and v is not None}
        values["seed"] = self.seed
        # "auto": XLA where an EBM preset turns it on (the toys' PCD) or where the method
        # picks it (an RBM's Gibbs blocks on CPU); the self-supervised methods on GPUs and TPUs.
        values["jit_compile"] = "auto" if self.jit_compile == "auto" and not self.ssl else (
            default_jit_compile(self.jit_compile, self.strategy))
        return values


@dataclasses.dataclass
class RunResult:
    """What `run` returns: the trained `model`, the `metrics` written to metrics.json,
    and the `keras_ebm.training.TrainingResult` of the fit."""

    model: object
    metrics: dict
    training: object


def run(config=None, **fields):
    """Trains, evaluates, saves and exports one method: `tools/train.py` as a function.

    Args:
        config: a `RunConfig`, or None to build one from `fields`.
        **fields: `RunConfig` fields (`method`, `dataset`, `workdir`,
            `settings`, ...), applied over `config`.

    Returns:
        A `RunResult`.

    Raises:
        SettingError: bad input, before anything is exported (the message
            starts with the field's or setting's name).
        RunStopped: training diverged, collapsed, was preempted or lost a
            worker; nothing was exported.

    Example:

    >>> result = keras_ebm.experiment.run(method="pcd", dataset="toy:rings",
    ...                                   workdir="runs/pcd_rings")
    >>> result.metrics["calibrated_test_log_likelihood"]
    """
    config = dataclasses.replace(config or RunConfig(), **fields)
    warn = config.warn or _stderr
    for name in config.validate():
        warn(f"warning: {name} is ignored by method={config.method}")
    export_dir = config.export_dir or os.path.join(config.workdir, "saved_model")
    from keras_ebm.export import check_export_dir

    try:
        check_export_dir(export_dir)
    except ValueError as error:
        raise SettingError(f"export_dir={error}") from None
    created = not os.path.exists(config.workdir)
    _prepare_workdir(config.workdir)
    try:
        return _with_strategy(config, export_dir, warn)
    except SettingError:
        # A setting refused once the data are known: leave no workdir behind.
        if created and set(os.listdir(config.workdir)) <= {".lock"}:
            shutil.rmtree(config.workdir, ignore_errors=True)
        raise


def _stderr(line):
    print(line, file=sys.stderr, flush=True)


def _prepare_workdir(workdir):
    """Creates the workdir and checks that it is writable."""
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir) as probe:
            probe.write(b"writable")
    except OSError as error:
        raise SettingError(f"workdir={workdir} cannot be written: {error.strerror}") from None


def _with_strategy(config, export_dir, warn):
    from keras_ebm import distribute
    from keras_ebm import training

    try:  # the strategy comes before any TensorFlow op (multi-worker collectives)
        strategy = distribute.get_strategy(
            config.strategy, collective_timeout=config.collective_timeout) if config.ssl else None
    except ValueError as error:
        raise SettingError(f"strategy={config.strategy}: {error}") from None
    chief = distribute.is_chief(strategy) if config.ssl else True
    try:  # one owner per workdir, from here to the export (the chief's; workers share it)
        with training.WorkdirLock(config.workdir) if chief else contextlib.nullcontext():
            return _run(config, strategy, chief, export_dir, warn)
    except training.WorkdirBusy as error:
        raise SettingError(f"workdir={error}") from None


def _load_data(config):
    """(x_train or the image dataset, x_test or None, EBM data kind or None)."""
    import keras_ebm

    try:
        if config.ssl:
            dataset = keras_ebm.data.load(
                config.dataset, data_dir=config.data_dir, image_size=config.image_size,
                max_train_examples=config.max_train_examples,
                max_image_pixels=config.max_image_pixels,
                stream={"always": True, "never": False}.get(config.stream, "auto"))
            return dataset, None, None
        return keras_ebm.data.load_energy_data(
            config.dataset, seed=config.seed, toy_train_samples=config.toy_train_samples,
            toy_test_samples=config.toy_test_samples)
    except (ValueError, keras_ebm.data.DataError) as error:
        message = str(error)
        raise SettingError(message[2:] if message.startswith("--") else
                           f"dataset: {message}") from None


def _epoch_program_data(model, x_train, config, batch_size, epochs):
    """`training.fit`'s dataset_fn for `epoch_program` (one element per epoch), else None."""
    if not config.epoch_program:
        return None
    if config.dataset != "binary_digits":
        raise SettingError("epoch_program needs method=cd|pcd on dataset=binary_digits")
    try:
        model.check_epoch_program()
    except ValueError as error:
        raise SettingError(f"epoch_program: {error}") from None
    return lambda initial_epoch, steps: (model.epoch_dataset(
        x_train, batch_size, seed=config.seed, initial_epoch=initial_epoch, epochs=epochs,
        steps_per_epoch=steps), 1)


@dataclasses.dataclass
class _Plan:
    """The built model and what its fit needs."""

    model: object
    preset: dict  # the preset's settings with the run's overrides
    kind: str  # the EBM data kind, None for images
    steps: int  # updates per epoch
    batch_size: int
    dataset_fn: object  # epoch_program's data, or None
    state: dict  # the checkpoints' fingerprint (state-shaping settings)
    settings: dict  # the other settings, recorded in the checkpoints


def _build(config, x_train, kind, strategy):
    from keras_ebm import distribute

    overrides = config.overrides()
    preset = presets.resolve(config.method, overrides, kind)
    steps = min(presets.default_steps_per_epoch(preset, len(x_train)),
                config.steps_per_epoch or len(x_train))
    batch_size = min(preset["batch_size"], len(x_train))
    try:
        with strategy.scope() if config.ssl else contextlib.nullcontext():
            model = presets.build(config.method, x_train, steps_per_epoch=steps, **overrides)
            if config.sync_batch_norm:
                distribute.sync_batch_norm(model)
        dataset_fn = _epoch_program_data(model, x_train, config, batch_size, preset["epochs"])
    except SettingError:
        raise
    except ValueError as error:
        if str(error).startswith("--"):
            raise SettingError(str(error)[2:]) from None
        raise
    state, settings = presets.fingerprint(config.method, preset, x_train.shape[1:])
    state = {**state, "dataset": config.dataset, "num_examples": len(x_train)}
    return _Plan(model, preset, kind, steps, batch_size, dataset_fn, state, settings)


def _stopped(error, config, monitor, chief):
    """The `RunStopped` of a diverged or collapsed run: where its last good checkpoint is."""
    from keras_ebm.evaluation import CollapseError

    checkpoints = os.path.join(config.workdir, "checkpoints")
    saved = os.path.isdir(checkpoints) and any(
        name.endswith(".weights.h5") for name in os.listdir(checkpoints))
    record = ""
    collapsed = isinstance(error, CollapseError)
    if collapsed and chief:
        # The monitor's per-epoch ranks, stds and kNN up to the collapse (for plots).
        path = monitor[0].save_record(os.path.join(config.workdir, "collapse.json"),
                                      method=config.method)
        record = f"; the monitor's record is in {path}"
    return RunStopped(f"{error}; nothing was exported" + (
        f" (the last good epoch's checkpoint is in {checkpoints})" if saved else
        " and no epoch was checkpointed (the run collapsed in its first epoch)") + record,
        "collapsed" if collapsed else "diverged")


def _fit(config, plan, data, monitor, chief, warn):
    import tensorflow as tf

    import keras_ebm
    from keras_ebm import training
    from keras_ebm.evaluation import CollapseError

    try:
        return training.fit(
            plan.model, data, workdir=config.workdir, epochs=plan.preset["epochs"],
            batch_size=plan.batch_size, seed=config.seed,
            steps_per_epoch=plan.steps, with_index=config.method == "pirl",
            keep_checkpoints=config.keep_checkpoints, on_divergence=config.on_divergence,
            max_rollbacks=config.max_rollbacks, rollback_lr_factor=config.rollback_lr_factor,
            optimizer=presets.optimizer_factory(config.method, plan.steps, plan.kind,
                                                **config.overrides()),
            # epoch_program: one XLA program an epoch (fit compiles with this value)
            jit_compile=True if plan.dataset_fn is not None else plan.preset["jit_compile"],
            callbacks=[*monitor, *config.callbacks],
            verbose=(1 if sys.stdout.isatty() else 2) if config.verbose else 0,
            dataset_fn=plan.dataset_fn, chief=chief, fingerprint=plan.state,
            settings=plan.settings, warn=warn)
    except training.CheckpointMismatch as error:
        raise SettingError(str(error)) from None
    except training.CheckpointError as error:
        raise SettingError(f"workdir: {error}") from None
    except (training.Diverged, CollapseError) as error:
        raise _stopped(error, config, monitor, chief) from None
    except training.Preempted as error:
        raise RunStopped(
            f"stopped by SIGTERM; saved the checkpoint of epoch {error.epoch}"
            + (f", step {error.step}" if error.step else "") + " in "
            f"{os.path.join(config.workdir, 'checkpoints')}; rerun the same command to resume",
            "preempted") from None
    except tf.errors.OpError as error:
        if config.ssl and data.streaming and isinstance(error, tf.errors.InvalidArgumentError):
            raise SettingError(f"dataset: {keras_ebm.data.streaming.file_error(error)}") from None
        if config.strategy != "multi_worker":
            raise
        cause = next((line.strip() for line in error.message.splitlines() if any(
            word in line for word in ("aborted", "Deadline", "timed out", "Socket"))), "lost peer")
        # A failed eager all-reduce leaves TF's ThreadPool open (cross_device_ops never closes
        # it when pool.map raises): a normal exit then prints the pool's __del__ traceback at
        # shutdown, or waits on the broken collective runtime, so the CLI exits hard. The
        # checkpoints are closed files by now; TensorBoard's last buffered events may be lost.
        raise RunStopped(f"strategy=multi_worker: a collective failed ({cause}): a worker was "
                         "lost or timed out; rerun every worker to resume from the last "
                         "checkpoint", "lost_worker") from None


def _export(model, export_dir, example_shape, kind):
    """The encoder (kind None) or the energy (serving_default and energy) as a SavedModel.

    The signature refuses inputs of another shape, non-finite values and, unless
    `kind` is "toy" (points in [-4, 4]^2), values outside [0, 1].
    """
    from keras_ebm.export import export_encoder
    from keras_ebm.export import export_energy

    if kind is None:
        return export_encoder(export_dir, model.encoder, example_shape)
    return export_energy(export_dir, model.energy, example_shape,
                         value_range=None if kind == "toy" else (0.0, 1.0))


def _run(config, strategy, chief, export_dir, warn):
    import keras

    from keras_ebm import evaluation as probes
    from keras_ebm import training

    say = print if config.verbose else (lambda *args, **kwargs: None)
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(
        "float32" if config.mixed_precision == "none" else f"mixed_{config.mixed_precision}")
    data, x_test, kind = _load_data(config)
    x_train = data.standin() if config.ssl else data  # images: a zero-copy stand-in
    plan = _build(config, x_train, kind, strategy)
    model, preset = plan.model, plan.preset
    results = {}
    evaluate = dict(num_draws=config.probe_draws, seed=config.seed, evaluate=chief,
                    max_examples=config.max_eval_examples)
    if config.ssl and config.evaluate:
        results = probes.evaluation_rows(data, {"encoder at init": model.encoder},
                                         raw_pixels=True, **evaluate)
    say(f"Training {config.method} on {config.dataset} ({len(x_train)} examples, {plan.steps} "
        f"steps/epoch, {preset['epochs']} epochs" + (
            f", backbone {preset['backbone']}, {strategy.num_replicas_in_sync} replica(s))"
            if config.ssl else ")"), flush=True)
    monitor = [presets.collapse_monitor(
        data, min_effective_rank=config.collapse_min_rank,
        min_rank_ratio=config.collapse_min_rank_ratio)] if config.ssl and (
            config.collapse_monitor) else []
    start = time.perf_counter()
    result = _fit(config, plan, data, monitor, chief, warn)
    seconds = time.perf_counter() - start
    if not result.epochs_run:
        say(f"Nothing to train: the checkpoint is at epoch {result.checkpoint_epoch} "
            f"(epochs={preset['epochs']}); exporting it")
    history = result.history.history
    metrics = {"method": config.method, "dataset": config.dataset, "epochs": preset["epochs"],
               "batch_size": preset["batch_size"], "train_seconds": round(seconds, 1),
               "rollbacks": result.rollbacks,
               **{f"final_{k}": float(v[-1]) for k, v in history.items() if v},
               **{k: [float(v) for v in history[k]] for k in (
                   "effective_rank", "embedding_std", "projection_rank", "projection_std")
                  if k in history},
               **({"knn_accuracy": monitor[0].knn_history()}
                  if monitor and monitor[0].knn_data is not None else {}),
               **({"backbone": preset["backbone"], "replicas": strategy.num_replicas_in_sync}
                  if config.ssl else {})}
    if config.ssl and config.evaluate:
        results.update(probes.evaluation_rows(
            data, {f"{config.method} (trained)": model.encoder}, **evaluate))
    if not chief:
        return RunResult(model, metrics, result)  # only the chief writes and exports
    if not config.ssl:
        metrics.update(probes.evaluate_energy(
            model, x_train, x_test, method=config.method, workdir=config.workdir,
            grid_size=config.grid_size, ais=config.ais, seed=config.seed,
            dataset=config.dataset))
    metrics["model"] = training.save_model(model, os.path.join(config.workdir, "model.keras"))
    metrics["export"] = _export(model, export_dir, x_train.shape[1:], kind)
    if results:
        metrics["evaluation"] = results
        say("\n" + probes.format_table(results))
    else:  # log-likelihoods and energies in nats
        say("\n" + "\n".join(f"{k:<40}{v:>14.4f}{' nats' * ('likelihood' in k)}"
                             for k, v in metrics.items() if isinstance(v, float)))
    path = os.path.join(config.workdir, "metrics.json")
    with open(path, "w") as f:
        json.dump(metrics, f, indent=2, default=float)
    say(f"\nTrained in {seconds:.0f} s. Model: {metrics['model']}. SavedModel: "
        f"{metrics['export']}. Metrics: {path}")
    return RunResult(model, metrics, result)
