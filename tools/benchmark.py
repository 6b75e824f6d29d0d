r"""Throughput of keras_ebm's train steps and samplers; prints one JSON line.

    python tools/benchmark.py --method=simclr --backbone=resnet18_cifar --image_size=32 \
        --batch_size=128 --steps=4
    python tools/benchmark.py --method=moco --backbone=resnet18_cifar --image_size=32 \
        --batch_size=128 --steps=4                      # bn_splits=1, queue 4096
    python tools/benchmark.py --method=simclr ... --mixed_precision=bfloat16
    python tools/benchmark.py --method=simclr --backbone=resnet18_cifar --image_size=32 \
        --batch_size=128 --steps=4 --data_from=folder   # streamed from disk: PNGs
    python tools/benchmark.py --method=pirl --backbone=resnet18_cifar --image_size=32 \
        --batch_size=128 --steps=4                      # no PyTorch reference step
    python tools/benchmark.py --method=pcd_rbm          # vs scikit-learn's BernoulliRBM
    python tools/benchmark.py --method=langevin         # compiled loop vs eager Python loop

simclr / moco (the setup of benchmarks/torch_ssl_step.py, the PyTorch reference):
  the encoder (--backbone) on --image_size x --image_size x 3 images, a 2-layer
  projection head (512 -> 128; SimCLR with batch norm, MoCo v2 without), SGD with
  momentum 0.9; SimCLR at temperature 0.5; MoCo with a 4096-key queue, a momentum
  encoder (m = 0.99), temperature 0.2 and --bn_splits (default 1: no shuffle-BN
  substitute, as in the reference step).
  pirl: the same encoder, fully convolutional, on the images and on their 3x3 jigsaw
  patches (the image resized to a multiple of 3, whole cells), a linear image head and
  PatchHead to --projection_dim, NCE against --num_negatives entries of a memory bank of
  --bank_size images, temperature 0.07; the step takes (images, indices) and, end to end,
  augments the image and the jigsaw's input separately inside the step, as `fit` does
  (--augment_in does not apply).
  - images_per_sec: unique images per second (two views each) of the compiled train
    step alone on synthetic views, after --warmup calls;
  - images_per_sec_end_to_end: the same step with keras_ebm.data.make_augmenter
    making both views from [0, 1] images, inside the step (--augment_in=step, what
    `fit` does with `augmenter=`) or in a prefetching tf.data map (--augment_in=pipeline);
    the images are one batch held in memory, or with --data_from=folder|tfrecord
    batches read from disk, checked, decoded and shuffled by the streaming loader
    (`keras_ebm.data.load(..., stream=True)`), --data_images random PNGs written
    first (random pixels: the largest PNGs of their size);
  - the two are timed in alternating rounds (--rounds), so machine load hits both;
  - gflops_per_sec: FLOPs of one step / time of one step, the FLOPs counted by
    tf.compat.v1.profiler on the forward graph (x3 for forward + backward of the
    trained branch, x1 for MoCo's key branch), see `flop_method`;
  - matmul_peak_gflops: a large float32 tf.matmul in graph mode, measured in this run
    before and after the timed steps (the better of the two).

pcd_rbm: seconds per epoch of PCD-1 on RBM(64, 16) on the binarised digits at batch 20,
  through `fit`, against scikit-learn's BernoulliRBM(n_components=16, batch_size=20,
  n_iter=1) per epoch. All settings in one run, in rounds: each in turn fits 3 epochs
  (the first untimed: it creates the call's data iterator), each timed epoch followed by
  one timed scikit-learn epoch; --warmup untimed epochs first; --steps timed epochs per
  setting (rounded up to even); medians; sklearn_over_keras_ebm > 1 means keras_ebm is
  faster:
  - fit_sgd_20_chains, fit_adam_200_chains: the default path, plain compile() and fit()
    on tools/train.py's epoch-ordered data (steps_per_execution="auto": this small
    model's epoch is one block of 62 minibatches per compiled call, an RBM's block one
    XLA program), in scikit-learn's own setting (20 chains = the batch, SGD at 0.1) and
    in configs/pcd_rbm.flags's (200 chains, Adam 0.01); targets_met: the first faster
    than scikit-learn, the second within 1.5x of it;
  - fit_per_minibatch: one minibatch per compiled call (steps_per_execution=1),
    200 chains, Adam 0.01;
  - epoch_program: ContrastiveDivergence.epoch_dataset + jit_compile, one XLA program
    per epoch, with the same 200 chains and Adam, and with scikit-learn's own setting
    (20 chains = the batch, SGD at 0.1).

langevin: keras_ebm.samplers.Langevin (one compiled tf.while_loop) against the same
  Langevin steps as an eager Python loop, on an MLPEnergy over 2-D points.

--steps counts timed train steps per round (simclr, moco), timed epochs (pcd_rbm) or
timed sampler runs (langevin). No library module reads these flags.
"""

