import collections
import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.callbacks import NonFiniteError
from keras_ebm.callbacks import NonFiniteGuard
from keras_ebm.data.binary_digits import independent_pixels_log_likelihood
from keras_ebm.data.binary_digits import load_binary_digits
from keras_ebm.data.toy_2d import TOY_2D_NAMES
from keras_ebm.data.toy_2d import toy_2d
from keras_ebm.methods.contrastive_divergence import ContrastiveDivergence
from keras_ebm.methods.denoising_autoencoder import DenoisingAutoencoder
from keras_ebm.methods.denoising_autoencoder import corrupt
from keras_ebm.samplers import Gibbs


def test_binary_digits_split_and_independent_pixel_baseline():
    (x_train, y_train), (x_test, y_test) = load_binary_digits()
    assert x_train.shape == (1257, 64) and x_test.shape == (540, 64)
    assert set(np.unique(x_train).tolist()) == {0.0, 1.0}
    assert len(np.unique(y_test)) == 10
    assert independent_pixels_log_likelihood(x_train, x_test) == pytest.approx(-25.14, abs=0.01)


@pytest.mark.parametrize("name", TOY_2D_NAMES)
def test_toy_2d_shapes_range_and_seed(name):
    x = toy_2d(name, 500, seed=3)
    assert x.shape == (500, 2) and x.dtype == np.float32
    assert np.abs(x).max() < 4.0
    np.testing.assert_array_equal(x, toy_2d(name, 500, seed=3))
    assert not np.array_equal(x, toy_2d(name, 500, seed=4))


def test_rings_radii():
    radius = np.linalg.norm(toy_2d("rings", 2000, seed=0), axis=1)
    assert abs(np.mean(radius[radius < 1.75]) - 1.0) < 0.05
    assert abs(np.mean(radius[radius >= 1.75]) - 2.5) < 0.05


def test_unknown_toy_names_the_choices():
    with pytest.raises(ValueError, match="rings"):
        toy_2d("spirals", 10)


