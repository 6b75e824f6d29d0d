"""Tests of the figures: files written, nothing clipped, no pyplot state left behind."""

import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.evaluation import plot_digit_grid
from keras_ebm.evaluation import plot_energy_surface

LONG_TITLE = "cd on two_moons: test log-likelihood -2.31 nats, after 200 epochs of PCD-1"


def quadratic_energy(x):
    """E(x) = |x - (1, 0)|^2 / 2: a Gaussian around (1, 0)."""
    return 0.5 * tf.reduce_sum(tf.square(x - tf.constant([1.0, 0.0])), axis=-1)


def layout_problems(figure):
    """What is clipped or overlaps in a drawn figure (empty when the layout is clean).

    Every title (the figure's and each axes') must lie inside the figure and
    overlap no other axes (e.g. a colorbar) and no other title; every axes
    with visible axis lines must have its tick labels inside the figure.
    """
    renderer = figure.canvas.get_renderer()
    frame = figure.bbox

    def inside(box):
        return (box.x0 >= frame.x0 - 1 and box.y0 >= frame.y0 - 1
                and box.x1 <= frame.x1 + 1 and box.y1 <= frame.y1 + 1)

    def overlap(a, b):
        return min(a.x1, b.x1) - max(a.x0, b.x0) > 1 and min(a.y1, b.y1) - max(a.y0, b.y0) > 1

    titles = [(ax, ax.title) for ax in figure.axes if ax.title.get_text()]
    suptitle = getattr(figure, "_suptitle", None)
    if suptitle is not None and suptitle.get_text():
        titles.append((None, suptitle))
    problems = []
    for owner, title in titles:
        box = title.get_window_extent(renderer)
        if not inside(box):
            problems.append(f"title {title.get_text()!r} outside the figure")
        for ax in figure.axes:
            if ax is not owner and overlap(box, ax.get_window_extent(renderer)):
                problems.append(f"title {title.get_text()!r} overlaps an axes")
        for _, other in titles:
            if other is not title and overlap(box, other.get_window_extent(renderer)):
                problems.append(f"title {title.get_text()!r} overlaps {other.get_text()!r}")
    for ax in figure.axes:
        if ax.axison and not inside(ax.get_tightbbox(renderer)):
            problems.append(f"axes {ax.get_title()!r}: tick labels outside the figure")
    return problems


@pytest.fixture(scope="module")
def toy_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2)).astype("float32") + [1.0, 0.0]
    samples = rng.normal(size=(200, 2)).astype("float32") + [1.0, 0.0]
    return x, samples


def test_layout_check_detects_a_clipped_title():
    # The check itself must be able to fail: a narrow figure with a long title.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2, 2))
    FigureCanvasAgg(figure)
    figure.subplots().set_title(LONG_TITLE)
    figure.canvas.draw()
    assert layout_problems(figure)


@pytest.mark.parametrize("with_samples", [True, False])
def test_energy_surface_is_written_and_unclipped(tmp_path, toy_data, with_samples):
    x, samples = toy_data
    path = tmp_path / "surface.png"
    figure = plot_energy_surface(str(path), quadratic_energy, x, samples if with_samples else None,
                                 bounds=(-4.0, 4.0), grid_size=30, title=LONG_TITLE)
    assert path.stat().st_size > 1000
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert layout_problems(figure) == []
    assert len(figure.axes) == 4  # three panels and the energy's colorbar


def test_energy_surface_shows_the_energy_on_the_grid(tmp_path, toy_data):
    x, _ = toy_data
    figure = plot_energy_surface(str(tmp_path / "s.png"), quadratic_energy, x, None,
                                 bounds=(-2.0, 2.0), grid_size=20, title="")
    energies = np.asarray(figure.axes[1].images[0].get_array())
    assert energies.shape == (20, 20)
    # The lowest energy is at the cell nearest (1, 0): column 14 or 15, row 9 or 10.
    row, column = np.unravel_index(np.argmin(energies), energies.shape)
    assert row in (9, 10) and column in (14, 15)
    density = np.asarray(figure.axes[2].images[0].get_array())
    assert density.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(100, 64), (23, 8, 8), (5, 8, 8, 1)])
def test_digit_grid_is_written_and_unclipped(tmp_path, shape):
    images = (np.random.default_rng(0).random(shape) < 0.5).astype("float32")
    path = tmp_path / "grid.png"
    title = ("pcd on binary_digits: test log-likelihood -25.12 nats\n"
             "samples (1000 MCMC steps from noise)")
    figure = plot_digit_grid(str(path), images, title)
    assert path.stat().st_size > 500
    assert layout_problems(figure) == []


def test_digit_grid_wraps_a_title_wider_than_the_figure(tmp_path):
    images = np.zeros((3, 64), "float32")
    figure = plot_digit_grid(str(tmp_path / "grid.png"), images, LONG_TITLE * 3)
    assert "\n" in figure.get_suptitle()
    assert layout_problems(figure) == []


def test_digit_grid_rejects_non_square_flat_images(tmp_path):
    with pytest.raises(ValueError, match="square"):
        plot_digit_grid(str(tmp_path / "grid.png"), np.zeros((4, 10)), "t")


def test_plots_leave_no_pyplot_figures(tmp_path, toy_data):
    x, samples = toy_data
    plot_energy_surface(str(tmp_path / "s.png"), quadratic_energy, x, samples, grid_size=10,
                        title="t")
    plot_digit_grid(str(tmp_path / "g.png"), np.zeros((4, 64)), "t")
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or pyplot.get_fignums() == []
