"""Annealed Langevin dynamics: Langevin on E / T_l for temperatures falling to T."""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_ebm.samplers.langevin import Langevin
from keras_ebm.seeding import fold_seed
from keras_ebm.seeding import random_uniform


def systematic_resample(x, log_weights, seed=None):
    """x redrawn in proportion to exp(log_weights) by systematic resampling, same length.

    Each row i is copied about N w_i / sum(w) times, with one uniform offset
    for all of them (`seed`: stateless [2] ints, or None). Rows of
    non-finite log-weight get weight 0; with none finite, x is returned as
    it is.

    Example:

    >>> systematic_resample(tf.constant([[0.0], [1.0]]), tf.math.log([0.0, 1.0]), [0, 1]).numpy()
    array([[1.],
           [1.]], dtype=float32)

    Reference:
        Douc & Cappé, "Comparison of resampling schemes for particle
        filtering", ISPA 2005.
    """
    log_weights = tf.cast(tf.reshape(log_weights, [-1]), tf.float64)
    log_weights = tf.where(tf.math.is_finite(log_weights), log_weights,
                           tf.constant(-float("inf"), tf.float64))
    largest = tf.reduce_max(log_weights)

    def redraw():
        weights = tf.exp(log_weights - largest)
        cumulative = tf.cumsum(weights / tf.reduce_sum(weights))
        count = tf.shape(x)[0]
        offset = random_uniform([], None if seed is None else fold_seed(seed, 3), tf.float64)
        positions = (tf.cast(tf.range(count), tf.float64) + offset) / tf.cast(count, tf.float64)
        indices = tf.minimum(tf.searchsorted(cumulative, positions, side="right"), count - 1)
        return tf.gather(x, indices)

    return tf.cond(tf.math.is_finite(largest), redraw, lambda: tf.identity(x))


