"""Exact maximum likelihood for small discrete energy models."""

import keras
import tensorflow as tf

from keras_ebm.energies.rbm import binary_states
from keras_ebm.methods.energy_method import EnergyMethod


def exact_log_partition(energy, num_bits=None):
    """Exact, differentiable log Z = logsumexp_x -E(x).

    Uses `energy.log_partition()` when the energy has one (the RBM sums out
    its smaller layer); otherwise enumerates all 2**num_bits binary vectors.
    """
    if hasattr(energy, "log_partition") and callable(energy.log_partition):
        return energy.log_partition()
    if num_bits is None or num_bits > 20:
        raise ValueError(
            f"Exact log Z enumerates 2**D binary states and needs D <= 20, got D={num_bits}."
        )
    return tf.reduce_logsumexp(-energy(binary_states(num_bits)))


@keras.saving.register_keras_serializable(package="keras_ebm")
class MaximumLikelihood(EnergyMethod):
    """Minimises the exact negative log-likelihood -log p(x) = E(x) + log Z.

    Its gradient dE(x)/dθ - E_{x'~p}[dE(x')/dθ] pushes the energy of the data
    down and the energy of *every* state up, weighted by its probability: the
    exact version of what CD, PCD, NCE, ratio matching and MPF approximate.
    Only small discrete models qualify: an RBM with at most 20 hidden (or
    visible) units, or any energy on at most 20 binary variables.

        loss = mean_x E(x) + log sum_{x'} exp(-E(x'))

    Args:
        energy: an RBM, or a layer mapping binary x [batch, D <= 20] to energies.
        **kwargs: `input_shape` and `keras.Model` keyword arguments.

    Example:

    >>> ml = MaximumLikelihood(RBM(64, 16))
    >>> ml.compile(optimizer=keras.optimizers.Adam(0.01))
    >>> ml.fit(x_train, batch_size=len(x_train), epochs=2000)   # full-batch exact gradient

    Reference:
        Ackley, Hinton & Sejnowski, "A learning algorithm for Boltzmann
        machines", Cognitive Science 1985.
    """

    tracker_names = ("loss", "energy_data", "log_partition")

    def __init__(self, energy, **kwargs):
        super().__init__(energy, **kwargs)
        self.build_now()
        if self.example_shape and not hasattr(energy, "log_partition") and (
                self.example_shape[-1] > 20):
            raise ValueError(f"MaximumLikelihood: exact log Z enumerates 2**D states and "
                             f"needs D <= 20 (or an RBM), got D={self.example_shape[-1]}")

    def contrastive_loss(self, inputs, training):
        # The contrasted samples are all states, weighted by p, inside log Z.
        energy_data = self.energy(inputs, training=training)
        log_partition = exact_log_partition(self.energy, inputs.shape[-1])
        return tf.reduce_mean(energy_data) + log_partition, {"energy_data": energy_data,
                                                             "log_partition": log_partition}
