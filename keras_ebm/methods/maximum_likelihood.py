"""Exact maximum likelihood: small discrete models, and low-dimensional ones by quadrature."""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_ebm.energies.rbm import binary_states
from keras_ebm.methods.energy_method import EnergyMethod


def exact_log_partition(energy, num_bits=None):
    """Exact, differentiable log Z = logsumexp_x -E(x).

    Uses `energy.log_partition()` when the energy has one (the RBM sums out
    its smaller layer); otherwise enumerates all 2**num_bits binary vectors.
    """
    if hasattr(energy, "log_partition") and callable(energy.log_partition):
        return energy.log_partition()
    if num_bits is None or num_bits > 20:
        raise ValueError(
            f"Exact log Z enumerates 2**D binary states and needs D <= 20, got D={num_bits}."
        )
    return tf.reduce_logsumexp(-energy(binary_states(num_bits)))


@keras.saving.register_keras_serializable(package="keras_ebm")
class MaximumLikelihood(EnergyMethod):
    """Minimises the exact negative log-likelihood -log p(x) = E(x) + log Z.

    Its gradient dE(x)/dθ - E_{x'~p}[dE(x')/dθ] pushes the energy of the data
    down and the energy of *every* state up, weighted by its probability: the
    exact version of what CD, PCD, NCE, ratio matching and MPF approximate.
    Only small discrete models qualify: an RBM with at most 20 hidden (or
    visible) units, or any energy on at most 20 binary variables.

        loss = mean_x E(x) + log sum_{x'} exp(-E(x'))

    Args:
        energy: an RBM, or a layer mapping binary x [batch, D <= 20] to energies.
        **kwargs: `input_shape` and `keras.Model` keyword arguments.

    Example:

    >>> ml = MaximumLikelihood(RBM(64, 16))
    >>> ml.compile(optimizer=keras.optimizers.Adam(0.01))
    >>> ml.fit(x_train, batch_size=len(x_train), epochs=2000)   # full-batch exact gradient

    Reference:
        Ackley, Hinton & Sejnowski, "A learning algorithm for Boltzmann
        machines", Cognitive Science 1985.
    """

    tracker_names = ("loss", "energy_data", "log_partition")

    def __init__(self, energy, **kwargs):
        super().__init__(energy, **kwargs)
        self.build_now()
        if self.example_shape and not hasattr(energy, "log_partition") and (
                self.example_shape[-1] > 20):
            raise ValueError(f"MaximumLikelihood: exact log Z enumerates 2**D states and "
                             f"needs D <= 20 (or an RBM), got D={self.example_shape[-1]}")

    def contrastive_loss(self, inputs, training):
        # The contrasted samples are all states, weighted by p, inside log Z.
        energy_data = self.energy(inputs, training=training)
        log_partition = exact_log_partition(self.energy, inputs.shape[-1])
        return tf.reduce_mean(energy_data) + log_partition, {"energy_data": energy_data,
                                                             "log_partition": log_partition}


def grid_points(bounds, grid_size, dim):
    """The cell centres of a grid_size^dim grid over bounds^dim, float32 [grid_size**dim, dim]."""
    low, high = bounds
    cell = (high - low) / grid_size
    coords = low + cell * (np.arange(grid_size) + 0.5)
    mesh = np.meshgrid(*([coords] * dim), indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1).astype("float32")