@keras.saving.register_keras_serializable(package="keras_ebm_tests")
class ExplodingEnergy(keras.layers.Layer):
    """E(x) = w sum(x) + log(0.3 - w): finite until w passes 0.3, then NaN."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(), initializer="zeros")

    def call(self, x):
        return tf.reduce_sum(x, axis=-1) * self.w + tf.math.log(0.3 - self.w)


def test_non_finite_guard_stops_names_the_step_and_restores_weights():
    model = ContrastiveDivergence(ExplodingEnergy(), Gibbs(num_steps=1))
    model.sampler = keras_identity_sampler()
    model.build((None, 2))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x = -np.ones((8, 2), "float32")
    guard = NonFiniteGuard()
    # loss = -2 w: SGD moves w to 0.2, 0.4; the third step computes log(-0.1).
    model.fit(x, batch_size=8, epochs=20, verbose=0, callbacks=[guard])
    assert guard.stopped_step == 3
    assert "step 3" in guard.message and "Non-finite" in guard.message
    assert float(model.energy.w) == pytest.approx(0.2)
    assert np.isfinite(model.energy(x)).all()
    with pytest.raises(NonFiniteError):
        model.energy.w.assign(0.0)
        model.fit(x, batch_size=8, epochs=20, verbose=0,
                  callbacks=[NonFiniteGuard(raise_error=True)])


def keras_identity_sampler():
    from keras_ebm.samplers.sampler import Sampler

    class Shift(Sampler):
        def step(self, energy, x, step_index):
            return x + 1.0, tf.ones(tf.shape(x)[:1])

    return Shift(num_steps=1)


def test_dae_lowers_reconstruction_energy_of_data():
    keras.utils.set_random_seed(0)
    (x_train, _), (x_test, _) = load_binary_digits()
    autoencoder = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="swish"),
                                    keras.layers.Dense(64, activation="sigmoid")])
    model = DenoisingAutoencoder(autoencoder, noise="bitflip", noise_level=0.1)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    before = float(np.mean(model.energy(x_test)))
    model.fit(x_train, batch_size=100, epochs=5, verbose=0)
    after_data = float(np.mean(model.energy(x_test)))
    random_bits = (np.random.default_rng(0).random((200, 64)) < 0.3).astype("float32")
    assert after_data < before
    assert after_data < float(np.mean(model.energy(random_bits)))


def test_dae_chain_reaches_its_stationary_distribution():
    # r(x) = x / 2 with Gaussian corruption sigma: x <- (x + sigma n) / 2 is an AR(1) chain
    # whose stationary law is N(0, sigma^2 / 4 / (1 - 1/4)) = N(0, sigma^2 / 3).
    keras.utils.set_random_seed(0)
    halve = keras.layers.Dense(2, use_bias=False, kernel_initializer=keras.initializers.Constant(
        0.5 * np.eye(2)))
    model = DenoisingAutoencoder(keras.Sequential([keras.Input((2,)), halve]),
                                 noise="gaussian", noise_level=0.6)
    start = np.full((20000, 2), 3.0, "float32")
    samples = model.sample(start, num_steps=30)
    assert samples.shape == (20000, 2)
    np.testing.assert_allclose(samples.mean(0), [0.0, 0.0], atol=0.02)
    np.testing.assert_allclose(samples.var(0), [0.12, 0.12], rtol=0.05)


def test_corruptions():
    x = tf.ones([1000, 10])
    assert abs(float(tf.reduce_mean(corrupt(x, "bitflip", 0.2))) - 0.8) < 0.02
    assert abs(float(tf.reduce_mean(corrupt(x, "masking", 0.5))) - 0.5) < 0.02
    with pytest.raises(ValueError):
        corrupt(x, "salt", 0.1)


def test_resumable_backup_keeps_the_newest_snapshots_and_resumes(tmp_path, capsys):
    from keras_ebm.callbacks import ResumableBackup
    from keras_ebm.callbacks import checkpoint_epoch

    x = np.random.default_rng(0).random((16, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True)

    def model():
        m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        m.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        return m

    backup_dir = str(tmp_path / "checkpoints")
    backup = ResumableBackup(backup_dir, keep_checkpoints=2)
    first = model()
    first.fit(x, y, epochs=6, batch_size=8, verbose=0, callbacks=[backup])
    names = sorted(os.listdir(backup_dir))
    assert [os.path.basename(p) for p in backup.snapshots()] == [
        "epoch-00005.weights.h5", "epoch-00006.weights.h5"]
    assert sum(".weights.h5" in n for n in names) == 4  # latest, its backup, 2 snapshots
    assert not any(n.endswith(".tmp") for n in names)
    assert checkpoint_epoch(backup_dir) == 6 and checkpoint_epoch(str(tmp_path / "none")) == 0
    # The newest snapshot holds the final state.
    second = model()
    second.load_weights(backup.snapshots()[-1])
    for a, b in zip(first.weights, second.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # A rerun with more epochs resumes after epoch 6 and keeps pruning.
    capsys.readouterr()
    third = model()
    history = third.fit(x, y, epochs=8, batch_size=8, verbose=0,
                        callbacks=[ResumableBackup(backup_dir, keep_checkpoints=2)])
    assert len(history.history["loss"]) == 2
    assert "Resuming from epoch 6" in capsys.readouterr().out
    assert [os.path.basename(p) for p in backup.snapshots()] == [
        "epoch-00007.weights.h5", "epoch-00008.weights.h5"]
    with pytest.raises(ValueError, match="keep_checkpoints"):
        ResumableBackup(backup_dir, keep_checkpoints=-1)


def _h5_contents(path):
    import h5py

    contents = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: contents.__setitem__(
            name, (obj[()] if isinstance(obj, h5py.Dataset) else None, dict(obj.attrs))))
    return contents


def _assert_same_h5(path_a, path_b):
    a, b = _h5_contents(path_a), _h5_contents(path_b)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name][0], b[name][0], err_msg=name)
        assert a[name][1] == b[name][1], name


def test_backup_writer_writes_what_save_weights_writes_and_follows_new_variables(tmp_path):
    """The backup's own writer (one walk of the model) and Keras's save_weights agree."""
    from keras_ebm.callbacks import _WeightsFileWriter
    from keras_ebm.layers import ProjectionHead
    from keras_ebm.methods import MoCo

    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    encoder = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    model = MoCo(encoder, ProjectionHead((8,), 5, batch_norm=False), queue_size=16, bn_splits=1)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    rng = np.random.default_rng(0)
    batch = (rng.random((8, 6, 6, 1)).astype("float32"),
             rng.random((8, 6, 6, 1)).astype("float32"))
    model(batch[0])
    writer = _WeightsFileWriter(model)
    writer.write(str(tmp_path / "ours0.weights.h5"))  # optimizer not built yet
    model.save_weights(tmp_path / "keras0.weights.h5")
    _assert_same_h5(tmp_path / "ours0.weights.h5", tmp_path / "keras0.weights.h5")
    for step in (1, 2):  # the optimizer's variables appear; the queue and weights change
        model.train_on_batch(batch)
        writer.write(str(tmp_path / f"ours{step}.weights.h5"))
        model.save_weights(tmp_path / f"keras{step}.weights.h5")
        _assert_same_h5(tmp_path / f"ours{step}.weights.h5", tmp_path / f"keras{step}.weights.h5")
    assert any(name.startswith("optimizer") for name in _h5_contents(tmp_path / "ours2.weights.h5"))
    with pytest.raises(AssertionError):  # the comparison sees a step's change
        _assert_same_h5(tmp_path / "ours1.weights.h5", tmp_path / "ours2.weights.h5")
    # Keras reads it back.
    restored = MoCo.from_config(model.get_config())
    restored(batch[0])
    restored.load_weights(tmp_path / "ours2.weights.h5")
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_epoch_tensorboard_writes_the_epoch_scalars_without_per_batch_calls(tmp_path, monkeypatch):
    from keras_ebm.callbacks import EpochTensorBoard

    x = np.random.default_rng(0).random((16, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True)

    def run(callback_class, folder):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        callback = callback_class(str(folder), update_freq="epoch")
        calls, scalar = [], callback.summary.scalar

        def counting_scalar(name, *args, **kwargs):
            calls.append(name)
            return scalar(name, *args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(callback.summary, "scalar", counting_scalar)
            model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[callback])
        tags = collections.Counter()
        for path in glob.glob(str(folder / "train" / "events.*")):
            for event in tf.compat.v1.train.summary_iterator(path):
                tags.update(value.tag for value in event.summary.value)
        return calls, tags

    keras_calls, keras_tags = run(keras.callbacks.TensorBoard, tmp_path / "keras")
    calls, tags = run(EpochTensorBoard, tmp_path / "ours")
    assert sum(name.startswith("batch_") for name in keras_calls) == 12  # 4 batches x 3 epochs
    assert not any(name.startswith("batch_") for name in calls)
    assert tags == keras_tags and tags["epoch_loss"] == 3 and tags["epoch_learning_rate"] == 3


def test_dae_chain_stays_in_its_bounds():
    # r(x) = 3x runs off to infinity from anywhere but 0 (3^200 overflows float32); with
    # bounds the chain sits on the box's faces, the fixed points of clip(3x).
    triple = keras.layers.Dense(2, use_bias=False, kernel_initializer=keras.initializers.Constant(
        3.0 * np.eye(2)))
    model = DenoisingAutoencoder(keras.Sequential([keras.Input((2,)), triple]),
                                 noise="gaussian", noise_level=0.01)
    start = np.random.default_rng(0).uniform(-1, 1, (100, 2)).astype("float32")
    assert not np.isfinite(model.sample(start, num_steps=200, seed=0)).all()
    samples = model.sample(start, num_steps=200, seed=0, bounds=(-4, 4))
    np.testing.assert_array_equal(np.abs(samples), 4.0)
