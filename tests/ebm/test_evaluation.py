import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.energies import RBM
from keras_ebm.evaluation.ais import ais_log_partition
from keras_ebm.evaluation.density import gaussian_log_likelihood
from keras_ebm.evaluation.density import grid_log_likelihood
from keras_ebm.evaluation.log_partition import brute_force_log_partition
from keras_ebm.evaluation.log_partition import rbm_log_likelihood
from keras_ebm.evaluation.log_partition import rbm_log_partition
from keras_ebm.evaluation.mmd import mmd


def random_rbm(num_visible, num_hidden, scale, seed=0):
    rng = np.random.default_rng(seed)
    rbm = RBM(num_visible, num_hidden)
    rbm.kernel.assign(scale * rng.standard_normal((num_visible, num_hidden)).astype("float32"))
    rbm.visible_bias.assign(rng.normal(-1.0, 1.0, num_visible).astype("float32"))
    rbm.hidden_bias.assign(rng.normal(0.0, 1.0, num_hidden).astype("float32"))
    return rbm


def test_exact_log_likelihood_sums_to_one_on_a_tiny_rbm():
    rbm = random_rbm(5, 3, scale=1.0)
    states = np.array([[(i >> k) & 1 for k in range(5)] for i in range(32)], "float32")
    log_p = -np.asarray(rbm(states), "float64") - rbm_log_partition(rbm)
    assert np.exp(log_p).sum() == pytest.approx(1.0, abs=1e-4)
    assert rbm_log_likelihood(rbm, states) == pytest.approx(log_p.mean(), abs=1e-4)
    assert rbm_log_partition(rbm) == pytest.approx(brute_force_log_partition(rbm, 5), abs=1e-4)


def test_ais_within_half_a_nat_of_exact_on_16_hidden_units():
    rbm = random_rbm(64, 16, scale=0.3, seed=1)
    exact = rbm_log_partition(rbm)
    base = np.asarray(rbm.visible_bias)  # a reasonable base: the RBM's own biases
    estimate, log_weights = ais_log_partition(rbm, num_chains=64, num_betas=2000,
                                              base_visible_bias=base, seed=0)
    assert log_weights.shape == (64,)
    assert abs(estimate - exact) < 0.5


def test_grid_log_likelihood_of_a_gaussian_energy_is_exact():
    def energy(x):
        return tf.reduce_sum(tf.square(x) / (2 * 0.64), axis=-1)  # N(0, 0.8^2 I), unnormalised

    x = np.random.default_rng(0).normal(0, 0.8, size=(500, 2)).astype("float32")
    exact = np.mean(-np.sum(x**2, axis=1) / (2 * 0.64) - np.log(2 * np.pi * 0.64))
    assert grid_log_likelihood(energy, x, bounds=(-4.0, 4.0), grid_size=200) == pytest.approx(
        exact, abs=1e-3)
    assert gaussian_log_likelihood(x, x) == pytest.approx(exact, abs=0.05)


def test_mmd_small_for_same_distribution_and_large_for_different():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 2)), rng.normal(size=(300, 2))
    c = rng.normal(2.0, 1.0, size=(300, 2))
    assert abs(mmd(a, b)) < 0.02
    assert mmd(a, c) > 0.3


def _gaussian_log_density(x, variance):
    return np.mean(-0.5 * np.sum(x ** 2, axis=1) / variance - np.log(2 * np.pi * variance))


