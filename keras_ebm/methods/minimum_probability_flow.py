"""Minimum probability flow learning with bit-flip connectivity."""

import keras
import tensorflow as tf

from keras_ebm.methods.energy_method import EnergyMethod
from keras_ebm.methods.ratio_matching import neighbour_energies


@keras.saving.register_keras_serializable(package="keras_ebm")
class MinimumProbabilityFlow(EnergyMethod):
    """Fits an energy by minimising the initial probability flow out of the data.

    With dynamics that connect each binary state to its D one-bit flips and
    transition rates exp((E(x) - E(x')) / 2), the flow out of the data
    distribution at time zero (Sohl-Dickstein et al. 2011, eq. 12) is

        K = mean_{x in data} sum_{x' in flips(x)} exp((E(x) - E(x')) / 2).

    It needs no partition function and is zero only when the model puts no
    mass to flow away from the data: E(x) is pushed down, E(x') up.

    Args:
        energy: a layer mapping binary x [batch, D] to energies [batch].
        **kwargs: `keras.Model` keyword arguments.

    Example:

    >>> mpf = MinimumProbabilityFlow(RBM(64, 16))
    >>> mpf.compile(optimizer="adam"); mpf.fit(x_train, batch_size=100, epochs=100)

    Reference:
        Sohl-Dickstein, Battaglino & DeWeese, "Minimum probability flow
        learning", ICML 2011.
    """

    def __init__(self, energy, **kwargs):
        super().__init__(energy, tracker_names=("loss", "energy_data", "energy_flips"), **kwargs)

    def compute_probability_flow(self, x_data, training=False):
        """Returns (K, E(x) [batch], E(x') [batch, D])."""
        # 1. Contrasted samples: the states connected to each data point.
        # NOTE: the paper drops connections between two data states; with
        # 64-bit digits such pairs are rare, so every one-bit flip is kept.
        energy_data = self.energy(x_data, training=training)
        energy_flips = neighbour_energies(self.energy, x_data, training=training)
        # 2. Loss: the probability flow out of the data.
        flow = tf.reduce_mean(
            tf.reduce_sum(tf.exp(0.5 * (energy_data[:, None] - energy_flips)), axis=-1)
        )
        return flow, energy_data, energy_flips

    def train_step(self, data):
        x_data, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss, energy_data, energy_flips = self.compute_probability_flow(x_data, training=True)
            scaled_loss = self.scale_loss(loss)  # this replica's share (tf.distribute)
        # 3. Gradients and update.
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self.update_trackers(loss=loss, energy_data=energy_data, energy_flips=energy_flips)

    def test_step(self, data):
        x_data, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        loss, energy_data, energy_flips = self.compute_probability_flow(x_data)
        return self.update_trackers(loss=loss, energy_data=energy_data, energy_flips=energy_flips)
