"""Strategies 1 and 2: K-means and Gaussian-mixture energies; maximum likelihood by quadrature."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm import presets
from keras_ebm.energies import GaussianMixtureEnergy
from keras_ebm.energies import KMeansEnergy
from keras_ebm.energies import MLPEnergy
from keras_ebm.energies import QuadraticEnergy
from keras_ebm.energies.mixture import kmeans_plus_plus
from keras_ebm.evaluation.density import fit_temperature
from keras_ebm.evaluation.density import grid_log_partition
from keras_ebm.methods import ConstantVolume
from keras_ebm.methods import QuadratureMaximumLikelihood
from keras_ebm.methods.maximum_likelihood import grid_points

COVARIANCE = np.array([[1.0, 0.6], [0.6, 0.5]])
MEAN = np.array([0.5, -1.0])


def gaussian_data(n=4000, seed=0):
    return np.random.default_rng(seed).multivariate_normal(MEAN, COVARIANCE, n).astype("float32")


# -- K-means --------------------------------------------------------------------------
def test_kmeans_plus_plus_seeds_one_centre_per_far_cluster():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    x = np.concatenate([c + rng.normal(size=(50, 2)) for c in centres])
    seeds = kmeans_plus_plus(x, 3, seed=1)
    assert all(any(np.all(np.isclose(s, row)) for row in x) for s in seeds)  # rows of x
    nearest = np.argmin(((seeds[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert sorted(nearest) == [0, 1, 2]
    with pytest.raises(ValueError, match="num_centers must be in"):
        kmeans_plus_plus(x, 151)


def test_kmeans_energy_is_the_squared_distance_to_the_nearest_prototype():
    rng = np.random.default_rng(0)
    x, centres = rng.normal(size=(20, 3)), rng.normal(size=(5, 3))
    energy = KMeansEnergy(5)
    energy.build((None, 3))
    energy.centers.assign(centres.astype("float32"))
    expected = ((x[:, None] - centres[None]) ** 2).sum(-1).min(axis=1)
    np.testing.assert_allclose(np.asarray(energy(tf.constant(x, tf.float32))), expected,
                               rtol=1e-5, atol=1e-5)


def test_kmeans_sampler_draws_the_tempered_density():
    energy = KMeansEnergy(1)
    energy.build((None, 2))
    energy.centers.assign([[1.0, -2.0]])
    # One prototype: p_T ∝ exp(-||x - c||^2 / T) is N(c, T/2 I).
    samples = energy.sample(20000, temperature=0.5, seed=0)
    np.testing.assert_allclose(samples.mean(0), [1.0, -2.0], atol=0.02)
    np.testing.assert_allclose(np.cov(samples, rowvar=False), 0.25 * np.eye(2), atol=0.01)
    # Two far prototypes: half the mass each (the max of two Gaussians, not their sum).
    two = KMeansEnergy(2)
    two.build((None, 2))
    two.centers.assign([[-3.0, 0.0], [3.0, 0.0]])
    samples = two.sample(20000, temperature=1.0, seed=1)
    assert abs((samples[:, 0] > 0).mean() - 0.5) < 0.02


def test_kmeans_sampler_against_the_energy_where_balls_overlap():
    # Prototypes 1 apart at T = 1: the tempered density is not a mixture; its histogram
    # along the axis matches exp(-min_k (x - c_k)^2) normalised by quadrature.
    energy = KMeansEnergy(2)
    energy.build((None, 2))
    energy.centers.assign([[-0.5, 0.0], [0.5, 0.0]])
    samples = energy.sample(50000, temperature=1.0, seed=2)[:, 0]
    edges = np.linspace(-3, 3, 13)
    fine = np.linspace(-6, 6, 24000, endpoint=False) + 0.00025  # cell centres, width 5e-4
    density = np.exp(-np.minimum((fine + 0.5) ** 2, (fine - 0.5) ** 2))
    density /= density.sum()
    expected = [density[(fine >= a) & (fine < b)].sum() for a, b in zip(edges[:-1], edges[1:])]
    observed = np.histogram(samples, edges)[0] / len(samples)
    np.testing.assert_allclose(observed, expected, atol=0.006)


def test_one_prototype_recovers_the_mean_and_the_temperature_its_variance():
    keras.utils.set_random_seed(0)
    x = (np.random.default_rng(0).normal(size=(4000, 2)) * 0.7 + [0.5, -0.5]).astype("float32")
    energy = KMeansEnergy(1)
    energy.initialize_from_data(x)
    model = ConstantVolume(energy)
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    model.fit(x, batch_size=len(x), epochs=200, verbose=0)
    np.testing.assert_allclose(np.asarray(energy.centers)[0], x.mean(0), atol=0.01)
    # p_T = N(c, T/2 I) in 2-D has E_p[E] = T: the ML temperature is the mean squared
    # distance to the mean, tr(cov) = 2 * 0.49.
    expected = float(np.mean(((x - x.mean(0)) ** 2).sum(1)))
    assert fit_temperature(energy, x, bounds=(-6, 6), grid_size=300) == pytest.approx(
        expected, rel=0.02)


# -- Gaussian mixture -----------------------------------------------------------------
def numpy_mixture_energy(x, means, precision_trils, weights):
    densities = []
    for mean, tril, weight in zip(means, precision_trils, weights):
        cov = np.linalg.inv(tril @ tril.T)
        diff = x - mean
        maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
        log_norm = -0.5 * (maha + np.linalg.slogdet(cov)[1] + x.shape[1] * math.log(2 * math.pi))
        densities.append(weight * np.exp(log_norm))
    return -np.log(np.sum(densities, axis=0))


def random_mixture(k=3, dim=2, seed=0):
    rng = np.random.default_rng(seed)
    energy = GaussianMixtureEnergy(k, min_scale=1e-3)
    energy.build((None, dim))
    energy.means.assign(rng.normal(size=(k, dim)).astype("float32"))
    raw = rng.normal(size=(k, dim, dim)).astype("float32") * 0.5
    energy.raw_precision_tril.assign(raw)
    energy.logits.assign(rng.normal(size=k).astype("float32"))
    return energy


def test_mixture_energy_matches_its_numpy_transcription_and_is_normalised():
    energy = random_mixture()
    x = np.random.default_rng(1).normal(size=(50, 2))
    trils = np.asarray(energy.precision_tril(), "float64")
    # softplus on the diagonal, + min_scale; the strict upper triangle ignored.
    raw = np.asarray(energy.raw_precision_tril, "float64")
    np.testing.assert_allclose(np.diagonal(trils, axis1=1, axis2=2),
                               np.log1p(np.exp(np.diagonal(raw, axis1=1, axis2=2))) + 1e-3,
                               rtol=1e-5)
    assert np.all(np.triu(trils, 1) == 0)
    weights = np.exp(np.asarray(energy.logits, "float64"))
    expected = numpy_mixture_energy(x, np.asarray(energy.means, "float64"), trils,
                                    weights / weights.sum())
    np.testing.assert_allclose(np.asarray(energy(tf.constant(x, tf.float32))), expected,
                               rtol=1e-4, atol=1e-4)
    # A density: log Z = 0 (by quadrature over a box that holds the components).
    assert grid_log_partition(energy, bounds=(-12, 12), grid_size=600) == pytest.approx(
        0.0, abs=2e-3)


def test_mixture_sampler_draws_its_density():
    energy = random_mixture(k=2, seed=3)
    samples = energy.sample(40000, seed=0)
    covariances = np.linalg.inv([t @ t.T for t in np.asarray(energy.precision_tril(), "float64")])
    weights = np.asarray(tf.nn.softmax(energy.logits), "float64")
    means = np.asarray(energy.means, "float64")
    mean = weights @ means
    second = sum(w * (c + np.outer(m, m)) for w, c, m in zip(weights, covariances, means))
    np.testing.assert_allclose(samples.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(samples, rowvar=False, bias=True),
                               second - np.outer(mean, mean), rtol=0.03, atol=0.02)
    with pytest.raises(ValueError, match="temperature 1 only"):
        energy.sample(10, temperature=2.0)


def test_one_component_recovers_a_gaussian():
    keras.utils.set_random_seed(0)
    x = gaussian_data()
    energy = GaussianMixtureEnergy(1)
    energy.initialize_from_data(x)
    model = ConstantVolume(energy)
    model.compile(optimizer=keras.optimizers.Adam(0.03))
    model.fit(x, batch_size=len(x), epochs=400, verbose=0)
    tril = np.asarray(energy.precision_tril())[0]
    np.testing.assert_allclose(np.linalg.inv(tril @ tril.T), np.cov(x, rowvar=False, bias=True),
                               atol=0.02)
    np.testing.assert_allclose(np.asarray(energy.means)[0], x.mean(0), atol=0.02)


# -- maximum likelihood by quadrature -----------------------------------------------------
def test_grid_points_are_the_cell_centres():
    points = grid_points((-1.0, 1.0), 4, 2)
    assert points.shape == (16, 2)
    np.testing.assert_allclose(np.unique(points[:, 0]), [-0.75, -0.25, 0.25, 0.75])
    assert len({tuple(p) for p in points}) == 16


def test_quadrature_log_partition_is_a_gaussians_analytic_log_z():
    energy = QuadraticEnergy()
    energy.build((None, 2))
    factor = np.linalg.cholesky(np.linalg.inv(COVARIANCE)).astype("float32")
    energy.factor.assign(factor)
    energy.mean.assign(MEAN.astype("float32"))
    precision = factor @ factor.T
    analytic = math.log(2 * math.pi) - 0.5 * np.linalg.slogdet(precision)[1]
    model = QuadratureMaximumLikelihood(energy, bounds=(-8, 8), grid_size=128, input_shape=(2,))
    assert float(model.log_partition()) == pytest.approx(analytic, abs=1e-4)
    # The shifted grid is another midpoint rule: the same value for a smooth energy.
    assert float(model.log_partition(tf.constant([0.03, -0.05]))) == pytest.approx(
        analytic, abs=1e-4)
    # The loss is the exact negative log-likelihood, mean E + log Z.
    x = gaussian_data(64)
    loss, outputs = model.contrastive_loss((tf.constant(x), tf.zeros([2])), training=False)
    assert float(loss) == pytest.approx(
        float(np.mean(np.asarray(energy(tf.constant(x))))) + analytic, abs=1e-4)


def test_quadrature_ml_recovers_a_gaussian():
    keras.utils.set_random_seed(0)
    x = gaussian_data()
    energy = QuadraticEnergy()
    model = QuadratureMaximumLikelihood(energy, bounds=(-6, 6), grid_size=64, input_shape=(2,))
    model.compile(optimizer=keras.optimizers.Adam(0.03))
    model.fit(x, batch_size=len(x), epochs=400, verbose=0)
    np.testing.assert_allclose(np.asarray(energy.precision()),
                               np.linalg.inv(np.cov(x, rowvar=False, bias=True)), atol=0.05)
    np.testing.assert_allclose(np.asarray(energy.mean), x.mean(0), atol=0.02)


def test_quadrature_ml_refuses_high_dimensions_and_bad_settings():
    with pytest.raises(ValueError, match="dimension <= 3"):
        QuadratureMaximumLikelihood(MLPEnergy((8,)), input_shape=(6,))
    with pytest.raises(ValueError, match="grid_size must be >= 2"):
        QuadratureMaximumLikelihood(MLPEnergy((8,)), grid_size=1)
    with pytest.raises(ValueError, match="low < high"):
        QuadratureMaximumLikelihood(MLPEnergy((8,)), bounds=(1, -1))


# -- presets --------------------------------------------------------------------------
def test_presets_build_strategy_1_and_2_on_toys_and_round_trip():
    x = gaussian_data(300)
    for name, energy_type in (("kmeans", KMeansEnergy), ("gmm", GaussianMixtureEnergy)):
        model = presets.build(name, x, epochs=1)
        assert isinstance(model, ConstantVolume) and isinstance(model.energy, energy_type)
        rebuilt = ConstantVolume.from_config(model.get_config())
        assert rebuilt.get_config() == model.get_config()
    model = presets.build("ml", x, epochs=1)
    assert isinstance(model, QuadratureMaximumLikelihood) and model.grid_size == 64
    assert QuadratureMaximumLikelihood.from_config(model.get_config()).get_config() == (
        model.get_config())
    continuous = np.random.default_rng(0).random((100, 5)).astype("float32")
    with pytest.raises(presets.SettingError, match="method=ml needs binary data"):
        presets.build("ml", continuous)
    with pytest.raises(presets.SettingError, match="num_clusters=400 is larger"):
        presets.build("kmeans", x, num_clusters=400)
    with pytest.raises(presets.SettingError, match="num_components=0 must be >= 1"):
        presets.check_settings({"num_components": 0})


def test_quadrature_ml_samples_its_grid_density():
    energy = QuadraticEnergy()
    model = QuadratureMaximumLikelihood(energy, bounds=(-6, 6), grid_size=96, input_shape=(2,))
    energy.factor.assign(np.linalg.cholesky(np.linalg.inv(COVARIANCE)).astype("float32"))
    energy.mean.assign(MEAN.astype("float32"))
    samples = model.sample(40000, seed=0)
    np.testing.assert_allclose(samples.mean(0), MEAN, atol=0.02)
    # The piecewise-constant density adds the cell's uniform variance h^2 / 12 per axis.
    cell = 12 / 96
    np.testing.assert_allclose(np.cov(samples, rowvar=False),
                               COVARIANCE + cell**2 / 12 * np.eye(2), atol=0.03)
    # At temperature T the energy is divided by T: the covariance scales by T.
    hot = model.sample(40000, temperature=2.0, seed=1)
    np.testing.assert_allclose(np.cov(hot, rowvar=False), 2 * COVARIANCE, atol=0.06)


def test_toy_presets_apply_to_2d_points_only():
    assert presets.defaults("pcd", "toy")["mcmc_steps"] == 30
    assert presets.defaults("pcd")["mcmc_steps"] == 1
    assert presets.defaults("ml", "toy")["batch_size"] == 512
    assert presets.defaults("ml", "binary")["batch_size"] == 256
    # A flag given wins over the toy preset.
    assert presets.resolve("ml", {"batch_size": 64}, "toy")["batch_size"] == 64
