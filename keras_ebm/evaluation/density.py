"""Exact log-likelihood of 2-D energies by quadrature on a grid."""

import numpy as np
import tensorflow as tf


def energy_grid_coordinates(bounds=(-4.0, 4.0), grid_size=200):
    """The cell centres along one side of the grid (so the grid is a midpoint rule)."""
    low, high = bounds
    return low + (high - low) / grid_size * (np.arange(grid_size) + 0.5)


def energy_grid(energy, bounds=(-4.0, 4.0), grid_size=200, batch_size=8192):
    """Evaluates E on a grid_size x grid_size grid over bounds^2.

    Returns:
        (xs, ys, energies): 1-D coordinate arrays and a float64 array
        [grid_size, grid_size] with energies[i, j] = E(xs[j], ys[i]).
    """
    coords = energy_grid_coordinates(bounds, grid_size)
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


def _log_partition_at(negative_energies, cell_area, beta):
    """log Z_T = log sum_cells exp(-beta E) * cell_area, beta = 1 / T (stable)."""
    scaled = beta * negative_energies
    peak = scaled.max()
    return float(peak + np.log(np.exp(scaled - peak).sum() * cell_area))


def _mean_energy(energy, x):
    return float(np.mean(np.asarray(
        energy(tf.convert_to_tensor(np.asarray(x, "float32"))), "float64")))


def fit_temperature(energy, x_train, bounds=(-4.0, 4.0), grid_size=200, grid_energies=None,
                    train_energy=None):
    """The temperature T that maximises the training log-likelihood of p_T = exp(-E/T) / Z_T.

    An energy trained without a partition function (score matching, NCE's
    noise ratio, an autoencoder's reconstruction error, K-means' distance)
    is defined only up to scale. With beta = 1 / T the mean training
    log-likelihood ``-beta mean E(x_train) - log Z(beta)`` is concave in beta
    (log Z is convex), and its derivative ``E_{p_beta}[E] - mean E(x_train)``
    decreases, so the maximiser is found by bisection on that derivative,
    with ``E_{p_beta}[E]`` and ``Z`` by the same grid quadrature as
    `grid_log_partition`.

    Args:
        energy: callable mapping [n, 2] to energies [n].
        x_train: array [n, 2] inside ``bounds^2``.
        bounds: (low, high) of the square. Defaults to (-4, 4).
        grid_size: int, cells per side. Defaults to 200.
        grid_energies: float64 array [grid_size, grid_size] of `energy_grid`,
            or None to compute it.
        train_energy: float, the mean energy of ``x_train``, or None to compute it.

    Returns:
        T, a positive float in [1e-4, 1e4].

    Example:

    >>> t = fit_temperature(model.energy, x_train)
    """
    if grid_energies is None:
        _, _, grid_energies = energy_grid(energy, bounds, grid_size)
    grid = np.asarray(grid_energies, "float64").ravel()
    train_mean = _mean_energy(energy, x_train) if train_energy is None else float(train_energy)

    def slope(log_beta):  # d/d beta of the training log-likelihood: E_p[E] - mean E(train)
        weights = -np.exp(log_beta) * grid
        weights = np.exp(weights - weights.max())
        return float(np.sum(weights * grid) / weights.sum()) - train_mean

    low, high = np.log(1e-4), np.log(1e4)  # beta from 1e-4 to 1e4
    if slope(high) >= 0.0:
        return 1e-4
    if slope(low) <= 0.0:
        return 1e4
    for _ in range(80):
        middle = 0.5 * (low + high)
        if slope(middle) > 0.0:
            low = middle
        else:
            high = middle
    return float(np.exp(-0.5 * (low + high)))


