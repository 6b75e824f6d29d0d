"""Noise-contrastive estimation with a learned log partition function."""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_ebm.methods.energy_method import EnergyMethod


@keras.saving.register_keras_serializable(package="keras_ebm")
class GaussianNoise(keras.layers.Layer):
    """Diagonal Gaussian noise distribution p_n(x) = N(x; mean, diag(stddev^2)).

    Args:
        mean: array-like, the mean of one example (any shape).
        stddev: array-like broadcastable to `mean`, standard deviations.

    Example:

    >>> noise = GaussianNoise.from_data(x_train, scale=1.5)
    >>> x_noise = noise.sample(256); log_pn = noise.log_prob(x_noise)
    """

    def __init__(self, mean, stddev, **kwargs):
        super().__init__(**kwargs)
        self.mean_value = np.asarray(mean, "float32")
        self.stddev_value = np.broadcast_to(np.asarray(stddev, "float32"), self.mean_value.shape)
        self.mean = self.add_weight(
            name="mean", shape=self.mean_value.shape,
            initializer=keras.initializers.Constant(self.mean_value), trainable=False)
        self.stddev = self.add_weight(
            name="stddev", shape=self.mean_value.shape,
            initializer=keras.initializers.Constant(self.stddev_value), trainable=False)
        self.built = True

    @classmethod
    def from_data(cls, x, scale=1.0, **kwargs):
        """Fits the mean and per-dimension standard deviation (times `scale`)."""
        x = np.asarray(x, "float32")
        return cls(x.mean(axis=0), scale * x.std(axis=0) + 1e-3, **kwargs)

    def sample(self, num_samples):
        shape = tf.concat([[num_samples], tf.shape(self.mean)], axis=0)
        return self.mean + self.stddev * tf.random.normal(shape)

    def log_prob(self, x):
        z = (x - self.mean) / self.stddev
        log_density = -0.5 * tf.square(z) - tf.math.log(self.stddev) - 0.5 * math.log(2 * math.pi)
        return tf.reduce_sum(tf.reshape(log_density, [tf.shape(x)[0], -1]), axis=-1)

    def call(self, x):
        return self.log_prob(x)

    def get_config(self):
        config = super().get_config()
        config.update({"mean": self.mean_value.tolist(), "stddev": self.stddev_value.tolist()})
        return config


@keras.saving.register_keras_serializable(package="keras_ebm")
class BernoulliNoise(keras.layers.Layer):
    """Independent Bernoulli noise p_n(x) = prod_i p_i^x_i (1 - p_i)^(1 - x_i) for binary x.

    Args:
        probs: array-like, the probability of a 1 in each coordinate.

    Example:

    >>> noise = BernoulliNoise.from_data(x_train)   # the independent-pixel model
    """

    def __init__(self, probs, **kwargs):
        super().__init__(**kwargs)
        self.probs_value = np.asarray(probs, "float32")
        self.probs = self.add_weight(
            name="probs", shape=self.probs_value.shape,
            initializer=keras.initializers.Constant(self.probs_value), trainable=False)
        self.built = True

    @classmethod
    def from_data(cls, x, epsilon=1e-2, **kwargs):
        """Fits p_i as the mean of the data, clipped to [epsilon, 1 - epsilon]."""
        return cls(np.clip(np.asarray(x, "float32").mean(axis=0), epsilon, 1 - epsilon), **kwargs)

    def sample(self, num_samples):
        shape = tf.concat([[num_samples], tf.shape(self.probs)], axis=0)
        return tf.cast(tf.random.uniform(shape) < self.probs, tf.float32)

    def log_prob(self, x):
        log_p = x * tf.math.log(self.probs) + (1.0 - x) * tf.math.log1p(-self.probs)
        return tf.reduce_sum(tf.reshape(log_p, [tf.shape(x)[0], -1]), axis=-1)

    def call(self, x):
        return self.log_prob(x)

    def get_config(self):
        config = super().get_config()
        config.update({"probs": self.probs_value.tolist()})
        return config


