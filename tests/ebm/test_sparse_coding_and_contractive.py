"""Strategies 6 and 7: sparse coding (ISTA/FISTA) and the contractive autoencoder."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm import presets
from keras_ebm.energies import RBFFeatures
from keras_ebm.energies import SparseCodingEnergy
from keras_ebm.energies.sparse_coding import ista
from keras_ebm.evaluation.density import calibrated_log_likelihood
from keras_ebm.evaluation.density import gaussian_log_likelihood
from keras_ebm.methods import ContractiveAutoencoder
from keras_ebm.methods import SparseCoding
from keras_ebm.methods.contractive_autoencoder import jacobian_frobenius


def lasso_objective(x, d, z, lam):
    return np.sum((x - z @ d.T) ** 2, -1) + lam * np.sum(np.abs(z), -1)


@pytest.mark.parametrize("accelerated", [False, True])
@pytest.mark.parametrize("nonnegative", [False, True])
def test_ista_on_an_orthonormal_dictionary_is_the_soft_threshold(accelerated, nonnegative):
    rng = np.random.default_rng(0)
    d, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    x = rng.standard_normal((7, 5))
    lam = 0.6
    # min ||x - D z||^2 + lam |z|_1 with D^T D = I: z = soft(D^T x, lam / 2) (z >= 0: max(., 0)).
    v = x @ d
    expected = np.sign(v) * np.maximum(np.abs(v) - lam / 2, 0)
    if nonnegative:
        expected = np.maximum(v - lam / 2, 0)
    z = ista(tf.constant(x, tf.float32), tf.constant(d, tf.float32), lam, num_iterations=30,
             nonnegative=nonnegative, accelerated=accelerated)
    np.testing.assert_allclose(np.asarray(z), expected, atol=1e-5)
    assert np.mean(expected == 0) > 0.2  # the solution is sparse


def test_fista_recovers_a_known_sparse_code_of_an_overcomplete_dictionary():
    from sklearn.linear_model import Lasso

    rng = np.random.default_rng(1)
    d = rng.standard_normal((10, 20))
    d /= np.linalg.norm(d, axis=0)
    truth = np.zeros((3, 20))
    truth[0, [1, 7]] = [1.5, -2.0]
    truth[1, [3]] = [1.0]
    truth[2, [0, 5, 19]] = [0.7, 1.2, -1.1]
    x = truth @ d.T
    lam = 0.02
    solve = tf.function(lambda x, d: ista(x, d, lam, num_iterations=3000, nonnegative=False))
    z = np.asarray(solve(tf.constant(x, tf.float32), tf.constant(d, tf.float32)))
    for i in range(3):
        # sklearn's Lasso: (1 / 2n) ||x - D z||^2 + alpha |z|_1, n = 10 rows: alpha = lam / 2n.
        reference = Lasso(alpha=lam / 20, fit_intercept=False, tol=1e-10,
                          max_iter=100000).fit(d, x[i]).coef_
        np.testing.assert_allclose(z[i], reference, atol=2e-3)
        np.testing.assert_allclose(lasso_objective(x[i], d, z[i], lam),
                                   lasso_objective(x[i], d, reference, lam), rtol=1e-4)
        assert np.sum(np.abs(z[i]) > 1e-3) <= 10  # sparse: at most as many atoms as dimensions


def test_sparse_coding_energy_against_numpy():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 2)).astype("float32")
    features = RBFFeatures(9, width=1.0)
    features.initialize_grid((-2.0, 2.0))
    energy = SparseCodingEnergy(12, sparsity=0.05, num_iterations=400, nonnegative=False,
                                features=features)
    energy.initialize_from_data(rng.standard_normal((50, 2)).astype("float32"))
    # NumPy: normalised bumps, then the lasso's objective at its solution (by many ISTA steps).
    centres = np.asarray(features.centers, "float64")
    phi = np.exp(-((x[:, None, :] - centres[None]) ** 2).sum(-1) / 2.0)
    phi /= np.linalg.norm(phi, axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(features(x)), phi, rtol=1e-5, atol=1e-6)
    d = np.asarray(energy.dictionary, "float64")
    np.testing.assert_allclose(np.linalg.norm(d, axis=0), 1.0, rtol=1e-5)
    step = 1.0 / (2 * np.linalg.eigvalsh(d.T @ d)[-1])
    z = np.zeros((6, 12))
    for _ in range(20000):
        v = z - step * 2 * (z @ d.T - phi) @ d
        z = np.sign(v) * np.maximum(np.abs(v) - 0.05 * step, 0)
    np.testing.assert_allclose(np.asarray(energy(x)), lasso_objective(phi, d, z, 0.05),
                               rtol=1e-3, atol=1e-5)


def test_the_dictionary_gradient_is_taken_at_the_fixed_code_and_atoms_stay_unit_norm():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((32, 3)).astype("float32")
    energy = SparseCodingEnergy(6, sparsity=0.1, num_iterations=200, nonnegative=False)
    model = SparseCoding(energy, input_shape=(3,))
    z = np.asarray(energy.codes(x), "float64")
    d = np.asarray(energy.dictionary, "float64")
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(energy(x))
    gradient = np.asarray(tape.gradient(loss, energy.dictionary))
    # Envelope theorem: dE/dD = -2 (x - D z) z^T at the optimal z, averaged.
    expected = -2 * (x - z @ d.T).T @ z / len(x)
    np.testing.assert_allclose(gradient, expected, rtol=1e-3, atol=1e-5)
    model.compile(optimizer=keras.optimizers.Adam(0.1))
    model.fit(x, batch_size=16, epochs=2, verbose=0)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(energy.dictionary), axis=0), 1.0,
                               rtol=1e-5)


def test_jacobian_penalty_of_a_linear_map_and_against_finite_differences():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((3, 3)).astype("float32")
    linear = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, use_bias=False)])
    linear.layers[0].set_weights([w])
    x = rng.standard_normal((5, 3)).astype("float32")
    _, penalty = jacobian_frobenius(linear, x)
    np.testing.assert_allclose(np.asarray(penalty), np.full(5, np.sum(w ** 2)), rtol=1e-5)
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8, activation="tanh"),
                            keras.layers.Dense(3)])
    _, penalty = jacobian_frobenius(net, x)
    x64, eps = x.astype("float64"), 1e-3
    numeric = np.zeros(5)
    for j in range(3):
        step = np.zeros(3)
        step[j] = eps
        column = (np.asarray(net(x64 + step), "float64") - np.asarray(net(x64 - step))) / (2 * eps)
        numeric += np.sum(column ** 2, axis=1)
    np.testing.assert_allclose(np.asarray(penalty), numeric, rtol=2e-3)


def test_contractive_loss_is_reconstruction_plus_weighted_penalty():
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="tanh"),
                            keras.layers.Dense(2)])
    model = ContractiveAutoencoder(net, contraction=0.3)
    x = np.random.default_rng(5).standard_normal((8, 2)).astype("float32")
    loss, outputs = model.contrastive_loss((tf.constant(x), tf.constant(x)), training=False)
    reconstruction = np.mean(np.sum((np.asarray(net(x)) - x) ** 2, axis=1))
    np.testing.assert_allclose(float(outputs["reconstruction"]), reconstruction, rtol=1e-5)
    np.testing.assert_allclose(float(loss), reconstruction
                               + 0.3 * float(outputs["contraction_penalty"]), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(model.energy(x)),
                               np.sum((np.asarray(net(x)) - x) ** 2, axis=1), rtol=1e-5)
    samples = model.sample(np.zeros((4, 2), "float32"), num_steps=3)
    assert samples.shape == (4, 2) and np.all(np.isfinite(samples))


def test_contractive_autoencoder_with_one_code_unit_recovers_an_isotropic_gaussian():
    """One softmax unit: G is a constant c, E = ||x - c||^2, p_T = N(c, T/2 I): the Gaussian."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(8)
    x_train = (np.array([0.5, -0.3]) + 0.7 * rng.standard_normal((3000, 2))).astype("float32")
    x_test = (np.array([0.5, -0.3]) + 0.7 * rng.standard_normal((2000, 2))).astype("float32")
    model = presets.build("contractive_autoencoder", x_train, epochs=10, cae_units=1,
                          learning_rate=0.05)
    model.fit(x_train, batch_size=256, epochs=10, verbose=0)
    centre = np.asarray(model.autoencoder(np.zeros((1, 2), "float32")))[0]
    np.testing.assert_allclose(centre, x_train.mean(0), atol=0.03)
    result = calibrated_log_likelihood(model.energy, x_train, x_test, grid_size=100)
    np.testing.assert_allclose(result["temperature"] / 2, 0.49, rtol=0.1)  # the variance
    assert abs(result["log_likelihood"] - gaussian_log_likelihood(x_train, x_test)) < 0.03


