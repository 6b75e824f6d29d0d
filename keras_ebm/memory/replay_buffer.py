"""A buffer of persistent MCMC chains (PCD / replay buffer), held in variables."""

import keras
import tensorflow as tf

from keras_ebm import distribute
from keras_ebm.seeding import fold_seed
from keras_ebm.seeding import random_normal
from keras_ebm.seeding import random_uniform


def _shuffle(values, seed):
    """A random permutation of `values` (1-D): sorted by uniform keys, which XLA compiles
    (it has no kernel for StatelessShuffle, so `jit_compile=True` needs this form)."""
    keys = random_uniform(tf.shape(values)[:1], None if seed is None else fold_seed(seed, 0))
    return tf.gather(values, tf.argsort(keys))


@keras.saving.register_keras_serializable(package="keras_ebm")
class ReplayBuffer(keras.layers.Layer):
    """Persistent chains for PCD, stored in a non-trainable variable.

    `sample(n)` draws n distinct chains; each is replaced by fresh noise with
    probability `reinit_fraction` (Du & Mordatch's 5% restarts). After the
    sampler has advanced them, `update(indices, x)` writes them back. With
    `reinit_fraction=0` and `n == size`, this is Tieleman's PCD with a fixed
    set of chains.

        x_init = where(u < reinit_fraction, noise, chains[indices]),  u ~ U(0, 1).

    Because the chains live in a variable, checkpoints and `.keras` files
    save them, and training resumes from the same chains.

    Under tf.distribute with R replicas the chains are split into R equal
    shards: replica r samples (and advances) only its shard, and `update`
    gathers every replica's chains and writes all of them into every device
    copy (`keras_ebm.distribute.update_state`). So R replicas advance the
    same `size` chains per step as one device does. `size` (and
    `num_samples`) must then be divisible by R.

    Args:
        size: int, number of chains.
        shape: tuple, shape of one chain state (e.g. `(64,)` or `(28, 28, 1)`).
        reinit_fraction: float in [0, 1], probability that a drawn chain
            restarts from noise. Defaults to 0.05.
        noise: `"uniform"` (U(minval, maxval)), `"bernoulli"` ({0, 1} with
            probability 1/2) or `"normal"` (N(0, 1)). Defaults to `"uniform"`.
        minval: float, lower end of the uniform noise. Defaults to -1.0.
        maxval: float, upper end of the uniform noise. Defaults to 1.0.
        track_energies: bool, also keep each chain's energy when it was last
            written (`update(..., energies=...)`, `stored_energies`), for
            `ContrastiveDivergence(reweight_chains=True)`. Defaults to False.
        **kwargs: base layer keyword arguments.

    Example:

    >>> buffer = ReplayBuffer(size=10000, shape=(2,), minval=-4.0, maxval=4.0)
    >>> x_init, indices = buffer.sample(128)
    >>> buffer.update(indices, sampler(energy, x_init))

    Reference:
        Tieleman, "Training restricted Boltzmann machines using approximations
        to the likelihood gradient", ICML 2008; Du & Mordatch, "Implicit
        generation and modeling with energy based models", NeurIPS 2019.
    """

    def __init__(self, size, shape, reinit_fraction=0.05, noise="uniform", minval=-1.0,
                 maxval=1.0, track_energies=False, **kwargs):
        super().__init__(**kwargs)
        if noise not in ("uniform", "bernoulli", "normal"):
            raise ValueError(f"noise must be 'uniform', 'bernoulli' or 'normal', got {noise!r}")
        if not 0.0 <= reinit_fraction <= 1.0:
            raise ValueError(f"reinit_fraction must be in [0, 1], got {reinit_fraction}")
        self.size = int(size)
        self.shape = tuple(int(s) for s in shape)
        self.reinit_fraction = float(reinit_fraction)
        self.noise = noise
        self.minval = float(minval)
        self.maxval = float(maxval)
        self.chains = self.add_weight(
            name="chains",
            shape=(self.size,) + self.shape,
            initializer=lambda shape, dtype=None: self.draw_noise(shape[0]),
            trainable=False,
            aggregation="only_first_replica",
        )
        self.track_energies = bool(track_energies)
        if self.track_energies:  # E(chain) when written, and whether it was written at all
            self.energies = self.add_weight(name="energies", shape=(self.size,),
                                            initializer="zeros", trainable=False,
                                            aggregation="only_first_replica")
            self.energy_known = self.add_weight(name="energy_known", shape=(self.size,),
                                                initializer="zeros", trainable=False,
                                                aggregation="only_first_replica")
            # Each chain's importance log-weight, carried between visits.
            self.log_weights = self.add_weight(name="log_weights", shape=(self.size,),
                                               initializer="zeros", trainable=False,
                                               aggregation="only_first_replica")
        self.built = True

    def draw_noise(self, num_samples, seed=None):
        """Fresh chain states, shape [num_samples, *shape] (stateless from `seed` if given)."""
        shape = tf.concat([[num_samples], self.shape], axis=0)
        if self.noise == "uniform":
            return random_uniform(shape, seed, minval=self.minval, maxval=self.maxval)
        if self.noise == "normal":
            return random_normal(shape, seed)
        return tf.cast(random_uniform(shape, seed) < 0.5, tf.float32)

    def noise_log_density(self, x):
        """log q(x) of the restart noise, up to a constant: [n] (0 for uniform and bernoulli)."""
        x = tf.reshape(tf.convert_to_tensor(x), [tf.shape(x)[0], -1])
        if self.noise == "normal":
            return -0.5 * tf.reduce_sum(tf.square(x), axis=-1)
        return tf.zeros(tf.shape(x)[:1], x.dtype)

    def _replica_shard(self):
        """(offset, count) of this replica's chains under tf.distribute, else None."""
        replicas = distribute.num_replicas_in_sync()
        if replicas == 1 or tf.distribute.get_replica_context() is None:
            return None
        if self.size % replicas:
            raise ValueError(f"ReplayBuffer: {self.size} chains cannot be split evenly over "
                             f"{replicas} replicas; use a multiple of {replicas}")
        count = self.size // replicas
        return distribute.replica_id() * count, count

    def sample(self, num_samples=None, seed=None):
        """Draws `num_samples` distinct chains (all when None); returns (x, indices).

        See `sample_with_restarts`, which also says which chains restarted.
        """
        x, indices, _ = self.sample_with_restarts(num_samples, seed)
        return x, indices

    def sample_with_restarts(self, num_samples=None, seed=None):
        """Draws `num_samples` distinct chains (all when None); returns (x, indices, restarted).

        With `seed` ([2] ints) every draw is stateless, a function of the seed.

        When every chain is drawn, `indices` is None (read as "all chains" by
        `update`), which spares a gather and a scatter per update.
        `restarted` [n] is True for the chains that restart from noise. Under
        tf.distribute each replica draws `num_samples / replicas` chains of
        its own shard (all of its shard when None).
        """
        chains = tf.convert_to_tensor(self.chains)
        shard = self._replica_shard()
        if shard is not None:
            offset, count = shard
            replicas = self.size // count
            if num_samples is None or num_samples == self.size:
                indices = offset + tf.range(count)
            else:
                if num_samples % replicas:
                    raise ValueError(f"ReplayBuffer: num_samples={num_samples} cannot be split "
                                     f"evenly over {replicas} replicas")
                indices = offset + _shuffle(tf.range(count), seed)[: num_samples // replicas]
            x = tf.gather(chains, indices)
        elif num_samples is None or num_samples == self.size:
            indices = None
            x = chains
        else:
            indices = _shuffle(tf.range(self.size), seed)[:num_samples]
            x = tf.gather(chains, indices)
        count = tf.shape(x)[0]
        restarted = tf.zeros([count], tf.bool)
        if self.reinit_fraction > 0.0:
            restarted = random_uniform([count], fold_seed(seed, 1)) < self.reinit_fraction
            restart = tf.reshape(restarted, [-1] + [1] * len(self.shape))
            x = tf.where(restart, self.draw_noise(count, fold_seed(seed, 2)), x)
        return x, indices, restarted

    def update(self, indices, x, energies=None, log_weights=None):
        """Writes the advanced chains back: chains[indices] = x (all chains when None).

        With `track_energies`, `energies` [n] (their energies now) and
        `log_weights` [n] (their importance log-weights; None: 0) are kept
        beside them. Under tf.distribute the chains of every replica are
        gathered and written into every device copy.
        """
        parts = (indices, tf.cast(x, self.chains.dtype))
        if self.track_energies and energies is not None:
            energies = tf.cast(tf.reshape(energies, [-1]), self.energies.dtype)
            parts += (energies, tf.zeros_like(energies) if log_weights is None else
                      tf.cast(tf.reshape(log_weights, [-1]), self.energies.dtype))
        if self._replica_shard() is not None:
            parts = distribute.cross_replica_concat(parts)
            distribute.update_state(self._write, *parts, anchor=self.chains)
        else:
            self._write(*parts)

    def stored_energies(self, indices=None):
        """`(energies, known, log_weights)` [n] of the chains at `indices` (all when None).

        As last written; `known` is False for a chain whose energy was never
        written (its log-weight is then 0).
        """
        if not self.track_energies:
            raise ValueError("ReplayBuffer.stored_energies needs track_energies=True")
        values = [tf.convert_to_tensor(v)
                  for v in (self.energies, self.energy_known, self.log_weights)]
        if indices is not None:
            values = [tf.gather(v, indices) for v in values]
        return values[0], values[1] > 0.5, values[2]

    @staticmethod
    def _scatter(variable, indices, values):
        if indices is None:
            variable.assign(values)
        else:
            variable.assign(tf.tensor_scatter_nd_update(tf.convert_to_tensor(variable),
                                                        indices[:, None], values))

    def _write(self, indices, x, energies=None, log_weights=None):
        self._scatter(self.chains, indices, x)
        if energies is not None:
            self._scatter(self.energies, indices, energies)
            self._scatter(self.energy_known, indices, tf.ones_like(energies))
            self._scatter(self.log_weights, indices, log_weights)

    def call(self, num_samples=None):
        return self.sample(num_samples)[0]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "size": self.size,
                "shape": self.shape,
                "reinit_fraction": self.reinit_fraction,
                "noise": self.noise,
                "minval": self.minval,
                "maxval": self.maxval,
                "track_energies": self.track_energies,
            }
        )
        return config
