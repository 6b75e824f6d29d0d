"""Minimum probability flow learning with bit-flip connectivity."""

import keras
import tensorflow as tf

from keras_ebm.methods.ratio_matching import OneBitFlipMethod


@keras.saving.register_keras_serializable(package="keras_ebm")
class MinimumProbabilityFlow(OneBitFlipMethod):
    """Fits an energy by minimising the initial probability flow out of the data.

    With dynamics that connect each binary state to its D one-bit flips and
    transition rates exp((E(x) - E(x')) / 2), the flow out of the data
    distribution at time zero (Sohl-Dickstein et al. 2011, eq. 12) is

        K = mean_{x in data} sum_{x' in flips(x)} exp((E(x) - E(x')) / 2).

    It needs no partition function and is zero only when the model puts no
    mass to flow away from the data: E(x) is pushed down, E(x') up.

    Args:
        energy: a layer mapping binary x [batch, D] to energies [batch].
        **kwargs: `input_shape` and `keras.Model` keyword arguments.

    Example:

    >>> mpf = MinimumProbabilityFlow(RBM(64, 16))
    >>> mpf.compile(optimizer=keras.optimizers.Adam(1e-2))
    >>> mpf.fit(x_train, batch_size=100, epochs=100)
    >>> mpf.energy(x_test)   # free energies; exact log-likelihood: rbm_log_likelihood

    Reference:
        Sohl-Dickstein, Battaglino & DeWeese, "Minimum probability flow
        learning", ICML 2011.
    """

    def objective(self, energy_data, energy_flips):
        # NOTE: the paper drops connections between two data states; with
        # 64-bit digits such pairs are rare, so every one-bit flip is kept.
        return tf.reduce_mean(tf.reduce_sum(tf.exp(0.5 * (energy_data[:, None] - energy_flips)),
                                            axis=-1))
