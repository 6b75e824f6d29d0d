"""Runs one method on 1 device and on 2 logical CPUs under MirroredStrategy; prints JSON.

Run as a script (`python mirrored_check.py simclr`): the two logical devices
must be configured before TensorFlow initialises its devices, which a pytest
process has usually done already, so tests/distribute/test_mirrored.py runs
this file in a subprocess (tests/distribute/test_non_contrastive_distribute.py
for byol, simsiam, barlow_twins and vicreg). Cases: simclr, simclr_sync_bn, moco,
pirl, pcd, ratio_matching, grads_simclr, byol, simsiam, barlow_twins, vicreg.
One case a process: a second MirroredStrategy in the same process reuses the
first one's collective keys, and a gather then collides with an earlier all-reduce.
The JSON holds the largest absolute differences between the two runs.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

_CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _CPU, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_ebm import distribute  # noqa: E402
from keras_ebm.energies import RBM  # noqa: E402
from keras_ebm.energies import MLPEnergy  # noqa: E402
from keras_ebm.layers import Jigsaw  # noqa: E402
from keras_ebm.layers import PatchHead  # noqa: E402
from keras_ebm.layers import ProjectionHead  # noqa: E402
from keras_ebm.memory import ReplayBuffer  # noqa: E402
from keras_ebm.methods import BYOL  # noqa: E402
from keras_ebm.methods import PIRL  # noqa: E402
from keras_ebm.methods import BarlowTwins  # noqa: E402
from keras_ebm.methods import ContrastiveDivergence  # noqa: E402
from keras_ebm.methods import MoCo  # noqa: E402
from keras_ebm.methods import RatioMatching  # noqa: E402
from keras_ebm.methods import SimCLR  # noqa: E402
from keras_ebm.methods import SimSiam  # noqa: E402
from keras_ebm.methods import VICReg  # noqa: E402
from keras_ebm.optimizers import LARS  # noqa: E402
from keras_ebm.samplers import Langevin  # noqa: E402

EBM_CASES = ("pcd", "ratio_matching")
# The non-contrastive methods, made from the encoder, head and a predictor.
NON_CONTRASTIVE = {
    "byol": lambda f, g, q: BYOL(f, g, q, total_steps=3, tau_base=0.9),
    "simsiam": lambda f, g, q: SimSiam(f, g, q),
    "barlow_twins": lambda f, g, q: BarlowTwins(f, g, lambda_=0.05),
    "vicreg": lambda f, g, q: VICReg(f, g),
}

GLOBAL_BATCH = 8
STEPS = 2


def encoder(batch_norm, size=6):
    inputs = keras.Input((size, size, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    if batch_norm:
        x = keras.layers.BatchNormalization(momentum=0.5)(x)
    x = keras.layers.ReLU()(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, outputs)


class CentreJigsaw(Jigsaw):
    """The jigsaw without its random crops and permutations (data augmentation, like the
    views of the SimCLR case), so that the two runs see the same patches."""

    def call(self, images, training=False, return_permutation=False):
        return super().call(images, training=False, return_permutation=return_permutation)


def make(case):
    batch_norm = case == "simclr_sync_bn"
    head = ProjectionHead((8,), 5, batch_norm=False)
    if case == "pirl":
        model = PIRL(encoder(False, None), head, PatchHead(patch_dim=4, output_dim=5),
                     num_negatives=6, temperature=0.2, loss_weight=0.5, bank_momentum=0.5,
                     bank_size=STEPS * GLOBAL_BATCH, jigsaw=CentreJigsaw(grid_size=3))
        model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9))
        return model
    if case == "pcd":
        # Langevin without noise (deterministic chains), so both runs draw the same samples;
        # 8 persistent chains, advanced in 2 shards of 4 under the strategy.
        model = ContrastiveDivergence(
            MLPEnergy((8,)), Langevin(num_steps=3, step_size=0.05, noise_scale=0.0),
            persistent=True, replay_buffer=ReplayBuffer(8, (4,), reinit_fraction=0.0),
            energy_l2=0.1)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        return model
    if case == "ratio_matching":
        model = RatioMatching(RBM(4, 3))
        model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9))
        return model
    if case in NON_CONTRASTIVE:
        model = NON_CONTRASTIVE[case](encoder(False), head,
                                      ProjectionHead((8,), 5, batch_norm=False))
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        return model
    if case.startswith("moco"):
        model = MoCo(encoder(False), head, queue_size=12, momentum=0.9, temperature=0.2,
                     bn_splits=1)
        optimizer = LARS(0.5, momentum=0.9, weight_decay=1e-3)
    else:
        model = SimCLR(encoder(batch_norm), head, temperature=0.5)
        if batch_norm:
            distribute.sync_batch_norm(model)
        optimizer = keras.optimizers.SGD(0.5, momentum=0.9)
    model.compile(optimizer=optimizer)
    return model


def data():
    rng = np.random.default_rng(0)
    a = rng.random((STEPS * GLOBAL_BATCH, 6, 6, 1)).astype("float32")
    b = np.clip(a + 0.1 * rng.normal(size=a.shape), 0, 1).astype("float32")
    return a, b


class StepLosses(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def copies(variable):
    # The per-device copies of a mirrored Keras variable (one array without a strategy).
    value = variable.value
    return [np.asarray(v.numpy()) for v in getattr(value, "values", [value])]


def train(model):
    a, b = data()
    if isinstance(model, PIRL):  # (images, the index of each image in the bank)
        b = np.arange(len(a), dtype="int64")
    if isinstance(model, (ContrastiveDivergence, RatioMatching)):  # vectors; binary for RM
        a = np.random.default_rng(1).random((len(a), 4)).astype("float32")
        if isinstance(model, RatioMatching):
            a = (a < 0.4).astype("float32")
        b = np.zeros(len(a), "float32")  # ignored
    dataset = tf.data.Dataset.from_tensor_slices((a, b)).batch(GLOBAL_BATCH)
    record = StepLosses()
    model.fit(dataset, epochs=1, verbose=0, callbacks=[record], shuffle=False)
    return record.losses


def gradients(model, strategy):
    """Gradients of the first global batch: summed over replicas vs one device."""
    a, b = data()
    a, b = a[:GLOBAL_BATCH], b[:GLOBAL_BATCH]

    def replica_gradients(view_a, view_b):
        with tf.GradientTape() as tape:
            loss, _ = model.contrastive_loss((view_a, view_b), training=True)
            loss = distribute.scale_loss_for_replicas(loss)
        grads = tape.gradient(loss, model.trainable_variables)
        context = tf.distribute.get_replica_context()
        return context.all_reduce(tf.distribute.ReduceOp.SUM, grads)

    if strategy is None:
        return [g.numpy() for g in tf.function(replica_gradients)(a, b)]
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors((a, b)).unbatch().batch(GLOBAL_BATCH))
    view_a, view_b = next(iter(dataset))
    result = tf.function(lambda x, y: strategy.run(replica_gradients, args=(x, y)))(view_a,
                                                                                    view_b)
    return [strategy.experimental_local_results(g)[0].numpy() for g in result]


def max_diff(xs, ys):
    return max(float(np.max(np.abs(np.asarray(x, "float64") - np.asarray(y, "float64"))))
               for x, y in zip(xs, ys))


def main(case):
    start = time.time()
    keras.utils.set_random_seed(0)
    single = make(case)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    build = case == "pirl" or case in EBM_CASES  # these build on their first call
    sample = np.zeros((1, 6, 6, 1) if case == "pirl" else (1, 4), "float32")
    if build:
        single(sample)
    with strategy.scope():  # every variable of the mirrored model is made under the strategy
        mirrored = make(case)
        if build:
            mirrored(sample)
    initial = single.get_weights()
    mirrored.set_weights(initial)
    initial_bank = single.memory_bank.entries.numpy() if case == "pirl" else None
    initial_chains = single.replay_buffer.chains.numpy() if case == "pcd" else None
    initial_target = single.target_encoder.get_weights() if case == "byol" else None
    report = {"case": case, "replicas": strategy.num_replicas_in_sync}
    if case == "grads_simclr":
        report["gradient_diff"] = max_diff(gradients(single, None), gradients(mirrored, strategy))
        report["gradient_norm"] = float(sum(np.abs(g).sum() for g in gradients(single, None)))
    else:
        losses_single, losses_mirrored = train(single), train(mirrored)
        report["losses"] = [losses_single, losses_mirrored]
        report["loss_diff"] = max_diff(losses_single, losses_mirrored)
        report["weight_diff"] = max_diff(single.get_weights(), mirrored.get_weights())
        report["moved"] = max_diff(single.get_weights(), initial)
        # Every device copy of every variable equal to the first.
        report["copies_diff"] = max(max_diff([c[0]] * len(c), c)
                                    for c in map(copies, mirrored.weights))
        report["optimizer_diff"] = max_diff(
            [v.numpy() for v in single.optimizer.variables],
            [v.numpy() for v in mirrored.optimizer.variables])
        if case.startswith("moco"):
            report["queue_diff"] = max_diff([single.queue.keys.numpy()],
                                            [mirrored.queue.keys.numpy()])
            report["pointer"] = [int(single.queue.pointer.numpy()),
                                 int(mirrored.queue.pointer.numpy()),
                                 *[int(c) for c in copies(mirrored.queue.pointer)]]
            report["num_enqueued"] = [int(single.queue.num_enqueued.numpy()),
                                      int(mirrored.queue.num_enqueued.numpy())]
            report["key_encoder_diff"] = max_diff(single.key_encoder.get_weights(),
                                                  mirrored.key_encoder.get_weights())
        if case == "byol":
            report["target_diff"] = max_diff(single.target_encoder.get_weights(),
                                             mirrored.target_encoder.get_weights())
            report["target_moved"] = max_diff(single.target_encoder.get_weights(),
                                              initial_target)
        if case == "pcd":
            report["chains_diff"] = max_diff([single.replay_buffer.chains.numpy()],
                                             [mirrored.replay_buffer.chains.numpy()])
            report["chains_moved"] = max_diff([single.replay_buffer.chains.numpy()],
                                              [initial_chains])
        mirrored_state = (mirrored.memory_bank.entries if case == "pirl" else
                          mirrored.replay_buffer.chains if case == "pcd" else None)
        if mirrored_state is not None:  # the state is mirrored: one copy per device
            report["state_copies"] = len(copies(mirrored_state))
        if case == "pirl":
            report["bank_diff"] = max_diff([single.memory_bank.entries.numpy()],
                                           [mirrored.memory_bank.entries.numpy()])
            report["bank_moved"] = max_diff([single.memory_bank.entries.numpy()],
                                            [initial_bank])
            report["bank_counters"] = [
                [int(m.memory_bank.num_updates.numpy()), int(m.memory_bank.num_draws.numpy())]
                for m in (single, mirrored)]
    report["seconds"] = round(time.time() - start, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