import json
import math
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

METHODS = ("simclr", "moco", "pirl", "pcd_rbm", "langevin")

flags.DEFINE_enum("method", "simclr", METHODS, "What to benchmark.")
flags.DEFINE_string("backbone", "resnet18_cifar", "simclr/moco: encoder (keras_ebm.backbones).")
flags.DEFINE_integer("image_size", 32, "simclr/moco: image side (channels: 3).")
flags.DEFINE_integer("batch_size", 128,
                     "Images per step (simclr/moco: each in two views); pcd_rbm: 20 by default.")
flags.DEFINE_integer("steps", 4, "Timed steps per round (simclr/moco), epochs (pcd_rbm) or "
                     "sampler runs (langevin).")
flags.DEFINE_integer("warmup", 2, "Untimed calls before timing (traces and warms caches).")
flags.DEFINE_integer("rounds", 2, "simclr/moco: alternating rounds of synthetic and "
                     "end-to-end timing; the figures are the medians over rounds.")
flags.DEFINE_enum("jit_compile", "false", ["auto", "true", "false"],
                  "XLA for the train step; auto: only on a GPU or TPU (XLA is slower on CPUs).")
flags.DEFINE_enum("mixed_precision", "none", ["none", "bfloat16", "float16"],
                  "Keras mixed-precision policy (variables and the loss stay float32).")
flags.DEFINE_enum("augment_in", "step", ["step", "pipeline"],
                  "simclr/moco end to end: augment inside the train step or in a tf.data map.")
flags.DEFINE_enum("data_from", "memory", ["memory", "folder", "tfrecord"],
                  "simclr/moco end to end: one batch held in memory (default), or batches "
                  "streamed from disk: --data_images PNGs written to a temporary folder (or "
                  "converted to TFRecord shards), read, decoded and augmented on the fly.")
flags.DEFINE_integer("data_images", 5000, "--data_from=folder|tfrecord: images written.")
flags.DEFINE_bool("fused_batch_norm", True,
                  "simclr/moco: batch norm through TensorFlow's fused kernel "
                  "(keras_ebm.layers.FusedBatchNormalization); false: Keras's unfused ops.")
flags.DEFINE_integer("bn_splits", 1, "moco: batch-norm groups (1 = none, as the reference).")
flags.DEFINE_integer("queue_size", 4096, "moco: negative keys in the queue.")
flags.DEFINE_integer("num_negatives", 4096, "pirl: memory-bank entries contrasted per step.")
flags.DEFINE_integer("bank_size", 50000, "pirl: memory-bank slots (training images).")
flags.DEFINE_integer("projection_hidden_dim", 512, "simclr/moco: hidden width of the head.")
flags.DEFINE_integer("projection_dim", 128, "simclr/moco: output dimension of the head.")
flags.DEFINE_float("learning_rate", 0.06, "simclr/moco: SGD learning rate (momentum 0.9).")
flags.DEFINE_integer("matmul_size", 4096, "Side of the square float32 matmul of the peak.")
flags.DEFINE_integer("num_chains", None, "pcd_rbm: persistent chains (default 200); "
                     "langevin: chains (default 1000).")
flags.DEFINE_integer("mcmc_steps", 100, "langevin: steps per sampler run.")
flags.DEFINE_integer("threads", None, "TF intra-op threads (default: TF's choice).")

FLAGS = flags.FLAGS


def _median_rate(count, seconds):
    return statistics.median(count / s for s in seconds)


# -- device peak ------------------------------------------------------------------
def matmul_peak_gflops(size, repeats=5):
    """GFLOP/s of a float32 [size, size] x [size, size] tf.matmul in graph mode (best of)."""
    import tensorflow as tf

    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])

    @tf.function
    def chain(a, b):
        # Four dependent products per call amortise the call overhead.
        c = a
        for _ in range(4):
            c = tf.matmul(c, b) * (1.0 / size)
        return tf.reduce_sum(c)

    float(chain(a, b))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        float(chain(a, b))
        best = min(best, time.perf_counter() - start)
    return 4 * 2.0 * size**3 / best / 1e9


