"""Figures of trained energies: a 2-D energy surface and a grid of digit images.

The figures are drawn with matplotlib's object-oriented API on an Agg canvas
(`matplotlib.figure.Figure`, never `pyplot`), so importing or calling these
functions neither switches the importer's matplotlib backend nor leaves
figures open. The layout is matplotlib's constrained layout, and titles are
wrapped to the figure's width, so no title, tick label or colorbar is clipped.
"""

import math
import textwrap

import numpy as np

# Points per character of a title, a generous estimate for the default sans-serif font.
_POINTS_PER_CHARACTER = 0.62


def _figure(figsize):
    """A constrained-layout figure on its own Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _wrap(text, width_inches, fontsize):
    """Wraps each line of `text` so that it fits in `width_inches` at `fontsize` points."""
    characters = max(10, int(width_inches * 72.0 / (fontsize * _POINTS_PER_CHARACTER)))
    return "\n".join(
        textwrap.fill(line, characters) if line else line for line in str(text).split("\n")
    )


def _log_density(energies):
    """log of exp(-E) / sum exp(-E) over the grid cells, computed stably."""
    negative = -np.asarray(energies, "float64")
    peak = negative.max()
    return negative - peak - np.log(np.exp(negative - peak).sum())


def plot_energy_surface(path, energy, x_train, samples, bounds=(-4.0, 4.0), grid_size=150,
                        title="", temperature=1.0, energies=None):
    """Draws the data, the energy and its density on a square of the plane; saves a PNG.

    Three panels over `bounds`^2: the training points; the energy E(x) on a
    `grid_size` x `grid_size` grid, with a colorbar (low where the data is,
    if training worked); and the normalised density exp(-E) / Z over the
    grid, with `samples` (e.g. Langevin chains) on top.

    Args:
        path: str, file to write (PNG).
        energy: callable mapping a float32 tensor [n, 2] to energies [n], e.g.
            `model.energy` or a `keras_ebm.energies.MLPEnergy`.
        x_train: array [n, 2] of data points (the first 3000 are drawn).
        samples: array [m, 2] of model samples, or None.
        bounds: (low, high) of the square. Defaults to (-4, 4).
        grid_size: int, grid cells per side. Defaults to 150.
        title: str, title of the figure (wrapped to its width). Defaults to "".
        temperature: positive float T; the density panel shows exp(-E / T) / Z_T
            (`keras_ebm.evaluation.fit_temperature` calibrates an energy known
            only up to scale). Defaults to 1.0.
        energies: float64 array [grid_size, grid_size] of
            `keras_ebm.evaluation.density.energy_grid` over `bounds`, or None
            to compute it. Defaults to None.

    Returns:
        The saved `matplotlib.figure.Figure` (not registered with pyplot).

    Example:

    >>> energy = lambda x: 0.5 * tf.reduce_sum(tf.square(x), axis=-1)
    >>> x = np.random.default_rng(0).normal(size=(500, 2))
    >>> plot_energy_surface("surface.png", energy, x, None, title="a Gaussian")
    """
    from matplotlib.ticker import MaxNLocator

    from keras_ebm.evaluation.density import energy_grid

    low, high = (float(b) for b in bounds)
    extent = (low, high, low, high)
    if energies is None:
        _, _, energies = energy_grid(energy, (low, high), grid_size)
    x_train = np.asarray(x_train)
    width = 14.0
    figure = _figure((width, 5.2))
    axes = figure.subplots(1, 3)
    axes[0].scatter(x_train[:3000, 0], x_train[:3000, 1], s=1, c="k")
    axes[0].set_title("data")
    image = axes[1].imshow(energies, origin="lower", extent=extent, cmap="viridis")
    figure.colorbar(image, ax=axes[1], shrink=0.85)
    axes[1].set_title("energy E(x)\n(low on the data)")
    axes[2].imshow(np.exp(_log_density(energies / float(temperature))), origin="lower",
                   extent=extent, cmap="magma")
    density = "density exp(-E) / Z" if temperature == 1.0 else (
        f"density exp(-E / T) / Z_T, T = {temperature:.3g}")
    if samples is not None:
        samples = np.asarray(samples)
        axes[2].scatter(samples[:, 0], samples[:, 1], s=1, c="c", alpha=0.5)
        axes[2].set_title(f"{density}\nwith samples")
    else:
        axes[2].set_title(density)
    for ax in axes:
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_aspect("equal")
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.yaxis.set_major_locator(MaxNLocator(5))
    if title:
        figure.suptitle(_wrap(title, width, 14), fontsize=14)
    figure.savefig(path, dpi=90)
    return figure


def plot_digit_grid(path, images, title="", columns=10):
    """Draws up to 100 small greyscale images in a grid under a title; saves a PNG.

    Args:
        path: str, file to write (PNG).
        images: array of images with values in [0, 1]: [n, H, W], [n, H, W, 1]
            or flat [n, D] with D a square (64 for the 8x8 digits).
        title: str, title above the grid; may hold several lines and is
            wrapped to the figure's width. Defaults to "".
        columns: int, images per row. Defaults to 10.

    Returns:
        The saved `matplotlib.figure.Figure` (not registered with pyplot).

    Raises:
        ValueError: if `images` is empty or flat with a non-square size.

    Example:

    >>> samples = Gibbs(num_steps=1000, mean_field_visible=True)(rbm, x0)
    >>> plot_digit_grid("samples.png", samples, "PCD on binary digits\\nsamples")
    """
    images = np.asarray(images, "float64")[:100]
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim == 2:
        side = math.isqrt(images.shape[1])
        if side * side != images.shape[1]:
            raise ValueError(
                f"plot_digit_grid: flat images need a square size, got {images.shape[1]} "
                "values per image; pass them as [n, height, width]"
            )
        images = images.reshape(-1, side, side)
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(
            f"plot_digit_grid: expected images [n, H, W] with n > 0, got shape {images.shape}"
        )
    count, height, width = images.shape
    columns = max(1, min(int(columns), count))
    rows = int(np.ceil(count / columns))
    canvas = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1), 0.25)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = row * (height + 1), column * (width + 1)
        canvas[top : top + height, left : left + width] = image
    figure_width = max(4.0, 0.6 * columns * width / 8.0 + 0.4)
    title = _wrap(title, figure_width - 0.3, 12) if title else ""
    title_lines = title.count("\n") + 1 if title else 0
    grid_height = (figure_width - 0.2) * canvas.shape[0] / canvas.shape[1]
    figure = _figure((figure_width, grid_height + 0.3 * title_lines + 0.4))
    ax = figure.subplots()
    ax.imshow(canvas, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.axis("off")
    if title:
        # A figure title: constrained layout reserves its height (an axes title
        # would ride on the top of the equal-aspect image and could leave the figure).
        figure.suptitle(title, fontsize=12)
    # The layout keeps everything inside the figure; "tight" only trims the margins.
    figure.savefig(path, dpi=90, bbox_inches="tight", pad_inches=0.1)
    return figure
