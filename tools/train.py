r"""Trains a keras_ebm method, evaluates it and exports it for TF Serving.

    python tools/train.py --flagfile=configs/moco.flags
    python tools/train.py --method=simclr --dataset=digits --epochs=100
    python tools/train.py --flagfile=configs/pirl.flags
    python tools/train.py --flagfile=configs/contrastive_embedding.flags

Writes into --workdir: TensorBoard logs (tb/), checkpoints (checkpoints/),
the trained model (model.keras) and the evaluation (metrics.json); exports the
encoder as a SavedModel to <export_dir>/<version>/ (serving_default: `images`
float32 [batch, H, W, C] in [0, 1] -> `embeddings`).

Bad input (an unknown flag or method, a missing dataset, --epochs=0, ...)
prints one line naming the flag or file, exits with status 2 and writes no
export. This is the only module of the project that reads FLAGS.
"""

import json
import math
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

import ebm_recipes  # noqa: E402  (defines the EBM flags)

SSL_METHODS = ("simclr", "moco", "pirl", "contrastive_embedding")
EBM_METHODS = ebm_recipes.EBM_METHODS
METHODS = SSL_METHODS + EBM_METHODS

flags.DEFINE_string("method", "moco", f"Method to train: one of {', '.join(METHODS)}.")
flags.DEFINE_string("dataset", "digits",
                    "Dataset: 'digits' (embedded, no download), 'tfds:NAME' or 'folder:PATH'.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir holding prepared datasets.")
flags.DEFINE_integer("image_size", None, "Resize images to this size (square); default: as stored.")
flags.DEFINE_integer("max_train_examples", None, "Use at most this many training images.")
flags.DEFINE_string("backbone", "small_cnn",
                    "Encoder: small_cnn, small_resnet, resnet18_cifar, resnet50, tiny_cnn.")
flags.DEFINE_integer("epochs", 100, "Training epochs.")
flags.DEFINE_integer("steps_per_epoch", None, "Limit each epoch to this many steps (smoke tests).")
flags.DEFINE_integer("batch_size", 256, "Global batch size (images; each gives two views).")
flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate (after warm-up).")
flags.DEFINE_enum("optimizer", "adamw", ["adamw", "sgd", "lars"], "Optimizer.")
flags.DEFINE_enum("lr_scaling", "none", ["none", "linear", "sqrt"],
                  "Scale --learning_rate with the global batch: linear (x B/256) or sqrt (x sqrt(B)).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy; multi_worker reads TF_CONFIG.")
flags.DEFINE_bool("sync_batch_norm", False, "Synchronise batch-norm statistics across replicas.")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                  "XLA: auto uses it on GPUs and TPUs only (on CPUs it made a ResNet-18 step "
                  "1.8x slower).")
flags.DEFINE_enum("mixed_precision", "none", ["none", "bfloat16", "float16"],
                  "Mixed precision; losses and energies stay in float32.")
flags.DEFINE_float("weight_decay", 1e-4, "Weight decay.")
flags.DEFINE_float("warmup_epochs", 5, "Linear warm-up epochs before the cosine decay.")
flags.DEFINE_string("workdir", "runs/default", "Folder for logs, checkpoints, model and metrics.")
flags.DEFINE_string("export_dir", None, "TF Serving model base path (default saved_models/<method>).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("keep_checkpoints", 3,
                     "Per-epoch snapshots kept in <workdir>/checkpoints (older ones are deleted; "
                     "0 keeps only the resumable backup).")
# Method hyper-parameters.
flags.DEFINE_float("temperature", None,
                   "Softmax temperature (default: SimCLR 0.5, MoCo 0.2, PIRL 0.07).")