# -- FLOP counting ----------------------------------------------------------------
def profiler_flops(fn, input_spec):
    """Float operations of fn's graph for input_spec, by tf.compat.v1.profiler."""
    import tensorflow as tf

    concrete = tf.function(fn).get_concrete_function(input_spec)
    options = (tf.compat.v1.profiler.ProfileOptionBuilder(
        tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
        .with_empty_output().build())
    profile = tf.compat.v1.profiler.profile(graph=concrete.graph, cmd="op", options=options)
    return float(profile.total_float_ops)


def analytic_flops(model, batch_size):
    """2 x multiply-adds of every Conv2D and Dense layer of a Functional model."""
    import keras

    total = 0.0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D):
            out = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2.0 * kh * kw * layer.input.shape[-1] * out[-1] * out[1] * out[2]
        elif isinstance(layer, keras.layers.Dense):
            total += 2.0 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return total * batch_size


def forward_flops(model, images_shape):
    """(FLOPs of z = g(f(x)) for a batch of images_shape, method)."""
    import tensorflow as tf

    spec = tf.TensorSpec(images_shape, tf.float32)
    try:
        flops = profiler_flops(lambda x: model.project(x, training=True), spec)
    except Exception:  # noqa: BLE001  (fall back to counting layers)
        flops = 0
    if flops > 0:
        return flops, "tf.compat.v1.profiler"
    head_flops = 2.0 * sum(w.shape[0] * w.shape[1] for w in model.projection_head.weights
                           if len(w.shape) == 2) * images_shape[0]
    return analytic_flops(model.encoder, images_shape[0]) + head_flops, "analytic"


# -- SimCLR / MoCo --------------------------------------------------------------------
def resolve_jit(value):
    import tensorflow as tf

    if value == "auto":
        return bool(tf.config.list_physical_devices("GPU")
                    or tf.config.list_physical_devices("TPU"))
    return value == "true"


def build_ssl_model(flag_values, image_shape):
    """The method through its preset, with the reference step's heads and optimizer."""
    import keras
    import numpy as np

    from keras_ebm import presets
    from keras_ebm.layers import set_fused_batch_norm

    # lightly's SimCLRProjectionHead(512, 512, 128) (Linear -> BN -> ReLU -> Linear) and
    # MoCoProjectionHead(512, 512, 128) (no BN) are the presets' heads; PIRL's image head
    # is linear. Only the shape and size of the data matter: a zero-copy stand-in.
    num_examples = flag_values.bank_size if flag_values.method == "pirl" else flag_values.batch_size
    stand_in = np.broadcast_to(np.zeros((1, *image_shape), "float32"),
                               (num_examples, *image_shape))
    settings = {"backbone": flag_values.backbone, "projection_dim": flag_values.projection_dim,
                "projection_hidden_dims": (flag_values.projection_hidden_dim,),
                "batch_size": flag_values.batch_size,
                # PIRL augments inside its step (the preset's augmenter); the others get views.
                "augment": flag_values.method == "pirl"}
    if flag_values.method == "moco":
        settings.update(queue_size=flag_values.queue_size, bn_splits=flag_values.bn_splits)
    elif flag_values.method == "pirl":
        side = 3 * math.ceil(image_shape[0] / 3)
        settings.update(projection_hidden_dims=(), num_negatives=flag_values.num_negatives,
                        patch_dim=flag_values.projection_dim,
                        jigsaw_resize=None if side == image_shape[0] else side)
    model = presets.build(flag_values.method, stand_in, compile=False, **settings)
    set_fused_batch_norm(model, flag_values.fused_batch_norm)
    model.compile(optimizer=keras.optimizers.SGD(flag_values.learning_rate, momentum=0.9))
    model.optimizer.build(model.trainable_variables)
    return model


