"""Contrastive divergence (CD-k) and persistent contrastive divergence (PCD)."""

import random

import keras
import tensorflow as tf

from keras_ebm import distribute
from keras_ebm.methods.energy_method import EnergyMethod
from keras_ebm.samplers.annealed import systematic_resample
from keras_ebm.samplers.gibbs import Gibbs
from keras_ebm.seeding import fold_seed

# `reweight_chains`: the drawn chains are resampled when their effective sample size falls
# under this fraction of their number (the usual sequential Monte Carlo rule).
RESAMPLE_BELOW = 0.5


@keras.saving.register_keras_serializable(package="keras_ebm")
class ContrastiveDivergence(EnergyMethod):
    """Pushes the energy of data down and the energy of MCMC samples up.

    The maximum-likelihood gradient of p(x) = exp(-E(x)) / Z is
    d/dθ [-log p(x)] = dE(x)/dθ - E_{x'~p}[dE(x')/dθ]; CD replaces the model
    expectation by samples x' from a short MCMC run:

        x'   = sampler^k(x_init)    x_init = data (CD-k) or persistent chains (PCD)
        loss = mean E(x) - mean E(stop_gradient(x'))
               + energy_l2 * (mean E(x)^2 + mean E(x')^2)

    With `persistent=True` the chains start where the previous update left
    them (a `ReplayBuffer`), so they track the model distribution.

    Args:
        energy: a layer or model mapping x to energies of shape [batch], e.g.
            `keras_ebm.energies.RBM` or `MLPEnergy`.
        sampler: a `keras_ebm.samplers.Sampler` (Gibbs for the RBM, Langevin
            for continuous data); its `num_steps` is k.
        persistent: bool, start the chains from `replay_buffer` (PCD)
            instead of the data batch (CD-k). Defaults to False.
        replay_buffer: a `keras_ebm.memory.ReplayBuffer`; required when
            `persistent=True`. Defaults to None.
        chains_per_step: int or None, chains drawn from the buffer per update;
            None uses every chain in the buffer (Tieleman's PCD). Defaults to None.
        energy_l2: float, weight of the energy-magnitude penalty of Du &
            Mordatch, which keeps energies near zero. Defaults to 0.0.
        reweight_chains: bool, PCD only: before the sampler moves them, the
            drawn chains' importance weights grow by exp(-(E_now(x) -
            E_then(x))), the change of the model's density at each chain
            since the chain was last written, and the chains are redrawn in
            proportion (systematic resampling) when the weights degenerate.
            Local MCMC moves cannot carry chains between separated modes, so
            as the energy changes the chains' shares of the modes drift from
            the model's; the weights move them, a sequential Monte Carlo
            population over the parameter updates, resampled when its
            weights degenerate (chains new or restarted from noise:
            weighted as draws of the noise). The weights act through the
            resampling only; the loss's negative phase stays the plain mean
            over the chains. Needs a `ReplayBuffer(track_energies=True)`;
            not with `epoch_dataset`. Defaults to False.
        seed: int or None, seed of the MCMC noise; update t draws from the
            stateless seed (seed, t), so a resumed run draws the same noise.
            None: drawn from Python's `random` (which
            `keras.utils.set_random_seed` seeds). Saved in the config.
        **kwargs: `keras.Model` keyword arguments (e.g. `name`).

    Example:

    >>> rbm = keras_ebm.energies.RBM(64, 16)
    >>> pcd = ContrastiveDivergence(
    ...     rbm, Gibbs(num_steps=1), persistent=True,
    ...     replay_buffer=ReplayBuffer(200, (64,), reinit_fraction=0.0, noise="bernoulli"))
    >>> pcd.compile(optimizer="adam")
    >>> pcd.fit(x_train, batch_size=20, epochs=10)
    >>> pcd.energy(x_test)    # free energies

    Reference:
        Hinton, "Training products of experts by minimizing contrastive
        divergence", Neural Computation 2002; Tieleman, "Training restricted
        Boltzmann machines using approximations to the likelihood gradient",
        ICML 2008; Du & Mordatch, "Implicit generation and modeling with
        energy based models", NeurIPS 2019.
    """

    tracker_names = ("loss", "energy_data", "energy_samples")
    config_objects = ("energy", "sampler", "replay_buffer")

    def __init__(self, energy, sampler, persistent=False, replay_buffer=None, chains_per_step=None,
                 energy_l2=0.0, reweight_chains=False, seed=None, **kwargs):
        super().__init__(energy, **kwargs)
        if persistent and replay_buffer is None:
            raise ValueError(
                "persistent=True needs a replay_buffer, e.g. "
                "ReplayBuffer(size=num_chains, shape=x.shape[1:]).")
        self.sampler = sampler
        self.persistent = bool(persistent)
        self.replay_buffer = replay_buffer
        self.chains_per_step = None if chains_per_step is None else int(chains_per_step)
        self.energy_l2 = float(energy_l2)
        self.reweight_chains = bool(reweight_chains)
        if self.reweight_chains and not (self.persistent and replay_buffer.track_energies):
            raise ValueError("reweight_chains=True needs persistent=True and "
                             "ReplayBuffer(..., track_energies=True)")
        # The MCMC noise of update t is a function of (seed, t): see `step_seed`.
        self.seed = int(random.randrange(2**31)) if seed is None else int(seed)
        self.build_now(tuple(replay_buffer.shape) if replay_buffer is not None else None)

    def step_seed(self):
        """The stateless seed of this update's MCMC noise: (seed, update count, replica).

        The update count is the optimizer's, which checkpoints carry, so a run
        resumed after a kill draws the same noise as an uninterrupted one.
        """
        optimizer = getattr(self, "optimizer", None)
        step = (tf.cast(optimizer.iterations, tf.int64) if optimizer is not None
                else tf.constant(0, tf.int64))
        seed = tf.stack([tf.constant(self.seed, tf.int64), step])
        return fold_seed(seed, tf.cast(distribute.replica_id(), tf.int64))

    def contrasted_samples(self, x_data, training=True):
        """Runs the sampler from the data (CD) or from the persistent chains (PCD).

        The chains are kept only in training (`training=True`).
        """
        seed = self.step_seed()
        if not self.persistent:
            return self.sampler(self.energy, x_data, seed=fold_seed(seed, 0))
        x_init, indices, restarted = self.replay_buffer.sample_with_restarts(
            self.chains_per_step, seed=fold_seed(seed, 1))
        x_init = tf.cast(x_init, x_data.dtype)
        log_weights = None
        if self.reweight_chains:
            x_init, log_weights = self.reweighted(x_init, indices, restarted,
                                                  fold_seed(seed, 2))
        x_samples = self.sampler(self.energy, x_init, seed=fold_seed(seed, 0))
        if training:
            energies = self.energy(x_samples) if self.reweight_chains else None
            self.replay_buffer.update(indices, x_samples, energies, log_weights)
        return x_samples

    def reweighted(self, x_init, indices, restarted, seed):
        """`(x, log_weights)`: the drawn chains' importance weights; see `reweight_chains`.

        A chain whose energy E_then was written before follows the density
        of then, up to its carried log-weight: that grows by E_then - E_now.
        A chain never written (or restarted) is a draw of the buffer's noise
        q: its log-weight is -E_now - log q(x). Each group's weights are
        divided by its estimate of its normaliser (Z_now / Z_then, and Z_now
        over q's). A chain of non-finite energy gets weight 0 (its log-weight
        is kept at -80). When the effective sample size of the drawn chains
        falls under `RESAMPLE_BELOW` of their number, they are redrawn in
        proportion to their weights, which are then equal. The weights steer
        this resampling only: the loss averages the chains' energies
        unweighted, a bias that the resampling bounds.
        """
        stored, known, carried = self.replay_buffer.stored_energies(indices)
        known = tf.logical_and(known, tf.logical_not(restarted))
        now = self.energy(x_init)
        carried = tf.where(known, tf.cast(carried, now.dtype), 0.0)
        noise = tf.cast(self.replay_buffer.noise_log_density(x_init), now.dtype)
        log_weights = tf.where(known, carried + tf.cast(stored, now.dtype) - now, -now - noise)
        # A chain of non-finite energy gets weight 0.
        minus_inf = tf.constant(-float("inf"), now.dtype)
        log_weights = tf.where(tf.math.is_finite(log_weights), log_weights, minus_inf)

        def log_sum(values, mask):
            return tf.reduce_logsumexp(tf.where(mask, values, minus_inf))

        # Each group's weights over its estimate of its normaliser: for the chains written
        # before, sum(carried * increment) / sum(carried) estimates Z_now / Z_then; for the
        # noise's draws, their mean weight estimates Z_now over the noise's normaliser.
        fresh = tf.logical_not(known)
        count = tf.reduce_sum(tf.cast(fresh, now.dtype))
        log_weights -= tf.where(known, log_sum(log_weights, known) - log_sum(carried, known),
                                log_sum(log_weights, fresh) - tf.math.log(
                                    tf.maximum(count, 1.0)))
        log_weights = tf.where(tf.math.is_finite(log_weights), log_weights, minus_inf)
        if_none_finite = tf.reduce_all(tf.equal(log_weights, minus_inf))
        log_weights = tf.where(if_none_finite, tf.zeros_like(log_weights), log_weights)
        log_weights -= tf.reduce_logsumexp(log_weights)  # normalised: they sum to 1
        count = tf.cast(tf.shape(log_weights)[0], now.dtype)
        effective = tf.exp(-tf.reduce_logsumexp(2.0 * log_weights)) / count
        resample = effective < RESAMPLE_BELOW
        x = tf.cond(resample, lambda: systematic_resample(x_init, log_weights, seed),
                    lambda: tf.identity(x_init))
        log_weights = tf.where(resample, tf.zeros_like(log_weights),
                               log_weights + tf.math.log(count))  # mean weight 1
        return x, tf.maximum(log_weights, -80.0)  # finite, for the state's variable

    def prepare(self, data, training):
        x_data = super().prepare(data, training)
        # 1. Contrasted samples: k MCMC steps, no gradient through the chain.
        return x_data, tf.stop_gradient(self.contrasted_samples(x_data, training))

    def train_step(self, data):
        # NOTE: an `epoch_dataset` element (one whole epoch of an RBM) runs
        # `train_epoch`, the same update per minibatch inside one loop.
        if isinstance(data, dict) and "minibatches" in data:
            return self.train_epoch(data)
        return super().train_step(data)

    def contrastive_loss(self, inputs, training):
        x_data, x_samples = inputs
        # 2. One forward pass over [data; samples] (as Du & Mordatch's code does).
        energies = self.energy(tf.concat([x_data, tf.cast(x_samples, x_data.dtype)], 0),
                               training=training)
        num_data = tf.shape(x_data)[0]
        energy_data, energy_samples = energies[:num_data], energies[num_data:]
        # 3. Push down E(data), push up E(samples).
        loss = tf.reduce_mean(energy_data) - tf.reduce_mean(energy_samples)
        if self.energy_l2 > 0.0:
            loss += self.energy_l2 * (tf.reduce_mean(tf.square(energy_data))
                                      + tf.reduce_mean(tf.square(energy_samples)))
        return loss, {"energy_data": energy_data, "energy_samples": energy_samples}

    def xla_blocks_on_cpu(self):
        # An RBM with Gibbs: `fit`'s blocks of minibatches run as one XLA program with
        # ThreeFry draws (see `Method.make_train_function`).
        try:
            self.check_epoch_program()
        except ValueError:
            return False
        return True

    # -- One whole epoch per train step (RBM + Gibbs) ---------------------------------------
    def check_epoch_program(self):
        """Raises ValueError unless `epoch_dataset` / `train_epoch` apply to this model."""
        energy = self.energy
        if not (hasattr(energy, "hidden_probabilities") and hasattr(energy, "sample_hidden")
                and hasattr(energy, "sample_visible") and isinstance(self.sampler, Gibbs)):
            raise ValueError("epoch_dataset/train_epoch need an RBM-like energy "
                             "(hidden_probabilities, sample_hidden, sample_visible) and a Gibbs "
                             "sampler; got "
                             f"{type(energy).__name__} with {type(self.sampler).__name__}")
        if self.reweight_chains:
            raise ValueError("epoch_dataset/train_epoch do not reweight the chains: use "
                             "reweight_chains=False, or fit without the epoch program")
        if self.persistent and (self.chains_per_step not in (None, self.replay_buffer.size)
                                or self.replay_buffer.reinit_fraction > 0.0):
            raise ValueError("epoch_dataset/train_epoch advance every persistent chain each "
                             "update: use chains_per_step=None and a ReplayBuffer with "
                             "reinit_fraction=0")

    def epoch_dataset(self, x, batch_size, seed=0, initial_epoch=0, epochs=None,
                      steps_per_epoch=None):
        """A `tf.data.Dataset` whose element e is all of epoch e, for `train_epoch`.

        Epoch e shuffles `x` with the stateless seed (seed, e), cuts it into
        `len(x) // batch_size` minibatches (the remainder is dropped) and
        draws the uniform noise of every Gibbs half-step of the epoch in one
        vectorised op. Fitting on it with `steps_per_epoch=1` runs one whole
        epoch per train step, which `jit_compile=True` turns into a single
        XLA program: for a small RBM this removes the per-minibatch dispatch
        cost that dominates `fit` (see `tools/benchmark.py --method=pcd_rbm`).

        Args:
            x: array [num_examples, num_visible] of binary data.
            batch_size: int, examples per parameter update.
            seed: int, seed of the shuffles and of the Gibbs noise. Defaults to 0.
            initial_epoch: int, first epoch to produce (a resumed run). Defaults to 0.
            epochs: int or None, last epoch (exclusive); None repeats forever.
            steps_per_epoch: int or None, minibatches (updates) per epoch; None
                (and at most) `len(x) // batch_size`.

        Returns:
            A dataset of dicts {"minibatches": [S, batch, D], "hidden_uniforms":
            [S, k, chains, H], "visible_uniforms": [S, k, chains, D]}.

        Example:

        >>> pcd.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=True)
        >>> pcd.fit(pcd.epoch_dataset(x_train, batch_size=20), epochs=200, steps_per_epoch=1)
        """
        self.check_epoch_program()
        x = tf.convert_to_tensor(x, tf.float32)
        num_examples, num_visible = int(x.shape[0]), int(x.shape[1])
        steps = num_examples // int(batch_size)
        if steps < 1:
            raise ValueError(f"batch_size={batch_size} is larger than the {num_examples} examples")
        if steps_per_epoch is not None:
            steps = min(steps, int(steps_per_epoch))
        num_chains = self.replay_buffer.size if self.persistent else int(batch_size)
        k = self.sampler.num_steps
        num_hidden = int(self.energy.hidden_bias.shape[0])

        def one_epoch(epoch):
            epoch_seed = tf.stack([tf.cast(seed, tf.int64), epoch])
            order = tf.random.experimental.stateless_shuffle(tf.range(num_examples), epoch_seed)
            minibatches = tf.reshape(tf.gather(x, order[: steps * batch_size]),
                                     [steps, batch_size, num_visible])
            noise_seeds = tf.random.experimental.stateless_split(epoch_seed, 2)
            return {"minibatches": minibatches,
                    "hidden_uniforms": tf.random.stateless_uniform(
                        [steps, k, num_chains, num_hidden], noise_seeds[0]),
                    "visible_uniforms": tf.random.stateless_uniform(
                        [steps, k, num_chains, num_visible], noise_seeds[1])}

        stop = 2**62 if epochs is None else int(epochs)
        return tf.data.Dataset.range(int(initial_epoch), stop).map(one_epoch).prefetch(1)

    def train_epoch(self, data):
        """One parameter update per minibatch of `data` (an `epoch_dataset` element), in one loop.

        Equivalent to `train_step` on each minibatch in turn, with the Gibbs
        noise taken from `data` instead of drawn op by op.
        """
        self.check_epoch_program()
        minibatches = data["minibatches"]
        hidden_uniforms, visible_uniforms = data["hidden_uniforms"], data["visible_uniforms"]
        num_steps = self.sampler.num_steps
        mean_field = getattr(self.sampler, "mean_field_visible", False)

        def body(i):
            x_data = tf.cast(minibatches[i], self.compute_dtype)
            x = (tf.cast(tf.convert_to_tensor(self.replay_buffer.chains), x_data.dtype)
                 if self.persistent else x_data)
            for step in range(num_steps):
                hidden = self.energy.sample_hidden(x, hidden_uniforms[i, step])
                if mean_field and step == num_steps - 1:
                    x = self.energy.visible_probabilities(hidden)
                else:
                    x = self.energy.sample_visible(hidden, visible_uniforms[i, step])
            x = tf.stop_gradient(x)
            if self.persistent:
                self.replay_buffer.update(None, x)
            self.update_trackers(*self.update((x_data, x)))
            return i + 1

        tf.while_loop(lambda i: i < tf.shape(minibatches)[0], body, [tf.constant(0)])
        return {tracker.name: tracker.result() for tracker in self.metrics}


    def get_config(self):
        return {**super().get_config(), "persistent": self.persistent,
                "chains_per_step": self.chains_per_step, "energy_l2": self.energy_l2,
                "reweight_chains": self.reweight_chains, "seed": self.seed}