@keras.saving.register_keras_serializable(package="keras_ebm")
class AnnealedLangevin(Langevin):
    """Langevin chains on p_T(x) ∝ exp(-E(x) / T), started hot and cooled to T.

    The chains first run on E / T_1 with T_1 = `start_factor` * T, where the
    density is almost uniform over the box, then on E / T_l for `num_levels`
    temperatures falling geometrically to T, with `steps_per_level` Langevin
    steps each (Neal 2001; Song & Ermon 2019). The chains end where the
    density puts its mass as it sharpens, not where they happened to start;
    the last level samples p_T.

    At level l the step is x' = x - eps_l grad E / T_l + sqrt(2 eps_l) N(0, I),
    which keeps exp(-E / T_l) stationary. With `scale_step` (the default)
    eps_l = step_size * T_l / T, as noise-conditional score networks scale
    their step with the noise variance: the drift eps_l / T_l stays that of
    the last level and the noise is sqrt(T_l / T) times larger. Without it,
    eps_l = step_size at every level. With `metropolis=True` each move is
    MALA and the last level is exact for p_T up to the clamp.

    Local moves cannot carry mass between modes once the barriers between
    them have risen, so without resampling each mode keeps the chains that
    fell into its basin while the density was still flat: the modes' masses
    follow their basins' volumes, not p_T. With `resample=True` the chains
    are a sequential Monte Carlo population (Del Moral, Doucet & Jasra 2006):
    at the start of each level after the first, each chain is weighted by
    exp(-E(x) (1/T_l - 1/T_{l-1})), the ratio of the new density to the old
    one, and the population is redrawn by systematic resampling before the
    level's Langevin moves. The chains then follow p_T's own mode masses,
    good or bad (a test checks a two-mode mixture's 0.8 / 0.2 split),
    provided `x_init` roughly follows the first level's near-flat density
    exp(-E / T_1) (uniform noise over the box does; no weight is applied
    before the first level). Chains of non-finite energy get weight 0. The
    weights spread more as the dimension grows, and every resampling then
    keeps fewer distinct chains: resampling is meant for low-dimensional
    energies, such as the 2-D toys.

    Measured on the energies of score matching on the 2-D rings
    (`keras_ebm.evaluation.draw_samples`, 2000 chains, 10 levels of 100
    steps of 0.01, MALA): the samples' MMD to held-out points is 3.1x the
    floor of two held-out draws, against 192x for 500 plain Langevin steps
    at T = 1.

    Args:
        temperature: float, the final temperature T. Defaults to 1.0.
        num_levels: int, temperatures from start_factor * T down to T.
            Defaults to 10.
        steps_per_level: int, Langevin steps at each temperature. Defaults to 100.
        start_factor: float >= 1, the first temperature over T. Defaults to 100.
        step_size: float, eps at the last level (T). Defaults to 0.01.
        noise_scale: float or None, the noise std at the last level;
            None: sqrt(2 * step_size).
        grad_clip, clip_value_min, clip_value_max, metropolis, jump_probability:
            see `Langevin`.
        scale_step: bool, scale the step with T_l / T. Defaults to True.
        resample: bool, reweight and resample the chains between levels.
            Defaults to False.

    Example:

    >>> sampler = AnnealedLangevin(temperature=0.8, clip_value_min=-4.0, clip_value_max=4.0)
    >>> samples = sampler(energy, tf.random.uniform([2000, 2], -4.0, 4.0), seed=[0, 1])

    Reference:
        Neal, "Annealed importance sampling", Statistics and Computing 2001;
        Del Moral, Doucet & Jasra, "Sequential Monte Carlo samplers", JRSS B 2006;
        Song & Ermon, "Generative modeling by estimating gradients of the data
        distribution", NeurIPS 2019 (annealed Langevin on a learned score).
    """

    def __init__(self, temperature=1.0, num_levels=10, steps_per_level=100, start_factor=100.0,
                 step_size=0.01, noise_scale=None, grad_clip=None, clip_value_min=None,
                 clip_value_max=None, metropolis=False, scale_step=True, resample=False,
                 jump_probability=0.0):
        if not temperature > 0 or not math.isfinite(temperature):
            raise ValueError(f"AnnealedLangevin: temperature={temperature} must be > 0")
        if not start_factor >= 1:
            raise ValueError(f"AnnealedLangevin: start_factor={start_factor} must be >= 1")
        if int(num_levels) < 1 or int(steps_per_level) < 1:
            raise ValueError("AnnealedLangevin: num_levels and steps_per_level must be >= 1")
        super().__init__(num_steps=int(num_levels) * int(steps_per_level), step_size=step_size,
                         noise_scale=noise_scale, grad_clip=grad_clip,
                         clip_value_min=clip_value_min, clip_value_max=clip_value_max,
                         metropolis=metropolis, jump_probability=jump_probability)
        self.temperature = float(temperature)
        self.num_levels = int(num_levels)
        self.steps_per_level = int(steps_per_level)
        self.start_factor = float(start_factor)
        self.scale_step = bool(scale_step)
        self.resample = bool(resample)

    def temperatures(self):
        """The `num_levels` temperatures, from start_factor * T down to T."""
        return self.temperature * np.geomspace(self.start_factor, 1.0, self.num_levels)

    def _ratio(self, level, dtype):
        # T_l / T = start_factor ** (1 - l / (L - 1)).
        fraction = 1.0 - tf.cast(level, tf.float32) / max(self.num_levels - 1, 1)
        return tf.cast(tf.pow(self.start_factor, fraction), dtype)

    def _resample(self, energy, x, level, seed):
        # Weights exp(-E (1/T_l - 1/T_{l-1})), then systematic resampling.
        energies = tf.reshape(energy(x), tf.shape(x)[:1])
        beta_step = (1.0 / self._ratio(level, x.dtype) - 1.0 / self._ratio(level - 1, x.dtype))
        return systematic_resample(x, -energies * beta_step / self.temperature, seed)

    def step(self, energy, x, step_index, seed=None):
        level = step_index // self.steps_per_level
        ratio = self._ratio(level, x.dtype)  # T_l / T
        if self.resample and self.num_levels > 1:
            starts_level = tf.logical_and(level > 0, step_index % self.steps_per_level == 0)
            x = tf.cond(starts_level, lambda: self._resample(energy, x, level, seed),
                        lambda: tf.identity(x))
        step_size = self.step_size * ratio if self.scale_step else self.step_size
        sigma = self.effective_noise_scale * (tf.sqrt(ratio) if self.scale_step else 1.0)
        return self.transition(lambda z: energy(z) / (self.temperature * ratio), x, step_size,
                               sigma, seed=fold_seed(seed, 2))

    def get_config(self):
        config = super().get_config()
        config.pop("num_steps")
        config.update({"temperature": self.temperature, "num_levels": self.num_levels,
                       "steps_per_level": self.steps_per_level,
                       "start_factor": self.start_factor, "scale_step": self.scale_step,
                       "resample": self.resample})
        return config


