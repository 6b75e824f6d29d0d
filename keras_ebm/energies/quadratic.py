"""The quadratic energy of a Gaussian: E(x) = 1/2 (x - m)^T L L^T (x - m)."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_ebm")
class QuadraticEnergy(keras.layers.Layer):
    """E(x) = 1/2 (x - m)^T P (x - m) with precision P = L L^T: a Gaussian, up to log Z.

    The simplest continuous energy, with closed forms for everything a
    method estimates (log Z = D/2 log 2 pi - 1/2 log det P, score
    -P (x - m)): the reference each method is checked against, and the
    "fitted Gaussian" row of a results table. L is a free square matrix,
    so P is always positive semi-definite.

    Args:
        **kwargs: base layer keyword arguments.

    Example:

    >>> energy = QuadraticEnergy()
    >>> energy(tf.zeros([4, 2])).shape        # builds m = 0, L = I
    TensorShape([4])
    >>> energy.precision()                    # L L^T
    """

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.mean = self.add_weight(shape=(dim,), initializer="zeros", name="mean")
        self.factor = self.add_weight(shape=(dim, dim), initializer="identity", name="factor")

    def precision(self):
        """P = L L^T, [D, D]."""
        return self.factor @ tf.transpose(self.factor)

    def call(self, inputs):
        centred = inputs - self.mean
        return 0.5 * tf.reduce_sum(centred * tf.linalg.matvec(self.precision(), centred), -1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])