flags.DEFINE_integer("queue_size", 4096, "MoCo: number of negative keys in the queue.")
flags.DEFINE_float("momentum", 0.99, "MoCo: EMA coefficient of the key encoder.")
flags.DEFINE_integer("bn_splits", 8, "MoCo: batch-norm groups (shuffle-BN substitute; 1 = off).")
flags.DEFINE_integer("num_negatives", 4096, "PIRL: negatives drawn from the memory bank per step.")
flags.DEFINE_float("bank_momentum", 0.5, "PIRL: momentum of the memory-bank update.")
flags.DEFINE_float("loss_weight", 0.5, "PIRL: weight lambda of the patch (jigsaw) NCE term.")
flags.DEFINE_enum("nce_form", "nce", ["nce", "infonce"],
                  "PIRL: the lecture's NCE or the InfoNCE (softmax) form.")
flags.DEFINE_integer("jigsaw_resize", None,
                     "PIRL: resize images to this size before cutting the 3x3 jigsaw grid.")
flags.DEFINE_integer("jigsaw_patch_size", None,
                     "PIRL: random crop of this size from each jigsaw cell (default: whole cell).")
flags.DEFINE_integer("patch_dim", 128, "PIRL: width of the shared per-patch embedding of g.")
flags.DEFINE_enum("energy", "cosine", ["cosine", "l2"],
                  "ContrastiveEmbedding: energy between embeddings, 1 - cos or |a - b|.")
flags.DEFINE_float("margin", 0.5, "ContrastiveEmbedding: margin of the hinge on negative pairs.")
flags.DEFINE_list("projection_hidden_dims", ["512"], "Hidden widths of the projection head.")
flags.DEFINE_integer("projection_dim", 128, "Output dimension of the projection head.")
flags.DEFINE_bool("projection_batch_norm", None,
                  "Batch norm in the projection head (default: SimCLR and ContrastiveEmbedding "
                  "yes, MoCo and PIRL no).")
# Augmentation.
flags.DEFINE_float("augment_strength", 1.0, "Colour-jitter strength s (SimCLR).")
flags.DEFINE_float("crop_scale_min", 0.2, "Smallest area fraction of the random resized crop.")
flags.DEFINE_bool("flip", True, "Random horizontal flips.")
flags.DEFINE_float("blur_probability", 0.5, "Probability of a Gaussian blur.")
flags.DEFINE_float("grayscale_probability", 0.2, "Probability of converting to grayscale.")
# Evaluation.
flags.DEFINE_bool("evaluate", True, "Run the linear probes and kNN after training.")
flags.DEFINE_integer("probe_draws", 10, "Label draws averaged by the few-label probes.")

FLAGS = flags.FLAGS


# Callbacks appended to every fit (tests use it to simulate a crash mid-run).
EXTRA_CALLBACKS = []


class UsageError(Exception):
    """Bad input: printed as one line, exit status 2."""


class TrainingError(Exception):
    """Training failed (diverged): printed as one line, exit status 1, nothing exported."""


