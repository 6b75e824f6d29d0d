"""Denoising autoencoder: an energy given by the reconstruction error."""

import keras
import tensorflow as tf

from keras_ebm.methods.energy_method import EnergyMethod


@keras.saving.register_keras_serializable(package="keras_ebm")
class ReconstructionEnergy(keras.layers.Layer):
    """E(x) = ||x - r(x)||^2, the squared reconstruction error of an autoencoder r.

    Args:
        autoencoder: a layer or model mapping x to a reconstruction of the same shape.
        **kwargs: base layer keyword arguments.

    Example:

    >>> energy = ReconstructionEnergy(autoencoder)
    >>> energy(x)   # shape [batch]
    """

    def __init__(self, autoencoder, **kwargs):
        super().__init__(**kwargs)
        self.autoencoder = autoencoder
        if getattr(autoencoder, "built", False):
            self.built = True

    def build(self, input_shape):
        if not self.autoencoder.built:
            self.autoencoder.build(input_shape)
        self.built = True

    def call(self, inputs, training=False):
        reconstruction = self.autoencoder(inputs, training=training)
        squared_error = tf.square(tf.cast(inputs, reconstruction.dtype) - reconstruction)
        return tf.reduce_sum(tf.reshape(squared_error, [tf.shape(inputs)[0], -1]), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)

    def get_config(self):
        config = super().get_config()
        config["autoencoder"] = keras.saving.serialize_keras_object(self.autoencoder)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["autoencoder"] = keras.saving.deserialize_keras_object(config["autoencoder"])
        return cls(**config)


def corrupt(x, noise, noise_level):
    """Corrupts x: additive Gaussian, bit flips or masking (zeroing) with rate `noise_level`."""
    if noise == "gaussian":
        return x + noise_level * tf.random.normal(tf.shape(x), dtype=x.dtype)
    hit = tf.cast(tf.random.uniform(tf.shape(x), dtype=x.dtype) < noise_level, x.dtype)
    if noise == "bitflip":
        return x + hit * (1.0 - 2.0 * x)
    if noise == "masking":
        return x * (1.0 - hit)
    raise ValueError(f"noise must be 'gaussian', 'bitflip' or 'masking', got {noise!r}")


@keras.saving.register_keras_serializable(package="keras_ebm")
class DenoisingAutoencoder(EnergyMethod):
    """Trains an autoencoder to map corrupted points back onto the data.

    Corruption supplies the contrasted points: x̃ ~ C(x̃ | x) lies off the data
    manifold, and the reconstruction r(x̃) is pulled back to x. The energy
    E(x) = ||x - r(x)||^2 is then low on the data and high away from it.

        x̃ = corrupt(x),   loss = mean ||r(x̃) - x||^2

    Args:
        autoencoder: a layer or model mapping x to a reconstruction.
        noise: `"gaussian"` (x + σ ε), `"bitflip"` (flip each bit with
            probability σ) or `"masking"` (zero each entry with probability σ).
            Defaults to `"gaussian"`.
        noise_level: float σ. Defaults to 0.5.
        **kwargs: `input_shape` and `keras.Model` keyword arguments.

    Example:

    >>> dae = DenoisingAutoencoder(autoencoder, noise="bitflip", noise_level=0.1)
    >>> dae.compile(optimizer="adam"); dae.fit(x_train, epochs=50)
    >>> dae.energy(x_test)   # reconstruction errors

    Reference:
        Vincent et al., "Extracting and composing robust features with
        denoising autoencoders", ICML 2008.
    """

    tracker_names = ("loss", "energy_data", "energy_corrupted")
    config_objects = ("autoencoder",)

    def __init__(self, autoencoder, noise="gaussian", noise_level=0.5, **kwargs):
        # The energy wraps the autoencoder and is built exactly when it is.
        super().__init__(ReconstructionEnergy(autoencoder, name="reconstruction_energy"),
                         **kwargs)
        corrupt(tf.zeros([1]), noise, noise_level)  # validates `noise`
        self.autoencoder = autoencoder
        self.noise = noise
        self.noise_level = float(noise_level)
        self.build_now()

    def prepare(self, data, training):
        x_data = super().prepare(data, training)
        # 1. Contrasted samples: corrupted copies of the data.
        return x_data, corrupt(x_data, self.noise, self.noise_level)

    def contrastive_loss(self, inputs, training):
        x_data, x_corrupted = inputs
        # 2. Reconstruct the clean point from the corrupted one: the energy
        #    ||x - r(x)||^2 falls on the data and rises off it.
        reconstruction = self.autoencoder(x_corrupted, training=training)
        squared_error = tf.reshape(tf.square(reconstruction - x_data), [tf.shape(x_data)[0], -1])
        loss = tf.reduce_mean(tf.reduce_sum(squared_error, axis=-1))
        return loss, {"energy_data": tf.stop_gradient(self.energy(x_data)),
                      "energy_corrupted": tf.stop_gradient(self.energy(x_corrupted))}

    def sample(self, start, num_steps=100):
        """Runs the DAE's own Markov chain from `start`: x <- r(corrupt(x)), `num_steps` times.

        Bengio, Yao, Alain & Vincent ("Generalized denoising auto-encoders as
        generative models", NeurIPS 2013): alternating the corruption and the
        reconstruction is a chain whose stationary distribution estimates
        the data's; the reconstruction r is the lecture's "dynamical system
        whose dynamics go to the manifold".

        Args:
            start: array [n, ...], the chains' first points (e.g. uniform noise).
            num_steps: int >= 0. Defaults to 100.

        Returns:
            A float32 array shaped like `start`.
        """
        x = tf.convert_to_tensor(start, tf.float32)
        step = tf.function(lambda x: self.autoencoder(
            corrupt(x, self.noise, self.noise_level), training=False))
        for _ in range(int(num_steps)):
            x = step(x)
        return x.numpy()

    def get_config(self):
        config = super().get_config()
        config.pop("energy", None)
        return {**config, "noise": self.noise, "noise_level": self.noise_level}