@pytest.mark.parametrize("method", ["sparse_coding", "contractive_autoencoder"])
def test_every_method_recovers_a_2d_gaussian(method):
    """From the toy presets, on correlated Gaussian data: within 0.5 nats of the Gaussian's own
    (a uniform density on [-4, 4]^2 is 1.6 nats below it)."""
    keras.utils.set_random_seed(0)
    cov = np.array([[1.0, 0.5], [0.5, 0.8]])
    rng = np.random.default_rng(6)
    x_train = rng.multivariate_normal([0.3, -0.2], cov, 3000).astype("float32")
    x_test = rng.multivariate_normal([0.3, -0.2], cov, 2000).astype("float32")
    inside = lambda x: x[np.all(np.abs(x) < 4, axis=1)]  # noqa: E731
    x_train, x_test = inside(x_train), inside(x_test)
    model = presets.build(method, x_train, epochs=3, batch_size=256)
    model.fit(x_train, batch_size=256, epochs=3, verbose=0)
    result = calibrated_log_likelihood(model.energy, x_train, x_test, grid_size=100)
    gaussian = gaussian_log_likelihood(x_train, x_test)
    assert result["log_likelihood"] > gaussian - 0.5, (result, gaussian)


@pytest.mark.parametrize("method", ["sparse_coding", "contractive_autoencoder"])
def test_keras_round_trip_and_config(method, tmp_path):
    x = np.random.default_rng(7).standard_normal((64, 2)).astype("float32")
    sizes = ({"num_atoms": 8, "rbf_centers": 16, "ista_iterations": 10}
             if method == "sparse_coding" else {"cae_units": 8})
    model = presets.build(method, x, epochs=1, batch_size=32, **sizes)
    model.fit(x, batch_size=32, epochs=1, verbose=0)
    path = str(tmp_path / f"{method}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(np.asarray(loaded.energy(x)), np.asarray(model.energy(x)),
                               rtol=1e-5, atol=1e-6)
    copy = type(model).from_config(model.get_config())
    assert copy.get_config() == model.get_config()


