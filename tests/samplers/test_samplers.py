import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.energies import RBM
from keras_ebm.samplers import AnnealedLangevin
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


def two_modes(x):
    """-log of 0.8 N((1.5, 0), 0.2^2 I) + 0.2 N((-1.5, 0), 0.2^2 I), up to a constant."""
    right = -tf.reduce_sum(tf.square(x - [1.5, 0.0]), -1) / (2 * 0.2**2) + np.log(0.8)
    left = -tf.reduce_sum(tf.square(x - [-1.5, 0.0]), -1) / (2 * 0.2**2) + np.log(0.2)
    return -tf.reduce_logsumexp(tf.stack([right, left]), 0)


@pytest.mark.parametrize("start", [1.5, -1.5])
def test_jumps_give_separated_modes_their_masses(start):
    """Every chain starts in one mode; MALA alone never crosses the barrier (E ~ 28 at
    x = 0), the jumps bring the population to the modes' masses 0.8 / 0.2."""
    x0 = tf.constant(np.tile([[start, 0.0]], [2000, 1]), tf.float32)
    box = dict(metropolis=True, clip_value_min=-3.0, clip_value_max=3.0, step_size=0.01)
    stuck = Langevin(num_steps=300, **box)(two_modes, x0, seed=[0, 1]).numpy()
    assert np.mean(stuck[:, 0] > 0) == float(start > 0)
    mixed = Langevin(num_steps=300, jump_probability=0.5, **box)(two_modes, x0,
                                                                seed=[0, 1]).numpy()
    right = np.mean(mixed[:, 0] > 0)
    # Five binomial standard deviations of 2000 independent draws: 0.045.
    assert abs(right - 0.8) < 0.045, right
    # Within a mode the jumps keep the local shape: std 0.2 per coordinate.
    np.testing.assert_allclose(mixed[mixed[:, 0] > 0].std(0), [0.2, 0.2], atol=0.02)


def test_a_jump_is_accepted_with_the_independence_metropolis_probability():
    # The jumping chains' proposals are the box's uniform draws (seed's sub-draws 2 and 3);
    # their acceptance is min(1, exp(E(x) - E(x'))), without MALA's proposal densities.
    from keras_ebm.seeding import fold_seed
    from keras_ebm.seeding import random_uniform

    def energy(x):
        return 3.0 * tf.reduce_sum(tf.square(x - 0.5), -1)

    sampler = Langevin(metropolis=True, clip_value_min=-2.0, clip_value_max=2.0, step_size=0.05,
                       jump_probability=0.6)
    x = tf.constant(np.random.default_rng(0).uniform(-2, 2, (400, 2)), tf.float32)
    seed = tf.constant([3, 4], tf.int64)
    x_next, acceptance = sampler.transition(energy, x, 0.05, np.sqrt(0.1), seed)
    jumps = (random_uniform([400], fold_seed(seed, 2)) < 0.6).numpy()
    box = random_uniform([400, 2], fold_seed(seed, 3), tf.float32, -2.0, 2.0)
    expected = np.minimum(1.0, np.exp(energy(x) - energy(box)))
    assert 150 < jumps.sum() < 330
    np.testing.assert_allclose(acceptance.numpy()[jumps], expected[jumps], rtol=1e-5)
    moved = np.any(x_next.numpy() != x.numpy(), axis=1)
    np.testing.assert_array_equal(x_next.numpy()[jumps & moved], box.numpy()[jumps & moved])
    # MALA's own moves: a Gaussian step from x, not a box draw.
    assert not np.allclose(acceptance.numpy()[~jumps], np.minimum(
        1.0, np.exp(energy(x) - energy(box)))[~jumps])
    restored = Langevin.from_config({k: v for k, v in sampler.get_config().items()
                                     if k != "jump_probability"})
    assert restored.jump_probability == 0.0  # a config saved before the setting existed


def test_jumps_need_a_box_and_the_metropolis_test():
    with pytest.raises(ValueError, match="jump_probability"):
        Langevin(jump_probability=0.1, clip_value_min=-1.0, clip_value_max=1.0)
    with pytest.raises(ValueError, match="jump_probability"):
        Langevin(jump_probability=0.1, metropolis=True, clip_value_min=-1.0)
    with pytest.raises(ValueError, match="jump_probability"):
        Langevin(jump_probability=1.0, metropolis=True, clip_value_min=-1.0,
                 clip_value_max=1.0)
    with pytest.raises(ValueError, match="finite clip_value_min < clip_value_max"):
        Langevin(jump_probability=0.1, metropolis=True, clip_value_min=-float("inf"),
                 clip_value_max=1.0)
    with pytest.raises(ValueError, match="finite clip_value_min < clip_value_max"):
        Langevin(jump_probability=0.1, metropolis=True, clip_value_min=1.0, clip_value_max=1.0)


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
     Langevin(num_steps=4, metropolis=True, clip_value_min=-2.0, clip_value_max=3.0,
              jump_probability=0.25),
     AnnealedLangevin(num_levels=3, steps_per_level=2, metropolis=True, clip_value_min=-1.0,
                      clip_value_max=1.0, jump_probability=0.1),
     MetropolisHastings(num_steps=2, proposal="gaussian", proposal_scale=0.3)],
)
def test_sampler_serialisation_round_trip(sampler):
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sampler))
    assert type(clone) is type(sampler)
    assert clone.get_config() == sampler.get_config()
