"""steps_per_execution="auto": several train steps per compiled call for small models."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.callbacks import NonFiniteError
from keras_ebm.callbacks import NonFiniteGuard
from keras_ebm.energies import RBM
from keras_ebm.memory import ReplayBuffer
from keras_ebm.methods import ContrastiveDivergence
from keras_ebm.methods.method import auto_steps_per_execution
from keras_ebm.samplers import Gibbs


def pcd(seed=0, num_hidden=4):
    keras.utils.set_random_seed(seed)
    return ContrastiveDivergence(
        RBM(6, num_hidden), Gibbs(num_steps=1), persistent=True, seed=seed,
        replay_buffer=ReplayBuffer(4, (6,), reinit_fraction=0.0, noise="bernoulli"))


def data():
    return (np.random.default_rng(0).random((24, 6)) < 0.5).astype("float32")


def batches(x):
    return tf.data.Dataset.from_tensor_slices(x).repeat().batch(4)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_n_steps_per_call_give_the_weights_of_n_single_steps(optimizer):
    x, weights = data(), []
    for steps_per_execution in (1, 6):
        model = pcd()
        model.compile(optimizer=keras.optimizers.get(optimizer),
                      steps_per_execution=steps_per_execution)
        model.fit(batches(x), epochs=2, steps_per_epoch=6, verbose=0)
        assert model.steps_per_execution == steps_per_execution
        assert int(model.optimizer.iterations) == 12
        weights.append(model.get_weights())
    for single, fused in zip(*weights):
        np.testing.assert_allclose(fused, single, rtol=1e-6, atol=1e-7)
    assert any(np.abs(w).sum() > 0 for w in weights[0])


def test_auto_picks_a_divisor_of_the_epoch_for_small_models_only():
    model = pcd()
    model.compile(optimizer="sgd")  # steps_per_execution="auto" by default
    model.fit(data(), batch_size=4, epochs=1, verbose=0)
    assert model.steps_per_execution == 6  # 24 examples / 4: the whole epoch in one call
    model.fit(batches(data()), epochs=1, steps_per_epoch=5, verbose=0)
    assert model.steps_per_execution == 5
    assert auto_steps_per_execution(model, 62) == 62
    assert auto_steps_per_execution(model, 1000) == 125  # largest divisor <= 128
    assert auto_steps_per_execution(model, 131) == 1  # prime above the cap
    assert auto_steps_per_execution(model, None) == 1
    explicit = pcd()
    explicit.compile(optimizer="sgd", steps_per_execution=1)
    explicit.fit(data(), batch_size=4, epochs=1, verbose=0)
    assert explicit.steps_per_execution == 1
    large = pcd(num_hidden=20_000)  # 6 * 20000 + 20006 > 100k parameters
    large.compile(optimizer="sgd")
    assert auto_steps_per_execution(large, 6) == 1
    with pytest.raises(ValueError, match="steps_per_execution"):
        pcd().compile(optimizer="sgd", steps_per_execution=0)


@keras.saving.register_keras_serializable(package="keras_ebm_tests")
class ExplodingEnergy(keras.layers.Layer):
    """E(x) = w sum(x) + log(0.3 - w): finite until w passes 0.3, then NaN."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(), initializer="zeros")

    def call(self, x):
        return tf.reduce_sum(x, axis=-1) * self.w + tf.math.log(0.3 - self.w)


class Shift(Gibbs):
    def step(self, energy, x, step_index, seed=None):
        return x + 1.0, tf.ones(tf.shape(x)[:1])


def test_the_guard_stops_a_multi_step_call_with_a_non_finite_loss():
    model = ContrastiveDivergence(ExplodingEnergy(), Shift())
    model.build((None, 2))
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    x = -np.ones((8, 2), "float32")
    # loss = -2 w: SGD moves w by 0.1 per step; step 4 computes log(-0.1).
    guard = NonFiniteGuard()
    model.fit(x, batch_size=2, epochs=5, verbose=0, callbacks=[guard])
    assert model.steps_per_execution == 4
    assert guard.stopped_step == 4 and "steps 1-4" in guard.message
    assert float(model.energy.w) == pytest.approx(0.0)  # the weights before the failed call
    assert np.isfinite(model.energy(x)).all()
    model.energy.w.assign(0.2)
    with pytest.raises(NonFiniteError):
        model.fit(x, batch_size=2, epochs=5, verbose=0,
                  callbacks=[NonFiniteGuard(raise_error=True)])