@keras.saving.register_keras_serializable(package="keras_ebm")
class QuadratureMaximumLikelihood(EnergyMethod):
    """Exact maximum likelihood in low dimensions: log Z by quadrature on a grid, differentiated.

    The lecture's strategy 2, "push down the energy of the data and push up
    everywhere else". On a box B = [low, high]^D (D <= 3) the density
    p(x) = exp(-E(x)) / Z is normalised by

        log Z = logsumexp_g -E(g + u) + D log h,

    the midpoint rule over the grid's cell centres g with cell side h, the
    whole grid shifted by one uniform offset u in [-h/2, h/2]^D per step (an
    unbiased estimate of Z that no fixed set of points can be fitted to).
    The loss is the negative log-likelihood mean_x E(x) + log Z; its
    gradient pushes the data down and every grid point up, weighted by p.

    Args:
        energy: a layer or model mapping x [batch, D] to energies [batch].
        bounds: (low, high), the box; the data must lie inside it.
            Defaults to (-4, 4), the 2-D toys' box.
        grid_size: int >= 2, cells per side; grid_size**D <= 2**20 points
            enter every step. Defaults to 64.
        jitter: bool, shift the grid at random each training step. Defaults to True.
        **kwargs: `input_shape` and `keras.Model` keyword arguments.

    Example:

    >>> model = QuadratureMaximumLikelihood(MLPEnergy((128, 128)), bounds=(-4, 4))
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> model.fit(x_train, batch_size=256, epochs=50)
    >>> grid_log_likelihood(model.energy, x_test)        # exact at T = 1

    Reference:
        LeCun, Chopra, Hadsell, Ranzato & Huang, "A tutorial on energy-based
        learning", 2006 (negative log-likelihood loss).
    """

    tracker_names = ("loss", "energy_data", "log_partition")
    MAX_POINTS = 2**20

    def __init__(self, energy, bounds=(-4.0, 4.0), grid_size=64, jitter=True, **kwargs):
        super().__init__(energy, **kwargs)
        self.bounds = (float(bounds[0]), float(bounds[1]))
        if not self.bounds[0] < self.bounds[1]:
            raise ValueError(f"QuadratureMaximumLikelihood: bounds must be (low, high) with "
                             f"low < high, got {bounds}")
        if int(grid_size) < 2:
            raise ValueError(f"QuadratureMaximumLikelihood: grid_size must be >= 2, got "
                             f"{grid_size}")
        self.grid_size = int(grid_size)
        self.jitter = bool(jitter)
        self._grids = {}
        self.build_now()

    @property
    def cell(self):
        return (self.bounds[1] - self.bounds[0]) / self.grid_size

    def grid(self, input_shape):
        """The cell centres for examples of `input_shape` ([batch, D]), [grid_size**D, D]."""
        dim = int(input_shape[-1])
        if len(input_shape) != 2 or self.grid_size ** dim > self.MAX_POINTS:
            raise ValueError(
                f"QuadratureMaximumLikelihood: a grid of {self.grid_size}^{dim} points over "
                f"inputs of shape {tuple(input_shape)} exceeds {self.MAX_POINTS}; quadrature "
                "needs vectors of dimension <= 3 (use cd, nce or score matching above that)")
        if dim not in self._grids:
            self._grids[dim] = grid_points(self.bounds, self.grid_size, dim)
        return self._grids[dim]

    def _dim(self):
        """D: from the built input shape, else from the grid the last batch used."""
        if self.example_shape:
            return int(self.example_shape[-1])
        if len(self._grids) == 1:
            return next(iter(self._grids))
        raise ValueError("QuadratureMaximumLikelihood: the input dimension is not known yet; "
                         "pass input_shape=(D,) or train first")

    def build_parts(self, input_shape):
        self.grid(input_shape)  # refuses a grid too large at once
        super().build_parts(input_shape)

    def prepare(self, data, training):
        x = tf.convert_to_tensor(super().prepare(data, training))
        dim = self.grid(x.shape).shape[-1]
        if training and self.jitter:  # one shift of the whole grid, drawn outside the tape
            return x, tf.random.uniform([dim], -0.5 * self.cell, 0.5 * self.cell, x.dtype)
        return x, tf.zeros([dim], x.dtype)

    def log_partition(self, offset=None):
        """log Z by the (shifted) midpoint rule; differentiable in the energy's weights.

        Args:
            offset: None or a [D] shift of the grid. Defaults to None (the
                cell centres; D from the built input shape).
        """
        dim = offset.shape[-1] if offset is not None else self._dim()
        points = tf.constant(self.grid((None, dim)))
        if offset is not None:
            points = points + offset
        negative = -tf.cast(self.energy(points, training=False), tf.float32)
        return tf.reduce_logsumexp(negative) + dim * math.log(self.cell)

    def sample(self, num_samples, temperature=1.0, seed=0):
        """Exact samples of the model as the quadrature sees it, a float32 array [n, D].

        A cell is drawn with probability exp(-E(g) / T) / sum_g' exp(-E(g') / T),
        then a point uniformly inside it: the piecewise-constant density whose
        normaliser is the loss's log Z. No Markov chain, so nothing to mix.
        """
        from keras_ebm.evaluation.density import sample_cells

        points = self.grid((None, self._dim()))
        energies = np.asarray(self.energy(tf.constant(points), training=False), "float64")
        return sample_cells(points, energies, self.cell, num_samples, temperature, seed)

    def contrastive_loss(self, inputs, training):
        x, offset = inputs
        energy_data = self.energy(x, training=training)
        # Pushed up: every grid point, weighted by its probability (the gradient of log Z).
        log_partition = self.log_partition(offset)
        return tf.reduce_mean(energy_data) + log_partition, {"energy_data": energy_data,
                                                             "log_partition": log_partition}

    def get_config(self):
        return {**super().get_config(), "bounds": list(self.bounds), "grid_size": self.grid_size,
                "jitter": self.jitter}