def streamed_batches(flag_values, image_shape):
    """Batches read from disk as `fit` reads them: --data_images PNGs in a temporary folder
    (or its TFRecord shards), `keras_ebm.data.load(..., stream=True).train_batches`."""
    import subprocess
    import tempfile

    import numpy as np
    import tensorflow as tf

    import keras_ebm

    root = tempfile.mkdtemp(prefix="keras_ebm_benchmark_")
    rng = np.random.default_rng(0)
    for i in range(flag_values.data_images):
        os.makedirs(os.path.join(root, "images", f"c{i % 10}"), exist_ok=True)
        image = rng.integers(0, 256, image_shape, dtype=np.uint8)
        tf.io.write_file(os.path.join(root, "images", f"c{i % 10}", f"{i:06d}.png"),
                         tf.io.encode_png(image))
    spec = f"folder:{os.path.join(root, 'images')}"
    if flag_values.data_from == "tfrecord":
        subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__),
                                                     "folder_to_tfrecords.py"),
                        f"--input={spec[len('folder:'):]}",
                        f"--output={os.path.join(root, 'records')}"], check=True,
                       capture_output=True)
        spec = f"tfrecord:{os.path.join(root, 'records')}"
    data = keras_ebm.data.load(spec, stream=True)
    return data.train_batches(flag_values.batch_size, seed=0)


