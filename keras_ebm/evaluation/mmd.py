"""Maximum mean discrepancy between two samples."""

import numpy as np


def median_bandwidths(x):
    """Kernel widths (0.5, 1, 2) x the median pairwise distance of ``x`` (the default of `mmd`)."""
    x = np.asarray(x, "float64").reshape(len(x), -1)
    squared = np.sum(x**2, axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * x @ x.T, 0.0)
    median = float(np.sqrt(np.median(distances[np.triu_indices(len(x), 1)])))
    return [0.5 * median, median, 2 * median]


def mmd(x, y, bandwidths=None, unbiased=True):
    """Squared MMD with a sum of Gaussian kernels.

        MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y),
        k(a, b) = sum_s exp(-||a - b||^2 / (2 s^2)),

    unbiased (the diagonal terms left out of the within-sample means; it may
    be slightly negative) or, with ``unbiased=False``, the biased V-statistic
    (diagonals kept; never negative, and about (2 k(0) - 2 E k) / n for two
    independent samples of n points: a floor to compare samples against,
    e.g. the MMD between two held-out draws).

    Args:
        x: array [n, ...]; flattened per example.
        y: array [m, ...].
        bandwidths: sequence of kernel widths s, or None for the median
            pairwise distance of x and y pooled times (0.5, 1, 2). Pass the
            same widths (`median_bandwidths` of the reference data) to compare
            two MMDs.
        unbiased: bool. Defaults to True.

    Returns:
        float, the unbiased MMD^2 estimate (may be slightly negative).

    Example:

    >>> mmd(samples, toy_2d("rings", 1000))

    Reference:
        Gretton et al., "A kernel two-sample test", JMLR 2012.
    """
    x = np.asarray(x, "float64").reshape(len(x), -1)
    y = np.asarray(y, "float64").reshape(len(y), -1)
    z = np.concatenate([x, y])
    squared = np.sum(z**2, axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * z @ z.T, 0.0)
    if bandwidths is None:
        median = np.sqrt(np.median(distances[np.triu_indices(len(z), 1)]))
        bandwidths = [0.5 * median, median, 2 * median]
    kernel = sum(np.exp(-distances / (2.0 * s**2)) for s in bandwidths)
    n, m = len(x), len(y)
    k_xx, k_yy, k_xy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    if not unbiased:
        return float(k_xx.mean() + k_yy.mean() - 2.0 * k_xy.mean())
    term_xx = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    term_yy = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(term_xx + term_yy - 2.0 * k_xy.mean())
