"""Tests of the linear probe and the kNN monitor."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier

from keras_ebm.evaluation import evaluate_features
from keras_ebm.evaluation import knn_accuracy
from keras_ebm.evaluation import linear_probe


def _separable(seed, num_examples=300, num_classes=4):
    """Well separated clusters; every dimension carries signal (standardising
    a pure-noise dimension would blow it up to the scale of the signal)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(num_classes, size=num_examples)
    centres = 10.0 * np.tile(np.eye(num_classes), (1, 2))
    return centres[labels] + rng.normal(size=(num_examples, 2 * num_classes)), labels


@pytest.fixture(scope="module")
def digits_split():
    images, labels = load_digits(return_X_y=True)
    return train_test_split(images, labels, test_size=0.3, random_state=0, stratify=labels)


def test_probe_on_separable_data_is_perfect():
    train_x, train_y = _separable(0)
    test_x, test_y = _separable(1)
    assert linear_probe(train_x, train_y, test_x, test_y)["mean"] == 1.0
    result = linear_probe(train_x, train_y, test_x, test_y, labels_per_class=2, num_draws=3)
    assert len(result["accuracies"]) == 3
    assert result["mean"] >= 0.99


def test_probe_on_features_independent_of_labels_is_chance():
    rng = np.random.default_rng(0)
    train_x, test_x = rng.normal(size=(2, 1000, 8))
    train_y, test_y = rng.integers(4, size=(2, 1000))
    result = linear_probe(train_x, train_y, test_x, test_y, labels_per_class=5, num_draws=5)
    assert abs(result["mean"] - 0.25) < 0.05
    assert abs(linear_probe(train_x, train_y, test_x, test_y)["mean"] - 0.25) < 0.05


def test_probe_draws_are_seeded_and_validated():
    train_x, train_y = _separable(0)
    def probe():
        return linear_probe(
            train_x, train_y, train_x, train_y, labels_per_class=1, num_draws=2, seed=5
        )

    first, again = probe(), probe()
    assert first == again
    with pytest.raises(ValueError, match="fewer than labels_per_class"):
        linear_probe(train_x, train_y, train_x, train_y, labels_per_class=1000)


def test_probe_reproduces_raw_pixel_digits_figures(digits_split):
    train_x, test_x, train_y, test_y = digits_split
    # Defaults (standardised features): within tolerance of DESIGN.md's figures.
    ten = linear_probe(train_x, train_y, test_x, test_y, labels_per_class=10)["mean"]
    assert abs(ten - 0.895) <= 0.015
    assert abs(linear_probe(train_x, train_y, test_x, test_y)["mean"] - 0.970) <= 0.01
    # Pixels in [0, 1] without standardisation: the figures themselves.
    for budget, expected in [(1, 0.689), (5, 0.850), (10, 0.895), (None, 0.970)]:
        result = linear_probe(
            train_x / 16, train_y, test_x / 16, test_y, labels_per_class=budget, standardize=False
        )
        assert abs(result["mean"] - expected) < 0.001, (budget, result["mean"])


def test_evaluate_features(digits_split):
    train_x, test_x, train_y, test_y = digits_split
    results = evaluate_features(
        train_x, train_y, test_x, test_y, labels_per_class=(1, None), num_draws=2
    )
    assert list(results) == ["probe_1", "probe_all", "knn"]
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in results.values())
    assert results["knn"] > 0.95


@pytest.mark.parametrize("k", [1, 5, 15])
@pytest.mark.parametrize("num_classes", [2, 3])
def test_majority_vote_knn_matches_sklearn(k, num_classes):
    rng = np.random.default_rng(k + 10 * num_classes)
    train_x, test_x = rng.normal(size=(200, 6)), rng.normal(size=(150, 6))
    train_y, test_y = rng.integers(num_classes, size=200), rng.integers(num_classes, size=150)
    # Both break tied votes towards the smallest label; continuous data has no tied distances.
    sklearn_knn = KNeighborsClassifier(k, metric="cosine", algorithm="brute").fit(train_x, train_y)
    expected = sklearn_knn.score(test_x, test_y)
    actual = knn_accuracy(train_x, train_y, test_x, test_y, k=k, temperature=None, chunk_size=64)
    assert actual == pytest.approx(expected, abs=1e-12)


def test_knn_with_one_neighbour_is_nearest_neighbour():
    rng = np.random.default_rng(0)
    train_x, test_x = rng.normal(size=(100, 5)), rng.normal(size=(50, 5))
    train_y, test_y = rng.integers(5, size=100) + 3, rng.integers(5, size=50) + 3
    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    nearest = train_y[np.argmax(unit(test_x) @ unit(train_x).T, axis=1)]
    expected = np.mean(nearest == test_y)
    for temperature in (None, 0.07, 1.0):
        actual = knn_accuracy(train_x, train_y, test_x, test_y, k=1, temperature=temperature)
        assert actual == expected


def test_weighted_knn_lets_a_close_neighbour_outvote_far_ones():
    train_x = np.array([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [0.2, 1.0]])
    train_y = np.array([0, 1, 1, 1])
    test_x, test_y = np.array([[1.0, 0.05]]), np.array([0])
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=4, temperature=0.07) == 1.0
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=4, temperature=None) == 0.0
    # k larger than the train set uses every train example.
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=100, temperature=0.07) == 1.0
