"""Base class of MCMC samplers: runs one compiled `tf.while_loop` of `step`s."""

import abc
import inspect

import keras
import tensorflow as tf

from keras_ebm.seeding import fold_seed
from keras_ebm.seeding import random_uniform


def energy_and_gradient(energy, x):
    """Returns E(x) [batch] and grad_x sum E(x), with x watched by a tape."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        # One energy per example: an energy ending in Dense(1) gives [batch, 1].
        energies = tf.reshape(energy(x), tf.shape(x)[:1])
        total = tf.reduce_sum(energies)
    return energies, tape.gradient(total, x)


@keras.saving.register_keras_serializable(package="keras_ebm")
def metropolis_accept(x, x_proposed, log_ratio, seed=None):
    """Accepts each proposal with probability min(1, exp(log_ratio)).

    Returns `(x_next, acceptance)`: the proposal where accepted, else `x`, and
    the per-chain acceptance probabilities. `seed`: see `random_uniform`.
    """
    acceptance = tf.exp(tf.minimum(log_ratio, 0.0))
    accept = random_uniform(tf.shape(acceptance), seed, dtype=x.dtype) < acceptance
    mask = tf.reshape(accept, [-1] + [1] * (len(x.shape) - 1))
    return tf.where(mask, x_proposed, x), acceptance


class Sampler(abc.ABC):
    """Runs `num_steps` MCMC transitions x <- step(energy, x) in one `tf.while_loop`.

    A subclass writes only `step(energy, x, step_index, seed) -> (x,
    acceptance)`, where `acceptance` is the per-chain acceptance probability
    (ones for samplers without a Metropolis test) and `seed` is None (draw
    from TF's global RNG) or a stateless seed of that step. Given a `seed`
    ([2] ints), a call draws all its noise from it: methods pass one derived
    from their step counter, so a resumed run draws the same MCMC noise as an
    uninterrupted one. In graph mode (inside a `train_step`)
    the loop is a graph `while` op; called eagerly, the loop runs through a
    `tf.function` that is traced once per energy, never as a Python loop.

    Args:
        num_steps: int, number of transitions per call. Defaults to 1.

    Example:

    >>> sampler = Gibbs(num_steps=5)
    >>> samples = sampler(rbm, initial_visible)
    >>> samples, acceptance_rate = sampler.sample_with_info(rbm, initial_visible)

    Reference:
        Design follows keras-hub's samplers: the base class owns the loop,
        each subclass writes one step.
    """

    def __init__(self, num_steps=1):
        self.num_steps = int(num_steps)
        self._compiled_loop = None

    @abc.abstractmethod
    def step(self, energy, x, step_index, seed=None):
        """One MCMC step from `x`; returns `(x_next, accepted)` (see subclasses)."""

    def _step(self, energy, x, step_index, seed):
        # A subclass written before `seed` existed (step(energy, x, step_index)) draws
        # from TF's global generator.
        if "seed" in inspect.signature(self.step).parameters:
            return self.step(energy, x, step_index, seed=seed)
        return self.step(energy, x, step_index)

    def _loop(self, energy, x, num_steps, seed=None):
        x = tf.convert_to_tensor(x)
        acceptance_sum = tf.zeros([], x.dtype)

        def condition(i, x, acceptance_sum):
            return i < num_steps

        def body(i, x, acceptance_sum):
            x_next, acceptance = self._step(energy, x, i, fold_seed(seed, i))
            x_next = tf.ensure_shape(tf.cast(x_next, x.dtype), x.shape)
            return i + 1, x_next, acceptance_sum + tf.reduce_mean(tf.cast(acceptance, x.dtype))

        _, x, acceptance_sum = tf.while_loop(
            condition, body, (tf.constant(0), x, acceptance_sum)
        )
        acceptance_rate = acceptance_sum / tf.maximum(tf.cast(num_steps, x.dtype), 1.0)
        return tf.stop_gradient(x), acceptance_rate

    def sample_with_info(self, energy, x_init, num_steps=None, seed=None):
        """Runs the chains; returns (samples, mean acceptance rate)."""
        steps = self.num_steps if num_steps is None else num_steps
        if isinstance(steps, int) and steps == 1:
            # One transition needs no loop (CD-1, PCD-1): spares the while op.
            x_init = tf.convert_to_tensor(x_init)
            x, acceptance = self._step(energy, x_init, tf.constant(0), fold_seed(seed, 0))
            x = tf.ensure_shape(tf.cast(x, x_init.dtype), x_init.shape)
            return tf.stop_gradient(x), tf.reduce_mean(tf.cast(acceptance, x_init.dtype))
        num_steps = tf.constant(self.num_steps if num_steps is None else num_steps, tf.int32)
        if tf.executing_eagerly():
            if self._compiled_loop is None:
                self._compiled_loop = tf.function(self._loop)
            return self._compiled_loop(energy, tf.convert_to_tensor(x_init), num_steps, seed)
        return self._loop(energy, x_init, num_steps, seed)

    def sample(self, energy, x_init, num_steps=None, seed=None):
        """Runs `num_steps` (default `self.num_steps`) transitions from `x_init`."""
        return self.sample_with_info(energy, x_init, num_steps, seed)[0]

    def __call__(self, energy, x_init, num_steps=None, seed=None):
        return self.sample(energy, x_init, num_steps, seed)

    def get_config(self):
        return {"num_steps": self.num_steps}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
