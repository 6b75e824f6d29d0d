"""Block Gibbs sampling for restricted Boltzmann machines."""

import keras
import tensorflow as tf

from keras_ebm.samplers.sampler import Sampler
from keras_ebm.seeding import fold_seed
from keras_ebm.seeding import random_uniform


@keras.saving.register_keras_serializable(package="keras_ebm")
class Gibbs(Sampler):
    """Block Gibbs sampler: h ~ p(h | v), then v ~ p(v | h), `num_steps` times.

    The energy must provide `sample_hidden(v)` and `sample_visible(h)` (as
    `keras_ebm.energies.RBM` does). Every transition leaves p(v) invariant,
    so the acceptance rate is 1.

    Args:
        num_steps: int, number of full v -> h -> v sweeps (k in CD-k). Defaults to 1.
        mean_field_visible: bool, return p(v | h) instead of a binary sample
            after the last sweep. Defaults to False.

    Example:

    >>> rbm = keras_ebm.energies.RBM(64, 16)
    >>> v_k = Gibbs(num_steps=5)(rbm, v_0)

    Reference:
        Geman & Geman, 1984; Hinton, "Training products of experts by
        minimizing contrastive divergence", 2002.
    """

    def __init__(self, num_steps=1, mean_field_visible=False):
        super().__init__(num_steps=num_steps)
        self.mean_field_visible = bool(mean_field_visible)

    def step(self, energy, x, step_index, seed=None):
        hidden_probabilities = energy.hidden_probabilities(x)
        hidden = energy.sample_hidden(x, random_uniform(
            tf.shape(hidden_probabilities), fold_seed(seed, 0), hidden_probabilities.dtype))
        visible = energy.sample_visible(hidden, random_uniform(
            tf.shape(x), fold_seed(seed, 1), x.dtype))
        return visible, tf.ones(tf.shape(x)[:1], x.dtype)

    def sample_with_info(self, energy, x_init, num_steps=None, seed=None):
        if not self.mean_field_visible:
            return super().sample_with_info(energy, x_init, num_steps, seed)
        # NOTE: the last half-step returns probabilities, a common variance
        # reduction; the chain itself stays binary.
        steps = self.num_steps if num_steps is None else num_steps
        x, rate = super().sample_with_info(energy, x_init, steps - 1, fold_seed(seed, 0))
        probabilities = energy.hidden_probabilities(x)
        hidden = energy.sample_hidden(x, random_uniform(
            tf.shape(probabilities), fold_seed(seed, 1), probabilities.dtype))
        return energy.visible_probabilities(hidden), rate

    def get_config(self):
        config = super().get_config()
        config["mean_field_visible"] = self.mean_field_visible
        return config
