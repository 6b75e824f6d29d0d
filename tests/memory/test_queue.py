import keras
import numpy as np
import pytest

from keras_ebm.memory import Queue


class NumpyQueue:
    """Reference FIFO: a list of keys, oldest first, of at most `size` entries."""

    def __init__(self, size):
        self.size, self.items = size, []

    def enqueue(self, keys):
        self.items = (self.items + list(keys))[-self.size:]


def _rows(start, count, dim=3):
    return (np.arange(start, start + count)[:, None] * np.ones((1, dim))).astype("float32")


def test_fifo_order_wraparound_and_small_last_batch():
    # A size that the batch size (4) does not divide, and a last batch of 3.
    queue, reference = Queue(size=10, dim=3), NumpyQueue(10)
    for batch in [_rows(0, 4), _rows(4, 4), _rows(8, 4), _rows(12, 3)]:
        queue.enqueue(batch)
        reference.enqueue(batch)
    pointer = int(queue.pointer.numpy())
    assert pointer == 15 % 10
    assert int(queue.num_enqueued.numpy()) == 15
    keys = queue.keys.numpy()
    # Reading from the pointer onwards gives the keys oldest first.
    oldest_first = np.roll(keys, -pointer, axis=0)
    np.testing.assert_array_equal(oldest_first, np.stack(reference.items))
    np.testing.assert_array_equal(oldest_first[:, 0], np.arange(5, 15))


def test_more_keys_than_slots_keeps_the_newest():
    queue = Queue(size=4, dim=3)
    queue.enqueue(_rows(0, 3))
    queue.enqueue(_rows(100, 9))
    pointer = int(queue.pointer.numpy())
    np.testing.assert_array_equal(np.roll(queue.keys.numpy(), -pointer, axis=0)[:, 0],
                                  [105, 106, 107, 108])


def test_initial_keys_are_unit_vectors_and_call_returns_keys():
    queue = Queue(size=7, dim=5)
    np.testing.assert_allclose(np.linalg.norm(queue.keys.numpy(), axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(queue()), queue.keys.numpy())
    assert not queue.trainable_weights


def test_enqueue_inside_tf_function():
    import tensorflow as tf

    queue = Queue(size=5, dim=3)

    @tf.function
    def step(keys):
        queue.enqueue(keys)

    step(_rows(0, 2))
    step(_rows(2, 4))
    assert int(queue.pointer.numpy()) == 1
    np.testing.assert_array_equal(queue.keys.numpy()[:, 0], [5, 1, 2, 3, 4])


@keras.saving.register_keras_serializable(package="keras_ebm_tests")
class QueueHolder(keras.Model):
    def __init__(self, size=6, dim=3, **kwargs):
        super().__init__(**kwargs)
        self.size, self.dim = size, dim
        self.dense = keras.layers.Dense(dim)
        self.queue = Queue(size, dim, name="queue")

    def call(self, x):
        return self.dense(x)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "dim": self.dim}


def test_queue_survives_keras_save_load(tmp_path):
    model = QueueHolder(size=6, dim=3)
    model(np.zeros((1, 3), "float32"))
    model.queue.enqueue(_rows(0, 4))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.queue.keys.numpy(), model.queue.keys.numpy())
    assert int(loaded.queue.pointer.numpy()) == 4
    assert int(loaded.queue.num_enqueued.numpy()) == 4
    restored = Queue.from_config(model.queue.get_config())
    assert (restored.size, restored.dim) == (6, 3)


def test_bad_sizes():
    with pytest.raises(ValueError, match="size"):
        Queue(size=0, dim=3)
