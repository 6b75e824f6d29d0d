import itertools

import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.energies import RBM
from keras_ebm.energies import ConvEnergy
from keras_ebm.energies import MLPEnergy
from keras_ebm.evaluation.log_partition import brute_force_log_partition


def make_rbm(num_visible, num_hidden, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    rbm = RBM(num_visible, num_hidden)
    rbm.kernel.assign(scale * rng.standard_normal((num_visible, num_hidden)).astype("float32"))
    rbm.visible_bias.assign(scale * rng.standard_normal(num_visible).astype("float32"))
    rbm.hidden_bias.assign(scale * rng.standard_normal(num_hidden).astype("float32"))
    return rbm


def numpy_free_energy(v, w, b, c):
    return -v @ b - np.sum(np.logaddexp(0.0, v @ w + c), axis=1)


@pytest.mark.parametrize("num_visible,num_hidden,batch", [(5, 3, 4), (8, 6, 1), (3, 7, 9)])
def test_free_energy_and_conditionals_match_numpy(num_visible, num_hidden, batch):
    rbm = make_rbm(num_visible, num_hidden)
    w, b, c = (np.asarray(v, "float64") for v in (rbm.kernel, rbm.visible_bias, rbm.hidden_bias))
    rng = np.random.default_rng(1)
    v = (rng.random((batch, num_visible)) < 0.5).astype("float32")
    h = (rng.random((batch, num_hidden)) < 0.5).astype("float32")
    np.testing.assert_allclose(rbm(v), numpy_free_energy(v, w, b, c), rtol=1e-5, atol=1e-5)
    def sigmoid(a):
        return 1.0 / (1.0 + np.exp(-a))

    np.testing.assert_allclose(rbm.hidden_probabilities(v), sigmoid(v @ w + c),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rbm.visible_probabilities(h), sigmoid(h @ w.T + b),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        rbm.joint_energy(v, h), -v @ b - h @ c - np.sum((v @ w) * h, axis=1), rtol=1e-5, atol=1e-5
    )


def test_free_energy_sums_out_hidden_units():
    rbm = make_rbm(3, 4)
    v = np.array([[1, 0, 1]], "float32")
    hidden_states = np.array(list(itertools.product([0, 1], repeat=4)), "float32")
    joint = np.asarray(rbm.joint_energy(np.repeat(v, 16, axis=0), hidden_states), "float64")
    np.testing.assert_allclose(float(rbm(v)[0]), -np.log(np.exp(-joint).sum()), rtol=1e-5)


@pytest.mark.parametrize("num_visible,num_hidden", [(6, 3), (4, 9)])
def test_exact_log_partition_matches_brute_force(num_visible, num_hidden):
    rbm = make_rbm(num_visible, num_hidden, scale=1.0)
    expected = brute_force_log_partition(rbm, num_visible)
    assert float(rbm.log_partition()) == pytest.approx(expected, abs=1e-4)


def test_log_partition_at_zero_weights():
    rbm = RBM(10, 4, kernel_initializer="zeros")
    assert float(rbm.log_partition()) == pytest.approx(14 * np.log(2.0), abs=1e-5)


def test_visible_bias_from_data_gives_independent_pixel_marginals():
    x = (np.random.default_rng(0).random((200, 5)) < [0.1, 0.3, 0.5, 0.7, 0.9]).astype("float32")
    rbm = RBM(5, 2, kernel_initializer="zeros")
    rbm.set_visible_bias_from_data(x)
    np.testing.assert_allclose(rbm.visible_probabilities(np.zeros((1, 2), "float32"))[0],
                               x.mean(0), atol=1e-4)


def test_rbm_config_round_trip():
    rbm = make_rbm(5, 3)
    clone = RBM.from_config(rbm.get_config())
    assert (clone.num_visible, clone.num_hidden) == (5, 3)
    assert clone.kernel.shape == (5, 3)


@pytest.mark.parametrize("spectral", [False, True])
def test_mlp_energy_is_scalar_and_differentiable(spectral):
    energy = MLPEnergy(hidden_units=(8, 8), spectral_normalization=spectral)
    x = tf.random.normal([5, 2])
    with tf.GradientTape() as tape:
        tape.watch(x)
        e = energy(x)
        total = tf.reduce_sum(e)
    assert e.shape == (5,)
    assert tape.gradient(total, x).shape == (5, 2)
    clone = MLPEnergy.from_config(energy.get_config())
    assert clone(x).shape == (5,)


@pytest.mark.parametrize("spectral", [False, True])
def test_conv_energy_is_scalar(spectral):
    energy = ConvEnergy(filters=(4, 8), spectral_normalization=spectral)
    assert energy(tf.zeros([3, 8, 8, 1])).shape == (3,)
