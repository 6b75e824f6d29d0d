"""AnnealedLangevin against known distributions; grid_sample and evaluate_energy on a Gaussian."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm import samplers
from keras_ebm.energies import QuadraticEnergy
from keras_ebm.evaluation import draw_samples
from keras_ebm.evaluation import evaluate_energy
from keras_ebm.evaluation import grid_sample
from keras_ebm.evaluation.density import gaussian_log_likelihood


def scaled_quadratic(scale):
    """E(x) = |x|^2 / (2 scale^2): N(0, scale^2 I) at T = 1, N(0, T scale^2 I) at T."""
    energy = QuadraticEnergy()
    energy.build((None, 2))
    energy.factor.assign(np.eye(2, dtype="float32") / scale)
    return energy


def test_temperatures_fall_geometrically_to_t():
    sampler = samplers.AnnealedLangevin(temperature=0.5, num_levels=3, start_factor=100.0)
    np.testing.assert_allclose(sampler.temperatures(), [50.0, 5.0, 0.5], rtol=1e-6)
    assert sampler.num_steps == 300


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_last_level_samples_the_gaussian_at_t(temperature):
    # MALA at the last level: exact for exp(-E / T) = N(0, T * 0.25 I) (far from the clamp).
    sampler = samplers.AnnealedLangevin(temperature=temperature, num_levels=5,
                                        steps_per_level=60, step_size=0.02, metropolis=True,
                                        clip_value_min=-4.0, clip_value_max=4.0)
    x0 = tf.random.stateless_uniform([4000, 2], [1, 2], -4.0, 4.0)
    samples = sampler(scaled_quadratic(0.5), x0, seed=[3, 4]).numpy()
    np.testing.assert_allclose(samples.mean(0), [0.0, 0.0], atol=0.04)
    np.testing.assert_allclose(samples.var(0), [0.25 * temperature] * 2, rtol=0.08)


def test_config_round_trip():
    sampler = samplers.AnnealedLangevin(temperature=0.3, num_levels=4, steps_per_level=7,
                                        start_factor=20.0, step_size=0.05, metropolis=True,
                                        scale_step=False, clip_value_min=-1.0,
                                        resample=True)
    clone = samplers.AnnealedLangevin.from_config(sampler.get_config())
    assert clone.get_config() == sampler.get_config()
    assert clone.resample and not clone.scale_step
    assert clone.num_steps == 28
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sampler))
    assert restored.get_config() == sampler.get_config()


def two_mode_energy(x):
    # -log of 0.8 N((-2, 0), 0.3^2 I) + 0.2 N((2, 0), 0.3^2 I), up to a constant.
    means = tf.constant([[-2.0, 0.0], [2.0, 0.0]])
    squared = tf.reduce_sum(tf.square(x[:, None, :] - means[None]), axis=-1)
    return -tf.reduce_logsumexp(tf.math.log([0.8, 0.2]) - squared / (2 * 0.3**2), axis=1)


@pytest.mark.parametrize("temperature, left_mass", [(1.0, 0.8), (0.5, 0.8**2 / 0.68)])
def test_resampling_gives_the_modes_their_masses(temperature, left_mass):
    # Without resampling the chains split by basin volume (about half and half); with it they
    # follow p_T: 0.8 / 0.2 at T = 1, and 0.64 / 0.04 renormalised at T = 0.5 (well-separated
    # modes: each mode's mass scales as its weight ** (1 / T)).
    x0 = tf.random.stateless_uniform([2000, 2], [0, 1], -4.0, 4.0)
    fractions = {}
    for resample in (False, True):
        sampler = samplers.AnnealedLangevin(temperature=temperature, num_levels=10,
                                            steps_per_level=30, step_size=0.02 * temperature,
                                            metropolis=True, clip_value_min=-4.0,
                                            clip_value_max=4.0, resample=resample)
        samples = sampler(two_mode_energy, x0, seed=[5, 6]).numpy()
        fractions[resample] = (samples[:, 0] < 0).mean()
        left = samples[samples[:, 0] < 0]
        np.testing.assert_allclose(left.mean(0), [-2.0, 0.0], atol=0.05)
        np.testing.assert_allclose(left.std(0), [0.3 * temperature**0.5] * 2, rtol=0.1)
    assert abs(fractions[True] - left_mass) < 0.04, fractions
    assert abs(fractions[False] - left_mass) > 0.1, fractions


@pytest.mark.parametrize("bad", [{"temperature": 0.0}, {"start_factor": 0.5},
                                 {"num_levels": 0}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match="AnnealedLangevin"):
        samplers.AnnealedLangevin(**bad)


def test_grid_sample_is_the_gaussian_at_t():
    # Cells of side h add h^2 / 12 to each variance (uniform jitter in the cell).
    samples = grid_sample(scaled_quadratic(0.5), 20000, grid_size=100, temperature=2.0, seed=1)
    np.testing.assert_allclose(samples.var(0), [0.5 + 0.08**2 / 12] * 2, rtol=0.05)
    np.testing.assert_allclose(samples.mean(0), [0.0, 0.0], atol=0.03)


class EnergyOnly(keras.Model):
    """A method with an energy and nothing else: draw_samples falls back to annealed MALA."""

    def __init__(self, energy):
        super().__init__()
        self.energy = energy


def test_evaluate_energy_on_the_true_gaussian():
    rng = np.random.default_rng(0)
    x_train = (0.5 * rng.standard_normal((4000, 2))).astype("float32")
    x_test = (0.5 * rng.standard_normal((5000, 2))).astype("float32")
    model = EnergyOnly(scaled_quadratic(0.5))
    metrics = evaluate_energy(model, x_train, x_test, method="score_matching", grid_size=100)
    # The energy is the data's own: T = 1 and the likelihood of the fitted Gaussian.
    assert metrics["temperature"] == pytest.approx(1.0, abs=0.05)
    assert metrics["calibrated_test_log_likelihood"] == pytest.approx(
        gaussian_log_likelihood(x_train, x_test), abs=0.02)
    floor = metrics["reference_mmd_2000"]
    assert metrics["density_mmd_2000"] < 3 * floor
    assert metrics["sample_mmd_2000"] < 3 * floor
    samples = draw_samples(model, 500, x_train, temperature=4.0, num_steps=1000)
    assert samples.shape == (500, 2)
    np.testing.assert_allclose(samples.var(0), [1.0, 1.0], rtol=0.25)  # T * 0.25


def test_a_chain_of_non_finite_energy_is_dropped_not_copied():
    # One chain of NaN energy must not wreck the weights of the others (a NaN in the
    # cumulative weights would send every chain to one index).
    x = tf.random.stateless_uniform([1000, 2], [0, 3], -4.0, 4.0)
    nan_first = tf.concat([[np.nan], tf.zeros([999])], 0)
    sampler = samplers.AnnealedLangevin(num_levels=10, steps_per_level=30, resample=True)
    kept = {}
    for name, energy in (("finite", two_mode_energy),
                         ("one NaN", lambda z: two_mode_energy(z) + nan_first)):
        redrawn = sampler._resample(energy, x, tf.constant(3), tf.constant([1, 2], tf.int64))
        kept[name] = set(redrawn.numpy()[:, 0].tolist())
    assert len(kept["one NaN"]) > 500, len(kept["one NaN"])
    assert float(x[0, 0]) not in kept["one NaN"]
    assert kept["one NaN"] <= set(x.numpy()[:, 0].tolist())


def test_draw_samples_resamples_when_asked():
    x_train = np.array([[-2.0, 0.0], [2.0, 0.0]], "float32")  # only its [-4, 4] box is used
    model = EnergyOnly(two_mode_energy)
    samples = draw_samples(model, 2000, x_train, num_steps=300, resample=True)
    assert abs((samples[:, 0] < 0).mean() - 0.8) < 0.04


@pytest.mark.parametrize("method, dim, resample", [
    ("pcd", 2, True), ("nce", 2, True), (None, 2, True), ("score_matching", 2, False),
    ("sparse_coding", 2, False), ("pcd", 5, False)])
def test_evaluate_energy_resamples_the_normalised_energies_of_2d_points(
        monkeypatch, method, dim, resample):
    from keras_ebm.evaluation import energy_report

    calls = []
    monkeypatch.setattr(energy_report, "draw_samples",
                        lambda *args, **kwargs: calls.append(kwargs) or None)
    rng = np.random.default_rng(0)
    x = (0.5 * rng.standard_normal((200, dim))).astype("float32")
    model = EnergyOnly(lambda z: 0.5 * tf.reduce_sum(tf.square(z), axis=1))
    evaluate_energy(model, x, x, method=method, grid_size=20)
    assert calls[0]["resample"] is resample


def test_an_energy_of_shape_batch_by_one_is_sampled_like_its_flat_twin():
    dense = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    flat = lambda x: tf.reshape(dense(x), [-1])  # noqa: E731
    sampler = samplers.AnnealedLangevin(num_levels=2, steps_per_level=5, metropolis=True)
    x0 = tf.random.stateless_uniform([64, 2], [0, 1], -1.0, 1.0)
    np.testing.assert_allclose(sampler(dense, x0, seed=[0, 1]).numpy(),
                               sampler(flat, x0, seed=[0, 1]).numpy(), atol=1e-6)


@pytest.mark.parametrize("step_size", [0.0, -1.0, float("nan"), float("inf")])
def test_step_sizes_that_are_not_positive_and_finite_are_refused(step_size):
    for cls in (samplers.Langevin, samplers.AnnealedLangevin):
        with pytest.raises(ValueError, match="step_size"):
            cls(step_size=step_size)


def test_samples_are_drawn_in_the_data_box():
    from keras_ebm.evaluation.energy_report import sample_box

    rng = np.random.default_rng(0)
    assert sample_box(rng.uniform(-3, 3, (100, 2))) == (-4.0, 4.0)
    assert sample_box(rng.uniform(0, 1, (100, 5))) == (0.0, 1.0)
    low, high = sample_box(np.array([[-3.0, 1.0], [2.0, 7.0]] * 3))  # 2-D beyond the toys' box
    assert (low, high) == pytest.approx((-4.0, 8.0))
    data = rng.normal(-3.0, 0.5, (500, 3)).astype("float32")
    model = EnergyOnly(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]))
    samples = draw_samples(model, 200, data, num_steps=20)
    assert samples.min() >= low - 10 and samples.mean() < -1.0  # not clamped into [0, 1]
    with pytest.raises(ValueError, match="rescale the data"):
        evaluate_energy(model, data[:, :2] * 3, data[:, :2] * 3)


class WithLangevin(EnergyOnly):
    """A method that trains with Langevin: draw_samples anneals with its sampler's settings."""

    def __init__(self, energy, sampler):
        super().__init__(energy)
        self.sampler = sampler


