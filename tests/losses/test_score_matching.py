"""Score-matching objectives against NumPy transcriptions and Gaussian closed forms."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.losses.score_matching import denoising_score_matching
from keras_ebm.losses.score_matching import energy_gradient
from keras_ebm.losses.score_matching import exact_score_matching
from keras_ebm.losses.score_matching import sliced_score_matching

RNG = np.random.default_rng(0)
A = np.array([[2.0, 0.6], [0.6, 0.5]])  # a precision matrix (symmetric positive definite)
MU = np.array([0.3, -1.0])
X = RNG.normal(size=(64, 2))


def quadratic(x):
    """E(x) = 1/2 (x - mu)^T A (x - mu): the energy of N(mu, A^-1)."""
    d = x - tf.constant(MU, x.dtype)
    return 0.5 * tf.reduce_sum(d * tf.linalg.matvec(tf.constant(A, x.dtype), d), axis=-1)


def quartic(x):
    """E(x) = sum_i x_i^4 / 4 + x_0 x_1: grad x^3 + (x_1, x_0), Hessian trace 3 |x|^2."""
    return tf.reduce_sum(x ** 4, axis=-1) / 4.0 + x[:, 0] * x[:, 1]


def test_exact_score_matching_matches_numpy_transcriptions():
    # Quadratic: 1/2 |A (x - mu)|^2 - tr(A).
    expected = 0.5 * np.sum(((X - MU) @ A) ** 2, axis=1) - np.trace(A)
    np.testing.assert_allclose(exact_score_matching(quadratic, X).numpy(), expected, rtol=1e-10)
    # Quartic: 1/2 |x^3 + (x_1, x_0)|^2 - 3 |x|^2.
    gradient = X ** 3 + X[:, ::-1]
    expected = 0.5 * np.sum(gradient ** 2, axis=1) - 3 * np.sum(X ** 2, axis=1)
    np.testing.assert_allclose(exact_score_matching(quartic, X).numpy(), expected, rtol=1e-10)
    energies, grads = energy_gradient(quartic, X)
    np.testing.assert_allclose(grads.numpy(), gradient, rtol=1e-12)
    assert energies.shape == (64,)


def test_exact_score_matching_is_minimised_by_the_data_precision():
    # For data with second moment S about mu, J(P) = 1/2 tr(P S P) - tr(P) is minimised at
    # P = S^-1 with J = -1/2 tr(S^-1): the gradient of the mean loss in P vanishes there.
    x = RNG.normal(size=(4000, 2)) @ np.array([[1.0, 0.0], [0.8, 0.5]]) + MU
    second_moment = (x - MU).T @ (x - MU) / len(x)
    precision = tf.Variable(np.linalg.inv(second_moment))

    def energy(v):
        d = v - MU
        return 0.5 * tf.reduce_sum(d * tf.linalg.matvec(precision, d), axis=-1)

    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(exact_score_matching(energy, x))
    assert loss.numpy() == pytest.approx(-0.5 * np.trace(np.linalg.inv(second_moment)),
                                         rel=1e-10)
    np.testing.assert_allclose(tape.gradient(loss, precision).numpy(), 0.0, atol=1e-10)
    precision.assign(np.linalg.inv(second_moment) * 1.1)  # elsewhere the loss is higher
    assert tf.reduce_mean(exact_score_matching(energy, x)).numpy() > loss.numpy() + 1e-3


def tiny_energy():
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(16, activation="swish"),
                             keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1),
                             keras.layers.Reshape(())])


def test_sliced_equals_exact_with_a_basis_of_projections_on_a_small_model():
    # v uniform over sqrt(D) e_i has E[v v^T] = I, and the average over all D of them is exact.
    energy = tiny_energy()
    x = tf.constant(X, "float32")
    basis = np.sqrt(2.0) * np.eye(2, dtype="float32")
    projections = np.broadcast_to(basis[:, None, :], (2, 64, 2))
    exact = exact_score_matching(energy, x).numpy()
    for variance_reduction in (True, False):
        sliced = sliced_score_matching(energy, x, projections, variance_reduction).numpy()
        np.testing.assert_allclose(sliced, exact, rtol=1e-4, atol=1e-5)
    # Gaussian projections: the mean over examples and many v converges to the exact mean.
    gaussian = tf.random.stateless_normal((400, 64, 2), seed=(3, 4))
    sliced = sliced_score_matching(energy, x, gaussian).numpy()
    assert sliced.mean() == pytest.approx(exact.mean(), abs=0.05 * np.abs(exact).mean() + 1e-3)


def test_sliced_matches_a_numpy_transcription_per_projection():
    v = RNG.normal(size=(3, 64, 2))
    gradient = (X - MU) @ A  # grad E; the Hessian is A
    for variance_reduction in (True, False):
        second = (0.5 * np.sum(gradient ** 2, axis=1)[None] if variance_reduction
                  else 0.5 * np.einsum("mni,ni->mn", v, gradient) ** 2)
        expected = np.mean(-np.einsum("mni,ij,mnj->mn", v, A, v) + second, axis=0)
        np.testing.assert_allclose(
            sliced_score_matching(quadratic, X, v, variance_reduction).numpy(), expected,
            rtol=1e-10)


def test_denoising_score_matching_matches_numpy_and_its_gaussian_minimiser():
    noise = RNG.normal(size=X.shape)
    sigma = 0.3
    corrupted = X + sigma * noise
    expected = 0.5 * np.sum((-sigma * (corrupted - MU) @ A + noise) ** 2, axis=1)
    np.testing.assert_allclose(denoising_score_matching(quadratic, X, noise, sigma).numpy(),
                               expected, rtol=1e-10)
    # Data N(0, S): the minimiser over precisions P is (S + sigma^2 I)^-1, the noisy data's.
    x = RNG.normal(size=(20000, 2)) @ np.array([[1.0, 0.0], [0.8, 0.5]])
    noise = RNG.normal(size=x.shape)
    precision = tf.Variable(np.eye(2))

    def energy(v):
        return 0.5 * tf.reduce_sum(v * tf.linalg.matvec(precision, v), axis=-1)

    optimizer = keras.optimizers.Adam(0.05)
    for _ in range(400):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(denoising_score_matching(energy, x, noise, sigma))
        optimizer.apply([tape.gradient(loss, precision)], [precision])
    target = np.linalg.inv(np.cov(x + sigma * noise, rowvar=False, bias=True))
    np.testing.assert_allclose(precision.numpy(), target, rtol=0.05, atol=0.05)