def fail(message):
    print(f"train.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        fail(str(error).splitlines()[0])


def _finite(name, value, low=None, high=None, low_open=False, high_open=False):
    if value is None:
        return
    if not math.isfinite(value):
        raise UsageError(f"--{name}={value} must be a finite number")
    if low is not None and (value < low or (low_open and value == low)):
        raise UsageError(f"--{name}={value} must be {'>' if low_open else '>='} {low}")
    if high is not None and (value > high or (high_open and value == high)):
        raise UsageError(f"--{name}={value} must be {'<' if high_open else '<='} {high}")


def validate_flags():
    """Checks every flag before anything is built or written."""
    from keras_ebm.backbones import registry

    if FLAGS.method not in METHODS:
        raise UsageError(f"--method={FLAGS.method!r} is unknown; choose one of {', '.join(METHODS)}")
    if FLAGS.method in SSL_METHODS and FLAGS.backbone not in registry.BACKBONES:
        raise UsageError(f"--backbone={FLAGS.backbone!r} is unknown; choose one of "
                         f"{', '.join(registry.BACKBONES)}")
    for name in ("epochs", "batch_size", "queue_size", "bn_splits", "projection_dim",
                 "probe_draws", "num_negatives", "patch_dim"):
        if getattr(FLAGS, name) < 1:
            raise UsageError(f"--{name}={getattr(FLAGS, name)} must be >= 1")
    for name in ("steps_per_epoch", "max_train_examples", "image_size", "jigsaw_resize",
                 "jigsaw_patch_size"):
        if getattr(FLAGS, name) is not None and getattr(FLAGS, name) < 1:
            raise UsageError(f"--{name}={getattr(FLAGS, name)} must be >= 1")
    _finite("learning_rate", FLAGS.learning_rate, 0, low_open=True)
    _finite("weight_decay", FLAGS.weight_decay, 0)
    _finite("warmup_epochs", FLAGS.warmup_epochs, 0)
    _finite("temperature", FLAGS.temperature, 0, low_open=True)
    _finite("momentum", FLAGS.momentum, 0, 1, high_open=True)
    _finite("bank_momentum", FLAGS.bank_momentum, 0, 1, high_open=True)
    _finite("loss_weight", FLAGS.loss_weight, 0, 1)
    _finite("margin", FLAGS.margin, 0, low_open=True)
    _finite("augment_strength", FLAGS.augment_strength, 0)
    _finite("crop_scale_min", FLAGS.crop_scale_min, 0, 1, low_open=True)
    _finite("blur_probability", FLAGS.blur_probability, 0, 1)
    _finite("grayscale_probability", FLAGS.grayscale_probability, 0, 1)
    try:
        hidden = [int(d) for d in FLAGS.projection_hidden_dims]
    except ValueError:
        raise UsageError(f"--projection_hidden_dims={','.join(FLAGS.projection_hidden_dims)} "
                         "must be a comma-separated list of integers") from None
    if any(d < 1 for d in hidden):
        raise UsageError("--projection_hidden_dims must hold positive integers")
    for name in ("step_size", "noise_scale", "energy_l2", "grad_clip", "noise_ratio",
                 "dae_noise_level", "proposal_scale", "reinit_fraction"):
        _finite(name, getattr(FLAGS, name), 0)
    for name in ("num_hidden", "mcmc_steps", "num_chains", "grid_size", "toy_train_samples",
                 "toy_test_samples"):
        if getattr(FLAGS, name) < 1:
            raise UsageError(f"--{name}={getattr(FLAGS, name)} must be >= 1")
    if FLAGS.keep_checkpoints < 0:
        raise UsageError(f"--keep_checkpoints={FLAGS.keep_checkpoints} must be >= 0")
    if FLAGS.max_rollbacks < 0:
        raise UsageError(f"--max_rollbacks={FLAGS.max_rollbacks} must be >= 0")
    _finite("rollback_lr_factor", FLAGS.rollback_lr_factor, 0, 1, low_open=True, high_open=True)
    if FLAGS.on_divergence == "rollback" and FLAGS.method not in EBM_METHODS:
        raise UsageError(f"--on_divergence=rollback is for the EBM methods ({', '.join(EBM_METHODS)}); "
                         f"--method={FLAGS.method} stops at the first non-finite loss")
    if FLAGS.method in EBM_METHODS and FLAGS.strategy != "default":
        raise UsageError(f"--strategy={FLAGS.strategy}: the EBM recipes train on one device "
                         "(the keras_ebm EBM methods themselves run under tf.distribute)")
    if FLAGS.epoch_program and FLAGS.method not in ("cd", "pcd"):
        raise UsageError(f"--epoch_program is for --method=cd|pcd with an RBM, not --method={FLAGS.method}")
    if FLAGS.method == "moco" and FLAGS.batch_size < FLAGS.bn_splits:
        raise UsageError(f"--batch_size={FLAGS.batch_size} must be >= --bn_splits={FLAGS.bn_splits}")


# The smallest jigsaw patch side: a 3x3 grid of 2x2 patches (8x8 digits as
# stored) carries almost no shape, so PIRL asks for a resize instead.
MIN_PATCH_SIZE = 4


def make_jigsaw():
    import keras_ebm

    return keras_ebm.layers.Jigsaw(grid_size=3, patch_size=FLAGS.jigsaw_patch_size,
                                   resize_to=FLAGS.jigsaw_resize, seed=FLAGS.seed, name="jigsaw")


def validate_dataset(dataset):
    """Checks the flags that depend on the data, once it is loaded."""
    num_train = len(dataset.x_train)
    if FLAGS.batch_size > num_train:
        raise UsageError(f"--batch_size={FLAGS.batch_size} is larger than the "
                         f"{num_train} training images of {FLAGS.dataset}")
    if FLAGS.method != "pirl":
        return
    if FLAGS.num_negatives > num_train:
        raise UsageError(f"--num_negatives={FLAGS.num_negatives} is larger than the memory bank "
                         f"(one entry per training image: {num_train})")
    height, width = dataset.image_shape[:2]
    try:
        patch = make_jigsaw().patch_shape(dataset.image_shape)
    except ValueError as error:
        raise UsageError(f"--jigsaw_resize/--jigsaw_patch_size: {error}") from None
    if min(patch[:2]) < MIN_PATCH_SIZE:
        size = FLAGS.jigsaw_resize or f"{height}x{width}"
        raise UsageError(f"--method=pirl: images of {size} are too small for a 3x3 jigsaw grid "
                         f"({patch[0]}x{patch[1]} patches, at least {MIN_PATCH_SIZE}x"
                         f"{MIN_PATCH_SIZE} needed); pass --jigsaw_resize={3 * MIN_PATCH_SIZE} or "
                         "larger")


def prepare_workdir(workdir):
    """Creates the workdir and checks that it is writable."""
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir) as probe:
            probe.write(b"writable")
    except OSError as error:
        raise UsageError(f"--workdir={workdir} cannot be written: {error.strerror}") from None


