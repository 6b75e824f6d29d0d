import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.energies import RBM
from keras_ebm.energies import MLPEnergy
from keras_ebm.memory.replay_buffer import ReplayBuffer
from keras_ebm.methods.contrastive_divergence import ContrastiveDivergence
from keras_ebm.samplers import Gibbs
from keras_ebm.samplers import Langevin


def test_replay_buffer_sample_update_and_reinit():
    tf.random.set_seed(0)
    buffer = ReplayBuffer(size=50, shape=(3,), reinit_fraction=0.0, minval=-1.0, maxval=1.0)
    assert not buffer.chains.trainable
    chains = np.asarray(buffer.chains)
    assert chains.shape == (50, 3) and chains.min() >= -1 and chains.max() <= 1
    x, indices = buffer.sample(10)
    assert len(set(indices.numpy().tolist())) == 10
    np.testing.assert_allclose(x, chains[indices.numpy()])
    buffer.update(indices, tf.fill([10, 3], 7.0))
    assert (np.asarray(buffer.chains) == 7.0).all(axis=1).sum() == 10
    everything, _ = buffer.sample()
    assert everything.shape == (50, 3)
    restarting = ReplayBuffer(size=1000, shape=(2,), reinit_fraction=1.0, noise="bernoulli")
    restarting.chains.assign(tf.fill([1000, 2], 5.0))
    x, _ = restarting.sample(1000)
    assert set(np.unique(x.numpy()).tolist()) <= {0.0, 1.0}


