"""A noise-conditional energy: one network, the energies of the data blurred at several scales."""

import math

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_ebm")
class NoiseConditionalEnergy(keras.layers.Layer):
    """E(x, sigma) for a ladder of noise levels sigma_1 > ... > sigma_L, from one network.

        E(x, sigma) = f([x, log sigma]) / sigma

    with ``f`` any layer or model mapping ``[N, D + 1]`` to ``[N]`` (or
    ``[N, 1]``). Trained by score matching at every level
    (`keras_ebm.methods.ScoreMatching`), E(., sigma) is the energy of the
    data blurred by N(0, sigma^2 I): at the largest sigma the modes merge
    into one smooth bump, at the smallest the energy has the data's shape.
    The division by sigma (Song & Ermon 2020) gives f's gradients the same
    scale at every level.

    Calling the layer gives E(x, sigma_L), the sharpest level, so that it is
    an ordinary energy for evaluation and export; `at(x, sigma)` gives any
    level. `keras_ebm.samplers.NoiseAnnealedLangevin` samples it from the
    largest level down (Song & Ermon 2019): the modes' masses are settled
    while the levels still connect them, where score matching fits them,
    not at the smallest level, where its loss leaves them free.

    Args:
        network: a layer or model mapping ``[N, D + 1]`` (x, then log sigma)
            to energies ``[N]`` or ``[N, 1]``, e.g. `MLPEnergy`.
        sigmas: the noise levels, strictly decreasing positive floats.
        **kwargs: base layer keyword arguments.

    Example:

    >>> energy = NoiseConditionalEnergy.geometric(MLPEnergy((128, 128)), 2.0, 0.05, 10)
    >>> energy(tf.zeros([8, 2])).shape            # E(x, 0.05)
    TensorShape([8])
    >>> energy.at(tf.zeros([8, 2]), 2.0).shape    # E(x, 2.0)
    TensorShape([8])

    Reference:
        Song & Ermon, "Generative modeling by estimating gradients of the
        data distribution", NeurIPS 2019; "Improved techniques for training
        score-based generative models", NeurIPS 2020.
    """

    def __init__(self, network, sigmas, **kwargs):
        super().__init__(**kwargs)
        sigmas = tuple(float(s) for s in np.ravel(sigmas))
        if not sigmas or not all(s > 0 and math.isfinite(s) for s in sigmas):
            raise ValueError(f"NoiseConditionalEnergy: sigmas must be positive and finite, got "
                             f"{sigmas}")
        if any(a <= b for a, b in zip(sigmas, sigmas[1:])):
            raise ValueError(f"NoiseConditionalEnergy: sigmas must decrease strictly, got "
                             f"{sigmas}")
        self.network = network
        self.sigmas = sigmas

    @classmethod
    def geometric(cls, network, sigma_max, sigma_min, num_levels, **kwargs):
        """`num_levels` sigmas in geometric progression from `sigma_max` down to `sigma_min`."""
        if int(num_levels) < 1 or (int(num_levels) > 1 and not sigma_max > sigma_min):
            raise ValueError(f"NoiseConditionalEnergy.geometric: needs num_levels >= 1 and "
                             f"sigma_max > sigma_min, got {num_levels}, {sigma_max}, "
                             f"{sigma_min}")
        levels = np.geomspace(sigma_max, sigma_min, int(num_levels)) if int(num_levels) > 1 \
            else [sigma_min]
        return cls(network, levels, **kwargs)

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"NoiseConditionalEnergy takes vectors [N, D], got shape "
                             f"{tuple(input_shape)}")
        if not getattr(self.network, "built", False):
            self.network.build((input_shape[0], input_shape[1] + 1))
        self.built = True

    def at(self, x, sigma, training=False):
        """E(x, sigma): energies ``[N]``, for one sigma (a scalar) or one per example ``[N]``."""
        x = tf.convert_to_tensor(x)
        count = tf.shape(x)[:1]
        sigma = tf.broadcast_to(tf.reshape(tf.cast(sigma, x.dtype), [-1]), count)
        features = tf.concat([x, tf.math.log(sigma)[:, None]], axis=-1)
        if isinstance(self.network, keras.layers.Layer):
            out = self.network(features, training=training)
        else:
            out = self.network(features)
        return tf.reshape(out, count) / sigma

    def call(self, inputs, training=False):
        return self.at(inputs, self.sigmas[-1], training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:1])

    def get_config(self):
        return {**super().get_config(),
                "network": keras.saving.serialize_keras_object(self.network),
                "sigmas": list(self.sigmas)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)