def test_draw_samples_gives_the_annealed_chains_the_methods_jumps():
    # Without resampling, annealed MALA leaves each mode the chains its basin caught (about
    # half each); with the method's own jumps between modes the chains reach 0.8 / 0.2.
    x_train = np.array([[-2.0, 0.0], [2.0, 0.0]], "float32")  # only its [-4, 4] box is used
    left = {}
    for jump_probability in (0.0, 0.5):
        sampler = samplers.Langevin(step_size=0.02, metropolis=True, clip_value_min=-4.0,
                                    clip_value_max=4.0, jump_probability=jump_probability)
        samples = draw_samples(WithLangevin(two_mode_energy, sampler), 2000, x_train,
                               num_steps=1000, bounds=(-4.0, 4.0))
        left[jump_probability] = (samples[:, 0] < 0).mean()
    assert abs(left[0.5] - 0.8) < 0.04, left
    assert abs(left[0.0] - 0.8) > 0.1, left


def test_draw_samples_keeps_the_chains_in_the_bounds_given():
    x_train = np.array([[-2.0, 0.0], [2.0, 0.0]], "float32")
    samples = draw_samples(EnergyOnly(two_mode_energy), 500, x_train, num_steps=50,
                           bounds=(-1.0, 0.5))
    assert samples.min() >= -1.0 and samples.max() <= 0.5
    assert samples[:, 0].min() < -0.9  # pulled to the mode at -2: held at the box's edge