@keras.saving.register_keras_serializable(package="keras_ebm")
class NoiseAnnealedLangevin(Langevin):
    """Song & Ermon's annealed Langevin over the levels of a noise-conditional energy.

    For each noise level sigma_l of `sigmas`, from the largest down,
    `steps_per_level` Langevin moves on exp(-E(x, sigma_l) / T) with step
    eps_l = step_factor * sigma_l^2 and noise sqrt(2 eps_l): the step
    follows the width of the level's density. The energy is a
    `keras_ebm.energies.NoiseConditionalEnergy` (anything with
    `at(x, sigma)`). At the largest levels the blurred modes overlap and the
    chains spread over them as the energy says; as sigma falls the modes
    separate and each keeps its chains. With `metropolis=True` (the default)
    each move is MALA, exact for its level up to the clamp: unadjusted
    steps on a learned energy drift (on the rings, with unadjusted steps
    the inner ring lost a third of its chains between sigma 0.9 and 0.4,
    where the energy itself kept its mass within 0.02).

    Args:
        sigmas: the energy's noise levels, decreasing (`energy.sigmas`).
        steps_per_level: int >= 1, moves at each level. Defaults to 100.
        step_factor: float > 0, eps_l / sigma_l^2. Defaults to 0.1.
        temperature: float > 0, sample exp(-E / T). Defaults to 1.0.
        grad_clip, clip_value_min, clip_value_max, metropolis: see `Langevin`.

    Example:

    >>> sampler = NoiseAnnealedLangevin(energy.sigmas, clip_value_min=-4.0, clip_value_max=4.0)
    >>> samples = sampler(energy, tf.random.uniform([2000, 2], -4.0, 4.0), seed=[0, 1])

    Reference:
        Song & Ermon, "Generative modeling by estimating gradients of the
        data distribution", NeurIPS 2019, algorithm 1.
    """

    def __init__(self, sigmas, steps_per_level=100, step_factor=0.1, temperature=1.0,
                 grad_clip=None, clip_value_min=None, clip_value_max=None, metropolis=True):
        sigmas = tuple(float(s) for s in np.ravel(sigmas))
        if not sigmas or int(steps_per_level) < 1:
            raise ValueError("NoiseAnnealedLangevin: needs at least one sigma and "
                             "steps_per_level >= 1")
        if not all(s > 0 and math.isfinite(s) for s in sigmas) or any(
                a <= b for a, b in zip(sigmas, sigmas[1:])):
            raise ValueError(f"NoiseAnnealedLangevin: sigmas must be positive and decrease "
                             f"strictly, got {sigmas}")
        if not temperature > 0 or not math.isfinite(temperature):
            raise ValueError(f"NoiseAnnealedLangevin: temperature={temperature} must be > 0")
        super().__init__(num_steps=len(sigmas) * int(steps_per_level),
                         step_size=float(step_factor) * sigmas[-1] ** 2, grad_clip=grad_clip,
                         clip_value_min=clip_value_min, clip_value_max=clip_value_max,
                         metropolis=metropolis)
        self.sigmas = sigmas
        self.steps_per_level = int(steps_per_level)
        self.step_factor = float(step_factor)
        self.temperature = float(temperature)

    def step(self, energy, x, step_index, seed=None):
        level = tf.minimum(step_index // self.steps_per_level, len(self.sigmas) - 1)
        sigma = tf.gather(tf.constant(self.sigmas, x.dtype), level)
        step_size = self.step_factor * tf.square(sigma)
        return self.transition(lambda z: energy.at(z, sigma) / self.temperature, x, step_size,
                               tf.sqrt(2.0 * step_size), seed=fold_seed(seed, 2))

    def get_config(self):
        config = super().get_config()
        for key in ("num_steps", "step_size", "noise_scale", "jump_probability"):
            config.pop(key)
        config.update({"sigmas": list(self.sigmas), "steps_per_level": self.steps_per_level,
                       "step_factor": self.step_factor, "temperature": self.temperature})
        return config
