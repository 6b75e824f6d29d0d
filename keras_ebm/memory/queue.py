"""A FIFO queue of keys: MoCo's dictionary of negatives."""

import random

import keras
from keras import ops

from keras_ebm import distribute
from keras_ebm.layers.cosine_energy import normalize


def random_unit_rows(seed):
    """An initializer of random unit rows, the same for the same integer `seed` (queues, banks)."""

    def initializer(shape, dtype=None):
        return normalize(keras.random.normal(shape, dtype="float32", seed=seed))

    return initializer


def initial_seed(seed):
    """`seed`, or when None one drawn from Python's `random` (which
    `keras.utils.set_random_seed` seeds on every Keras version, unlike Keras's
    own global generator before 3.13)."""
    return random.randint(0, 2**31 - 1) if seed is None else int(seed)


@keras.saving.register_keras_serializable(package="keras_ebm")
class Queue(keras.layers.Layer):
    """First-in first-out queue of `size` keys of dimension `dim`, held in variables.

    `enqueue(keys)` writes the keys at the write pointer, wrapping around the
    end, and overwrites the oldest entries. Unlike MoCo's reference code it
    accepts any number of keys per call: a last batch smaller than the others,
    a queue size that the batch size does not divide, or more keys than the
    queue holds (then only the newest `size` are kept).

    All state is in non-trainable variables, so checkpoints, `.keras` files and
    tf.distribute carry it:

    - `keys` [size, dim]: the stored keys, initialised to random unit vectors
      as in MoCo (drawn from `seed`);
    - `pointer` (int64): the slot the next key is written to;
    - `num_enqueued` (int64): keys written so far (the queue is full of real
      keys once it reaches `size`).

    Under tf.distribute, `enqueue` is replica-safe: in replica context it runs
    once per device copy of the variables (`keras_ebm.distribute.update_state`),
    each copy written with that replica's keys. Pass every replica the same
    keys (gather them first, `keras_ebm.distribute.cross_replica_concat`, as
    `MoCo` does) and the copies stay identical. The variables also carry
    `aggregation="only_first_replica"`, so that a plain `assign` in replica
    context broadcasts the first replica's value instead of failing.

    Args:
        size: int, number of keys (MoCo's K), default 4096.
        dim: int, key dimension, default 128.
        seed: None or int, default None. Seed of the initial random keys; None
            draws one from Python's `random` at construction, so that
            `keras.utils.set_random_seed` makes the keys reproducible.
        **kwargs: base layer keyword arguments.

    Example:

    >>> queue = Queue(size=5, dim=2)
    >>> queue.enqueue(np.ones((3, 2), "float32"))
    >>> int(queue.pointer.numpy())
    3
    >>> queue().shape   # calling the layer returns the keys
    (5, 2)

    Reference:
        He et al., Momentum Contrast for Unsupervised Visual Representation
        Learning, CVPR 2020, section 3.2.
    """

    def __init__(self, size=4096, dim=128, seed=None, **kwargs):
        super().__init__(**kwargs)
        if int(size) < 1 or int(dim) < 1:
            raise ValueError(f"Queue: size and dim must be >= 1, got size={size}, dim={dim}")
        self.size = int(size)
        self.dim = int(dim)
        self.seed = None if seed is None else int(seed)
        self.keys = self.add_weight(shape=(self.size, self.dim),
                                    initializer=random_unit_rows(initial_seed(self.seed)),
                                    trainable=False, aggregation="only_first_replica",
                                    name="keys")
        self.pointer = self.add_weight(shape=(), initializer="zeros", dtype="int64",
                                       trainable=False, aggregation="only_first_replica",
                                       name="pointer")
        self.num_enqueued = self.add_weight(shape=(), initializer="zeros", dtype="int64",
                                            trainable=False,
                                            aggregation="only_first_replica",
                                            name="num_enqueued")
        self.built = True

    def call(self, inputs=None):
        return ops.convert_to_tensor(self.keys)

    def enqueue(self, keys):
        """Writes `keys` [n, dim] into the queue, oldest entries first out.

        Replica-safe (see the class docstring): under a strategy, pass the
        keys gathered from every replica.
        """
        distribute.update_state(self._write, ops.cast(keys, self.keys.dtype), anchor=self.keys)

    def _write(self, keys):
        keys = keys[-self.size:]  # more keys than slots: only the newest survive
        num_keys = ops.cast(ops.shape(keys)[0], "int64")
        slots = ops.mod(self.pointer + ops.arange(num_keys, dtype="int64"), self.size)
        self.keys.assign(ops.scatter_update(self.keys, ops.expand_dims(slots, -1), keys))
        self.pointer.assign(ops.mod(self.pointer + num_keys, self.size))
        self.num_enqueued.assign(self.num_enqueued + num_keys)

    def compute_output_shape(self, input_shape=None):
        return (self.size, self.dim)

    def get_config(self):
        config = super().get_config()
        config.update({"size": self.size, "dim": self.dim, "seed": self.seed})
        return config
