import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm import distribute
from keras_ebm.layers import ProjectionHead
from keras_ebm.losses import nt_xent
from keras_ebm.memory import Queue


def test_get_strategy_by_name(monkeypatch):
    assert distribute.get_strategy("default") is tf.distribute.get_strategy()
    mirrored = distribute.get_strategy("mirrored", devices=["/cpu:0"])
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == 1
    with pytest.raises(ValueError, match="unknown strategy"):
        distribute.get_strategy("gpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.get_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="JSON"):
        distribute.get_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}}))
    with pytest.raises(ValueError, match="task"):
        distribute.get_strategy("multi_worker")
    assert distribute.is_chief(mirrored)


def test_helpers_pass_through_without_replicas():
    x = tf.constant(np.arange(6.0).reshape(3, 2), "float32")
    assert distribute.num_replicas_in_sync() == 1
    assert distribute.cross_replica_concat(x) is x
    assert distribute.replica_offset(3) == (0, 3)
    loss = tf.constant(2.0)
    assert float(distribute.scale_loss_for_replicas(loss, 3, 3)) == 2.0
    variable = keras.Variable(1.0)
    distribute.update_state(lambda v: variable.assign(variable + v), tf.constant(2.0))
    assert float(variable.numpy()) == 3.0


def test_update_state_and_gather_under_one_replica_mirrored_strategy():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        queue = Queue(size=4, dim=2)

    @tf.function
    def step(keys):
        def replica_fn(keys):
            gathered = distribute.cross_replica_concat(keys)
            queue.enqueue(gathered)
            return distribute.replica_offset(tf.shape(keys)[0])[1]
        return strategy.run(replica_fn, args=(keys,))

    keys = tf.ones((3, 2))
    assert int(step(keys)) == 3
    assert int(queue.pointer.numpy()) == 3
    np.testing.assert_allclose(queue.keys.numpy()[:3], 1.0)


@pytest.mark.parametrize("n", [1, 5])
def test_nt_xent_cross_replica_equals_plain_on_one_device(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=(2, n, 4)).astype("float32")
    plain = nt_xent(a, b, 0.3)
    gathered = nt_xent(a, b, 0.3, cross_replica=True)
    for x, y in zip(plain, gathered):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)


def test_sync_batch_norm_converts_nested_layers_and_survives_saving(tmp_path):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3)(inputs)
    x = keras.layers.BatchNormalization()(x)
    head = ProjectionHead((5,), 2, batch_norm=True)
    model = keras.Model(inputs, head(x))
    assert distribute.sync_batch_norm(model) == 2
    norms = [layer for layer in distribute._sublayers(model)
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 2 and all(layer.synchronized for layer in norms)
    data = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    before = model(data, training=False)
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(restored(data, training=False)), np.asarray(before),
                               atol=1e-6)
    assert restored.layers[2].synchronized
    # Without a strategy the statistics are the ordinary ones.
    plain = keras.layers.BatchNormalization()
    synced = keras.layers.BatchNormalization(synchronized=True)
    np.testing.assert_allclose(np.asarray(plain(data, training=True)),
                               np.asarray(synced(data, training=True)), atol=1e-6)
    assert distribute.sync_batch_norm(model, synchronized=False) == 2
    assert not any(layer.synchronized for layer in norms)
