"""Binarised scikit-learn digits (8x8 -> 64 bits), the EBM benchmark of keras_ebm."""

import numpy as np


def load_binary_digits(threshold=8, test_size=0.3, random_state=0):
    """Loads sklearn's digits, binarised and split as in the issue's reference numbers.

    A pixel on the 0..16 scale is 1 when it is >= `threshold`; images are
    flattened to 64 values. The split is
    `train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)`
    (1257 train, 540 test).

    Args:
        threshold: int, binarisation threshold on the 0..16 scale. Defaults to 8.
        test_size: float, held-out fraction. Defaults to 0.3.
        random_state: int, split seed. Defaults to 0.

    Returns:
        (x_train, y_train), (x_test, y_test): float32 arrays [n, 64] of {0, 1}
        and int labels.

    Example:

    >>> (x_train, _), (x_test, _) = load_binary_digits()
    >>> x_train.shape
    (1257, 64)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data >= threshold).astype("float32")
    y = digits.target.astype("int64")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=random_state, stratify=y
    )
    return (x_train, y_train), (x_test, y_test)


def independent_pixels_log_likelihood(x_train, x_test, epsilon=1e-3):
    """Mean test log-likelihood (nats) of independent Bernoulli pixels fitted on x_train."""
    p = np.clip(np.asarray(x_train, "float64").mean(axis=0), epsilon, 1 - epsilon)
    x_test = np.asarray(x_test, "float64")
    return float(np.mean(x_test @ np.log(p) + (1 - x_test) @ np.log1p(-p)))
