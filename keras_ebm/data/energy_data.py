"""The data sets of the classical energy-based methods, by name."""

import numpy as np

from keras_ebm.data.toy_2d import TOY_2D_NAMES
from keras_ebm.data.toy_2d import toy_2d

TOY_BOX = 4.0  # toy points are kept inside [-4, 4]^2, where the quadrature and samplers work


def load_energy_data(dataset, seed=0, toy_train_samples=10000, toy_test_samples=5000):
    """`(x_train, x_test, kind)` of an energy-based data set, with kind binary, continuous or toy.

    - `"binary_digits"`: scikit-learn's 8x8 digits binarised (pixel >= 8/16), the
      fixed stratified 70/30 split of `load_binary_digits`; kind "binary".
    - `"digits"`: the same images in [0, 1] (float32), a stratified 70/30 split;
      kind "continuous".
    - `"toy:<name>"`, name in rings, moons, 8gaussians, checkerboard: `toy_2d`
      points drawn with `seed` (train) and `seed + 1` (test), the few outside
      [-4, 4]^2 dropped; kind "toy".

    Args:
        dataset: str, one of the names above.
        seed: int, of the toy draws. Defaults to 0.
        toy_train_samples, toy_test_samples: int, points drawn for a toy.

    Raises:
        ValueError: an unknown name (the message names the choices).

    Example:

    >>> x_train, x_test, kind = keras_ebm.data.load_energy_data("toy:rings")
    >>> x_train.shape, kind
    ((10000, 2), 'toy')
    """
    if dataset == "binary_digits":
        from keras_ebm.data.binary_digits import load_binary_digits

        (x_train, _), (x_test, _) = load_binary_digits()
        return x_train, x_test, "binary"
    if dataset == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x_train, x_test = train_test_split(
            (digits.data / 16.0).astype("float32"), test_size=0.3, random_state=0,
            stratify=digits.target)
        return x_train, x_test, "continuous"
    if dataset.startswith("toy:"):
        name = dataset[4:]
        if name not in TOY_2D_NAMES:
            raise ValueError(f"--dataset={dataset!r}: unknown toy; "
                             f"choose toy:<{'|'.join(TOY_2D_NAMES)}>")
        inside = lambda x: x[np.all(np.abs(x) < TOY_BOX, axis=1)]  # noqa: E731
        return (inside(toy_2d(name, toy_train_samples, seed=seed)),
                inside(toy_2d(name, toy_test_samples, seed=seed + 1)), "toy")
    raise ValueError(f"--dataset={dataset!r} is not an EBM data set; "
                     "use binary_digits, digits or toy:<name>")
