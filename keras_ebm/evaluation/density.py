"""Exact log-likelihood of 2-D energies by quadrature on a grid."""

import numpy as np
import tensorflow as tf


def energy_grid(energy, bounds=(-4.0, 4.0), grid_size=200, batch_size=8192):
    """Evaluates E on a grid_size x grid_size grid over bounds^2.

    Returns:
        (xs, ys, energies): 1-D coordinate arrays and a float64 array
        [grid_size, grid_size] with energies[i, j] = E(xs[j], ys[i]).
    """
    low, high = bounds
    # Cell centres, so the grid is a midpoint rule.
    cell = (high - low) / grid_size
    coords = low + cell * (np.arange(grid_size) + 0.5)
    xx, yy = np.meshgrid(coords, coords)
    points = np.stack([xx.ravel(), yy.ravel()], axis=1).astype("float32")
    values = [
        np.asarray(energy(tf.convert_to_tensor(points[i : i + batch_size])), "float64")
        for i in range(0, len(points), batch_size)
    ]
    return coords, coords, np.concatenate(values).reshape(grid_size, grid_size)


def grid_log_partition(energy, bounds=(-4.0, 4.0), grid_size=200):
    """log Z ≈ log sum_cells exp(-E(cell centre)) * cell_area over bounds^2 (midpoint rule)."""
    _, _, energies = energy_grid(energy, bounds, grid_size)
    cell_area = ((bounds[1] - bounds[0]) / grid_size) ** 2
    negative = -energies.ravel()
    peak = negative.max()
    return float(peak + np.log(np.exp(negative - peak).sum() * cell_area))


def grid_log_likelihood(energy, x, bounds=(-4.0, 4.0), grid_size=200, log_partition=None):
    """Mean log p(x) = -E(x) - log Z with log Z by grid quadrature over bounds^2.

    The density is restricted to the square `bounds`^2 (the sampler clamps
    to it too); test points must lie inside it.

    Args:
        energy: callable mapping [n, 2] to energies [n].
        x: array [n, 2].
        bounds: (low, high) of the square. Defaults to (-4, 4).
        grid_size: int, cells per side. Defaults to 200.
        log_partition: float or None; computed when None.

    Example:

    >>> grid_log_likelihood(model.energy, toy_2d("rings", 2000, seed=1))
    """
    if log_partition is None:
        log_partition = grid_log_partition(energy, bounds, grid_size)
    energies = np.asarray(energy(tf.convert_to_tensor(np.asarray(x, "float32"))), "float64")
    return float(np.mean(-energies) - log_partition)


def gaussian_log_likelihood(x_train, x_test):
    """Mean test log-likelihood of one full-covariance Gaussian fitted (ML) to x_train."""
    x_train = np.asarray(x_train, "float64")
    x_test = np.asarray(x_test, "float64")
    mean = x_train.mean(axis=0)
    cov = np.cov(x_train, rowvar=False, bias=True)
    diff = x_test - mean
    _, logdet = np.linalg.slogdet(cov)
    mahalanobis = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
    dim = x_train.shape[1]
    return float(np.mean(-0.5 * (mahalanobis + logdet + dim * np.log(2 * np.pi))))
