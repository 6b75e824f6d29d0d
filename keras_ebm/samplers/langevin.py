"""Langevin dynamics and its Metropolis-adjusted variant (MALA)."""

import math

import keras
import tensorflow as tf

from keras_ebm.samplers.sampler import Sampler
from keras_ebm.samplers.sampler import energy_and_gradient
from keras_ebm.samplers.sampler import metropolis_accept
from keras_ebm.seeding import fold_seed
from keras_ebm.seeding import random_normal
from keras_ebm.seeding import random_uniform


@keras.saving.register_keras_serializable(package="keras_ebm")
class Langevin(Sampler):
    """Langevin dynamics on E(x): a noisy gradient descent on the energy.

        x' = x - step_size * clip(grad_x E(x)) + noise_scale * N(0, I),

    then clamped to [clip_value_min, clip_value_max]. With
    noise_scale = sqrt(2 * step_size) (the default) this is the unadjusted
    Langevin algorithm for p(x) proportional to exp(-E(x)); with
    `metropolis=True` each move is accepted with the MALA probability

        min(1, exp(E(x) - E(x')) q(x | x') / q(x' | x)),
        q(x' | x) = N(x'; x - step_size * g(x), noise_scale^2 I),

    which makes exp(-E) exactly stationary.

    Args:
        num_steps: int, transitions per call. Defaults to 20.
        step_size: float, multiplier of the energy gradient. Defaults to 0.01.
        noise_scale: float or None, standard deviation of the injected noise.
            Defaults to None, meaning sqrt(2 * step_size).
        grad_clip: float or None, clip each gradient element to
            [-grad_clip, grad_clip]. Defaults to None.
        clip_value_min: float or None, lower clamp of the samples (data range).
        clip_value_max: float or None, upper clamp of the samples.
        metropolis: bool, apply the MALA accept/reject test. Defaults to False.
        jump_probability: float in [0, 1), MALA only: at each step, each chain
            proposes, with this probability, a point drawn uniformly from the
            box [clip_value_min, clip_value_max] instead of its Langevin move,
            accepted with probability min(1, exp(E(x) - E(x'))) (an
            independence Metropolis move: the uniform proposal's densities
            cancel). Both moves leave exp(-E) stationary, so their mixture
            does too; the jumps let chains cross the high-energy barriers
            between separated modes, which gradient moves never do. It costs
            nothing extra: the jump's E(x') is the energy that the MALA test
            computes anyway. Needs `metropolis=True` and both clip values, and
            chains that start inside the box. The acceptance that
            `sample_with_info` reports averages both kinds of move.
            Defaults to 0.0.

    Example:

    >>> sampler = Langevin(num_steps=60, step_size=0.01, clip_value_min=-4.0, clip_value_max=4.0)
    >>> samples = sampler(energy, tf.random.uniform([128, 2], -4, 4))

    Reference:
        Roberts & Tweedie, "Exponential convergence of Langevin distributions
        and their discrete approximations", Bernoulli 1996 (MALA);
        Du & Mordatch, "Implicit generation and modeling with energy based
        models", NeurIPS 2019 (clipping, clamping, decoupled noise).
    """

    def __init__(
        self,
        num_steps=20,
        step_size=0.01,
        noise_scale=None,
        grad_clip=None,
        clip_value_min=None,
        clip_value_max=None,
        metropolis=False,
        jump_probability=0.0,
    ):
        super().__init__(num_steps=num_steps)
        jump_probability = float(jump_probability)
        if not 0.0 <= jump_probability < 1.0:
            raise ValueError(f"{type(self).__name__}: jump_probability={jump_probability} "
                             "must be in [0, 1)")
        if jump_probability > 0 and not (
                metropolis and clip_value_min is not None and clip_value_max is not None
                and -math.inf < float(clip_value_min) < float(clip_value_max) < math.inf):
            raise ValueError(f"{type(self).__name__}: jump_probability > 0 needs "
                             "metropolis=True and finite clip_value_min < clip_value_max "
                             "(the box the jumps are drawn from)")
        self.jump_probability = jump_probability
        if not 0 < float(step_size) < float("inf"):
            raise ValueError(f"{type(self).__name__}: step_size={step_size} must be finite "
                             "and > 0")
        self.step_size = float(step_size)
        self.noise_scale = None if noise_scale is None else float(noise_scale)
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.clip_value_min = None if clip_value_min is None else float(clip_value_min)
        self.clip_value_max = None if clip_value_max is None else float(clip_value_max)
        self.metropolis = bool(metropolis)

    @property
    def effective_noise_scale(self):
        if self.noise_scale is None:
            return math.sqrt(2.0 * self.step_size)
        return self.noise_scale

    def _drift(self, energy, x, step_size):
        energies, gradient = energy_and_gradient(energy, x)
        if self.grad_clip is not None:
            gradient = tf.clip_by_value(gradient, -self.grad_clip, self.grad_clip)
        return energies, x - step_size * gradient

    def _clamp(self, x):
        if self.clip_value_min is not None or self.clip_value_max is not None:
            low = -float("inf") if self.clip_value_min is None else self.clip_value_min
            high = float("inf") if self.clip_value_max is None else self.clip_value_max
            x = tf.clip_by_value(x, low, high)
        return x

    def step(self, energy, x, step_index, seed=None):
        return self.transition(energy, x, self.step_size, self.effective_noise_scale, seed)

    def transition(self, energy, x, step_size, sigma, seed=None):
        """One Langevin (or MALA) move with this step size and noise std; see `step`."""
        energies, mean = self._drift(energy, x, step_size)
        x_proposed = mean + sigma * random_normal(tf.shape(x), fold_seed(seed, 0), x.dtype)
        # NOTE: clamping is applied to the proposal; with MALA the proposal
        # densities below ignore the clamp, so exactness holds only away from
        # the boundary (Du & Mordatch clamp without any correction).
        x_proposed = self._clamp(x_proposed)
        if not self.metropolis:
            return x_proposed, tf.ones(tf.shape(x)[:1], x.dtype)
        if self.jump_probability > 0:
            jumps = random_uniform(tf.shape(x)[:1], fold_seed(seed, 2),
                                   dtype=x.dtype) < self.jump_probability
            box = random_uniform(tf.shape(x), fold_seed(seed, 3), x.dtype,
                                 self.clip_value_min, self.clip_value_max)
            x_proposed = tf.where(tf.reshape(jumps, [-1] + [1] * (len(x.shape) - 1)), box,
                                  x_proposed)
        energies_proposed, mean_reverse = self._drift(energy, x_proposed, step_size)
        axes = list(range(1, len(x.shape)))
        log_q_forward = -tf.reduce_sum(tf.square(x_proposed - mean), axis=axes) / (2 * sigma**2)
        log_q_reverse = -tf.reduce_sum(tf.square(x - mean_reverse), axis=axes) / (2 * sigma**2)
        log_ratio = energies - energies_proposed + log_q_reverse - log_q_forward
        if self.jump_probability > 0:  # the uniform proposal's densities cancel
            log_ratio = tf.where(jumps, energies - energies_proposed, log_ratio)
        return metropolis_accept(x, x_proposed, log_ratio, fold_seed(seed, 1))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "step_size": self.step_size,
                "noise_scale": self.noise_scale,
                "grad_clip": self.grad_clip,
                "clip_value_min": self.clip_value_min,
                "clip_value_max": self.clip_value_max,
                "metropolis": self.metropolis,
                "jump_probability": self.jump_probability,
            }
        )
        return config