def build_optimizer(steps_per_epoch):
    import keras

    from keras_ebm.optimizers import LARS, WarmupCosine, scale_learning_rate

    learning_rate = FLAGS.learning_rate
    if FLAGS.lr_scaling != "none":
        learning_rate = scale_learning_rate(learning_rate, FLAGS.batch_size, rule=FLAGS.lr_scaling)
    total_steps = max(1, FLAGS.epochs * steps_per_epoch)
    warmup_steps = min(int(FLAGS.warmup_epochs * steps_per_epoch), total_steps - 1)
    schedule = WarmupCosine(learning_rate, total_steps, warmup_steps=warmup_steps)
    if FLAGS.optimizer == "lars":
        return LARS(schedule, momentum=0.9, weight_decay=FLAGS.weight_decay)
    if FLAGS.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=FLAGS.weight_decay or None)
    return keras.optimizers.AdamW(schedule, weight_decay=FLAGS.weight_decay)


def use_xla():
    """--jit_compile=auto: XLA on GPUs and TPUs, never on CPUs (measured slower there)."""
    import tensorflow as tf

    if FLAGS.jit_compile != "auto":
        return FLAGS.jit_compile == "true"
    if FLAGS.strategy != "default":
        return FLAGS.strategy == "tpu"  # XLA under MirroredStrategy on CPUs fails
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def build_method(image_shape, num_train=None):
    import keras_ebm

    encoder_shape = image_shape
    if FLAGS.method == "pirl" and make_jigsaw().patch_shape(image_shape) != tuple(image_shape):
        # The encoder sees images and patches of another size: fully convolutional.
        encoder_shape = (None, None, image_shape[-1])
    encoder = keras_ebm.backbones.get_backbone(FLAGS.backbone, encoder_shape)
    batch_norm = FLAGS.projection_batch_norm
    if batch_norm is None:
        batch_norm = FLAGS.method in ("simclr", "contrastive_embedding")
    head = keras_ebm.layers.ProjectionHead(
        hidden_dims=[int(d) for d in FLAGS.projection_hidden_dims],
        output_dim=FLAGS.projection_dim, batch_norm=batch_norm, name="projection_head")
    augmenter = keras_ebm.data.make_augmenter(
        image_shape, strength=FLAGS.augment_strength, crop_scale=(FLAGS.crop_scale_min, 1.0),
        flip=FLAGS.flip, grayscale_probability=FLAGS.grayscale_probability,
        blur_probability=FLAGS.blur_probability, seed=FLAGS.seed)
    if FLAGS.method == "simclr":
        return keras_ebm.methods.SimCLR(
            encoder, head, temperature=FLAGS.temperature or 0.5, augmenter=augmenter,
            name="simclr")
    if FLAGS.method == "contrastive_embedding":
        return keras_ebm.methods.ContrastiveEmbedding(
            encoder, head, energy=FLAGS.energy, margin=FLAGS.margin, augmenter=augmenter,
            name="contrastive_embedding")
    if FLAGS.method == "pirl":
        patch_head = keras_ebm.layers.PatchHead(FLAGS.patch_dim, FLAGS.projection_dim,
                                                name="patch_head")
        return keras_ebm.methods.PIRL(
            encoder, head, patch_head, num_negatives=FLAGS.num_negatives,
            temperature=FLAGS.temperature or 0.07, loss_weight=FLAGS.loss_weight,
            bank_momentum=FLAGS.bank_momentum, bank_size=num_train, jigsaw=make_jigsaw(),
            augmenter=augmenter, nce_form=FLAGS.nce_form, name="pirl")
    return keras_ebm.methods.MoCo(
        encoder, head, queue_size=FLAGS.queue_size, momentum=FLAGS.momentum,
        temperature=FLAGS.temperature or 0.2, augmenter=augmenter, bn_splits=FLAGS.bn_splits,
        name="moco")


