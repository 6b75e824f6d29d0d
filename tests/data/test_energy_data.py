"""keras_ebm.data.load_energy_data: the EBM data sets by name, as the CLI loads them."""

import numpy as np
import pytest

from keras_ebm.data import load_energy_data
from keras_ebm.data import toy_2d


def test_toy_points_are_the_seeded_draws_inside_the_box():
    x_train, x_test, kind = load_energy_data("toy:8gaussians", seed=3, toy_train_samples=500,
                                             toy_test_samples=400)
    assert kind == "toy" and x_train.shape == (500, 2) and x_test.shape == (400, 2)
    np.testing.assert_array_equal(x_train, toy_2d("8gaussians", 500, seed=3))
    np.testing.assert_array_equal(x_test, toy_2d("8gaussians", 400, seed=4))
    assert np.abs(x_train).max() < 4.0


def test_digits_binary_and_continuous():
    x_train, x_test, kind = load_energy_data("binary_digits")
    assert kind == "binary" and set(np.unique(x_train)) == {0.0, 1.0}
    assert x_train.shape[1] == 64 and len(x_train) + len(x_test) == 1797
    x_train, x_test, kind = load_energy_data("digits")
    assert kind == "continuous" and x_train.dtype == np.float32
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0 and len(x_test) == 540


@pytest.mark.parametrize("name, words", [("toy:spiral", "unknown toy"),
                                         ("cifar10", "not an EBM data set")])
def test_unknown_names_are_refused(name, words):
    with pytest.raises(ValueError, match=words):
        load_energy_data(name)
