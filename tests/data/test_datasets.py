"""Tests of keras_ebm.data.datasets: digits, TFDS (mocked), folders, arrays."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_ebm.data import DataError
from keras_ebm.data import ImageDataset
from keras_ebm.data import load


def _check_images(data):
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert x.dtype == np.float32 and x.ndim == 4
        assert y.dtype == np.int64 and y.shape == (len(x),)
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert y.min() >= 0 and y.max() < data.num_classes


# ---------------------------------------------------------------- digits


def test_digits_shapes_range_and_stratification():
    data = load("digits")
    _check_images(data)
    assert data.x_train.shape == (1257, 8, 8, 1)
    assert data.x_test.shape == (540, 8, 8, 1)
    assert data.image_shape == (8, 8, 1)
    assert data.num_classes == 10
    assert data.x_train.max() == 1.0
    train_fraction = np.bincount(data.y_train) / len(data.y_train)
    test_fraction = np.bincount(data.y_test) / len(data.y_test)
    np.testing.assert_allclose(train_fraction, test_fraction, atol=0.01)


def test_digits_deterministic_and_truncated():
    a, b = load("digits"), load("digits", max_train_examples=100)
    np.testing.assert_array_equal(a.x_train[:100], b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert len(b.x_train) == 100 and len(b.x_test) == 540


def test_image_size_resizes():
    data = load("digits", image_size=16, max_train_examples=10)
    assert data.x_train.shape == (10, 16, 16, 1)
    assert data.x_test.shape == (540, 16, 16, 1)
    assert data.x_test.min() >= 0.0 and data.x_test.max() <= 1.0


# ------------------------------------------------------------ TFDS mocked


@pytest.mark.parametrize(
    "name, shape", [("cifar10", (32, 32, 3)), ("mnist:3.*.*", (28, 28, 1))]
)
def test_tfds_mocked(name, shape):
    with tfds.testing.mock_data(
        num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE
    ):
        data = load(f"tfds:{name}")
    _check_images(data)
    assert data.image_shape == shape
    assert len(data.x_train) == 10 and len(data.x_test) == 10
    assert data.num_classes == 10 and len(data.class_names) == 10
    assert data.name == f"tfds:{name}"


def test_tfds_unknown_name():
    with pytest.raises(DataError, match=r"tfds:no_such_data_xyz: no such TFDS"):
        load("tfds:no_such_data_xyz")


def test_tfds_download_failure(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'storage.googleapis.com'")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(DataError) as error:
        load("tfds:mnist", data_dir=str(tmp_path))
    message = str(error.value)
    assert message.startswith("tfds:mnist: cannot be downloaded")
    assert "--data_dir" in message and "\n" not in message


# ----------------------------------------------------------------- folders


def _write_png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_png(np.asarray(image, np.uint8)))


def _make_folder(root, classes=("cat", "dog"), per_class=5, size=(6, 5), channels=3):
    rng = np.random.default_rng(0)
    for name in classes:
        for i in range(per_class):
            image = rng.integers(0, 256, size + (channels,))
            _write_png(os.path.join(root, name, f"{i}.png"), image)


def test_folder_classes_and_split(tmp_path):
    _make_folder(tmp_path, classes=("b_dog", "a_cat"), per_class=5)
    data = load(f"folder:{tmp_path}")
    _check_images(data)
    assert data.class_names == ["a_cat", "b_dog"]
    assert data.num_classes == 2
    assert data.image_shape == (6, 5, 3)
    assert len(data.x_train) == 7 and len(data.x_test) == 3
    assert sorted(np.bincount(data.y_test)) == [1, 2]  # stratified


def test_folder_gray_only_stays_one_channel(tmp_path):
    _make_folder(tmp_path, channels=1)
    assert load(f"folder:{tmp_path}").image_shape == (6, 5, 1)


def test_folder_rgba_and_gray_mix_to_rgb(tmp_path):
    _write_png(tmp_path / "a" / "0.png", np.full((4, 4, 4), 255))
    _write_png(tmp_path / "a" / "1.png", np.full((4, 4, 1), 51))
    _write_png(tmp_path / "b" / "0.png", np.full((4, 4, 3), 0))
    data = load(f"folder:{tmp_path}")
    assert data.image_shape == (4, 4, 3)
    x = np.concatenate([data.x_train, data.x_test])
    values = sorted(float(v) for v in x.reshape(3, -1).mean(axis=1))
    np.testing.assert_allclose(values, [0.0, 0.2, 1.0], atol=1e-6)


def test_folder_mixed_sizes(tmp_path):
    _make_folder(tmp_path, per_class=3)
    _write_png(tmp_path / "dog" / "odd.png", np.zeros((9, 9, 3)))
    with pytest.raises(DataError, match=r"odd\.png.*--image_size"):
        load(f"folder:{tmp_path}")
    data = load(f"folder:{tmp_path}", image_size=(7, 8))
    assert data.image_shape == (7, 8, 3)


@pytest.mark.parametrize("contents", [b"", b"\x89PNG\r\n\x1a\nnot really a png"])
def test_folder_bad_file(tmp_path, contents):
    _make_folder(tmp_path, per_class=2)
    (tmp_path / "cat" / "bad.png").write_bytes(contents)
    with pytest.raises(DataError, match=r"bad\.png") as error:
        load(f"folder:{tmp_path}")
    assert "\n" not in str(error.value)


def test_folder_truncated_file(tmp_path):
    _make_folder(tmp_path, per_class=2)
    good = (tmp_path / "cat" / "0.png").read_bytes()
    (tmp_path / "cat" / "0.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"0\.png"):
        load(f"folder:{tmp_path}")


def test_folder_empty(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path)):
        load(f"folder:{tmp_path}")
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataError, match=r"no images"):
        load(f"folder:{tmp_path}")
    with pytest.raises(DataError, match=r"not a folder"):
        load(f"folder:{tmp_path / 'missing'}")


# --------------------------------------------------- arrays, specs, batches


def test_from_arrays_rejects_nan_and_bad_input():
    x = np.zeros((4, 2, 2, 1), np.float32)
    y = np.zeros(4, np.int64)
    bad = x.copy()
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"toy: x_test contains NaN"):
        ImageDataset.from_arrays("toy", x, y, bad, y)
    with pytest.raises(DataError, match=r"x_train values must be in \[0, 1\]"):
        ImageDataset.from_arrays("toy", x + 2, y, x, y)
    with pytest.raises(DataError, match=r"4-D"):
        ImageDataset.from_arrays("toy", x[..., 0], y, x, y)
    with pytest.raises(DataError, match=r"y_train must have shape \[4\]"):
        ImageDataset.from_arrays("toy", x, y[:3], x, y)
    with pytest.raises(DataError, match=r"empty"):
        ImageDataset.from_arrays("toy", x[:0], y[:0], x, y)


def test_unknown_spec_lists_accepted_forms():
    expected = r"'imagenet': unknown dataset.*digits.*tfds.*folder"
    with pytest.raises(DataError, match=expected):
        load("imagenet")


def test_train_dataset_indices_index_x_train():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(10, 2, 2, 1)).astype(np.float32)
    y = np.arange(10) % 3
    data = ImageDataset.from_arrays("toy", x, y, x[:3], y[:3])
    batches = list(data.train_dataset(4, with_index=True).as_numpy_iterator())
    assert len(batches) == 2  # drop_remainder
    seen = []
    for images, indices in batches:
        assert indices.dtype == np.int64 and images.shape == (4, 2, 2, 1)
        np.testing.assert_array_equal(images, x[indices])
        seen.extend(indices)
    assert len(set(seen)) == 8
    images, labels = next(iter(data.train_dataset(10, with_labels=True)))
    positions = [int(np.flatnonzero((x == image).all(axis=(1, 2, 3)))[0])
                 for image in images.numpy()]
    np.testing.assert_array_equal(labels.numpy(), y[positions])
    with pytest.raises(DataError, match=r"toy: batch size 11"):
        data.train_dataset(11)