def embed(encoder, images, batch_size=512):
    return encoder.predict(images, batch_size=batch_size, verbose=0)


def evaluate(dataset, features):
    """Probes and kNN on `features` = (train, test), as a dict of accuracies."""
    import numpy as np

    from keras_ebm.evaluation import evaluate_features

    # Few-label probes need that many labels of every class in the train split.
    fewest = int(np.bincount(dataset.y_train, minlength=dataset.num_classes).min())
    labels_per_class = tuple(k for k in (1, 10) if k <= fewest) + (None,)
    # NOTE: unstandardised features, the setting that reproduces the raw-pixel
    # reference on digits (68.9 / 89.5 / 97.0%); the same setting for every row.
    return evaluate_features(features[0], dataset.y_train, features[1], dataset.y_test,
                             labels_per_class=labels_per_class, num_draws=FLAGS.probe_draws,
                             seed=FLAGS.seed, standardize=False)


def format_table(rows):
    columns = ["probe_1", "probe_10", "probe_all", "knn"]
    titles = ["1 label/class", "10 labels/class", "all labels", "kNN"]
    lines = [f"{'features':<32}" + "".join(f"{t:>17}" for t in titles)]
    for name, result in rows.items():
        lines.append(f"{name:<32}" + "".join(
            f"{100 * result[c]:>16.1f}%" if c in result else f"{'-':>17}" for c in columns))
    return "\n".join(lines)