def benchmark_ssl(flag_values):
    import numpy as np
    import tensorflow as tf

    from keras_ebm.data import make_augmenter

    jit = resolve_jit(flag_values.jit_compile)
    batch = flag_values.batch_size
    image_shape = (flag_values.image_size, flag_values.image_size, 3)
    augmenter = make_augmenter(image_shape, seed=0)
    model = build_ssl_model(flag_values, image_shape)
    if flag_values.method == "pirl":
        augmenter = model.augmenter

    rng = np.random.default_rng(0)
    view_a = tf.constant(rng.random(size=(batch,) + image_shape).astype("float32"))
    view_b = tf.constant(rng.random(size=(batch,) + image_shape).astype("float32"))
    images = tf.constant(rng.uniform(size=(batch,) + image_shape).astype("float32"))

    synthetic_step = tf.function(model.train_step, jit_compile=jit)
    synthetic_data = (view_a, view_b)
    if flag_values.method == "pirl":
        # The step takes (images, indices); end to end, the model's augmenter makes the
        # image view and, separately, the jigsaw's input inside the step, as in `fit`.
        synthetic_data = (images, tf.range(batch))
        model.augmenter = None
        synthetic_step.get_concrete_function(synthetic_data)  # traced without augmentation
        model.augmenter = augmenter
        augmented_step = tf.function(model.train_step, jit_compile=jit)

        def end_to_end_step():
            return augmented_step(synthetic_data)
    elif flag_values.augment_in == "step":
        # The same ops as `fit` on images with `augmenter=`: make_views augments the
        # batch twice, then the method's train step runs on the two views.
        @tf.function(jit_compile=jit)
        def augmented_step(batch_images):
            return model.train_step((augmenter(batch_images, training=True),
                                     augmenter(batch_images, training=True)))

        batches = None if flag_values.data_from == "memory" else iter(
            streamed_batches(flag_values, image_shape))

        def end_to_end_step():
            return augmented_step(images if batches is None else next(batches))
    else:
        dataset = (tf.data.Dataset.from_tensors(images).repeat()
                   .map(lambda x: (augmenter(x, training=True), augmenter(x, training=True)),
                        num_parallel_calls=tf.data.AUTOTUNE)
                   .prefetch(2))
        iterator = iter(dataset)

        def end_to_end_step():
            return synthetic_step(next(iterator))

    def run(step_fn, count):
        start = time.perf_counter()
        for _ in range(count):
            float(step_fn()["loss"])  # waits for the step, as the reference's float(loss)
        return time.perf_counter() - start

    run(lambda: synthetic_step(synthetic_data), flag_values.warmup)
    run(end_to_end_step, flag_values.warmup)
    # The peak is measured before and after the steps (best of both): the machine is shared.
    peak_before = matmul_peak_gflops(flag_values.matmul_size)
    synthetic_seconds, end_to_end_seconds = [], []
    for _ in range(flag_values.rounds):
        synthetic_seconds.append(run(lambda: synthetic_step(synthetic_data), flag_values.steps))
        end_to_end_seconds.append(run(end_to_end_step, flag_values.steps))
    images_timed = batch * flag_values.steps
    images_per_sec = _median_rate(images_timed, synthetic_seconds)
    images_per_sec_end_to_end = _median_rate(images_timed, end_to_end_seconds)

    if flag_values.method == "simclr":
        # Both views pass forward and backward as one batch of 2N.
        flops, flop_method = forward_flops(model, (2 * batch,) + image_shape)
        step_flops = 3.0 * flops
        flop_detail = "3 x forward(2N views): forward + backward (~2x forward)"
    elif flag_values.method == "pirl":
        flops, flop_method = forward_flops(model, (batch,) + image_shape)
        patches_shape = model.jigsaw.patch_shape(image_shape)
        patch_spec = tf.TensorSpec((9 * batch,) + tuple(patches_shape), tf.float32)
        flops += profiler_flops(lambda p: model.encoder(p, training=True), patch_spec)
        # NCE of the image and of the patches against the negatives and the positive.
        logits_flops = (2 * 2.0 * batch * (flag_values.num_negatives + 1)
                        * flag_values.projection_dim)
        step_flops = 3.0 * (flops + logits_flops)
        flop_detail = ("3 x (forward(N images) + encoder(9N patches) + logits against the "
                       "negatives): forward + backward")
    else:
        flops, flop_method = forward_flops(model, (batch,) + image_shape)
        logits_flops = 2.0 * batch * (flag_values.queue_size + 1) * flag_values.projection_dim
        step_flops = 3.0 * (flops + logits_flops) + flops
        flop_detail = ("3 x (forward(N queries) + logits against the queue) "
                       "+ forward(N keys, no gradient)")
    steps_per_sec = images_per_sec / batch
    peak = max(peak_before, matmul_peak_gflops(flag_values.matmul_size))
    gflops_per_sec = step_flops * steps_per_sec / 1e9
    result = {
        "method": flag_values.method,
        "backbone": flag_values.backbone,
        "image_size": flag_values.image_size,
        "batch_size": batch,
        "steps": flag_values.steps,
        "rounds": flag_values.rounds,
        "warmup": flag_values.warmup,
        "jit_compile": jit,
        "mixed_precision": flag_values.mixed_precision,
        "fused_batch_norm": flag_values.fused_batch_norm,
        "optimizer": f"SGD(lr={flag_values.learning_rate}, momentum=0.9)",
        "projection_head": (f"{model.encoder.output_shape[-1]}->{flag_values.projection_dim}"
                            if flag_values.method == "pirl" else
                            f"{model.encoder.output_shape[-1]}->"
                            f"{flag_values.projection_hidden_dim}->{flag_values.projection_dim}"),
        "images_per_sec": images_per_sec,
        "images_per_sec_end_to_end": images_per_sec_end_to_end,
        "end_to_end_fraction": images_per_sec_end_to_end / images_per_sec,
        "augment_in": "step" if flag_values.method == "pirl" else flag_values.augment_in,
        "data_from": (flag_values.data_from if flag_values.augment_in == "step"
                      and flag_values.method != "pirl" else "memory"),
        "images_per_sec_rounds": [images_timed / s for s in synthetic_seconds],
        "images_per_sec_end_to_end_rounds": [images_timed / s for s in end_to_end_seconds],
        "gflop_per_step": step_flops / 1e9,
        "gflops_per_sec": gflops_per_sec,
        "flop_method": f"{flop_method}: {flop_detail}",
        "matmul_peak_gflops": peak,
        "fraction_of_matmul_peak": gflops_per_sec / peak,
    }
    if flag_values.method == "pirl":
        result.update({"num_negatives": flag_values.num_negatives,
                       "bank_size": flag_values.bank_size,
                       "patch_shape": list(model.jigsaw.patch_shape(image_shape))})
    if flag_values.method == "moco":
        result.update({"bn_splits": flag_values.bn_splits, "queue_size": flag_values.queue_size,
                       "momentum": 0.99})
    return result


