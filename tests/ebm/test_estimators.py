"""NCE, ratio matching, MPF and exact ML recover known models."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.energies import RBM
from keras_ebm.methods.maximum_likelihood import MaximumLikelihood
from keras_ebm.methods.minimum_probability_flow import MinimumProbabilityFlow
from keras_ebm.methods.noise_contrastive_estimation import BernoulliNoise
from keras_ebm.methods.noise_contrastive_estimation import GaussianNoise
from keras_ebm.methods.noise_contrastive_estimation import NoiseContrastiveEstimation
from keras_ebm.methods.ratio_matching import RatioMatching
from keras_ebm.methods.ratio_matching import one_bit_flips


@keras.saving.register_keras_serializable(package="keras_ebm_tests")
class DiagonalGaussianEnergy(keras.layers.Layer):
    """E(x) = sum_i (x_i - mu_i)^2 / (2 sigma_i^2), with sigma = exp(log_sigma)."""

    def build(self, input_shape):
        self.mu = self.add_weight(name="mu", shape=input_shape[-1:], initializer="zeros")
        self.log_sigma = self.add_weight(name="log_sigma", shape=input_shape[-1:],
                                         initializer="zeros")

    def call(self, x):
        return tf.reduce_sum(tf.square(x - self.mu) * tf.exp(-2.0 * self.log_sigma) / 2.0, axis=-1)


@keras.saving.register_keras_serializable(package="keras_ebm_tests")
class IsingEnergy(keras.layers.Layer):
    """E(x) = -x . b - sum_{i<j} J_ij x_i x_j on binary x."""

    def build(self, input_shape):
        d = input_shape[-1]
        self.bias = self.add_weight(name="bias", shape=(d,), initializer="zeros")
        self.coupling = self.add_weight(name="coupling", shape=(d, d), initializer="zeros")
        self.mask = np.triu(np.ones((d, d), "float32"), 1)

    def call(self, x):
        j = self.coupling * self.mask
        return -tf.linalg.matvec(x, self.bias) - tf.reduce_sum(tf.matmul(x, j) * x, axis=-1)


TRUE_BIAS = np.array([0.5, -1.0, 0.0, 1.0], "float32")
TRUE_COUPLING = np.triu(np.array([[0, 1.0, -0.5, 0.0], [0, 0, 0.8, -1.0], [0, 0, 0, 0.5],
                                  [0, 0, 0, 0]], "float32"), 1)


def ising_data(num_samples=8192):
    """A data set whose empirical distribution is the true Ising model (up to rounding)."""
    states = np.array([[(i >> k) & 1 for k in range(4)] for i in range(16)], "float32")
    negative_energy = states @ TRUE_BIAS + np.sum((states @ TRUE_COUPLING) * states, axis=1)
    p = np.exp(negative_energy) / np.exp(negative_energy).sum()
    counts = np.round(p * num_samples).astype(int)
    return np.repeat(states, counts, axis=0)


def test_one_bit_flips():
    x = np.array([[1.0, 0.0, 1.0]], "float32")
    np.testing.assert_array_equal(one_bit_flips(x)[0], [[0, 0, 1], [1, 1, 1], [1, 0, 0]])


@pytest.mark.parametrize("method_class", [RatioMatching, MinimumProbabilityFlow, MaximumLikelihood])
def test_recovers_a_known_ising_model(method_class):
    keras.utils.set_random_seed(0)
    x = ising_data()
    model = method_class(IsingEnergy())
    model.build((None, 4))
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    # Full-batch steps, one epoch: avoids 300 epochs of Keras overhead.
    full_batches = tf.data.Dataset.from_tensors(x).repeat()
    history = model.fit(full_batches, steps_per_epoch=300, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1]) and history.history["loss"][-1] != 0.0
    energy = model.energy
    np.testing.assert_allclose(energy.bias, TRUE_BIAS, atol=0.1)
    np.testing.assert_allclose(np.asarray(energy.coupling) * energy.mask, TRUE_COUPLING, atol=0.1)


def test_nce_recovers_a_gaussian_and_its_log_partition():
    keras.utils.set_random_seed(0)
    mu, sigma = np.array([1.0, -0.5]), np.array([0.5, 2.0])
    x = (mu + sigma * np.random.default_rng(0).standard_normal((8000, 2))).astype("float32")
    energy = DiagonalGaussianEnergy()
    model = NoiseContrastiveEstimation(energy, GaussianNoise.from_data(x, scale=1.2),
                                       noise_ratio=2.0)
    model.build((None, 2))
    model.compile(optimizer=keras.optimizers.Adam(0.03))
    model.fit(x, batch_size=1000, epochs=40, verbose=0)
    np.testing.assert_allclose(energy.mu, mu, atol=0.1)
    np.testing.assert_allclose(np.exp(energy.log_sigma), sigma, rtol=0.1)
    true_log_z = np.sum(np.log(sigma)) + np.log(2 * np.pi)
    assert float(model.log_partition) == pytest.approx(true_log_z, abs=0.1)


def test_maximum_likelihood_on_an_rbm_decreases_exact_nll():
    keras.utils.set_random_seed(0)
    x = (np.random.default_rng(0).random((64, 8)) < np.linspace(0.1, 0.9, 8)).astype("float32")
    model = MaximumLikelihood(RBM(8, 3))
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    history = model.fit(x, batch_size=64, epochs=30, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] - 0.5
    nll = float(tf.reduce_mean(model.energy(x)) + model.energy.log_partition())
    assert nll == pytest.approx(
        model.evaluate(x, batch_size=64, verbose=0, return_dict=True)["loss"], abs=1e-4)


def test_bernoulli_noise_log_prob():
    noise = BernoulliNoise([0.2, 0.7])
    x = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
    np.testing.assert_allclose(noise.log_prob(x), [np.log(0.2 * 0.3), np.log(0.8 * 0.7)], rtol=1e-5)
    assert noise.sample(5).shape == (5, 2)