@keras.saving.register_keras_serializable(package="keras_ebm")
class NoiseContrastiveEstimation(EnergyMethod):
    """Learns an energy by telling data from noise with logistic regression.

    The model log-density is log p_m(x) = -E(x) - c with c = log Z a free,
    learned parameter. With ν noise samples per data sample and

        G(x) = log p_m(x) - log p_n(x) - log ν,

    the loss (Gutmann & Hyvärinen 2010, eq. 8) is

        loss = -mean_{x ~ data} log sigmoid(G(x)) - ν mean_{y ~ p_n} log sigmoid(-G(y)),

    which pushes the energy of data down and the energy of noise up, and is
    minimised by the true density with c equal to the true log Z.

    Args:
        energy: a layer mapping x to energies of shape [batch].
        noise: a distribution with `sample(n)` and `log_prob(x)`, e.g.
            `GaussianNoise` or `BernoulliNoise`.
        noise_ratio: float ν, noise samples per data sample. Defaults to 1.0.
        initial_log_partition: float, initial value of c. Defaults to 0.0.
        **kwargs: `keras.Model` keyword arguments.

    Example:

    >>> nce = NoiseContrastiveEstimation(RBM(64, 16), BernoulliNoise.from_data(x_train))
    >>> nce.initialize_log_partition()   # c from importance sampling with the noise
    >>> nce.compile(optimizer="adam"); nce.fit(x_train, batch_size=100, epochs=50)
    >>> nce.log_partition   # learned estimate of log Z

    Reference:
        Gutmann & Hyvärinen, "Noise-contrastive estimation: A new estimation
        principle for unnormalized statistical models", AISTATS 2010.
    """

    tracker_names = ("loss", "accuracy", "energy_data", "energy_noise")
    config_objects = ("energy", "noise")

    def __init__(self, energy, noise, noise_ratio=1.0, initial_log_partition=0.0, **kwargs):
        super().__init__(energy, **kwargs)
        self.noise = noise
        self.noise_ratio = float(noise_ratio)
        self.initial_log_partition = float(initial_log_partition)
        self.log_partition = self.add_weight(
            name="log_partition", shape=(),
            initializer=keras.initializers.Constant(self.initial_log_partition))
        self.build_now()

    def importance_log_partition(self, num_samples=10000):
        """Importance-sampling estimate log Z ≈ logmeanexp_{y ~ p_n}(-E(y) - log p_n(y)).

        Useful to initialise c: starting far from the true log Z makes the
        energy absorb the offset (its biases drift) while c catches up.
        """
        x_noise = self.noise.sample(num_samples)
        log_weights = -self.energy(x_noise) - self.noise.log_prob(x_noise)
        return float(tf.reduce_logsumexp(log_weights) - math.log(num_samples))

    def initialize_log_partition(self, num_samples=10000):
        """Sets c to `importance_log_partition(num_samples)`; returns it."""
        value = self.importance_log_partition(num_samples)
        self.log_partition.assign(value)
        return value

    def prepare(self, data, training):
        x_data = super().prepare(data, training)
        # 1. Contrasted samples: ν noise samples per data point.
        num_noise = tf.cast(tf.math.ceil(tf.cast(tf.shape(x_data)[0], tf.float32)
                                         * self.noise_ratio), tf.int32)
        return x_data, tf.cast(self.noise.sample(num_noise), x_data.dtype)

    def contrastive_loss(self, inputs, training):
        x_data, x_noise = inputs
        # 2. Logistic regression of data against noise on
        #    G(x) = log p_m(x) - log p_n(x) - log ν, with log p_m(x) = -E(x) - c.
        log_nu = math.log(self.noise_ratio)
        energy_data = self.energy(x_data, training=training)
        energy_noise = self.energy(x_noise, training=training)
        logit_data = -energy_data - self.log_partition - self.noise.log_prob(x_data) - log_nu
        logit_noise = -energy_noise - self.log_partition - self.noise.log_prob(x_noise) - log_nu
        loss = (-tf.reduce_mean(tf.math.log_sigmoid(logit_data))
                - self.noise_ratio * tf.reduce_mean(tf.math.log_sigmoid(-logit_noise)))
        accuracy = tf.concat([tf.cast(logit_data > 0, tf.float32),
                              tf.cast(logit_noise <= 0, tf.float32)], 0)
        return loss, {"accuracy": accuracy, "energy_data": energy_data,
                      "energy_noise": energy_noise}

    def get_config(self):
        return {**super().get_config(), "noise_ratio": self.noise_ratio,
                "initial_log_partition": self.initial_log_partition}