def epoch_ordered_batches(dataset, steps_per_epoch, initial_epoch):
    """Training batches whose order depends only on (seed, epoch).

    Epoch e is shuffled with the seed (--seed, e) (keras_ebm.data.epoch_ordered_indices),
    so a run resumed at epoch k sees exactly the batches an uninterrupted run sees from
    epoch k on. PIRL's memory bank also gets the index of each image: (images, indices).
    """
    import tensorflow as tf

    from keras_ebm.data import epoch_ordered_indices

    batch_shape = (FLAGS.batch_size, *dataset.image_shape)

    def gather(indices):
        images = tf.numpy_function(lambda i: dataset.x_train[i], [indices], tf.float32)
        images = tf.ensure_shape(images, batch_shape)
        return (images, indices) if FLAGS.method == "pirl" else images

    indices = epoch_ordered_indices(len(dataset.x_train), FLAGS.batch_size, seed=FLAGS.seed,
                                    initial_epoch=initial_epoch, epochs=FLAGS.epochs,
                                    steps_per_epoch=steps_per_epoch)
    return indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def make_strategy():
    """The --strategy. Call it before anything runs a TensorFlow op: a
    MultiWorkerMirroredStrategy configures the collective ops at program startup."""
    from keras_ebm import distribute

    try:
        return distribute.get_strategy(FLAGS.strategy)
    except ValueError as error:
        raise UsageError(f"--strategy={FLAGS.strategy}: {error}") from None


def train_ssl(dataset, workdir, export_dir, strategy):
    import keras
    import numpy as np

    from keras_ebm import distribute
    from keras_ebm.callbacks import EpochTensorBoard
    from keras_ebm.callbacks import NonFiniteGuard
    from keras_ebm.callbacks import ResumableBackup
    from keras_ebm.callbacks import checkpoint_epoch
    from keras_ebm.export import export_encoder

    keras.mixed_precision.set_global_policy(
        "float32" if FLAGS.mixed_precision == "none" else f"mixed_{FLAGS.mixed_precision}")
    image_shape = dataset.image_shape
    steps_per_epoch = len(dataset.x_train) // FLAGS.batch_size
    if FLAGS.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, FLAGS.steps_per_epoch)
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    train_data = epoch_ordered_batches(dataset, steps_per_epoch, checkpoint_epoch(checkpoint_dir))
    with strategy.scope():
        # Every variable (heads, queues, banks, optimizer) is made under the strategy.
        model = build_method(image_shape, num_train=len(dataset.x_train))
        if FLAGS.sync_batch_norm:
            distribute.sync_batch_norm(model)
        model.compile(optimizer=build_optimizer(steps_per_epoch), jit_compile=use_xla())

    # Under MultiWorkerMirroredStrategy, predict (embed) runs collectives: every
    # worker embeds, only the chief evaluates and writes.
    chief = distribute.is_chief(strategy)
    results = {}
    if FLAGS.evaluate:
        features = (embed(model.encoder, dataset.x_train), embed(model.encoder, dataset.x_test))
        if chief:
            flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
            results["raw pixels"] = evaluate(dataset, (flat(dataset.x_train),
                                                       flat(dataset.x_test)))
            results["encoder at init"] = evaluate(dataset, features)

    guard = NonFiniteGuard()
    callbacks = [
        EpochTensorBoard(os.path.join(workdir, "tb")),
        ResumableBackup(checkpoint_dir, keep_checkpoints=FLAGS.keep_checkpoints),
        guard,
        *EXTRA_CALLBACKS,
    ]
    print(f"Training {FLAGS.method} on {dataset.name} ({len(dataset.x_train)} images, "
          f"{steps_per_epoch} steps/epoch, {FLAGS.epochs} epochs, backbone {FLAGS.backbone}, "
          f"{strategy.num_replicas_in_sync} replica(s))")
    start = time.perf_counter()
    history = model.fit(train_data, epochs=FLAGS.epochs, steps_per_epoch=steps_per_epoch,
                        callbacks=callbacks, shuffle=False,
                        verbose=1 if sys.stdout.isatty() else 2)
    train_seconds = time.perf_counter() - start
    if guard.message:
        raise TrainingError(f"{guard.message.rstrip('.')}; nothing was exported (the last "
                            f"epoch's checkpoint is in {checkpoint_dir})")
    ran_epochs = bool(history.history.get("loss"))
    if not ran_epochs:  # a rerun of a finished command: the checkpoint is already at the end
        print(f"Nothing to train: the checkpoint is at epoch {FLAGS.epochs}; exporting it")
    final_loss = float(history.history["loss"][-1]) if ran_epochs else None
    if ran_epochs and not np.isfinite(final_loss):
        raise TrainingError(f"training diverged: the loss is {final_loss} at the last epoch; "
                            "no model was exported")

    metrics = {"method": FLAGS.method, "dataset": dataset.name, "backbone": FLAGS.backbone,
               "epochs": FLAGS.epochs, "batch_size": FLAGS.batch_size,
               "replicas": strategy.num_replicas_in_sync,
               "train_seconds": round(train_seconds, 1), "final_loss": final_loss,
               "final_contrastive_accuracy": (float(history.history["contrastive_accuracy"][-1])
                                              if ran_epochs else None)}
    if FLAGS.evaluate:
        features = (embed(model.encoder, dataset.x_train), embed(model.encoder, dataset.x_test))
    if not chief:
        # Only the chief writes the model, the export and the metrics. Neither
        # needs the other workers: saving reads each variable's local copy.
        return metrics
    model_path = os.path.join(workdir, "model.keras")
    staging = os.path.join(workdir, ".model.tmp.keras")
    model.save(staging)
    os.replace(staging, model_path)
    exported = export_encoder(export_dir, model.encoder, image_shape)
    metrics.update({"model": model_path, "export": exported})
    if FLAGS.evaluate:
        results[f"{FLAGS.method} (trained)"] = evaluate(dataset, features)
        metrics["evaluation"] = results
        print()
        print(format_table(results))
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"\nTrained in {train_seconds:.0f} s. Model: {model_path}. SavedModel: {exported}. "
          f"Metrics: {os.path.join(workdir, 'metrics.json')}")
    return metrics


