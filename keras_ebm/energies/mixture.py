"""Energies whose volume of low energy is fixed by construction: K-means and a Gaussian mixture.

The lecture's strategy 1. Pushing down the energy of the data is enough to
train them: they cannot make the energy low everywhere, because

- K-means' energy is low only in K balls around its prototypes, whatever
  their place;
- a Gaussian mixture's energy is a normalised density, -log p(x), so
  lowering it at the data raises it elsewhere.
"""

import math

import keras
import numpy as np
import tensorflow as tf


def kmeans_plus_plus(x, num_centers, seed=0):
    """Arthur & Vassilvitskii's k-means++ seeding: `num_centers` rows of x, spread out.

    The first centre is a uniform draw; each next one is drawn with
    probability proportional to the squared distance to the nearest centre
    so far.

    Args:
        x: array [n, D].
        num_centers: int, 1 <= num_centers <= n.
        seed: int, NumPy seed. Defaults to 0.

    Returns:
        float32 array [num_centers, D] of rows of x.
    """
    x = np.asarray(x, "float64").reshape(len(x), -1)
    if not 1 <= num_centers <= len(x):
        raise ValueError(f"kmeans_plus_plus: num_centers must be in [1, {len(x)}] (the number "
                         f"of points), got {num_centers}")
    rng = np.random.default_rng(seed)
    centers = [x[rng.integers(len(x))]]
    nearest = np.sum((x - centers[0]) ** 2, axis=1)
    for _ in range(1, num_centers):
        total = nearest.sum()
        index = rng.choice(len(x), p=nearest / total) if total > 0 else rng.integers(len(x))
        centers.append(x[index])
        nearest = np.minimum(nearest, np.sum((x - x[index]) ** 2, axis=1))
    return np.stack(centers).astype("float32")


def squared_distances(x, centers):
    """||x_n - c_k||^2, [n, K], clipped at 0 against round-off."""
    cross = tf.matmul(x, centers, transpose_b=True)
    return tf.maximum(tf.reduce_sum(tf.square(x), -1, keepdims=True) - 2.0 * cross
                      + tf.reduce_sum(tf.square(centers), -1)[None, :], 0.0)


