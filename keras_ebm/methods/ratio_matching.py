"""Ratio matching for binary data (Hyvärinen 2007)."""

import keras
import tensorflow as tf

from keras_ebm.methods.energy_method import EnergyMethod


def one_bit_flips(x):
    """All one-bit neighbours of binary x [batch, D]: shape [batch, D, D], row d flips bit d."""
    x = tf.convert_to_tensor(x)
    eye = tf.eye(tf.shape(x)[-1], dtype=x.dtype)
    return x[:, None, :] + eye[None] * (1.0 - 2.0 * x[:, None, :])


def neighbour_energies(energy, x, training=False):
    """E of every one-bit flip of x, shape [batch, D]."""
    flips = one_bit_flips(x)
    batch, dim = tf.shape(x)[0], tf.shape(x)[1]
    return tf.reshape(energy(tf.reshape(flips, [batch * dim, dim]), training=training),
                      [batch, dim])


class OneBitFlipMethod(EnergyMethod):
    """Base of the objectives whose contrasted points are the D one-bit flips of each datum.

    A subclass writes `objective(energy_data [batch], energy_flips [batch, D])`.
    """

    tracker_names = ("loss", "energy_data", "energy_flips")

    def __init__(self, energy, **kwargs):
        super().__init__(energy, **kwargs)
        self.build_now()

    def contrastive_loss(self, inputs, training):
        # 1. Contrasted samples: the D one-bit flips of each data point.
        energy_data = self.energy(inputs, training=training)
        energy_flips = neighbour_energies(self.energy, inputs, training=training)
        # 2. The objective pushes E(x) down and E(flips) up.
        return self.objective(energy_data, energy_flips), {"energy_data": energy_data,
                                                           "energy_flips": energy_flips}

    def objective(self, energy_data, energy_flips):
        raise NotImplementedError


@keras.saving.register_keras_serializable(package="keras_ebm")
class RatioMatching(OneBitFlipMethod):
    """Fits an energy on binary vectors by matching ratios p(x) / p(x^{-i}).

    With x^{-i} the data point x with bit i flipped and g(u) = 1 / (1 + u),
    the objective (Hyvärinen 2007, eq. 11; Marlin et al. 2010) is

        loss = mean_x sum_i g(p(x) / p(x^{-i}))^2
             = mean_x sum_i sigmoid(E(x) - E(x^{-i}))^2,

    which needs no partition function: it pushes E(x) down and the energy of
    each one-bit flip up, and is consistent.

    Args:
        energy: a layer mapping binary x [batch, D] to energies [batch].
        **kwargs: `input_shape` and `keras.Model` keyword arguments.

    Example:

    >>> rm = RatioMatching(RBM(64, 16))
    >>> rm.compile(optimizer="adam"); rm.fit(x_train, batch_size=100, epochs=100)

    Reference:
        Hyvärinen, "Some extensions of score matching", Computational
        Statistics & Data Analysis 2007; Marlin et al., "Inductive principles
        for restricted Boltzmann machine learning", AISTATS 2010.
    """

    def objective(self, energy_data, energy_flips):
        return tf.reduce_mean(tf.reduce_sum(
            tf.square(tf.sigmoid(energy_data[:, None] - energy_flips)), axis=-1))
