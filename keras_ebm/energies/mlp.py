"""A multilayer perceptron that maps a vector to a scalar energy."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_ebm")
class MLPEnergy(keras.layers.Layer):
    """Energy E(x) = w^T phi_L(... phi_1(x)) + b for continuous vectors.

    Hidden layers use a smooth activation (swish by default) so that
    grad_x E is continuous, which Langevin dynamics needs; ReLU energies give
    piecewise-constant gradients and poor samples.

        h_0 = x,  h_l = act(W_l h_{l-1} + b_l),  E(x) = w^T h_L + b.

    Args:
        hidden_units: tuple of ints, widths of the hidden layers. Defaults to (128, 128).
        activation: activation of the hidden layers. Defaults to `"swish"`.
        spectral_normalization: bool, wrap each Dense layer in
            `keras.layers.SpectralNormalization` (Miyato et al. 2018) to bound
            the Lipschitz constant of E. Defaults to False.
        **kwargs: base layer keyword arguments.

    Example:

    >>> energy = MLPEnergy(hidden_units=(64, 64))
    >>> energy(tf.zeros([8, 2])).shape
    TensorShape([8])

    Reference:
        Du & Mordatch, "Implicit generation and modeling with energy based
        models", NeurIPS 2019; Nijkamp et al., "On the anatomy of MCMC-based
        maximum likelihood learning of energy-based models", AAAI 2020.
    """

    def __init__(self, hidden_units=(128, 128), activation="swish", spectral_normalization=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation = activation
        self.spectral_normalization = bool(spectral_normalization)
        self.dense_layers = []
        for i, units in enumerate(self.hidden_units + (1,)):
            is_output = i == len(self.hidden_units)
            layer = keras.layers.Dense(
                units, activation=None if is_output else activation, name=f"dense_{i}"
            )
            if self.spectral_normalization:
                layer = keras.layers.SpectralNormalization(layer, name=f"spectral_dense_{i}")
            self.dense_layers.append(layer)

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.dense_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, inputs, training=False):
        hidden = inputs
        for layer in self.dense_layers:
            if self.spectral_normalization:
                hidden = layer(hidden, training=training)
            else:
                hidden = layer(hidden)
        return tf.squeeze(hidden, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_units": self.hidden_units,
                "activation": self.activation,
                "spectral_normalization": self.spectral_normalization,
            }
        )
        return config