@keras.saving.register_keras_serializable(package="keras_ebm")
class KMeansEnergy(keras.layers.Layer):
    """E(x) = min_k ||x - c_k||^2: the squared distance to the nearest of K prototypes.

    Trained by pushing down the energy of the data (`keras_ebm.methods.ConstantVolume`),
    which is online K-means: each prototype moves towards the points it is
    nearest to. The energy is low only in K balls, so it cannot collapse.
    As a density it is defined up to scale: p_T(x) ∝ exp(-E(x) / T)
    (`keras_ebm.evaluation.calibrated_log_likelihood` fits T), and `sample`
    draws from p_T exactly.

    Args:
        num_clusters: int >= 1, K. Defaults to 32.
        **kwargs: base layer keyword arguments.

    Example:

    >>> energy = KMeansEnergy(16)
    >>> energy.initialize_from_data(x_train)        # k-means++ seeding
    >>> energy(x_train[:4]).shape
    TensorShape([4])

    Reference:
        MacQueen, "Some methods for classification and analysis of
        multivariate observations", 1967; Bottou & Bengio, "Convergence
        properties of the K-means algorithms", NeurIPS 1994 (online K-means
        as gradient descent).
    """

    def __init__(self, num_clusters=32, **kwargs):
        super().__init__(**kwargs)
        if int(num_clusters) < 1:
            raise ValueError(f"KMeansEnergy: num_clusters must be >= 1, got {num_clusters}")
        self.num_clusters = int(num_clusters)

    def build(self, input_shape):
        self.centers = self.add_weight(shape=(self.num_clusters, int(input_shape[-1])),
                                       initializer="random_normal", name="centers")

    def call(self, inputs):
        return tf.reduce_min(squared_distances(inputs, self.centers), axis=-1)

    def initialize_from_data(self, x, seed=0):
        """Places the prototypes by k-means++ on x [n, D]."""
        x = np.asarray(x, "float32")
        if not self.built:
            self.build(x.shape)
        self.centers.assign(kmeans_plus_plus(x, self.num_clusters, seed))

    def sample(self, num_samples, temperature=1.0, seed=0):
        """Exact samples of p_T(x) ∝ exp(-min_k ||x - c_k||^2 / T), a float32 array [n, D].

        Rejection from the mixture (1/K) sum_k N(c_k, T/2 I): its density is
        proportional to sum_k exp(-||x - c_k||^2 / T), which bounds the
        target's max_k exp(-||x - c_k||^2 / T), so a draw is accepted with
        probability max / sum (at least 1/K).
        """
        rng = np.random.default_rng(seed)
        centers = np.asarray(self.centers, "float64")
        kept, count = [], 0
        while count < num_samples:
            draws = centers[rng.integers(len(centers), size=2 * num_samples)]
            draws = draws + math.sqrt(temperature / 2.0) * rng.standard_normal(draws.shape)
            scaled = -((draws[:, None, :] - centers[None]) ** 2).sum(-1) / temperature
            peak = scaled.max(axis=1, keepdims=True)
            accept = rng.random(len(draws)) < 1.0 / np.exp(scaled - peak).sum(axis=1)
            kept.append(draws[accept])
            count += int(accept.sum())
        return np.concatenate(kept)[:num_samples].astype("float32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])

    def get_config(self):
        return {**super().get_config(), "num_clusters": self.num_clusters}


def _inverse_softplus(y):
    return np.log(np.expm1(y))


@keras.saving.register_keras_serializable(package="keras_ebm")
class GaussianMixtureEnergy(keras.layers.Layer):
    """E(x) = -log sum_k pi_k N(x; mu_k, (L_k L_k^T)^-1): a Gaussian mixture's negative log-density.

    Normalised by construction (log Z = 0 at T = 1), so pushing down the
    energy of the data is maximum likelihood. Each component is
    parameterised by the Cholesky factor L_k of its precision (lower
    triangular, diagonal softplus(.) + `min_scale`), as scikit-learn's
    `precisions_cholesky_`: the Mahalanobis distance ||L_k^T (x - mu_k)||^2
    is a matrix product, with no solve; the weights by logits (pi = softmax).

    Args:
        num_components: int >= 1, K. Defaults to 16.
        min_scale: float > 0, added to every diagonal entry of L_k so that no
            component's precision is singular. Defaults to 1e-3.
        **kwargs: base layer keyword arguments.

    Example:

    >>> energy = GaussianMixtureEnergy(8)
    >>> energy.initialize_from_data(x_train)        # k-means++ means
    >>> x = energy.sample(1000)                     # ancestral, exact

    Reference:
        Dempster, Laird & Rubin, "Maximum likelihood from incomplete data via
        the EM algorithm", 1977 (here fitted by gradient descent instead).
    """

    def __init__(self, num_components=16, min_scale=1e-3, **kwargs):
        super().__init__(**kwargs)
        if int(num_components) < 1:
            raise ValueError(f"GaussianMixtureEnergy: num_components must be >= 1, got "
                             f"{num_components}")
        if not min_scale > 0:
            raise ValueError(f"GaussianMixtureEnergy: min_scale must be > 0, got {min_scale}")
        self.num_components = int(num_components)
        self.min_scale = float(min_scale)

    def build(self, input_shape):
        k, d = self.num_components, int(input_shape[-1])
        self.means = self.add_weight(shape=(k, d), initializer="random_normal", name="means")
        factor = np.tile(np.eye(d, dtype="float32") * _inverse_softplus(1.0 - self.min_scale),
                         (k, 1, 1))
        self.raw_precision_tril = self.add_weight(
            shape=(k, d, d), initializer=keras.initializers.Constant(factor),
            name="raw_precision_tril")
        self.logits = self.add_weight(shape=(k,), initializer="zeros", name="logits")

    def precision_tril(self):
        """The Cholesky factors L_k of the precisions, [K, D, D]."""
        raw = self.raw_precision_tril
        diagonal = tf.nn.softplus(tf.linalg.diag_part(raw)) + self.min_scale
        return tf.linalg.set_diag(tf.linalg.band_part(raw, -1, 0), diagonal)

    def component_log_densities(self, x):
        """log pi_k + log N(x; mu_k, Sigma_k), [n, K]."""
        x = tf.convert_to_tensor(x, self.means.dtype)
        tril = self.precision_tril()
        # (x - mu_k)^T L_k = x^T L_k - mu_k^T L_k: one matrix product for every component.
        projected = (tf.einsum("nd,kde->nke", x, tril)
                     - tf.einsum("kd,kde->ke", self.means, tril)[None])
        mahalanobis = tf.reduce_sum(tf.square(projected), axis=-1)  # n, K
        half_log_det = tf.reduce_sum(tf.math.log(tf.linalg.diag_part(tril)), axis=-1)  # K
        dim = tf.cast(tf.shape(x)[-1], x.dtype)
        return (-0.5 * mahalanobis + half_log_det - 0.5 * dim * math.log(2.0 * math.pi)
                + tf.nn.log_softmax(self.logits))

    def call(self, inputs):
        return -tf.reduce_logsumexp(self.component_log_densities(inputs), axis=-1)

    def initialize_from_data(self, x, seed=0):
        """Means by k-means++ on x [n, D]; isotropic stds of std(x) K^(-1/D); equal weights."""
        x = np.asarray(x, "float32")
        if not self.built:
            self.build(x.shape)
        k, d = self.num_components, x.shape[-1]
        self.means.assign(kmeans_plus_plus(x, k, seed))
        std = max(float(x.std(axis=0).mean()) * k ** (-1.0 / d), 1e-3)
        diagonal = max(1.0 / std - self.min_scale, 1e-3)
        self.raw_precision_tril.assign(np.tile(np.eye(d, dtype="float32")
                                               * _inverse_softplus(diagonal), (k, 1, 1)))
        self.logits.assign(np.zeros(k, "float32"))

    def sample(self, num_samples, temperature=1.0, seed=0):
        """Exact (ancestral) samples of the mixture, a float32 array [n, D].

        `temperature` is accepted for a common interface with other energies
        and must be 1: a tempered mixture exp(-E/T) is not a mixture.
        """
        if temperature != 1.0:
            raise ValueError("GaussianMixtureEnergy.sample draws at temperature 1 only")
        rng = np.random.default_rng(seed)
        weights = np.asarray(tf.nn.softmax(self.logits), "float64")
        components = rng.choice(self.num_components, size=num_samples, p=weights / weights.sum())
        # x = mu + L^-T z has covariance L^-T L^-1 = (L L^T)^-1.
        inverse = np.linalg.inv(np.asarray(self.precision_tril(), "float64"))
        noise = rng.standard_normal((num_samples, inverse.shape[-1], 1))
        scale = np.swapaxes(inverse, 1, 2)[components]
        means = np.asarray(self.means, "float64")[components]
        return (means + (scale @ noise)[..., 0]).astype("float32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])

    def get_config(self):
        return {**super().get_config(), "num_components": self.num_components,
                "min_scale": self.min_scale}
