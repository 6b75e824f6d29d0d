"""Noise-conditional score matching: the energy, its losses in closed form, its sampler, presets."""

import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm import presets
from keras_ebm.energies import MLPEnergy
from keras_ebm.energies import NoiseConditionalEnergy
from keras_ebm.evaluation.energy_report import draw_samples
from keras_ebm.methods import ScoreMatching
from keras_ebm.samplers import AnnealedLangevin
from keras_ebm.samplers import NoiseAnnealedLangevin


@keras.saving.register_keras_serializable(package="test_noise_conditional")
class HalfSquare(keras.layers.Layer):
    """f([x, l]) = a |x|^2 / 2 + b l, so that E(x, sigma) = (a |x|^2 / 2 + b log sigma) / sigma."""

    def build(self, input_shape):
        self.a = self.add_weight(shape=(), initializer=keras.initializers.Constant(0.7))
        self.b = self.add_weight(shape=(), initializer=keras.initializers.Constant(0.3))

    def call(self, z):
        return 0.5 * self.a * tf.reduce_sum(tf.square(z[:, :-1]), -1) + self.b * z[:, -1]


def test_energy_is_the_network_of_x_and_log_sigma_over_sigma():
    network = keras.Sequential([keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(1)])
    energy = NoiseConditionalEnergy.geometric(network, 2.0, 0.05, 10)
    np.testing.assert_allclose(energy.sigmas, np.geomspace(2.0, 0.05, 10), rtol=1e-12)
    x = np.random.default_rng(0).normal(size=(6, 2)).astype("float32")
    sigmas = np.array([2.0, 1.0, 0.5, 0.2, 0.1, 0.05], "float32")
    expected = (network(np.concatenate([x, np.log(sigmas)[:, None]], 1)).numpy()[:, 0]
                / sigmas)
    np.testing.assert_allclose(energy.at(x, sigmas).numpy(), expected, rtol=1e-5, atol=1e-6)
    # Calling it is the smallest level; a scalar sigma applies to every example.
    np.testing.assert_allclose(energy(x).numpy(), energy.at(x, 0.05).numpy(), rtol=1e-6)
    np.testing.assert_allclose(energy.at(x, 0.5).numpy()[2], expected[2], rtol=1e-5)
    rebuilt = NoiseConditionalEnergy.from_config(energy.get_config())
    rebuilt(x)
    rebuilt.set_weights(energy.get_weights())
    np.testing.assert_allclose(rebuilt.at(x, sigmas).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert rebuilt.sigmas == energy.sigmas


def test_bad_levels_and_shapes_are_refused():
    with pytest.raises(ValueError, match="decrease strictly"):
        NoiseConditionalEnergy(MLPEnergy((4,)), sigmas=(0.1, 1.0))
    with pytest.raises(ValueError, match="positive"):
        NoiseConditionalEnergy(MLPEnergy((4,)), sigmas=(1.0, -0.1))
    with pytest.raises(ValueError, match="sigma_max > sigma_min"):
        NoiseConditionalEnergy.geometric(MLPEnergy((4,)), 0.1, 1.0, 5)
    with pytest.raises(ValueError, match=r"vectors \[N, D\]"):
        NoiseConditionalEnergy(MLPEnergy((4,)), sigmas=(1.0,))(tf.zeros((2, 3, 3)))


@pytest.mark.parametrize("variant", ["exact", "denoising", "sliced"])
def test_each_example_is_scored_at_its_level_in_closed_form(variant):
    # grad E = a x / sigma and tr Hessian E = a D / sigma for E = (a |x|^2 / 2 + b log s) / s.
    a, dim = 0.7, 3
    rng = np.random.default_rng(1)
    x, noise = rng.normal(size=(2, 8, dim)).astype("float32")
    levels = rng.integers(0, 3, 8).astype("int32")
    projections = rng.normal(size=(2, 8, dim)).astype("float32")
    energy = NoiseConditionalEnergy(HalfSquare(), sigmas=(1.0, 0.4, 0.1))
    model = ScoreMatching(energy, variant=variant, num_projections=2, input_shape=(dim,))
    loss, _ = model.contrastive_loss((tf.constant(x), tf.constant(levels), tf.constant(noise),
                                      tf.constant(projections)), training=False)
    sigma = np.array(energy.sigmas)[levels][:, None]
    points = x + sigma * noise
    if variant == "denoising":  # 1/2 |sigma s(x~) + n|^2 = 1/2 |n - a x~|^2
        expected = 0.5 * np.sum((noise - a * points) ** 2, -1)
    elif variant == "exact":  # sigma^2 (1/2 |grad E|^2 - tr H)
        expected = 0.5 * a**2 * np.sum(points**2, -1) - a * dim * sigma[:, 0]
    else:  # sigma^2 (-v^T H v + 1/2 |grad E|^2), averaged over the projections
        expected = (0.5 * a**2 * np.sum(points**2, -1)
                    - a * sigma[:, 0] * np.mean(np.sum(projections**2, -1), 0))
    np.testing.assert_allclose(float(loss), expected.mean(), rtol=1e-5)


class BlurredMixture:
    """-log of 0.8 N((-2, 0), s^2 I) + 0.2 N((2, 0), s^2 I) blurred by N(0, sigma^2 I): exact."""

    sigmas = tuple(np.geomspace(3.0, 0.05, 10))
    width = 0.3

    def at(self, x, sigma):
        variance = self.width**2 + tf.square(tf.cast(sigma, x.dtype))
        logs = [np.log(w) - tf.reduce_sum(tf.square(x - c), -1) / (2 * variance)
                for w, c in ((0.8, [-2.0, 0.0]), (0.2, [2.0, 0.0]))]
        return -tf.reduce_logsumexp(tf.stack(logs), 0) + tf.math.log(2 * np.pi * variance)

    def __call__(self, x):
        return self.at(x, self.sigmas[-1])


def test_annealing_down_the_levels_gives_the_modes_their_masses():
    energy = BlurredMixture()
    box = np.random.default_rng(0).uniform(-4, 4, (2000, 2)).astype("float32")
    # draw_samples takes this path for any energy with levels: NoiseAnnealedLangevin, MALA.
    samples = draw_samples(types.SimpleNamespace(energy=energy), 2000, box, num_steps=1000)
    left = samples[:, 0] < 0
    assert abs(left.mean() - 0.8) < 0.04, left.mean()
    spread = np.hypot(energy.width, energy.sigmas[-1])
    for mode, centre in ((left, -2.0), (~left, 2.0)):
        np.testing.assert_allclose(samples[mode].mean(0), [centre, 0.0], atol=0.05)
        np.testing.assert_allclose(samples[mode].std(0), [spread, spread], rtol=0.1)
    # Annealing the temperature of the sharpest level instead leaves the masses to the basins.
    tempered = AnnealedLangevin(num_levels=10, steps_per_level=100, clip_value_min=-4.0,
                                clip_value_max=4.0, metropolis=True)(energy, tf.constant(box),
                                                                     seed=[0, 1]).numpy()
    assert abs((tempered[:, 0] < 0).mean() - 0.8) > 0.1
    with pytest.raises(ValueError, match="decrease strictly"):
        NoiseAnnealedLangevin((0.1, 1.0))
    sampler = NoiseAnnealedLangevin(energy.sigmas, steps_per_level=7, temperature=0.5)
    assert NoiseAnnealedLangevin.from_config(sampler.get_config()).get_config() == (
        sampler.get_config())


def test_presets_give_the_toys_levels_and_other_data_one_energy():
    toy = np.random.default_rng(0).uniform(-3, 3, (64, 2)).astype("float32")
    for name in presets.SCORE_MATCHING_METHODS:
        model = presets.build(name, toy, epochs=1)
        assert isinstance(model.energy, NoiseConditionalEnergy) and model.noise_conditional
        smallest = presets.defaults(name, "toy")["score_sigma"]  # 0.05; 0.1 for denoising
        assert len(model.energy.sigmas) == 10 and model.energy.sigmas[-1] == pytest.approx(smallest)
    images = np.random.default_rng(0).random((64, 5)).astype("float32")
    model = presets.build("denoising_score_matching", images, epochs=1)
    assert not model.noise_conditional and model.sigma == pytest.approx(0.2)
    with pytest.raises(presets.SettingError, match="score_sigma_max"):
        presets.build("score_matching", toy, score_sigma_max=0.01)