def train_ebm(workdir, export_dir):
    """Classical EBM training (CD, PCD, NCE, ratio matching, MPF, ML, DAE)."""
    print(f"Training {FLAGS.method} on {FLAGS.dataset} ({FLAGS.epochs} epochs)")
    from keras_ebm.callbacks import NonFiniteError

    try:
        metrics = ebm_recipes.run(FLAGS, workdir, export_dir, callbacks=EXTRA_CALLBACKS)
    except NonFiniteError as error:
        raise TrainingError(f"{str(error).rstrip('.')}; nothing was saved or exported") from None
    except ValueError as error:
        if str(error).startswith("--"):  # a bad flag combination, named by the recipe
            raise UsageError(str(error)) from None
        raise
    print()
    for key, value in metrics.items():
        if isinstance(value, float):
            print(f"{key:<36}{value:>14.4f}")
    print(f"\nModel: {metrics['model']}. SavedModel: {metrics['saved_model']}. "
          f"Metrics and pictures: {workdir}")
    return metrics


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        validate_flags()
        workdir = FLAGS.workdir
        export_dir = FLAGS.export_dir or os.path.join("saved_models", FLAGS.method)
        prepare_workdir(workdir)
        import keras

        import keras_ebm

        if FLAGS.method in EBM_METHODS:
            keras.utils.set_random_seed(FLAGS.seed)
            train_ebm(workdir, export_dir)
            return
        # The strategy comes first: validate_dataset already runs TF ops (PIRL's Jigsaw).
        strategy = make_strategy()
        keras.utils.set_random_seed(FLAGS.seed)
        try:
            dataset = keras_ebm.data.load(FLAGS.dataset, data_dir=FLAGS.data_dir,
                                          image_size=FLAGS.image_size,
                                          max_train_examples=FLAGS.max_train_examples)
        except keras_ebm.data.DataError as error:
            raise UsageError(f"--dataset: {error}") from None
        validate_dataset(dataset)
        train_ssl(dataset, workdir, export_dir, strategy)
    except UsageError as error:
        fail(str(error))
    except TrainingError as error:
        print(f"train.py: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
