"""Sparse coding: E(x) = min_z ||f(x) - D z||^2 + lambda ||z||_1, the code found by ISTA/FISTA.

The lecture's strategy 6, a regulariser that limits the volume of low
energy: only the points whose (lifted) features are sparse combinations of
a few atoms of the dictionary D get a low energy. With a linear decoder the
energy of the raw input, min_z ||x - D z||^2 + lambda ||z||_1, is the partial
minimum of a function jointly convex in (x, z), hence convex in x: its low
set is one convex blob and it cannot fit two rings or a checkerboard. A
fixed nonlinear lift f (`RBFFeatures`, Gaussian bumps on a grid) makes the
energy of x non-convex while the coding stays an exact lasso.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_ebm.energies.mixture import kmeans_plus_plus


def ista(x, dictionary, sparsity, num_iterations=50, nonnegative=True, accelerated=True):
    """The codes z = argmin_z ||x - D z||^2 + sparsity ||z||_1 by (F)ISTA, no gradient.

    Proximal gradient descent with step 1 / L, L = 2 lambda_max(D^T D) (the
    Lipschitz constant of the gradient 2 D^T (D z - x)), from z = 0, run
    `num_iterations` times in a `tf.while_loop`; the proximal step is the
    soft threshold at sparsity / L (with `nonnegative`, max(v - sparsity / L, 0):
    the lasso with z >= 0). `accelerated` adds Beck & Teboulle's momentum
    (FISTA), which converges as 1/k^2 instead of 1/k.

    Args:
        x: float tensor [n, M], the signals (or their features).
        dictionary: float tensor [M, K], the atoms as columns.
        sparsity: float lambda >= 0.
        num_iterations: int >= 1. Defaults to 50.
        nonnegative: bool, constrain z >= 0. Defaults to True.
        accelerated: bool, FISTA instead of ISTA. Defaults to True.

    Returns:
        float tensor [n, K], the codes (gradients stopped).

    Example:

    >>> z = ista(x, d, sparsity=0.1, num_iterations=100)
    """
    x = tf.stop_gradient(tf.convert_to_tensor(x))
    dictionary = tf.stop_gradient(tf.cast(dictionary, x.dtype))
    gram = tf.matmul(dictionary, dictionary, transpose_a=True)            # [K, K]
    correlation = tf.matmul(x, dictionary)                                 # [n, K] = (D^T x)^T
    lipschitz = 2.0 * tf.maximum(tf.linalg.eigvalsh(gram)[-1], 1e-12)
    step = 1.0 / lipschitz
    threshold = tf.cast(sparsity, x.dtype) * step

    def prox(v):
        if nonnegative:
            return tf.nn.relu(v - threshold)
        return tf.sign(v) * tf.nn.relu(tf.abs(v) - threshold)

    def gradient_step(y):  # y - step * 2 (D^T D y - D^T x), row-wise
        return prox(y - 2.0 * step * (tf.matmul(y, gram) - correlation))

    z0 = tf.zeros_like(correlation)
    if not accelerated:
        _, z = tf.while_loop(lambda i, z: i < num_iterations,
                             lambda i, z: (i + 1, gradient_step(z)), (tf.constant(0), z0))
        return tf.stop_gradient(z)

    def body(i, z, y, t):
        z_next = gradient_step(y)
        t_next = 0.5 * (1.0 + tf.sqrt(1.0 + 4.0 * t * t))
        return i + 1, z_next, z_next + ((t - 1.0) / t_next) * (z_next - z), t_next

    _, z, _, _ = tf.while_loop(lambda i, *_: i < num_iterations, body,
                               (tf.constant(0), z0, z0, tf.constant(1.0, x.dtype)))
    return tf.stop_gradient(z)


def grid_points(bounds, per_side, dim=2):
    """The per_side^dim cell centres of a regular grid over bounds^dim, float32 [N, dim]."""
    low, high = bounds
    cell = (high - low) / per_side
    axes = [low + cell * (np.arange(per_side) + 0.5)] * dim
    return np.stack([a.ravel() for a in np.meshgrid(*axes)], axis=1).astype("float32")


@keras.saving.register_keras_serializable(package="keras_ebm")
class RBFFeatures(keras.layers.Layer):
    """f(x) = phi(x) / ||phi(x)||, phi_j(x) = exp(-||x - c_j||^2 / (2 width^2)): a fixed lift.

    Unit-norm Gaussian bumps centred on `num_centers` fixed points c_j (not
    trained): nearby inputs get overlapping features, distant ones
    orthogonal features. Place the centres with `initialize_grid` (a regular
    grid, for 2-D data) or `initialize_from_data` (k-means++ on the data).

    Args:
        num_centers: int >= 1.
        width: positive float, the bumps' standard deviation.
        **kwargs: base layer keyword arguments.

    Example:

    >>> features = RBFFeatures(256, width=0.5)
    >>> features.initialize_grid((-4.0, 4.0))       # a 16 x 16 grid
    >>> features(x).shape
    TensorShape([n, 256])
    """

    def __init__(self, num_centers=256, width=0.5, **kwargs):
        super().__init__(**kwargs)
        if int(num_centers) < 1:
            raise ValueError(f"RBFFeatures: num_centers must be >= 1, got {num_centers}")
        if not width > 0:
            raise ValueError(f"RBFFeatures: width must be > 0, got {width}")
        self.num_centers = int(num_centers)
        self.width = float(width)

    def build(self, input_shape):
        self.centers = self.add_weight(shape=(self.num_centers, int(input_shape[-1])),
                                       initializer="random_normal", trainable=False,
                                       name="centers")

    def call(self, inputs):
        from keras_ebm.energies.mixture import squared_distances

        inputs = tf.cast(inputs, self.centers.dtype)
        log_phi = -squared_distances(inputs, self.centers) / (2.0 * self.width ** 2)
        # phi / ||phi||, computed from log phi so that far points do not underflow to 0 / 0.
        log_phi -= tf.reduce_max(log_phi, axis=-1, keepdims=True)
        phi = tf.exp(log_phi)
        return phi / tf.norm(phi, axis=-1, keepdims=True)

    def initialize_grid(self, bounds):
        """Centres on the regular grid of `num_centers` = s^D cell centres over bounds^D."""
        dim = int(self.centers.shape[-1]) if self.built else 2
        per_side = round(self.num_centers ** (1.0 / dim))
        if per_side ** dim != self.num_centers:
            raise ValueError(f"RBFFeatures.initialize_grid: num_centers={self.num_centers} is "
                             f"not a {dim}-th power")
        if not self.built:
            self.build((None, dim))
        self.centers.assign(grid_points(bounds, per_side, dim))

    def initialize_from_data(self, x, seed=0):
        """Centres by k-means++ on x [n, D]."""
        x = np.asarray(x, "float32").reshape(len(x), -1)
        if not self.built:
            self.build(x.shape)
        self.centers.assign(kmeans_plus_plus(x, self.num_centers, seed))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_centers)

    def get_config(self):
        return {**super().get_config(), "num_centers": self.num_centers, "width": self.width}


@keras.saving.register_keras_serializable(package="keras_ebm")
class SparseCodingEnergy(keras.layers.Layer):
    """E(x) = min_z ||f(x) - D z||^2 + sparsity ||z||_1, with K unit-norm atoms (columns of D).

    The code z*(x) is found by `ista` (FISTA by default, `num_iterations`
    steps of size 1 / L in a `tf.while_loop`) and held fixed: E is the
    objective at z*, and its gradient with respect to D (and x) is that of
    the objective at fixed z*, exact at the minimum by the envelope theorem.
    Pushing down E on the data (`keras_ebm.methods.SparseCoding`) moves the
    atoms towards the data's features, Olshausen & Field's dictionary
    learning; the atoms are renormalised to unit norm after each update
    (`normalize_atoms`), otherwise D could grow and z shrink until the
    sparsity term vanishes. The sparsity term limits the volume of low
    energy: only inputs whose features are close to a sparse, nonnegative
    combination of a few atoms get a low energy.

    Args:
        num_atoms: int >= 1, K (more atoms than feature dimensions: overcomplete).
        sparsity: float lambda >= 0. Defaults to 0.1.
        num_iterations: int >= 1, (F)ISTA steps. Defaults to 50.
        nonnegative: bool, codes z >= 0. Defaults to True.
        accelerated: bool, FISTA instead of ISTA. Defaults to True.
        features: None (f(x) = x, flattened) or a layer or model mapping x to
            features [batch, M] (`RBFFeatures`, any Keras model; not trained).
        **kwargs: base layer keyword arguments.

    Example:

    >>> features = RBFFeatures(64, width=0.7); features.initialize_grid((-4.0, 4.0))  # 8 x 8
    >>> energy = SparseCodingEnergy(128, sparsity=0.1, features=features)  # overcomplete
    >>> energy.initialize_from_data(x_train)          # atoms: features of k-means++ points
    >>> energy(x_train[:4]).shape
    TensorShape([4])

    References:
        Olshausen & Field, "Emergence of simple-cell receptive field
        properties by learning a sparse code for natural images", Nature
        1996; Beck & Teboulle, "A fast iterative shrinkage-thresholding
        algorithm", SIAM J. Imaging Sciences 2009; LeCun et al., "A tutorial
        on energy-based learning", 2006.
    """

    def __init__(self, num_atoms=64, sparsity=0.1, num_iterations=50, nonnegative=True,
                 accelerated=True, features=None, **kwargs):
        super().__init__(**kwargs)
        if int(num_atoms) < 1:
            raise ValueError(f"SparseCodingEnergy: num_atoms must be >= 1, got {num_atoms}")
        if not 0 <= sparsity < float("inf"):
            raise ValueError(f"SparseCodingEnergy: sparsity must be finite and >= 0, got "
                             f"{sparsity}")
        if int(num_iterations) < 1:
            raise ValueError(f"SparseCodingEnergy: num_iterations must be >= 1, got "
                             f"{num_iterations}")
        self.num_atoms = int(num_atoms)
        self.sparsity = float(sparsity)
        self.num_iterations = int(num_iterations)
        self.nonnegative = bool(nonnegative)
        self.accelerated = bool(accelerated)
        self.features = features
        if features is not None:
            # A fixed lift: trained along with D, it would shrink f(x) to 0 and E with it.
            features.trainable = False

    def lift(self, inputs, training=False):
        """f(x), [batch, M]: the features, or x flattened."""
        if self.features is None:
            inputs = tf.convert_to_tensor(inputs)
            return tf.reshape(tf.cast(inputs, "float32"), [tf.shape(inputs)[0], -1])
        return tf.cast(self.features(inputs, training=training), "float32")

    def build(self, input_shape):
        if self.features is not None and not getattr(self.features, "built", False):
            self.features(tf.zeros((1, *input_shape[1:])))
        if self.features is None:
            size = int(np.prod(input_shape[1:]))
        else:
            size = int(self.features(tf.zeros((1, *input_shape[1:]))).shape[-1])
        atoms = np.random.default_rng(0).standard_normal((size, self.num_atoms))
        atoms /= np.linalg.norm(atoms, axis=0, keepdims=True)
        self.dictionary = self.add_weight(
            shape=(size, self.num_atoms), name="dictionary",
            initializer=keras.initializers.Constant(atoms.astype("float32")))
        self.built = True

    def _dictionary(self):
        # float32 under mixed precision too (the features are cast to float32).
        return tf.cast(self.dictionary, "float32")

    def codes(self, inputs, training=False):
        """z*(x) [batch, K], the sparse codes (no gradient)."""
        if not self.built:
            self.build(tf.convert_to_tensor(inputs).shape)
        return ista(self.lift(inputs, training), self._dictionary(), self.sparsity,
                    self.num_iterations, self.nonnegative, self.accelerated)

    def call(self, inputs, training=False):
        features = self.lift(inputs, training)
        dictionary = self._dictionary()
        z = ista(features, dictionary, self.sparsity, self.num_iterations,
                 self.nonnegative, self.accelerated)
        residual = features - tf.matmul(z, dictionary, transpose_b=True)
        return (tf.reduce_sum(tf.square(residual), axis=-1)
                + self.sparsity * tf.reduce_sum(tf.abs(z), axis=-1))

    def normalize_atoms(self):
        """Projects every atom (column of D) onto the unit sphere."""
        norms = tf.norm(self.dictionary, axis=0, keepdims=True)
        self.dictionary.assign(self.dictionary / tf.maximum(norms, 1e-12))

    def initialize_from_data(self, x, seed=0):
        """Atoms: the unit-normalised features of `num_atoms` k-means++ points of x [n, ...]."""
        x = np.asarray(x, "float32")
        if not self.built:
            self.build(x.shape)
        chosen = kmeans_plus_plus(x.reshape(len(x), -1), self.num_atoms, seed)
        atoms = np.asarray(self.lift(tf.reshape(chosen, (-1, *x.shape[1:]))), "float64").T
        norms = np.linalg.norm(atoms, axis=0, keepdims=True)
        self.dictionary.assign((atoms / np.maximum(norms, 1e-12)).astype("float32"))

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)

    def get_config(self):
        return {**super().get_config(), "num_atoms": self.num_atoms, "sparsity": self.sparsity,
                "num_iterations": self.num_iterations, "nonnegative": self.nonnegative,
                "accelerated": self.accelerated,
                "features": None if self.features is None
                else keras.saving.serialize_keras_object(self.features)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("features") is not None:
            config["features"] = keras.saving.deserialize_keras_object(config["features"])
        return cls(**config)

