"""A small convolutional network that maps an image to a scalar energy."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_ebm")
class ConvEnergy(keras.layers.Layer):
    """Energy E(x) of an image from strided convolutions and global pooling.

        h_l = act(conv_l(h_{l-1}), stride 2),  E(x) = w^T mean_{pixels}(h_L) + b.

    Args:
        filters: tuple of ints, channels of the convolutions. Defaults to (32, 64).
        kernel_size: int, kernel size of every convolution. Defaults to 3.
        activation: smooth activation. Defaults to `"swish"`.
        spectral_normalization: bool, wrap each convolution and the output layer
            in `keras.layers.SpectralNormalization`. Defaults to False.
        **kwargs: base layer keyword arguments.

    Example:

    >>> energy = ConvEnergy(filters=(16, 32))
    >>> energy(tf.zeros([4, 8, 8, 1])).shape
    TensorShape([4])

    Reference:
        Du & Mordatch, "Implicit generation and modeling with energy based
        models", NeurIPS 2019 (a ResNet there; a plain CNN here).
    """

    def __init__(self, filters=(32, 64), kernel_size=3, activation="swish",
                 spectral_normalization=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = tuple(int(f) for f in filters)
        self.kernel_size = int(kernel_size)
        self.activation = activation
        self.spectral_normalization = bool(spectral_normalization)

        def wrap(layer, name):
            if self.spectral_normalization:
                return keras.layers.SpectralNormalization(layer, name=name)
            return layer

        self.conv_layers = [
            wrap(
                keras.layers.Conv2D(f, self.kernel_size, strides=2, padding="same",
                                    activation=activation, name=f"conv_{i}"),
                f"spectral_conv_{i}",
            )
            for i, f in enumerate(self.filters)
        ]
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.output_layer = wrap(keras.layers.Dense(1, name="energy"), "spectral_energy")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.conv_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        shape = self.pool.compute_output_shape(shape)
        self.output_layer.build(shape)
        self.built = True

    def call(self, inputs, training=False):
        kwargs = {"training": training} if self.spectral_normalization else {}
        hidden = inputs
        for layer in self.conv_layers:
            hidden = layer(hidden, **kwargs)
        hidden = self.pool(hidden)
        return tf.squeeze(self.output_layer(hidden, **kwargs), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "activation": self.activation,
                "spectral_normalization": self.spectral_normalization,
            }
        )
        return config
