"""Contrastive divergence (CD-k) and persistent contrastive divergence (PCD)."""

import keras
import tensorflow as tf

from keras_ebm.methods.energy_method import EnergyMethod


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

    _config_objects = ("energy", "sampler", "replay_buffer")

    def __init__(self, energy, sampler, persistent=False, replay_buffer=None, chains_per_step=None, energy_l2=0.0, **kwargs):
        super().__init__(energy, tracker_names=("loss", "energy_data", "energy_samples"), **kwargs)
        if persistent and replay_buffer is None:
            raise ValueError(
                "persistent=True needs a replay_buffer, e.g. "
                "ReplayBuffer(size=num_chains, shape=x.shape[1:])."
            )
        self.sampler = sampler
        self.persistent = bool(persistent)
        self.replay_buffer = replay_buffer
        self.chains_per_step = None if chains_per_step is None else int(chains_per_step)
        self.energy_l2 = float(energy_l2)

    def contrasted_samples(self, x_data):
        """Runs the sampler from the data (CD) or from the persistent chains (PCD)."""
        if not self.persistent:
            return self.sampler(self.energy, x_data)
        x_init, indices = self.replay_buffer.sample(self.chains_per_step)
        x_samples = self.sampler(self.energy, tf.cast(x_init, x_data.dtype))
        self.replay_buffer.update(indices, x_samples)
        return x_samples

    def train_step(self, data):
        x_data, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        # 1. Contrasted samples: k MCMC steps, no gradient through the chain.
        x_samples = tf.stop_gradient(self.contrasted_samples(x_data))
        # 2. Forward: push down E(data), push up E(samples).
        with tf.GradientTape() as tape:
            energy_data = self.energy(x_data, training=True)
            energy_samples = self.energy(x_samples, training=True)
            loss = tf.reduce_mean(energy_data) - tf.reduce_mean(energy_samples)
            if self.energy_l2 > 0.0:
                loss += self.energy_l2 * (
                    tf.reduce_mean(tf.square(energy_data)) + tf.reduce_mean(tf.square(energy_samples))
                )
        # 3. Gradients and update.
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self.update_trackers(loss=loss, energy_data=energy_data, energy_samples=energy_samples)

    def test_step(self, data):
        x_data, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.update_trackers(energy_data=self.energy(x_data))

    def get_config(self):
        config = super().get_config()
        config.update({
            "sampler": keras.saving.serialize_keras_object(self.sampler),
            "persistent": self.persistent,
            "replay_buffer": (
                None if self.replay_buffer is None
                else keras.saving.serialize_keras_object(self.replay_buffer)
            ),
            "chains_per_step": self.chains_per_step,
            "energy_l2": self.energy_l2,
        })
        return config
