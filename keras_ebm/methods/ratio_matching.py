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
    return tf.reshape(energy(tf.reshape(flips, [batch * dim, dim]), training=training), [batch, dim])


@keras.saving.register_keras_serializable(package="keras_ebm")
class RatioMatching(EnergyMethod):
    """Fits an energy on binary vectors by matching ratios p(x) / p(x^{-i}).

    With x^{-i} the data point x with bit i flipped and g(u) = 1 / (1 + u),
    the objective (Hyvärinen 2007, eq. 11; Marlin et al. 2010) is

        loss = mean_x sum_i g(p(x) / p(x^{-i}))^2
             = mean_x sum_i sigmoid(E(x) - E(x^{-i}))^2,

    which needs no partition function: it pushes E(x) down and the energy of
    each one-bit flip up, and is consistent.

    Args:
        energy: a layer mapping binary x [batch, D] to energies [batch].
        **kwargs: `keras.Model` keyword arguments.

    Example:

    >>> rm = RatioMatching(RBM(64, 16))
    >>> rm.compile(optimizer="adam"); rm.fit(x_train, batch_size=100, epochs=100)

    Reference:
        Hyvärinen, "Some extensions of score matching", Computational
        Statistics & Data Analysis 2007; Marlin et al., "Inductive principles
        for restricted Boltzmann machine learning", AISTATS 2010.
    """

    def __init__(self, energy, **kwargs):
        super().__init__(energy, tracker_names=("loss", "energy_data", "energy_flips"), **kwargs)

    def compute_ratio_matching_loss(self, x_data, training=False):
        """Returns (loss, E(x) [batch], E(x^{-i}) [batch, D])."""
        # 1. Contrasted samples: the D one-bit flips of each data point.
        energy_data = self.energy(x_data, training=training)
        energy_flips = neighbour_energies(self.energy, x_data, training=training)
        # 2. Loss: sigmoid(E(x) - E(x^{-i}))^2 summed over bits.
        loss = tf.reduce_mean(
            tf.reduce_sum(tf.square(tf.sigmoid(energy_data[:, None] - energy_flips)), axis=-1)
        )
        return loss, energy_data, energy_flips

    def train_step(self, data):
        x_data, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss, energy_data, energy_flips = self.compute_ratio_matching_loss(x_data, training=True)
            scaled_loss = self.scale_loss(loss)  # this replica's share (tf.distribute)
        # 3. Gradients and update.
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self.update_trackers(loss=loss, energy_data=energy_data, energy_flips=energy_flips)

    def test_step(self, data):
        x_data, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        loss, energy_data, energy_flips = self.compute_ratio_matching_loss(x_data)
        return self.update_trackers(loss=loss, energy_data=energy_data, energy_flips=energy_flips)
