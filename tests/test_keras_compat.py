"""keras_ebm.keras_compat: the private Keras API behind public fallbacks, and the version check."""

import importlib
import os
import random
import subprocess
import sys
import warnings

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm import keras_compat
from keras_ebm.callbacks import ResumableBackup
from keras_ebm.data import make_augmenter
from keras_ebm.layers import ProjectionHead

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Keras itself imports its other private modules lazily (blocking them would break Keras,
# not simulate a move); keras_ebm's fast writer needs this one.
PRIVATE_SAVING_MODULE = "keras.src.saving.saving_lib"


def _model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              keras.layers.BatchNormalization(), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse")
    return model


def _data():
    x = np.random.default_rng(0).random((16, 4)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


def _h5_names(path):
    names = []
    with h5py.File(path, "r") as f:
        f.visit(names.append)
    return sorted(names)


def _assert_same_weights(model_a, model_b):
    assert len(model_a.weights) == len(model_b.weights)
    for a, b in zip(model_a.weights, model_b.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_keras_tested_range_and_one_warning_outside_it(monkeypatch):
    lowest, newest = keras_compat.KERAS_TESTED
    assert keras_compat.keras_version_tested(lowest)
    assert keras_compat.keras_version_tested(newest)
    assert not keras_compat.keras_version_tested("3.0.0")
    assert not keras_compat.keras_version_tested("4.0.0")
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    monkeypatch.setattr(keras_compat, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keras_compat.check_keras_version()
        keras_compat.check_keras_version()
    assert len(caught) == 1 and "3.99.0" in str(caught[0].message)


def test_public_flatten_layers_walks_like_keras():
    inner = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4),
                              keras.layers.BatchNormalization()])
    inputs = keras.Input((5,))
    outputs = ProjectionHead((6,), 3)(inner(inputs))
    model = keras.Model(inputs, outputs)
    augmenter = make_augmenter((8, 8, 3), seed=0)
    def names(layers):  # Sequential.layers, public, leaves out the InputLayer
        return [x.name for x in layers if not isinstance(x, keras.layers.InputLayer)]

    for layer in (model, inner, augmenter, ProjectionHead((6, 6), 3)):
        for include_self in (True, False):
            for recursive in (True, False):
                private = layer._flatten_layers(include_self=include_self, recursive=recursive)
                public = keras_compat._public_flatten_layers(layer, include_self, recursive)
                assert names(public) == names(private), (layer.name, include_self, recursive)


def test_public_track_variable_makes_the_same_weights_and_files(tmp_path, monkeypatch):
    def build():
        augmenter = make_augmenter((8, 8, 3), seed=0)
        augmenter.build((None, 8, 8, 3))
        return augmenter

    private = build()
    monkeypatch.setattr(keras_compat, "track_variable", keras_compat._public_track_variable)
    monkeypatch.setattr(keras_compat, "flatten_layers", keras_compat._public_flatten_layers)
    public = build()
    assert [tuple(w.shape) for w in public.weights] == [tuple(w.shape) for w in private.weights]
    assert len(public.non_trainable_weights) == len(private.non_trainable_weights) > 0
    private.save_weights(tmp_path / "private.weights.h5")
    public.save_weights(tmp_path / "public.weights.h5")
    assert _h5_names(tmp_path / "private.weights.h5") == _h5_names(tmp_path / "public.weights.h5")
    images = np.random.default_rng(1).random((4, 8, 8, 3)).astype("float32")
    private(images, training=True)  # moves its generators' states
    public.load_weights(tmp_path / "private.weights.h5")
    private.load_weights(tmp_path / "private.weights.h5")
    np.testing.assert_array_equal(np.asarray(public(images, training=True)),
                                  np.asarray(private(images, training=True)))


def test_multi_worker_mode_fallback():
    strategy = tf.distribute.get_strategy()
    assert keras_compat.multi_worker_mode(strategy) is False
    assert keras_compat._public_multi_worker_mode(strategy) is False


def test_writer_falls_back_to_save_weights_when_its_walk_differs_from_keras(tmp_path, monkeypatch):
    if not keras_compat._SAVING_PRIVATE:
        pytest.skip("this Keras has not the private saving API")
    model = _model()
    model.fit(*_data(), epochs=1, verbose=0)
    monkeypatch.setattr(keras_compat, "_keras_entries", lambda model: [])
    writer = keras_compat.weights_file_writer(model)
    with pytest.warns(UserWarning, match="save_weights"):
        writer.write(str(tmp_path / "w.weights.h5.tmp"))
    writer.write(str(tmp_path / "again.weights.h5"))
    restored = _model()
    restored.optimizer.build(restored.trainable_variables)
    os.replace(tmp_path / "w.weights.h5.tmp", tmp_path / "w.weights.h5")
    restored.load_weights(tmp_path / "w.weights.h5")
    _assert_same_weights(model, restored)


@pytest.fixture()
def compat_without_private_saving(monkeypatch):
    """keras_compat reloaded as if Keras's private saving module had moved."""
    monkeypatch.setitem(sys.modules, PRIVATE_SAVING_MODULE, None)  # `import` of it now fails
    importlib.reload(keras_compat)
    yield keras_compat
    monkeypatch.undo()
    importlib.reload(keras_compat)
    assert keras_compat._SAVING_PRIVATE


def test_backup_without_the_private_saving_api_writes_what_load_weights_reads(
        tmp_path, compat_without_private_saving):
    compat = compat_without_private_saving
    assert not compat._SAVING_PRIVATE
    model = _model()
    assert isinstance(compat.weights_file_writer(model), compat._SaveWeightsWriter)
    backup = ResumableBackup(str(tmp_path / "backup"), keep_checkpoints=1)
    model.fit(*_data(), epochs=2, verbose=0, callbacks=[backup])
    assert sorted(os.listdir(tmp_path / "backup")) == [
        "epoch-00002.weights.h5", "latest.weights.h5", "previous.weights.h5"]
    restored = _model()
    restored.optimizer.build(restored.trainable_variables)
    restored.load_weights(tmp_path / "backup" / "latest.weights.h5")
    _assert_same_weights(model, restored)
    resumed = ResumableBackup(str(tmp_path / "backup"))
    history = _model().fit(*_data(), epochs=3, verbose=0, callbacks=[resumed])
    assert resumed.resumed_epoch == 2 and len(history.epoch) == 1


def test_import_keras_ebm_when_the_private_keras_modules_are_gone(tmp_path):
    script = f"""
import sys
import keras
sys.modules[{PRIVATE_SAVING_MODULE!r}] = None
import numpy as np
import keras_ebm
from keras_ebm import keras_compat
assert not keras_compat._SAVING_PRIVATE
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
model.compile(optimizer="sgd", loss="mse")
x = np.ones((4, 3), "float32")
model.fit(x, x[:, :2], epochs=1, verbose=0,
          callbacks=[keras_ebm.callbacks.ResumableBackup({str(tmp_path)!r})])
model.load_weights({str(tmp_path / "latest.weights.h5")!r})
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=False,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_keep_error_message_keeps_one_line_messages_raised_in_call():
    @keras_compat.keep_error_message
    class OneLineError(ValueError):
        pass

    class Raiser(keras.layers.Layer):
        def __init__(self, error, **kwargs):
            super().__init__(**kwargs)
            self.error = error

        def call(self, x):
            raise self.error("bad input")

    with pytest.raises(OneLineError) as caught:
        Raiser(OneLineError)(np.zeros((1, 2), "float32"))
    assert str(caught.value) == "bad input"
    with pytest.raises(ValueError) as caught:  # undecorated: Keras adds its call information
        Raiser(ValueError)(np.zeros((1, 2), "float32"))
    assert str(caught.value) != "bad input"


def _xla_flags():
    """in_xla_context() eagerly, traced by a plain tf.function, traced for XLA."""
    seen = [keras_compat.in_xla_context()]

    def record(x):
        seen.append(keras_compat.in_xla_context())
        return x + 1

    tf.function(record)(tf.constant(1.0))
    tf.function(record, jit_compile=True)(tf.constant(1.0))
    return seen


def test_in_xla_context_and_its_fallback(monkeypatch):
    assert _xla_flags() == [False, False, True]
    monkeypatch.setattr(keras_compat, "_control_flow_util", None)  # the private module moved
    assert _xla_flags() == [False, False, False]

    class Changed:
        @staticmethod
        def GraphOrParentsInXlaContext(*args):  # noqa: N802 - TensorFlow's name
            raise TypeError("another signature")

    monkeypatch.setattr(keras_compat, "_control_flow_util", Changed)
    assert _xla_flags() == [False, False, False]


def test_queue_and_memory_bank_start_from_set_random_seed_on_every_keras():
    """Their initial rows come from Python's `random`, not Keras's global generator
    (which `keras.utils.set_random_seed` resets only from Keras 3.13 on)."""
    from keras_ebm.memory import MemoryBank
    from keras_ebm.memory import Queue

    def build(draws):
        keras.utils.set_random_seed(3)  # seeds Python's `random`
        state = random.getstate()
        for _ in range(draws):  # moves Keras's global generator (may seed it from `random`)
            keras.random.normal((5,))
        random.setstate(state)
        return (np.asarray(Queue(size=6, dim=4).keys),
                np.asarray(MemoryBank(num_entries=5, dim=4).entries))

    first, second = build(1), build(2)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    keras.utils.set_random_seed(4)
    assert not np.array_equal(np.asarray(Queue(size=6, dim=4).keys), first[0])
    np.testing.assert_array_equal(np.asarray(Queue(size=6, dim=4, seed=7).keys),
                                  np.asarray(Queue(size=6, dim=4, seed=7).keys))
    queue = Queue(size=6, dim=4, seed=7)
    assert Queue.from_config(queue.get_config()).seed == 7
    # The saved weights are as before: no variable added.
    assert [w.name for w in queue.weights] == ["keys", "pointer", "num_enqueued"]
    assert [w.name for w in MemoryBank(5, 4).weights] == ["entries", "num_updates", "num_draws"]