def full_batches(x):
    return tf.data.Dataset.from_tensor_slices(x).repeat().batch(4, drop_remainder=True)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_blocks_of_minibatches_give_the_weights_of_single_steps(optimizer):
    # A dataset of full batches: `fit` feeds blocks of 6 minibatches, one per compiled
    # call, and runs their updates in one loop (no XLA here: jit_compile=False).
    x, weights, losses = data(), [], []
    for steps_per_execution in (1, "auto"):
        model = pcd()
        model.compile(optimizer=keras.optimizers.get(optimizer), jit_compile=False,
                      steps_per_execution=steps_per_execution)
        history = model.fit(full_batches(x), epochs=2, steps_per_epoch=6, verbose=0)
        assert int(model.optimizer.iterations) == 12
        weights.append(model.get_weights())
        losses.append(history.history["loss"])
    assert model.steps_per_execution == 6
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6, atol=1e-7)
    for single, fused in zip(*weights):
        np.testing.assert_allclose(fused, single, rtol=1e-6, atol=1e-7)


def test_epoch_ordered_blocks_give_the_batches_in_the_same_order():
    from keras_ebm.training import epoch_ordered_dataset

    x = np.arange(30, dtype="float32").reshape(15, 2)
    batches = epoch_ordered_dataset(x, 2, seed=3, epochs=3)
    blocks = batches.keras_ebm_blocks(7)  # 7 full batches per epoch
    flat = np.concatenate([b.numpy().reshape(-1, 2, 2) for b in blocks])
    np.testing.assert_array_equal(flat, np.stack([b.numpy() for b in batches]))


def test_an_rbm_runs_its_blocks_as_one_xla_program_with_threefry_draws():
    # Default compile on CPU: the block is compiled by XLA with ThreeFry draws, so the
    # noise differs in its bits from the per-step path's; the run is seeded all the same.
    from keras_ebm.training import epoch_ordered_dataset

    x = data()
    runs = []
    for _ in range(2):
        model = pcd()
        model.compile(optimizer="sgd")
        model.fit(epoch_ordered_dataset(x, 4, seed=0), epochs=2, steps_per_epoch=6, verbose=0)
        runs.append(model.get_weights())
    assert model.steps_per_execution == 6 and int(model.optimizer.iterations) == 12
    assert model.xla_blocks_on_cpu()
    for first, second in zip(*runs):
        np.testing.assert_array_equal(first, second)
        assert np.isfinite(first).all()


def test_an_explicit_xla_block_draws_with_threefry_too(monkeypatch):
    # jit_compile=True (the toys' PCD preset) compiles the block with XLA as "auto" does on
    # CPU, and its draws take ThreeFry as well (Philox cost the toys' PCD 25 -> 18 ms an
    # update).
    from keras_ebm import seeding
    from keras_ebm.training import epoch_ordered_dataset

    algorithms, original = [], seeding._alg
    monkeypatch.setattr(seeding, "_alg", lambda: algorithms.append(original()) or algorithms[-1])
    model = pcd()
    model.compile(optimizer="sgd", jit_compile=True)
    model.fit(epoch_ordered_dataset(data(), 4, seed=0), epochs=1, steps_per_epoch=6, verbose=0)
    assert model.steps_per_execution == 6
    assert algorithms and set(algorithms) == {"threefry"}


class EveryBatch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(batch)


def test_a_callback_that_acts_per_batch_gets_one_step_per_call():
    model = pcd()
    model.compile(optimizer="sgd")
    every_batch = EveryBatch()
    model.fit(data(), batch_size=4, epochs=1, verbose=0, callbacks=[every_batch, NonFiniteGuard()])
    assert model.steps_per_execution == 1 and every_batch.batches == list(range(6))
    model.fit(data(), batch_size=4, epochs=1, verbose=0, callbacks=[NonFiniteGuard()])
    assert model.steps_per_execution == 6