# -- PCD on the RBM vs scikit-learn -------------------------------------------------------
def benchmark_pcd_rbm(flag_values):
    import keras
    from sklearn.neural_network import BernoulliRBM

    from keras_ebm import presets
    from keras_ebm.data.binary_digits import load_binary_digits
    from keras_ebm.training import epoch_ordered_dataset

    batch = flag_values.batch_size
    num_chains = flag_values.num_chains or 200
    (x_train, _), _ = load_binary_digits()
    steps_per_epoch = len(x_train) // batch

    sklearn_rbm = BernoulliRBM(n_components=16, batch_size=batch, n_iter=1, random_state=0)

    def sklearn_epoch():
        sklearn_rbm.fit(x_train)  # one epoch (n_iter=1), from a fresh initialisation

    class InterleavedEpochTimer(keras.callbacks.Callback):
        """Times the epochs after a call's first, each followed by one timed scikit-learn epoch."""

        def __init__(self, seconds, sklearn_seconds):
            super().__init__()
            self.seconds, self.sklearn_seconds, self.first = seconds, sklearn_seconds, None

        def on_epoch_begin(self, epoch, logs=None):
            self.first = epoch if self.first is None else self.first
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if epoch == self.first:  # the call's first epoch also creates its data iterator
                return
            self.seconds.append(time.perf_counter() - self.start)
            start = time.perf_counter()
            sklearn_epoch()
            self.sklearn_seconds.append(time.perf_counter() - start)

    class Row:
        """One setting: its model, fit in calls of a few epochs, its epochs' times."""

        def __init__(self, path, chains, optimizer):
            # path: "default" (plain compile and fit: for this small model the whole
            # epoch is one block of minibatches, one XLA program), "per_step"
            # (steps_per_execution=1: one minibatch per compiled call) or
            # "epoch_program" (tools/train.py --epoch_program).
            self.path, self.epoch = path, 0
            self.seconds, self.sklearn_seconds = [], []
            keras.utils.set_random_seed(0)
            # configs/pcd_rbm.flags's model (RBM 64x16, PCD-1, Gibbs) through its preset.
            self.model = presets.build("pcd", x_train, compile=False, num_hidden=16,
                                       num_chains=chains, mcmc_steps=1, reinit_fraction=0.0,
                                       batch_size=batch)
            options = {"jit_compile": True} if path == "epoch_program" else (
                {"steps_per_execution": 1} if path == "per_step" else {})
            self.model.compile(optimizer=optimizer, **options)
            self.model(x_train[:2])

        def fit(self, epochs, timed=True):
            end = self.epoch + epochs
            if self.path == "epoch_program":  # one XLA program per epoch
                data, steps = self.model.epoch_dataset(x_train, batch, seed=0,
                                                       initial_epoch=self.epoch, epochs=end), 1
            else:  # tools/train.py's data: epoch-ordered minibatches
                data = epoch_ordered_dataset(x_train, batch, seed=0, initial_epoch=self.epoch,
                                             epochs=end)
                steps = steps_per_epoch
            callbacks = [InterleavedEpochTimer(self.seconds, self.sklearn_seconds)] if timed else []
            self.model.fit(data, epochs=end, initial_epoch=self.epoch, steps_per_epoch=steps,
                           callbacks=callbacks, verbose=0, shuffle=False)
            self.epoch = end

        def result(self, steps_per_execution=True):
            keras_seconds = statistics.median(self.seconds)
            sklearn_seconds = statistics.median(self.sklearn_seconds)
            result = {"seconds_per_epoch": keras_seconds,
                      "sklearn_seconds_per_epoch": sklearn_seconds,
                      "sklearn_over_keras_ebm": sklearn_seconds / keras_seconds}
            if steps_per_execution:
                result["steps_per_execution"] = int(self.model.steps_per_execution)
            return result

    # scikit-learn's own setting: as many chains as the batch, plain SGD at its rate;
    # configs/pcd_rbm.flags: 200 chains, Adam.
    rows = {
        f"fit_sgd_{batch}_chains": Row("default", batch, keras.optimizers.SGD(0.1)),
        f"fit_adam_{num_chains}_chains": Row("default", num_chains, keras.optimizers.Adam(0.01)),
        f"fit_per_minibatch_adam_{num_chains}_chains": Row("per_step", num_chains,
                                                           keras.optimizers.Adam(0.01)),
        f"epoch_program_adam_{num_chains}_chains": Row("epoch_program", num_chains,
                                                       keras.optimizers.Adam(0.01)),
        f"epoch_program_sgd_{batch}_chains": Row("epoch_program", batch,
                                                 keras.optimizers.SGD(0.1)),
    }
    for row in rows.values():  # traces and compiles
        row.fit(max(1, flag_values.warmup), timed=False)
    # Rounds: each setting in turn runs 3 epochs (the last 2 timed), each timed epoch
    # followed by one timed scikit-learn epoch, so load on the shared machine hits
    # every setting and both sides of each ratio alike.
    for _ in range(-(-flag_values.steps // 2)):
        for row in rows.values():
            row.fit(3)
    results = {name: row.result(row.path != "epoch_program") for name, row in rows.items()}
    fit_sgd = results[f"fit_sgd_{batch}_chains"]
    fit_config = results[f"fit_adam_{num_chains}_chains"]
    # The targets, on the default fit path: scikit-learn's setting faster than
    # scikit-learn's epoch; the config's setting within 1.5x of scikit-learn's epoch.
    targets = {"sklearn_setting_faster_than_sklearn": fit_sgd["sklearn_over_keras_ebm"] > 1.0,
               "config_within_1.5x_of_sklearn": fit_config["sklearn_over_keras_ebm"] >= 1 / 1.5}
    return {
        "method": "pcd_rbm",
        "model": "RBM(64, 16), PCD-1, Gibbs",
        "batch_size": batch,
        "train_examples": int(len(x_train)),
        "minibatches_per_epoch": steps_per_epoch,
        "epochs_timed": 2 * -(-flag_values.steps // 2),
        "sklearn_model": f"BernoulliRBM(n_components=16, batch_size={batch}, n_iter=1, "
                         f"learning_rate={sklearn_rbm.learning_rate}): {batch} chains, SGD",
        **results,
        "targets_met": targets,
    }


# -- Langevin: compiled loop vs eager Python loop --------------------------------------------
def benchmark_langevin(flag_values):
    import keras
    import tensorflow as tf

    from keras_ebm.energies import MLPEnergy
    from keras_ebm.samplers import Langevin

    num_chains = flag_values.num_chains or 1000
    num_steps = flag_values.mcmc_steps
    keras.utils.set_random_seed(0)
    energy = MLPEnergy(hidden_units=(128, 128))
    energy.build((None, 2))
    sampler = Langevin(num_steps=num_steps, step_size=0.01, clip_value_min=-4.0,
                       clip_value_max=4.0)
    x_init = tf.random.uniform([num_chains, 2], -4.0, 4.0)

    def compiled():
        return sampler(energy, x_init)

    def eager():
        x = x_init
        for i in range(num_steps):
            x, _ = sampler.step(energy, x, tf.constant(i))
        return x

    def timed(fn):
        for _ in range(max(1, flag_values.warmup)):
            fn().numpy()
        seconds = []
        for _ in range(flag_values.steps):
            start = time.perf_counter()
            fn().numpy()
            seconds.append(time.perf_counter() - start)
        return statistics.median(seconds)

    compiled_seconds = timed(compiled)
    eager_seconds = timed(eager)
    return {
        "method": "langevin",
        "energy": "MLPEnergy((128, 128), swish) on 2-D points",
        "num_chains": num_chains,
        "mcmc_steps": num_steps,
        "runs_timed": flag_values.steps,
        "compiled_seconds": compiled_seconds,
        "eager_seconds": eager_seconds,
        "compiled_steps_per_sec": num_steps / compiled_seconds,
        "eager_steps_per_sec": num_steps / eager_seconds,
        "speedup": eager_seconds / compiled_seconds,
    }


def run(flag_values):
    """Runs the benchmark named by flag_values.method; returns the result dict."""
    import keras
    import tensorflow as tf

    if flag_values.threads:
        tf.config.threading.set_intra_op_parallelism_threads(flag_values.threads)
    if flag_values.mixed_precision != "none":
        keras.mixed_precision.set_global_policy(f"mixed_{flag_values.mixed_precision}")
    try:
        if flag_values.method in ("simclr", "moco", "pirl"):
            result = benchmark_ssl(flag_values)
        elif flag_values.method == "pcd_rbm":
            result = benchmark_pcd_rbm(flag_values)
        else:
            result = benchmark_langevin(flag_values)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    result.update({"tensorflow": tf.__version__, "keras": keras.__version__,
                   "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
                   "cpu_count": os.cpu_count()})
    return result


def main(argv):
    if len(argv) > 1:
        print(f"benchmark.py: unexpected arguments {argv[1:]}", file=sys.stderr)
        sys.exit(2)
    if FLAGS.steps < 1 or FLAGS.batch_size < 1 or FLAGS.rounds < 1 or FLAGS.warmup < 0:
        print("benchmark.py: --steps, --batch_size and --rounds must be >= 1, --warmup >= 0",
              file=sys.stderr)
        sys.exit(2)
    if FLAGS.method == "pcd_rbm" and not FLAGS["batch_size"].present:
        FLAGS.batch_size = 20
    print(json.dumps(run(FLAGS)), flush=True)


if __name__ == "__main__":
    app.run(main)