@pytest.mark.parametrize("scale", [0.25, 1.0, 7.0])
def test_calibrated_likelihood_fits_the_temperature_of_a_scaled_gaussian_energy(scale):
    # E = scale |x|^2 / 2: p_T = N(0, T / scale I). The ML variance of 2-D data is
    # mean |x|^2 / 2, so the fitted T is scale * mean |x|^2 / 2 in closed form.
    from keras_ebm.evaluation.density import calibrated_log_likelihood

    rng = np.random.default_rng(0)
    x_train = 1.3 * rng.normal(size=(3000, 2))
    x_test = 1.3 * rng.normal(size=(3000, 2))

    def energy(x):
        return scale * 0.5 * tf.reduce_sum(x ** 2, axis=-1)

    result = calibrated_log_likelihood(energy, x_train, x_test, bounds=(-9.0, 9.0),
                                       grid_size=400)
    variance = np.mean(np.sum(x_train ** 2, axis=1)) / 2
    assert result["temperature"] == pytest.approx(scale * variance, rel=2e-3)
    assert result["log_likelihood"] == pytest.approx(_gaussian_log_density(x_test, variance),
                                                     abs=2e-3)
    assert result["train_log_likelihood"] == pytest.approx(
        _gaussian_log_density(x_train, variance), abs=2e-3)
    assert result["log_likelihood_t1"] == pytest.approx(
        _gaussian_log_density(x_test, 1.0 / scale), abs=2e-3)
    # The fitted T is the best on the training data: any other T is worse there.
    assert result["train_log_likelihood"] >= _gaussian_log_density(x_train, 1.1 * variance)


def test_biased_mmd_matches_a_transcription_and_is_a_floor_for_equal_distributions():
    from keras_ebm.evaluation.mmd import median_bandwidths

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(40, 2)), rng.normal(size=(30, 2)) + 0.3
    widths = [0.5, 1.0]

    def k(a, b):
        d = np.sum((a[:, None] - b[None]) ** 2, axis=-1)
        return sum(np.exp(-d / (2 * s ** 2)) for s in widths)

    expected = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    assert mmd(x, y, widths, unbiased=False) == pytest.approx(expected, rel=1e-10)
    unbiased = ((k(x, x).sum() - np.trace(k(x, x))) / (40 * 39)
                + (k(y, y).sum() - np.trace(k(y, y))) / (30 * 29) - 2 * k(x, y).mean())
    assert mmd(x, y, widths) == pytest.approx(unbiased, rel=1e-10)
    distances = np.sqrt(np.sum((x[:, None] - x[None]) ** 2, -1))[np.triu_indices(40, 1)]
    assert median_bandwidths(x) == pytest.approx(
        [0.5 * np.median(distances), np.median(distances), 2 * np.median(distances)])
    same = [mmd(rng.normal(size=(500, 2)), rng.normal(size=(500, 2)), unbiased=False)
            for _ in range(3)]
    shifted = mmd(rng.normal(size=(500, 2)) + 0.5, rng.normal(size=(500, 2)), unbiased=False)
    assert min(same) > 0 and shifted > 5 * max(same)


def test_mmd_floor_is_the_expected_mmd_of_two_independent_draws():
    from keras_ebm.evaluation.mmd import mmd_floor

    # For a, b ~ N(0, sigma^2 I) in d dimensions, E exp(-|a - b|^2 / (2 s^2)) is
    # (s^2 / (s^2 + 2 sigma^2))^(d / 2), and E MMD_b^2 of two draws of n is
    # 2 / n (number of kernels - sum over s of it).
    rng = np.random.default_rng(0)
    sigma, widths, n = 0.7, [0.5, 1.0, 2.0], 200
    closed = 2.0 / n * (3 - sum(s**2 / (s**2 + 2 * sigma**2) for s in widths))
    x = sigma * rng.normal(size=(3000, 2))
    assert mmd_floor(x, n, widths, chunk=700) == pytest.approx(closed, rel=0.02)
    pairs = [mmd(sigma * rng.normal(size=(n, 2)), sigma * rng.normal(size=(n, 2)), widths,
                 unbiased=False) for _ in range(200)]
    assert np.mean(pairs) == pytest.approx(closed, rel=0.05)
    # A chunked sum and a small one agree with the full pair matrix.
    y = x[:50]
    d = np.sum((y[:, None] - y[None]) ** 2, -1)
    k = sum(np.exp(-d / (2 * s**2)) for s in widths)
    full = 2.0 / 7 * (3 - (k.sum() - np.trace(k)) / (50 * 49))
    assert mmd_floor(y, 7, widths, chunk=13) == pytest.approx(full, rel=1e-10)
    with pytest.raises(ValueError, match="at least 2 points"):
        mmd_floor(x[:1], 7)
