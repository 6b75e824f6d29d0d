import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.energies import RBM
from keras_ebm.samplers import Gibbs
from keras_ebm.samplers import Langevin
from keras_ebm.samplers import MetropolisHastings


def chi_square_statistic(samples, log_probabilities):
    """Pearson chi-square of binary samples [n, D] against exact state probabilities."""
    num_bits = samples.shape[1]
    codes = (samples.astype(int) * (2 ** np.arange(num_bits))).sum(axis=1)
    observed = np.bincount(codes, minlength=2**num_bits)
    expected = len(samples) * np.exp(log_probabilities)
    return np.sum((observed - expected) ** 2 / expected), 2**num_bits - 1


# 99.9% quantile of chi-square with 15 degrees of freedom.
CHI2_15_999 = 37.70


def all_states(num_bits):
    # Least significant bit first, matching chi_square_statistic's codes.
    return np.array([[(i >> k) & 1 for k in range(num_bits)] for i in range(2**num_bits)],
                    "float32")


def tiny_rbm():
    rng = np.random.default_rng(0)
    rbm = RBM(4, 2)
    rbm.kernel.assign(rng.standard_normal((4, 2)).astype("float32"))
    rbm.visible_bias.assign(rng.standard_normal(4).astype("float32"))
    rbm.hidden_bias.assign(rng.standard_normal(2).astype("float32"))
    return rbm


def exact_log_probabilities(energy, num_bits):
    negative = -np.asarray(energy(all_states(num_bits)), "float64")
    return negative - np.log(np.exp(negative).sum())


def test_gibbs_stationary_distribution_chi_square():
    tf.random.set_seed(1)
    rbm = tiny_rbm()
    x0 = np.zeros((4000, 4), "float32")
    samples = Gibbs(num_steps=30)(rbm, x0).numpy()
    statistic, _ = chi_square_statistic(samples, exact_log_probabilities(rbm, 4))
    assert statistic < CHI2_15_999


def test_metropolis_bit_flip_stationary_distribution_chi_square():
    tf.random.set_seed(2)
    rbm = tiny_rbm()
    x0 = np.ones((4000, 4), "float32")
    sampler = MetropolisHastings(num_steps=60, proposal="bit_flip")
    samples, acceptance = sampler.sample_with_info(rbm, x0)
    statistic, _ = chi_square_statistic(samples.numpy(), exact_log_probabilities(rbm, 4))
    assert statistic < CHI2_15_999
    assert 0.0 < float(acceptance) < 1.0


def test_gibbs_rejects_a_wrong_distribution():
    """The chi-square check has power: one Gibbs step from all-zeros is not stationary."""
    tf.random.set_seed(3)
    rbm = tiny_rbm()
    rbm.kernel.assign(3.0 * rbm.kernel)
    samples = MetropolisHastings(num_steps=1)(rbm, np.zeros((4000, 4), "float32")).numpy()
    statistic, _ = chi_square_statistic(samples, exact_log_probabilities(rbm, 4))
    assert statistic > CHI2_15_999


def gaussian_energy(x):
    # N(1, 0.5^2) in each coordinate.
    return tf.reduce_sum(tf.square(x - 1.0) / (2 * 0.25), axis=-1)


@pytest.mark.parametrize("metropolis", [False, True])
def test_langevin_samples_a_gaussian(metropolis):
    tf.random.set_seed(4)
    sampler = Langevin(num_steps=200, step_size=0.02, metropolis=metropolis)
    samples, acceptance = sampler.sample_with_info(gaussian_energy, tf.zeros([3000, 2]))
    samples = samples.numpy()
    assert np.abs(samples.mean() - 1.0) < 0.05
    assert np.abs(samples.std() - 0.5) < 0.05
    if metropolis:
        assert 0.5 < float(acceptance) <= 1.0


def test_mala_is_exact_with_a_large_step():
    """A step too large for ULA to be accurate; the MH correction fixes the variance."""
    tf.random.set_seed(5)
    x0 = tf.random.normal([3000, 1], 1.0, 0.5)
    ula = Langevin(num_steps=100, step_size=0.2).sample(gaussian_energy, x0).numpy()
    mala = Langevin(num_steps=100, step_size=0.2, metropolis=True).sample(
        gaussian_energy, x0).numpy()
    assert abs(mala.std() - 0.5) < 0.04
    assert abs(ula.std() - 0.5) > abs(mala.std() - 0.5)


def test_langevin_clamps_and_clips():
    sampler = Langevin(num_steps=5, step_size=1.0, noise_scale=0.0, grad_clip=0.1,
                       clip_value_min=-0.25, clip_value_max=0.25)
    out = sampler(lambda x: tf.reduce_sum(100.0 * x, axis=-1), tf.zeros([4, 2])).numpy()
    # Each step moves by -step_size * clip(100) = -0.1; five steps clamp at -0.25.
    np.testing.assert_allclose(out, -0.25)
    out = Langevin(num_steps=2, step_size=1.0, noise_scale=0.0, grad_clip=0.1)(
        lambda x: tf.reduce_sum(100.0 * x, axis=-1), tf.zeros([1, 1])).numpy()
    np.testing.assert_allclose(out, -0.2, atol=1e-6)


def test_eager_sampling_traces_the_loop_once():
    traces = []

    def energy(x):
        traces.append(1)  # runs only while tracing
        return tf.reduce_sum(tf.square(x), axis=-1)

    sampler = Langevin(num_steps=50, step_size=0.01)
    sampler(energy, tf.zeros([8, 2]))
    count = len(traces)
    sampler(energy, tf.ones([8, 2]), num_steps=10)
    assert len(traces) == count  # no retrace, no Python loop per step
    assert count <= 2


@pytest.mark.parametrize(
    "sampler",
    [Gibbs(num_steps=3), Langevin(num_steps=7, step_size=0.1, grad_clip=0.01, metropolis=True),
     MetropolisHastings(num_steps=2, proposal="gaussian", proposal_scale=0.3)],
)
def test_sampler_serialisation_round_trip(sampler):
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sampler))
    assert type(clone) is type(sampler)
    assert clone.get_config() == sampler.get_config()
