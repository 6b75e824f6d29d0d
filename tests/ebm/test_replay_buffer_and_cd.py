import keras
import numpy as np
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