def test_invalid_settings_are_refused():
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="sparsity must be finite and >= 0"):
            SparseCodingEnergy(4, sparsity=bad)
        with pytest.raises(ValueError, match="contraction must be finite and >= 0"):
            ContractiveAutoencoder(keras.layers.Dense(2), contraction=bad)
    with pytest.raises(presets.SettingError, match="rbf_centers=10 must be a square"):
        presets.build("sparse_coding",
                      np.random.default_rng(0).standard_normal((100, 2)).astype("float32"),
                      rbf_centers=10,
                      num_atoms=8)


def test_a_feature_model_is_a_fixed_lift_not_trained():
    # Trained along with D, a linear feature map shrinks to 0 and the energy with it.
    features = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8)])
    energy = SparseCodingEnergy(16, sparsity=0.1, num_iterations=10, features=features)
    model = SparseCoding(energy, input_shape=(2,))
    assert [v.name for v in model.trainable_variables] == ["dictionary"]
    kernel = features.layers[0].kernel.numpy().copy()
    x = np.random.default_rng(0).standard_normal((256, 2)).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(3e-2))
    model.fit(x, batch_size=128, epochs=2, verbose=0)
    np.testing.assert_array_equal(features.layers[0].kernel.numpy(), kernel)


def test_codes_build_the_layer_and_mixed_precision_keeps_float32():
    x = np.random.default_rng(0).standard_normal((5, 2)).astype("float32")
    assert SparseCodingEnergy(6, num_iterations=5).codes(x).shape == (5, 6)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        energy = SparseCodingEnergy(6, num_iterations=5, features=RBFFeatures(9, width=1.0))
        assert energy(x).shape == (5,)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_an_autoencoder_of_another_output_shape_is_refused_by_name():
    autoencoder = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="autoencoder maps inputs of shape"):
        ContractiveAutoencoder(autoencoder, input_shape=(2,))


@pytest.mark.parametrize("method", ["dae", "contractive_autoencoder"])
def test_autoencoder_chains_are_reproducible_per_seed(method):
    x = np.random.default_rng(0).standard_normal((300, 2)).astype("float32")
    model = presets.build(method, x, epochs=1)
    start = np.random.default_rng(1).uniform(-4, 4, (50, 2))
    a, b = (model.sample(start, num_steps=5, seed=3) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, model.sample(start, num_steps=5, seed=4))


@pytest.mark.parametrize("method", ["dae", "contractive_autoencoder"])
def test_autoencoder_chains_stay_in_the_bounds_given(method):
    from keras_ebm.evaluation import draw_samples

    x = np.random.default_rng(0).standard_normal((300, 2)).astype("float32")
    model = presets.build(method, x, epochs=1)
    start = np.random.default_rng(1).uniform(-4, 4, (200, 2))
    free = model.sample(start, num_steps=3, seed=0)
    boxed = model.sample(start, num_steps=3, seed=0, bounds=(0.5, 0.6))
    assert boxed.min() >= 0.5 and boxed.max() <= 0.6
    assert ((free < 0.5) | (free > 0.6)).any()  # the box is what holds them
    drawn = draw_samples(model, 200, x, num_steps=3, bounds=(0.5, 0.6))
    assert drawn.shape == (200, 2) and drawn.min() >= 0.5 and drawn.max() <= 0.6
