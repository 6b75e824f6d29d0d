"""Two-dimensional toy densities for energy-based models."""

import numpy as np

TOY_2D_NAMES = ("rings", "moons", "8gaussians", "checkerboard")


def toy_2d(name, num_samples, seed=0):
    """Samples a 2-D toy data set, float32 [num_samples, 2], roughly within [-4, 4]^2.

    - `"rings"`: two concentric rings of radii 1 and 2.5 (equal mass), radial noise 0.1;
    - `"moons"`: scikit-learn's two moons, noise 0.05, centred and scaled by 2;
    - `"8gaussians"`: 8 Gaussians of std 0.1 on a circle of radius 2.83 (2 * sqrt 2);
    - `"checkerboard"`: uniform on the black squares of a 4x4 board over [-4, 4]^2.

    Args:
        name: one of "rings", "moons", "8gaussians", "checkerboard".
        num_samples: int.
        seed: int, NumPy seed. Defaults to 0.

    Example:

    >>> x = toy_2d("rings", 1000, seed=0)
    >>> x.shape
    (1000, 2)

    Reference:
        Grathwohl et al., "FFJORD", ICLR 2019 (the common toy-density suite).
    """
    rng = np.random.default_rng(seed)
    if name == "rings":
        radius = rng.choice([1.0, 2.5], size=num_samples)
        radius = radius + 0.1 * rng.standard_normal(num_samples)
        angle = rng.uniform(0, 2 * np.pi, num_samples)
        x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    elif name == "moons":
        from sklearn.datasets import make_moons

        x, _ = make_moons(num_samples, noise=0.05, random_state=int(rng.integers(2**31)))
        x = (x - np.array([0.5, 0.25])) * 2.0
    elif name == "8gaussians":
        angles = 2 * np.pi * rng.integers(0, 8, num_samples) / 8
        centres = 2.0 * np.sqrt(2.0) * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        x = centres + 0.1 * rng.standard_normal((num_samples, 2))
    elif name == "checkerboard":
        x1 = rng.uniform(-4, 4, num_samples)
        x2_offset = rng.uniform(0, 2, num_samples) + 2 * rng.integers(0, 2, num_samples)
        # On column floor(x1 / 2) shift to the black squares.
        x2 = x2_offset - 4 + 2 * (np.floor(x1 / 2) % 2)
        x2 = np.where(x2 >= 4, x2 - 8, x2)
        x = np.stack([x1, x2], axis=1)
    else:
        raise ValueError(f"Unknown toy data set {name!r}; expected one of {TOY_2D_NAMES}.")
    return x.astype("float32")
