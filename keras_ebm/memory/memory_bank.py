"""A memory bank: one slowly moving, L2-normalised embedding per training image (PIRL)."""


import keras
import tensorflow as tf
from keras import ops

from keras_ebm import distribute
from keras_ebm.layers.cosine_energy import normalize
from keras_ebm.memory.queue import initial_seed
from keras_ebm.memory.queue import random_unit_rows


@keras.saving.register_keras_serializable(package="keras_ebm")
class MemoryBank(keras.layers.Layer):
    """One L2-normalised slot per training example, read by index and updated with momentum.

        m_i <- normalize(momentum * m_i + (1 - momentum) * normalize(v_i))

    Slot i holds a running average m_i of the embeddings of example i, so the
    bank offers many negatives (PIRL draws thousands) without encoding them
    again at each step. Every slot starts as a random unit vector.

    All state is in non-trainable variables, so checkpoints, `.keras` files
    and `model.save` carry it:

    - `entries` [num_entries, dim]: the slots;
    - `num_updates` (int64): update calls so far;
    - `num_draws` (int64): negative draws so far; draw t uses the stateless
      seed (seed, t), so a restored bank draws what the original would.

    Under tf.distribute the bank acts on the global batch: `update` gathers
    the indices and embeddings of every replica and writes all of them into
    every device copy (`keras_ebm.distribute.update_state`), and `sample`
    draws the same negatives on every replica (the draw depends only on
    mirrored state). So 2 replicas train like one device on the same global
    batch (tests/distribute). The variables carry
    `aggregation="only_first_replica"`.

    Args:
        num_entries: int >= 1, the number of slots: the number of training
            examples, each fed with its index in `[0, num_entries)`.
        dim: int >= 1, default 128. The embedding dimension.
        momentum: float in [0, 1), default 0.5 (PIRL). The weight of the old
            slot value in an update; 0 overwrites the slot.
        seed: None or int, default None. Seed of the initial random slots and
            of the negative draws. None: the negative draws use seed 0, and
            the initial slots a seed drawn from Python's `random` at
            construction, so that `keras.utils.set_random_seed` makes them
            reproducible.
        **kwargs: base layer keyword arguments.

    Example:

    >>> bank = MemoryBank(num_entries=1000, dim=128, momentum=0.5)
    >>> bank.update(indices, embeddings)          # after each step
    >>> positives = bank.read(indices)            # m_I, [batch, 128]
    >>> negatives = bank.sample(4096)             # D_N, [4096, 128], one set per batch
    >>> negatives = bank.sample(4096, batch_size=len(indices))  # [batch, 4096, 128]

    Reference:
        Wu, Xiong, Yu & Lin, Unsupervised Feature Learning via Non-Parametric
        Instance Discrimination, CVPR 2018; Misra & van der Maaten,
        Self-Supervised Learning of Pretext-Invariant Representations (PIRL),
        CVPR 2020, section 3.2.
    """

    def __init__(self, num_entries, dim=128, momentum=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        if int(num_entries) < 1 or int(dim) < 1:
            raise ValueError(f"MemoryBank: num_entries and dim must be >= 1, got "
                             f"num_entries={num_entries}, dim={dim}")
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"MemoryBank: momentum must be in [0, 1), got {momentum}")
        self.num_entries = int(num_entries)
        self.dim = int(dim)
        self.momentum = float(momentum)
        self.seed = seed
        self.entries = self.add_weight(shape=(self.num_entries, self.dim),
                                       initializer=random_unit_rows(initial_seed(seed)),
                                       trainable=False,
                                       name="entries", aggregation="only_first_replica")
        self.num_updates = self.add_weight(shape=(), initializer="zeros", dtype="int64",
                                           trainable=False, name="num_updates",
                                           aggregation="only_first_replica")
        self.num_draws = self.add_weight(shape=(), initializer="zeros", dtype="int64",
                                         trainable=False, name="num_draws",
                                         aggregation="only_first_replica")
        self.built = True

    def call(self, indices):
        return self.read(indices)

    def read(self, indices):
        """The slots of `indices` [n]: a tensor [n, dim] (no gradient flows into the bank)."""
        return ops.take(ops.convert_to_tensor(self.entries), ops.cast(indices, "int32"), axis=0)

    def sample(self, num_negatives, batch_size=None):
        """`num_negatives` slots drawn uniformly at random, with replacement.

        Args:
            num_negatives: int, the number K of slots drawn (per row).
            batch_size: None (default) or an int or scalar tensor B. None: one
                set of K slots, [K, dim], shared by a whole batch. B: a set
                of its own for each of B rows, [B, K, dim] (Wu et al.'s and
                PIRL's per-sample negatives).

        Raises:
            ValueError: if the bank has fewer slots than `num_negatives`.
        """
        if int(num_negatives) > self.num_entries:
            raise ValueError(f"MemoryBank: cannot draw {num_negatives} negatives from a bank "
                             f"of {self.num_entries} entries")
        # NOTE: uniform draws with replacement, not excluding the positive, as
        # PIRL's and Wu et al.'s AliasMethod sampler over a uniform distribution.
        seed = tf.stack([tf.constant(0 if self.seed is None else int(self.seed), tf.int64),
                         tf.convert_to_tensor(self.num_draws)])
        if batch_size is None:
            indices = tf.random.stateless_uniform((int(num_negatives),), seed, 0,
                                                  self.num_entries, dtype=tf.int32)
        else:
            # Per-sample sets for the *global* batch, the same draw on every replica, of
            # which each replica takes its own rows: under tf.distribute every image gets
            # the negatives it would get on one device.
            offset, total = distribute.replica_offset(tf.cast(batch_size, tf.int32))
            indices = tf.random.stateless_uniform(
                tf.stack([total, int(num_negatives)]), seed, 0, self.num_entries,
                dtype=tf.int32)[offset:offset + tf.cast(batch_size, tf.int32)]
        distribute.update_state(lambda: self.num_draws.assign_add(1), anchor=self.num_draws)
        return self.read(indices)

    def update(self, indices, embeddings):
        """m_i <- normalize(momentum m_i + (1 - momentum) normalize(v_i)) for each index i.

        Under a strategy, the indices and embeddings of every replica are
        gathered and written into every device copy.
        """
        indices = ops.cast(indices, "int32")
        embeddings = ops.stop_gradient(normalize(embeddings))
        indices, embeddings = distribute.cross_replica_concat((indices, embeddings))
        distribute.update_state(self._write, indices, embeddings, anchor=self.entries)

    def _write(self, indices, embeddings):
        mixed = self.momentum * self.read(indices) + (1.0 - self.momentum) * embeddings
        # NOTE: an index repeated in one batch keeps one of its updates.
        self.entries.assign(ops.scatter_update(self.entries, ops.expand_dims(indices, -1),
                                               normalize(mixed)))
        self.num_updates.assign(self.num_updates + 1)

    def compute_output_shape(self, indices_shape):
        return tuple(indices_shape) + (self.dim,)

    def get_config(self):
        config = super().get_config()
        config.update({"num_entries": self.num_entries, "dim": self.dim,
                       "momentum": self.momentum, "seed": self.seed})
        return config