def test_pcd_model_with_replay_buffer_survives_keras_save_and_load(tmp_path):
    keras.utils.set_random_seed(0)
    buffer = ReplayBuffer(size=16, shape=(6,), reinit_fraction=0.05, noise="bernoulli")
    model = ContrastiveDivergence(RBM(6, 3), Gibbs(num_steps=2), persistent=True,
                                  replay_buffer=buffer, chains_per_step=8)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    x = (np.random.default_rng(0).random((32, 6)) < 0.3).astype("float32")
    before = np.asarray(buffer.chains).copy()
    model.fit(x, batch_size=8, epochs=2, verbose=0)
    assert not np.array_equal(before, np.asarray(buffer.chains))  # chains moved
    path = str(tmp_path / "pcd.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.replay_buffer.chains, buffer.chains)
    np.testing.assert_array_equal(loaded.energy.kernel, model.energy.kernel)
    np.testing.assert_allclose(loaded.energy(x), model.energy(x), rtol=1e-6)
    assert isinstance(loaded.sampler, Gibbs) and loaded.sampler.num_steps == 2
    loaded.compile(optimizer="adam")
    loaded.fit(x, batch_size=8, epochs=1, verbose=0)  # resumes training


def test_cd_pushes_data_energy_below_sample_energy_on_continuous_data():
    keras.utils.set_random_seed(1)
    x = np.random.default_rng(0).normal([1.5, -1.0], 0.2, size=(256, 2)).astype("float32")
    model = ContrastiveDivergence(
        MLPEnergy((16, 16)),
        Langevin(num_steps=10, step_size=0.05, clip_value_min=-3.0, clip_value_max=3.0),
        persistent=True, replay_buffer=ReplayBuffer(256, (2,), minval=-3.0, maxval=3.0),
        chains_per_step=64, energy_l2=0.1)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    history = model.fit(x, batch_size=64, epochs=15, verbose=0)
    assert history.history["loss"][-1] != 0.0  # trackers, not a raw tensor under "loss"
    far = np.array([[-2.0, 2.0]], "float32")
    assert float(model.energy(far)[0]) > float(np.mean(model.energy(x)))


@keras.saving.register_keras_serializable(package="test_reweight")
class TwoWells(keras.layers.Layer):
    """(|x| - 2)^2 / 0.18, minus `shift` on the left: its mass is e^shift / (1 + e^shift)."""

    def __init__(self, shift=0.0, **kwargs):
        super().__init__(**kwargs)
        self.shift = float(shift)

    def call(self, x):
        x = x[:, 0]
        return tf.square(tf.abs(x) - 2.0) / 0.18 - self.shift * tf.cast(x < 0, x.dtype)

    def get_config(self):
        return {**super().get_config(), "shift": self.shift}


def test_reweighted_chains_follow_the_new_energy_masses():
    # Chains of the old energy (two equal wells), their old energies stored; the new energy
    # lowers the left well by log 4, so its mass is 0.8: the weights exp(E_old - E_new) are
    # 4 on the left and 1 on the right, whatever the chains' spread. Their effective sample
    # size, 0.74 of the chains, needs no resampling: the weights carry the masses.
    rng = np.random.default_rng(0)
    chains = np.concatenate([rng.normal(-2, 0.3, (2000, 1)), rng.normal(2, 0.3, (2000, 1))])
    chains = chains.astype("float32")
    buffer = ReplayBuffer(4000, (1,), reinit_fraction=0.0, track_energies=True)
    buffer.update(None, chains, energies=TwoWells()(chains))
    model = ContrastiveDivergence(TwoWells(np.log(4.0)), Langevin(num_steps=1), persistent=True,
                                  replay_buffer=buffer, reweight_chains=True, input_shape=(1,))
    x_init, indices, restarted = buffer.sample_with_restarts(seed=[0, 1])
    x, log_weights = model.reweighted(x_init, indices, restarted, [0, 2])
    np.testing.assert_array_equal(x, x_init)
    weights, left = np.exp(log_weights.numpy()), x.numpy()[:, 0] < 0
    np.testing.assert_allclose(weights.mean(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(weights[left], 4 * weights[~left][0], rtol=1e-4)
    # The weights are carried: written with the chains, they add to the next visit's.
    buffer.update(indices, x, energies=model.energy(x), log_weights=log_weights)
    _, _, carried = buffer.stored_energies()
    np.testing.assert_allclose(carried, log_weights, rtol=1e-6)
    # 400 chains on the left, 3600 on the right, the left well lowered by log 36: the
    # effective size falls to 0.16, so the chains are redrawn, 0.8 of them on the left,
    # and their weights are equal again.
    uneven = np.concatenate([chains[:400], chains[400:][np.asarray(chains[400:, 0] > 0)]])
    uneven = np.concatenate([uneven, chains[2000:2000 + 4000 - len(uneven)]])
    buffer.update(None, uneven, energies=TwoWells()(uneven))
    model = ContrastiveDivergence(TwoWells(np.log(36.0)), Langevin(num_steps=1), persistent=True,
                                  replay_buffer=buffer, reweight_chains=True, input_shape=(1,))
    x_init, indices, restarted = buffer.sample_with_restarts(seed=[0, 1])
    x, log_weights = model.reweighted(x_init, indices, restarted, [0, 2])
    assert (np.asarray(x_init)[:, 0] < 0).mean() == 0.1
    assert abs((x.numpy()[:, 0] < 0).mean() - 0.8) < 0.005
    np.testing.assert_array_equal(log_weights, 0.0)
    # A restarted chain is a draw of the noise: weight exp(-E_now), normalised within the
    # restarted group, which keeps its share. With every right-hand chain restarted, the
    # two groups keep their 2000 chains each.
    buffer.update(None, chains, energies=TwoWells()(chains))
    model = ContrastiveDivergence(TwoWells(np.log(4.0)), Langevin(num_steps=1), persistent=True,
                                  replay_buffer=buffer, reweight_chains=True, input_shape=(1,))
    x_init, indices, _ = buffer.sample_with_restarts(seed=[0, 1])
    right = np.asarray(x_init)[:, 0] > 0
    _, log_weights = model.reweighted(x_init, indices, tf.constant(right), [0, 2])
    weights = np.exp(log_weights.numpy())
    np.testing.assert_allclose([weights[~right].sum(), weights[right].sum()], [2000, 2000],
                               rtol=1e-3)
    # Chains never written (the noise the buffer starts from) are importance-weighted
    # towards the energy's density: its wells, with their masses.
    fresh = ReplayBuffer(20000, (1,), reinit_fraction=0.0, minval=-4.0, maxval=4.0,
                         track_energies=True)
    model = ContrastiveDivergence(TwoWells(np.log(4.0)), Langevin(num_steps=1), persistent=True,
                                  replay_buffer=fresh, reweight_chains=True, input_shape=(1,))
    x_init, indices, restarted = fresh.sample_with_restarts(seed=[0, 1])
    redrawn = model.reweighted(x_init, indices, restarted, [0, 2])[0].numpy()[:, 0]
    assert abs((redrawn < 0).mean() - 0.8) < 0.02, (redrawn < 0).mean()
    np.testing.assert_allclose(np.abs(redrawn).mean(), 2.0, atol=0.05)
    # Energies are written with the chains; a chain never written is not known.
    stored, known, _ = buffer.stored_energies(tf.constant([0, 3999]))
    np.testing.assert_allclose(stored, TwoWells()(chains[[0, 3999]]), rtol=1e-6)
    assert known.numpy().all()
    assert not ReplayBuffer(3, (1,), track_energies=True).stored_energies()[1].numpy().any()
    rebuilt = ContrastiveDivergence.from_config(model.get_config())
    assert rebuilt.reweight_chains and rebuilt.replay_buffer.track_energies
    with pytest.raises(ValueError, match="track_energies=True"):
        ContrastiveDivergence(TwoWells(), Langevin(), persistent=True,
                              replay_buffer=ReplayBuffer(8, (1,)), reweight_chains=True)


def test_pcd_with_reweighted_chains_trains_and_writes_the_chain_energies():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(0.5, 0.3, size=(128, 2)).astype("float32")
    buffer = ReplayBuffer(64, (2,), minval=-2.0, maxval=2.0, track_energies=True)
    model = ContrastiveDivergence(MLPEnergy((8,)), Langevin(num_steps=3, step_size=0.01),
                                  persistent=True, replay_buffer=buffer, chains_per_step=32,
                                  reweight_chains=True)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    model.fit(x, batch_size=32, epochs=2, verbose=0)
    _, known, carried = buffer.stored_energies()
    assert 0 < known.numpy().sum() <= 64 and np.isfinite(carried.numpy()).all()
    # Each written chain's stored energy is its energy under the weights it was moved with.
    samples = model.contrasted_samples(tf.constant(x[:32]), training=True)
    stored, _, _ = buffer.stored_energies()
    chains = np.asarray(buffer.chains)
    rows = [np.flatnonzero((chains == s).all(1))[0] for s in samples.numpy()]
    np.testing.assert_allclose(stored.numpy()[rows], model.energy(samples), rtol=1e-5,
                               atol=1e-6)
    # The one-XLA-program epoch writes no energies: it refuses reweighted chains.
    rbm = ContrastiveDivergence(RBM(6, 3), Gibbs(), persistent=True, reweight_chains=True,
                                replay_buffer=ReplayBuffer(16, (6,), reinit_fraction=0.0,
                                                           noise="bernoulli",
                                                           track_energies=True))
    with pytest.raises(ValueError, match="do not reweight"):
        rbm.check_epoch_program()


def test_noise_draws_are_weighted_by_the_noise_density_and_non_finite_ones_dropped():
    # Normal noise: a fresh chain's weight is exp(-E) / q = exp(-E + |x|^2 / 2); with
    # E = |x|^2 / 2 every weight is equal, whatever the draws.
    buffer = ReplayBuffer(5000, (2,), reinit_fraction=0.0, noise="normal", track_energies=True)
    half_square = keras.layers.Lambda(lambda z: 0.5 * tf.reduce_sum(tf.square(z), -1))
    model = ContrastiveDivergence(half_square, Langevin(num_steps=1), persistent=True,
                                  replay_buffer=buffer, reweight_chains=True, input_shape=(2,))
    x_init, indices, restarted = buffer.sample_with_restarts(seed=[0, 1])
    x, log_weights = model.reweighted(x_init, indices, restarted, [0, 2])
    np.testing.assert_allclose(log_weights, 0.0, atol=1e-4)
    np.testing.assert_array_equal(x, x_init)
    # A chain of non-finite energy gets weight 0 (log-weight -80), the others share the rest.
    poisoned = tf.tensor_scatter_nd_update(x_init, [[0]], [[float("nan"), 0.0]])
    _, log_weights = model.reweighted(poisoned, indices, restarted, [0, 2])
    assert log_weights.numpy()[0] == -80.0 and np.isfinite(log_weights.numpy()).all()


def test_buffer_draws_distinct_chains_under_xla():
    # XLA has no kernel for StatelessShuffle: a PCD update with chains_per_step compiled with
    # jit_compile=True failed before. Each draw is n distinct chains, the same per seed.
    buffer = ReplayBuffer(50, (2,), reinit_fraction=0.0)
    draw = tf.function(lambda seed: buffer.sample_with_restarts(20, seed=seed)[1],
                       jit_compile=True)
    first, again, other = (draw(tf.constant(s, tf.int64)).numpy()
                           for s in ([0, 1], [0, 1], [0, 2]))
    assert len(set(first.tolist())) == 20 and set(first.tolist()) <= set(range(50))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    counts = np.zeros(50)
    for s in range(200):  # each chain is drawn with probability 20/50
        counts[draw(tf.constant([1, s], tf.int64)).numpy()] += 1
    assert counts.min() > 50 and counts.max() < 110  # Binomial(200, 0.4): 80 +- 6.9
