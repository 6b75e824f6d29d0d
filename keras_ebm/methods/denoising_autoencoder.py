"""Denoising autoencoder: an energy given by the reconstruction error."""

import keras
import tensorflow as tf

from keras_ebm.methods.energy_method import EnergyMethod
from keras_ebm.seeding import fold_seed
from keras_ebm.seeding import random_normal
from keras_ebm.seeding import random_uniform


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
        example = tuple(input_shape[1:])
        if all(d is not None for d in example):
            # A call builds any autoencoder (a subclassed model may have no build()) and
            # shows its output shape.
            self._check_shape(tf.zeros((1, *example)), self.autoencoder(tf.zeros((1, *example))))
        elif not self.autoencoder.built:
            self.autoencoder.build(input_shape)
        self.built = True

    @staticmethod
    def _check_shape(inputs, reconstruction):
        if (reconstruction.shape[1:].is_fully_defined()
                and reconstruction.shape[1:] != inputs.shape[1:]):
            raise ValueError(f"the autoencoder maps inputs of shape {tuple(inputs.shape[1:])} "
                             f"to {tuple(reconstruction.shape[1:])}; a reconstruction must "
                             "have the input's shape")

    def call(self, inputs, training=False):
        reconstruction = self.autoencoder(inputs, training=training)
        self._check_shape(inputs, reconstruction)
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


def corrupt(x, noise, noise_level, seed=None):
    """Corrupts x: additive Gaussian, bit flips or masking (zeroing) with rate `noise_level`.

    `seed`: None (TF's global generator) or a stateless [2] seed.
    """
    if noise == "gaussian":
        return x + noise_level * random_normal(tf.shape(x), seed, x.dtype)
    hit = tf.cast(random_uniform(tf.shape(x), seed, x.dtype) < noise_level, x.dtype)
    if noise == "bitflip":
        return x + hit * (1.0 - 2.0 * x)
    if noise == "masking":
        return x * (1.0 - hit)
    raise ValueError(f"noise must be 'gaussian', 'bitflip' or 'masking', got {noise!r}")


def run_chain(step, start, num_steps, seed=None, bounds=None):
    """x <- step(x, step_seed) `num_steps` times from `start`; returns a NumPy array.

    `step_seed` is a stateless seed derived from `seed` and the step number,
    or None when `seed` is None (TF's global generator). The step is one
    `tf.function`, traced once. `bounds` (low, high), when given, clips every
    step's output into the box: an autoencoder extrapolates badly far from its
    data, and iterated there a chain can run off to infinity.
    """
    x = tf.convert_to_tensor(start, tf.float32)

    def clipped_step(x, step_seed):
        x = step(x, step_seed)
        if bounds is None:
            return x
        return tf.clip_by_value(x, tf.cast(bounds[0], x.dtype), tf.cast(bounds[1], x.dtype))

    compiled = tf.function(clipped_step)
    base = None if seed is None else tf.constant([int(seed), 0], tf.int64)
    for i in range(int(num_steps)):
        x = compiled(x, fold_seed(base, i))
    return x.numpy()


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

    def sample(self, start, num_steps=100, seed=None, bounds=None):
        """Runs the DAE's own Markov chain from `start`: x <- r(corrupt(x)), `num_steps` times.

        Bengio, Yao, Alain & Vincent ("Generalized denoising auto-encoders as
        generative models", NeurIPS 2013): alternating the corruption and the
        reconstruction is a chain whose stationary distribution estimates
        the data's; the reconstruction r is the lecture's "dynamical system
        whose dynamics go to the manifold".

        Args:
            start: array [n, ...], the chains' first points (e.g. uniform noise).
            num_steps: int >= 0. Defaults to 100.
            seed: int or None; an int makes the chain's noise reproducible.
                Defaults to None (TF's global generator).
            bounds: (low, high) or None: clips every step into the box (the
                evaluation passes the data's box). Defaults to None.

        Returns:
            A float32 array shaped like `start`.
        """
        return run_chain(lambda x, step_seed: self.autoencoder(
            corrupt(x, self.noise, self.noise_level, step_seed), training=False),
            start, num_steps, seed, bounds)

    def get_config(self):
        config = super().get_config()
        config.pop("energy", None)
        return {**config, "noise": self.noise, "noise_level": self.noise_level}
