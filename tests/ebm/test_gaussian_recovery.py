"""PCD and the denoising autoencoder on a 2-D Gaussian, against closed forms.

The other methods' Gaussian recoveries are next to their own tests
(constant volume, quadrature ML, NCE, score matching, sparse coding, the
contractive autoencoder).
"""

import keras
import numpy as np

from keras_ebm.energies import QuadraticEnergy
from keras_ebm.memory import ReplayBuffer
from keras_ebm.methods import ContrastiveDivergence
from keras_ebm.methods import DenoisingAutoencoder
from keras_ebm.samplers import Langevin


def decaying(rate, steps):
    """A learning rate falling linearly to 1/20 of itself: the last steps average the noise."""
    return keras.optimizers.schedules.PolynomialDecay(rate, steps, rate / 20)


def test_pcd_with_a_quadratic_energy_recovers_the_gaussian():
    # The model family holds the data's law, so PCD (MALA chains) converges to its
    # mean and covariance: the maximum-likelihood Gaussian.
    keras.utils.set_random_seed(0)
    x = (np.random.default_rng(0).standard_normal((4000, 2)) * [0.5, 0.3]
         + [1.0, -0.5]).astype("float32")
    model = ContrastiveDivergence(
        QuadraticEnergy(), Langevin(num_steps=20, step_size=0.01, metropolis=True,
                                    clip_value_min=-3.0, clip_value_max=3.0),
        persistent=True, replay_buffer=ReplayBuffer(512, (2,), minval=-3.0, maxval=3.0))
    model.compile(optimizer=keras.optimizers.Adam(decaying(0.05, steps=40 * 16)))
    model.fit(x, batch_size=256, epochs=40, verbose=0)
    covariance = np.linalg.inv(model.energy.precision().numpy())
    np.testing.assert_allclose(model.energy.mean.numpy(), [1.0, -0.5], atol=0.06)
    np.testing.assert_allclose(np.diag(covariance), [0.25, 0.09], rtol=0.2)
    assert abs(covariance[0, 1]) < 0.03


def test_a_linear_dae_learns_the_closed_form_shrinkage():
    # For x ~ N(0, S) and x~ = x + s e, the best linear r(x~) = S (S + s^2 I)^-1 x~:
    # with S = diag(1, 0.25) and s = 0.5, diag(0.8, 0.5).
    keras.utils.set_random_seed(0)
    x = (np.random.default_rng(0).standard_normal((4000, 2)) * [1.0, 0.5]).astype("float32")
    autoencoder = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model = DenoisingAutoencoder(autoencoder, noise="gaussian", noise_level=0.5)
    model.compile(optimizer=keras.optimizers.Adam(decaying(0.02, steps=20 * 32)))
    model.fit(x, batch_size=128, epochs=20, verbose=0)
    np.testing.assert_allclose(autoencoder.layers[0].kernel.numpy(), np.diag([0.8, 0.5]),
                               atol=0.03)
    np.testing.assert_allclose(autoencoder.layers[0].bias.numpy(), [0.0, 0.0], atol=0.03)
