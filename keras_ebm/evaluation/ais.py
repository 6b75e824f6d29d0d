"""Annealed importance sampling (AIS) estimates of an RBM's log partition function."""

import math

import numpy as np
import tensorflow as tf


def ais_log_partition(rbm, num_chains=100, num_betas=10000, base_visible_bias=None, seed=None):
    """Estimates log Z of an RBM by annealing from a bias-only base model.

    The intermediate models interpolate between a base RBM A with no weights
    and visible bias b_A (log Z_A = sum_i softplus(b_A,i) + H log 2) and the
    target RBM B:

        log p*_β(v) = (1 - β) b_A . v + β b_B . v + sum_j softplus(β (c_j + v W_j)),

    with β from 0 to 1. Each chain accumulates the log importance weight
    sum_k [log p*_{β_k}(v_k) - log p*_{β_{k-1}}(v_k)] and moves by one Gibbs
    sweep at β_k; log Z_B ≈ log Z_A + logmeanexp(weights).

    Args:
        rbm: a `keras_ebm.energies.RBM`.
        num_chains: int, independent AIS runs. Defaults to 100.
        num_betas: int, number of intermediate temperatures. Defaults to 10000.
        base_visible_bias: array [num_visible] or None; b_A, e.g. the logits
            of the data's pixel means (better), or zeros when None.
        seed: int or None, seed of the TF random ops.

    Returns:
        (log_z_estimate, log_weights): a float and a NumPy array [num_chains].

    Example:

    >>> log_z, _ = ais_log_partition(rbm, num_chains=100, num_betas=10000)

    Reference:
        Neal, "Annealed importance sampling", Statistics and Computing 2001;
        Salakhutdinov & Murray, "On the quantitative analysis of deep belief
        networks", ICML 2008.
    """
    if seed is not None:
        tf.random.set_seed(seed)
    kernel = tf.cast(tf.convert_to_tensor(rbm.kernel), tf.float64)
    visible_bias = tf.cast(tf.convert_to_tensor(rbm.visible_bias), tf.float64)
    hidden_bias = tf.cast(tf.convert_to_tensor(rbm.hidden_bias), tf.float64)
    if base_visible_bias is None:
        base_bias = tf.zeros_like(visible_bias)
    else:
        base_bias = tf.constant(np.asarray(base_visible_bias, "float64"))
    num_hidden = rbm.num_hidden
    # NOTE: betas uniform in [0, 1] (Salakhutdinov & Murray use three uniform
    # segments with denser spacing near 1; uniform is enough for 16 hidden units).
    betas = tf.linspace(tf.constant(0.0, tf.float64), 1.0, num_betas)

    def log_unnormalised(v, beta):
        return (
            tf.linalg.matvec(v, (1.0 - beta) * base_bias + beta * visible_bias)
            + tf.reduce_sum(tf.nn.softplus(beta * (tf.matmul(v, kernel) + hidden_bias)), axis=-1)
        )

    def bernoulli(p):
        return tf.cast(tf.random.uniform(tf.shape(p), dtype=tf.float64) < p, tf.float64)

    @tf.function
    def run():
        v = bernoulli(tf.broadcast_to(tf.sigmoid(base_bias), [num_chains, rbm.num_visible]))
        log_weights = tf.zeros([num_chains], tf.float64)

        def body(k, v, log_weights):
            beta_prev, beta = betas[k - 1], betas[k]
            log_weights += log_unnormalised(v, beta) - log_unnormalised(v, beta_prev)
            h = bernoulli(tf.sigmoid(beta * (tf.matmul(v, kernel) + hidden_bias)))
            v = bernoulli(tf.sigmoid(
                (1.0 - beta) * base_bias
                + beta * (tf.matmul(h, kernel, transpose_b=True) + visible_bias)))
            return k + 1, v, log_weights

        _, v, log_weights = tf.while_loop(
            lambda k, v, w: k < num_betas, body, (tf.constant(1), v, log_weights)
        )
        return log_weights

    log_weights = run().numpy()
    log_z_base = float(np.sum(np.logaddexp(0.0, base_bias.numpy()))) + num_hidden * math.log(2.0)
    peak = log_weights.max()
    log_mean_weight = peak + np.log(np.mean(np.exp(log_weights - peak)))
    return log_z_base + float(log_mean_weight), log_weights
