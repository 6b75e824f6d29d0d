"""Batch normalisation through TensorFlow's fused kernel."""

import keras
import tensorflow as tf
from keras import ops

from keras_ebm import keras_compat


@keras.saving.register_keras_serializable(package="keras_ebm")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by TensorFlow's fused kernel.

    Keras 3 normalises with separate operations (moments, then scale and
    shift), and differentiates each of them. On the TensorFlow backend this
    layer computes the same function with one `FusedBatchNormV3` op and its
    fused gradient, which oneDNN (CPU) and cuDNN (GPU) implement: fewer
    passes over the activations per step. `tools/benchmark.py
    --[no]fused_batch_norm` measures the difference (docs/performance.md).

    Same arguments, weights, statistics and config as
    `keras.layers.BatchNormalization`: the moving statistics are updated
    with the biased batch variance and `momentum` exactly as Keras does, and
    the output matches Keras's to float rounding. Inputs of rank 4 (or rank
    2, seen as `[batch, 1, 1, channels]`) normalised over the last axis take
    the fused path. Everything else, `synchronized=True`
    (`keras_ebm.distribute.sync_batch_norm`), `renorm`, a `mask`, another
    axis or another rank, falls back to Keras's own computation.

    Args:
        fused: bool, default True. False always computes Keras's unfused
            batch norm (to compare, or to rule the kernel out).
        **kwargs: the arguments of `keras.layers.BatchNormalization`
            (`axis`, `momentum`, `epsilon`, `center`, `scale`,
            `synchronized`, ...).

    Note: TensorFlow's fused kernel raises an `epsilon` below 1.001e-5 to
    1.001e-5, so with `epsilon=1e-5` the outputs differ from Keras's by
    about 1e-8 relative to the batch variance.

    Example:

    >>> layer = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
    >>> layer(np.ones((8, 4, 4, 16), "float32"), training=True).shape
    (8, 4, 4, 16)
    """

    def __init__(self, fused=True, **kwargs):
        super().__init__(**kwargs)
        self.fused = bool(fused)

    def _fused_ok(self, inputs, mask):
        rank = len(inputs.shape)
        return (self.fused and mask is None and not getattr(self, "renorm", False)  # Keras >= 3.14
                and not getattr(self, "synchronized", False) and rank in (2, 4)
                and self.axis in (-1, rank - 1)
                and inputs.dtype in (tf.float32, tf.bfloat16, tf.float16))

    def call(self, inputs, training=None, mask=None):
        if not self._fused_ok(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        x = inputs
        if len(x.shape) == 2:
            x = tf.reshape(x, [-1, 1, 1, x.shape[-1]])
        channels = x.shape[-1]
        # float32 scale and offset, as the kernel wants (mixed precision reads them cast).
        gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, is_training=True)
            # The kernel returns the unbiased (Bessel-corrected) batch variance;
            # Keras averages the biased one.
            count = tf.cast(tf.size(x) // channels, "float32")
            variance = variance * ((count - 1.0) / tf.maximum(count, 1.0))
            self.moving_mean.assign(
                self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=self.moving_mean, variance=self.moving_variance,
                epsilon=self.epsilon, is_training=False)
        if len(inputs.shape) == 2:
            outputs = tf.reshape(outputs, tf.shape(inputs))
        return ops.cast(outputs, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"fused": self.fused})
        return config


def set_fused_batch_norm(layer, fused=True):
    """Turns the fused kernel on or off in every `FusedBatchNormalization` inside `layer`.

    Args:
        layer: a Keras layer or model (an encoder, a head or a whole method).
        fused: bool, default True.

    Returns:
        The number of batch-norm layers changed.

    Example:

    >>> encoder = keras_ebm.backbones.resnet18_cifar()
    >>> set_fused_batch_norm(encoder, False)   # Keras's unfused ops, to compare
    20
    """
    count = 0
    for sublayer in keras_compat.flatten_layers(layer):
        if isinstance(sublayer, FusedBatchNormalization):
            sublayer.fused = bool(fused)
            count += 1
    return count
