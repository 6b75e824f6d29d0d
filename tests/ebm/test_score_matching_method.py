"""ScoreMatching (exact, denoising, sliced) recovers a 2-D Gaussian; its preset and CLI name."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm import presets
from keras_ebm.energies import QuadraticEnergy
from keras_ebm.methods import ScoreMatching

COVARIANCE = np.array([[1.0, 0.6], [0.6, 0.5]])
MEAN = np.array([0.5, -1.0])


@pytest.mark.parametrize("variant", ["exact", "denoising", "sliced"])
def test_every_variant_recovers_a_gaussian(variant):
    keras.utils.set_random_seed(0)
    x = (np.random.default_rng(0).multivariate_normal(MEAN, COVARIANCE, size=4000)
         .astype("float32"))
    energy = QuadraticEnergy()
    model = ScoreMatching(energy, variant=variant, sigma=0.2, num_projections=8,
                          input_shape=(2,))
    model.compile(optimizer=keras.optimizers.Adam(0.03))
    model.fit(x, batch_size=len(x), epochs=500, verbose=0)
    covariance = np.cov(x, rowvar=False, bias=True)
    # Denoising fits the score of the data blurred by N(0, sigma^2 I).
    target = covariance + (0.04 * np.eye(2) if variant == "denoising" else 0.0)
    np.testing.assert_allclose(np.asarray(energy.precision()), np.linalg.inv(target),
                               rtol=0.06, atol=0.06)
    np.testing.assert_allclose(np.asarray(energy.mean), x.mean(axis=0), atol=0.05)
    # The score is -grad E = -P (x - m).
    score = np.asarray(model.score(tf.constant(x[:5])))
    expected = -(x[:5] - np.asarray(energy.mean)) @ np.asarray(energy.precision())
    np.testing.assert_allclose(score, expected, rtol=1e-4, atol=1e-5)


def test_presets_and_their_errors():
    x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    for name, variant in (("score_matching", "exact"), ("denoising_score_matching", "denoising"),
                          ("sliced_score_matching", "sliced")):
        model = presets.build(name, x, epochs=1)
        assert isinstance(model, ScoreMatching) and model.variant == variant
        rebuilt = ScoreMatching.from_config(model.get_config())
        assert rebuilt.get_config() == model.get_config()
    binary = (x > 0).astype("float32")
    with pytest.raises(presets.SettingError, match="needs continuous data"):
        presets.build("score_matching", binary)
    with pytest.raises(ValueError, match="variant must be one of"):
        ScoreMatching(QuadraticEnergy(), variant="implicit")
    with pytest.raises(presets.SettingError, match="score_sigma"):
        presets.check_settings({"score_sigma": 0.0})
