"""Maximum mean discrepancy between two samples."""

import numpy as np


def mmd(x, y, bandwidths=None):
    """Unbiased squared MMD with a sum of Gaussian kernels.

        MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y),
        k(a, b) = sum_s exp(-||a - b||^2 / (2 s^2)),

    with the diagonal terms left out of the within-sample means.

    Args:
        x: array [n, ...]; flattened per example.
        y: array [m, ...].
        bandwidths: sequence of kernel widths s, or None for the median
            pairwise distance times (0.5, 1, 2).

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
    term_xx = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    term_yy = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(term_xx + term_yy - 2.0 * k_xy.mean())
