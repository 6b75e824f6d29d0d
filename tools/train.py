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
writes no export; a diverged run exits with status 1 and exports nothing.
"""

import contextlib
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ebm_recipes  # noqa: E402  (the EBM flags, data and evaluation)
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from keras_ebm import presets  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESET = "the method's preset"
flags.DEFINE_enum("method", "moco", presets.METHODS, "Method to train.")
flags.DEFINE_string("dataset", "digits", "Data: 'digits' (embedded 8x8 images, no download), "
                    "'binary_digits' (EBMs), 'toy:<rings|moons|8gaussians|checkerboard>' (EBMs), "
                    "'tfds:NAME' (a prepared TFDS dataset, see --data_dir) or 'folder:PATH' "
                    "(one sub-folder of images per class, PATH/<class>/<image>.png|jpg).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir holding prepared datasets.")
flags.DEFINE_integer("image_size", None, "Resize images to this size (square).")
flags.DEFINE_integer("max_train_examples", None, "Use at most this many training images.")
flags.DEFINE_string("backbone", None, f"Encoder: small_cnn, small_resnet, resnet18_cifar, "
                    f"resnet50, tiny_cnn (default: {PRESET}).")
flags.DEFINE_integer("steps_per_epoch", None, "Limit each epoch to this many steps.")
flags.DEFINE_enum("optimizer", None, ["adamw", "sgd", "lars"], f"Optimizer (default: {PRESET}).")
flags.DEFINE_enum("lr_scaling", None, ["none", "linear", "sqrt"],
                  "Scale --learning_rate with the global batch (x B/256 or x sqrt(B)).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy; multi_worker reads TF_CONFIG.")
flags.DEFINE_bool("sync_batch_norm", False, "Synchronise batch-norm statistics across replicas.")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                  "XLA: auto uses it on GPUs and TPUs only (1.8x slower on CPUs).")
flags.DEFINE_enum("mixed_precision", "none", ["none", "bfloat16", "float16"],
                  "Mixed precision; losses and energies stay in float32.")
flags.DEFINE_string("workdir", os.path.join(REPO, "runs", "default"), "Logs, checkpoints, model.")
flags.DEFINE_string("export_dir", None, "TF Serving base path (<repo>/saved_models/<method>).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("keep_checkpoints", 3, "Per-epoch snapshots kept in <workdir>/checkpoints.")
flags.DEFINE_float("temperature", None, f"Softmax temperature (default: {PRESET}).")
for _name, _help in [("epochs", "Training epochs"), ("batch_size", "Global batch size"),
                     ("queue_size", "MoCo: negative keys in the queue"),
                     ("bn_splits", "MoCo: batch-norm groups (shuffle-BN substitute; 1 = off)"),
                     ("num_negatives", "PIRL: negatives drawn from the memory bank per step"),
                     ("jigsaw_resize", "PIRL: resize images to this size before the 3x3 grid"),
                     ("jigsaw_patch_size", "PIRL: random crop of this size from each cell"),
                     ("patch_dim", "PIRL: width of the shared per-patch embedding of g"),
                     ("projection_dim", "Output dimension of the projection head")]:
    flags.DEFINE_integer(_name, None, f"{_help} (default: {PRESET}).")
for _name, _help in [("learning_rate", "Peak learning rate"), ("weight_decay", "Weight decay"),
                     ("warmup_epochs", "Linear warm-up epochs before the cosine decay"),
                     ("momentum", "MoCo: EMA coefficient of the key encoder"),
                     ("bank_momentum", "PIRL: momentum of the memory-bank update"),
                     ("loss_weight", "PIRL: weight lambda of the patch NCE term"),
                     ("margin", "ContrastiveEmbedding: margin of the hinge on negative pairs"),
                     ("augment_strength", "Colour-jitter strength s"),
                     ("crop_scale_min", "Smallest area fraction of the random resized crop"),
                     ("blur_probability", "Probability of a Gaussian blur"),
                     ("grayscale_probability", "Probability of converting to grayscale")]:
    flags.DEFINE_float(_name, None, f"{_help} (default: {PRESET}).")
flags.DEFINE_enum("nce_form", None, ["nce", "infonce"], "PIRL: the lecture's NCE or InfoNCE.")
flags.DEFINE_enum("energy", None, ["cosine", "l2"], "ContrastiveEmbedding: 1 - cos or |a - b|.")
flags.DEFINE_list("projection_hidden_dims", None, "Hidden widths of the projection head.")
flags.DEFINE_bool("projection_batch_norm", None, f"Batch norm in the head (default: {PRESET}).")
flags.DEFINE_bool("flip", None, f"Random horizontal flips (default: {PRESET}).")
flags.DEFINE_bool("evaluate", True, "Run the linear probes and kNN after training.")
flags.DEFINE_integer("probe_draws", None, "Label draws per probe (default: evaluation.PROTOCOL).")
FLAGS = flags.FLAGS
EXTRA_CALLBACKS = []  # appended to every fit (tests simulate crashes with it)
SSL_ONLY = ("backbone", "temperature", "queue_size", "projection_dim", "num_negatives")


class UsageError(Exception):
    """Bad input: one line, exit status 2."""


def fail(message, status=2):
    print(f"train.py: {'error: ' if status == 2 else ''}{message}", file=sys.stderr)
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
    given = {name: FLAGS[name].value for name in FLAGS if FLAGS[name].value is not None}
    try:
        presets.check_settings(given)
    except presets.SettingError as error:
        raise UsageError(f"--{error}") from None
    if FLAGS.keep_checkpoints < 0:
        raise UsageError(f"--keep_checkpoints={FLAGS.keep_checkpoints} must be >= 0")
    ssl = FLAGS.method in presets.SSL_METHODS
    ebm_recipes.validate(FLAGS, ssl, UsageError)
    for name in (SSL_ONLY if not ssl else ebm_recipes.EBM_ONLY):
        if FLAGS[name].present:
            print(f"train.py: warning: --{name} is ignored by --method={FLAGS.method}",
                  file=sys.stderr)


def use_xla():  # --jit_compile=auto: XLA on GPUs and TPUs only
    from keras_ebm.distribute import default_jit_compile

    return default_jit_compile(FLAGS.jit_compile, FLAGS.strategy)


def train(workdir, export_dir):
    import keras

    import keras_ebm
    from keras_ebm import distribute
    from keras_ebm import evaluation as probes
    from keras_ebm import training

    ssl = FLAGS.method in presets.SSL_METHODS
    try:  # the strategy comes before any TensorFlow op (multi-worker collectives)
        strategy = distribute.get_strategy(FLAGS.strategy) if ssl else None
    except ValueError as error:
        raise UsageError(f"--strategy={FLAGS.strategy}: {error}") from None
    keras.utils.set_random_seed(FLAGS.seed)
    keras.mixed_precision.set_global_policy(
        "float32" if FLAGS.mixed_precision == "none" else f"mixed_{FLAGS.mixed_precision}")
    try:
        if ssl:
            dataset = keras_ebm.data.load(FLAGS.dataset, data_dir=FLAGS.data_dir,
                                          image_size=FLAGS.image_size,
                                          max_train_examples=FLAGS.max_train_examples)
            x_train = dataset.x_train
        else:
            x_train, x_test, kind = ebm_recipes.load_data(FLAGS.dataset, FLAGS)
    except (ValueError, keras_ebm.data.DataError) as error:
        raise UsageError(f"--dataset: {error}".replace("--dataset: --", "--")) from None
    config = presets.resolve(FLAGS.method, overrides())
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
    chief = distribute.is_chief(strategy) if ssl else True
    results = {}
    if ssl and FLAGS.evaluate:
        results = probes.evaluation_rows(dataset, {"encoder at init": model.encoder},
                                         num_draws=FLAGS.probe_draws, seed=FLAGS.seed,
                                         raw_pixels=True, evaluate=chief)
    print(f"Training {FLAGS.method} on {FLAGS.dataset} ({len(x_train)} examples, {steps} "
          f"steps/epoch, {config['epochs']} epochs" + (f", backbone {config['backbone']}, "
          f"{strategy.num_replicas_in_sync} replica(s))" if ssl else ")"), flush=True)
    start = time.perf_counter()
    try:
        result = training.fit(
            model, x_train, workdir=workdir, epochs=config["epochs"],
            batch_size=min(config["batch_size"], len(x_train)), seed=FLAGS.seed,
            steps_per_epoch=steps, with_index=FLAGS.method == "pirl",
            keep_checkpoints=FLAGS.keep_checkpoints, on_divergence=FLAGS.on_divergence,
            max_rollbacks=FLAGS.max_rollbacks, rollback_lr_factor=FLAGS.rollback_lr_factor,
            optimizer=presets.optimizer_factory(FLAGS.method, steps, **overrides()),
            jit_compile=config["jit_compile"], callbacks=EXTRA_CALLBACKS,
            verbose=1 if sys.stdout.isatty() else 2, dataset_fn=dataset_fn)
    except training.Diverged as error:
        fail(f"{error}; nothing was exported (the last good epoch's checkpoint is in "
             f"{os.path.join(workdir, 'checkpoints')})", status=1)
    seconds = time.perf_counter() - start
    if not result.epochs_run:
        print(f"Nothing to train: the checkpoint is at epoch {config['epochs']}; exporting it")
    history = {k: float(v[-1]) for k, v in result.history.history.items() if v}
    metrics = {"method": FLAGS.method, "dataset": FLAGS.dataset, "epochs": config["epochs"],
               "batch_size": config["batch_size"], "train_seconds": round(seconds, 1),
               "rollbacks": result.rollbacks, **{f"final_{k}": v for k, v in history.items()},
               **({"backbone": config["backbone"], "replicas": strategy.num_replicas_in_sync}
                  if ssl else {})}
    if ssl and FLAGS.evaluate:
        results.update(probes.evaluation_rows(dataset, {f"{FLAGS.method} (trained)": model.encoder},
                                              num_draws=FLAGS.probe_draws, seed=FLAGS.seed,
                                              evaluate=chief))
    if not chief:
        return metrics  # only the chief writes the model, the export and the metrics
    if not ssl:
        metrics.update(ebm_recipes.evaluate(model, kind, x_train, x_test, FLAGS, workdir))
    metrics["model"] = training.save_model(model, os.path.join(workdir, "model.keras"))
    metrics["export"] = ebm_recipes.export(model, export_dir, x_train.shape[1:], ssl)
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
        ebm_recipes.prepare_workdir(FLAGS.workdir, UsageError)
        train(FLAGS.workdir, export_dir)
    except UsageError as error:
        fail(str(error))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
