"""Exact log partition functions and log-likelihoods of small discrete models."""

import itertools

import numpy as np
import tensorflow as tf


def rbm_log_partition(rbm):
    """Exact log Z of an RBM with at most 20 hidden (or visible) units, as a float.

        log Z = logsumexp_h [h . c + sum_i softplus(b_i + W[i, :] . h)]

    Args:
        rbm: a `keras_ebm.energies.RBM`.

    Example:

    >>> rbm_log_partition(RBM(64, 16))   # 64 log 2 + 16 log 2 at zero weights
    """
    return float(rbm.log_partition())


def rbm_log_likelihood(rbm, x, log_partition=None):
    """Mean exact log-likelihood (nats per example) of binary x under the RBM.

        mean_x log p(x) = mean_x -F(x) - log Z

    Args:
        rbm: a `keras_ebm.energies.RBM`.
        x: binary array [n, num_visible].
        log_partition: float or None; computed exactly when None.
    """
    if log_partition is None:
        log_partition = rbm_log_partition(rbm)
    free_energy = rbm.free_energy(tf.convert_to_tensor(np.asarray(x, "float32")))
    return float(-tf.reduce_mean(tf.cast(free_energy, tf.float64)) - log_partition)


def brute_force_log_partition(energy, num_bits):
    """log Z = logsumexp over all 2**num_bits binary vectors of -E(x), in float64 NumPy.

    Meant to check other estimators on tiny models (num_bits <= 20).
    """
    states = np.array(list(itertools.product([0.0, 1.0], repeat=num_bits)), "float32")
    negative_energy = -np.asarray(energy(tf.convert_to_tensor(states)), "float64")
    peak = negative_energy.max()
    return float(peak + np.log(np.exp(negative_energy - peak).sum()))