def calibrated_log_likelihood(energy, x_train, x_test, bounds=(-4.0, 4.0), grid_size=200):
    """Held-out log-likelihood of an energy known only up to scale, at its fitted temperature.

    p_T(x) = exp(-E(x) / T) / Z_T on ``bounds^2``, with Z_T by grid
    quadrature (midpoint rule) and T fitted on ``x_train`` by
    `fit_temperature`; the same at T = 1 is reported too, the likelihood of
    the energy as trained (exact for the methods that learn a normalised
    density: maximum likelihood, NCE).

    Args:
        energy: callable mapping [n, 2] to energies [n].
        x_train: array [n, 2], where T is fitted.
        x_test: array [m, 2], where the log-likelihoods are measured.
        bounds: (low, high) of the square. Defaults to (-4, 4).
        grid_size: int, cells per side. Defaults to 200.

    Returns:
        dict with ``temperature`` (T), ``log_likelihood`` (mean test log p_T,
        nats), ``log_likelihood_t1`` (mean test log p_1, nats) and
        ``train_log_likelihood`` (mean training log p_T).

    Example:

    >>> calibrated_log_likelihood(model.energy, x_train, x_test)["log_likelihood"]
    """
    _, _, grid = energy_grid(energy, bounds, grid_size)
    cell_area = ((bounds[1] - bounds[0]) / grid_size) ** 2
    test_energy, train_energy = _mean_energy(energy, x_test), _mean_energy(energy, x_train)
    temperature = fit_temperature(energy, x_train, bounds, grid_size, grid_energies=grid,
                                  train_energy=train_energy)
    negative = -grid.ravel()
    beta = 1.0 / temperature
    log_z = _log_partition_at(negative, cell_area, beta)
    return {"temperature": temperature,
            "log_likelihood": -beta * test_energy - log_z,
            "log_likelihood_t1": -test_energy - _log_partition_at(negative, cell_area, 1.0),
            "train_log_likelihood": -beta * train_energy - log_z}


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


def sample_cells(points, energies, cell, num_samples, temperature=1.0, seed=0):
    """Exact samples of the piecewise-constant density exp(-E / T) / Z_T on grid cells.

    A cell is drawn with probability exp(-E_c / T) / sum_c' exp(-E_c' / T),
    then a point uniformly inside it: the density whose normaliser is the
    midpoint rule's Z_T. No Markov chain, so nothing has to mix.

    Args:
        points: array [n, D] of cell centres.
        energies: array [n], the energy at each centre.
        cell: float, the side of a cell.
        num_samples: int.
        temperature: positive float T. Defaults to 1.0.
        seed: int seed of NumPy's generator. Defaults to 0.

    Returns:
        float32 array [num_samples, D].
    """
    rng = np.random.default_rng(seed)
    points = np.asarray(points, "float64")
    negative = -np.asarray(energies, "float64").ravel() / temperature
    weights = np.exp(negative - negative.max())
    cells = rng.choice(len(points), size=num_samples, p=weights / weights.sum())
    jitter = rng.uniform(-0.5, 0.5, (num_samples, points.shape[1])) * cell
    return (points[cells] + jitter).astype("float32")


def grid_sample(energy, num_samples, bounds=(-4.0, 4.0), grid_size=200, temperature=1.0,
                seed=0, energies=None):
    """Exact samples of p_T = exp(-E / T) / Z_T on ``bounds^2`` as the quadrature sees it.

    What a perfect sampler of the scored density would draw: comparing these
    with the data (`mmd`) separates an error of the density from an error of
    an MCMC sampler.

    Args:
        energy: callable mapping [n, 2] to energies [n].
        num_samples: int.
        bounds: (low, high) of the square. Defaults to (-4, 4).
        grid_size: int, cells per side. Defaults to 200.
        temperature: positive float T. Defaults to 1.0.
        seed: int. Defaults to 0.
        energies: float64 array [grid_size, grid_size] of `energy_grid`, or
            None to compute it.

    Returns:
        float32 array [num_samples, 2].

    Example:

    >>> samples = grid_sample(model.energy, 2000, temperature=0.8)
    """
    if energies is None:
        _, _, energies = energy_grid(energy, bounds, grid_size)
    coords = energy_grid_coordinates(bounds, grid_size)
    xx, yy = np.meshgrid(coords, coords)
    points = np.stack([xx.ravel(), yy.ravel()], axis=1)
    return sample_cells(points, energies, (bounds[1] - bounds[0]) / grid_size, num_samples,
                        temperature, seed)
