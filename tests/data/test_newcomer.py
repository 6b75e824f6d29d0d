"""What a newcomer meets when fitting on `ImageDataset.train_dataset`: no spurious warning."""

import logging
import re
import warnings

import keras
import numpy as np
import pytest

from keras_ebm.data import ImageDataset

IGNORED_SHUFFLE = "will be ignored"
# Keras's fit first warns that shuffle=True is ignored for a tf.data.Dataset in
# 3.15.0 (keras/src/trainers/data_adapters/__init__.py; up to 3.14 the warning is
# commented out), and setup.cfg allows 3.12.4.
FIRST_KERAS_WARNING_ABOUT_SHUFFLE = (3, 15, 0)


class MeanModel(keras.Model):
    """The smallest trainable model fed by images alone (no labels)."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)

    def call(self, x):
        return self.dense(keras.ops.reshape(x, (-1, 16)))

    def train_step(self, x):
        return {"mean": keras.ops.mean(self(x))}


def keras_version_tuple():
    return tuple(int(part) for part in re.findall(r"\d+", keras.__version__.split("+")[0])[:3])


@pytest.fixture()
def data():
    rng = np.random.default_rng(0)
    return ImageDataset.from_arrays(
        "tiny", rng.random((16, 4, 4, 1)), np.arange(16) % 2,
        rng.random((4, 4, 4, 1)), np.arange(4) % 2)


def fit_messages(data, caplog, **fit_kwargs):
    """Warnings and log records of one tiny `fit` on `data.train_dataset(4)`."""
    model = MeanModel()
    model.compile(optimizer="sgd")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")  # not only the first time per call site
        model.fit(data.train_dataset(4), epochs=1, verbose=0, **fit_kwargs)
    return [str(w.message) for w in caught] + [record.getMessage() for record in caplog.records]


def test_fit_as_documented_does_not_warn_about_shuffle(data, caplog):
    messages = fit_messages(data, caplog, shuffle=False)
    assert not [m for m in messages if IGNORED_SHUFFLE in m], messages


def test_train_dataset_docstring_says_to_pass_shuffle_false_to_fit():
    doc = ImageDataset.train_dataset.__doc__
    assert "shuffle=False" in doc and "fit" in doc
    assert "fit(data.train_dataset(256), epochs=10, shuffle=False)" in doc


def test_keras_warns_when_fit_keeps_its_default_shuffle(data, caplog):
    # Why the docstring asks for shuffle=False: Keras's fit defaults to
    # shuffle=True and warns for any tf.data.Dataset. If this starts failing,
    # Keras stopped warning and the note in `train_dataset` can go.
    if keras_version_tuple() < FIRST_KERAS_WARNING_ABOUT_SHUFFLE:
        pytest.skip(f"Keras {keras.__version__} does not warn that fit's shuffle=True is "
                    "ignored for a tf.data.Dataset (Keras 3.15.0 is the first that does)")
    messages = fit_messages(data, caplog)
    assert [m for m in messages if IGNORED_SHUFFLE in m], messages
