"""The classical family: a method that trains an energy E(x) (CD, ML, NCE, ...)."""

from keras_ebm.methods.method import Method


class EnergyMethod(Method):
    """Base of the methods that train an energy E(x) directly.

    It owns the energy, builds it by calling it on a small batch (any Keras
    layer or model works: Functional, Sequential with or without
    `keras.Input`, subclassed) and returns E(x) from `model(x)`. A subclass
    writes `contrastive_loss` and, where it draws contrasted samples before
    the forward pass (MCMC chains, noise, corruption), `prepare` (see
    `Method`); samples that are a fixed function of the data (one-bit flips)
    can be made inside `contrastive_loss`.

    Args:
        energy: a layer or model mapping x to energies of shape [batch].
        input_shape: tuple or None, one example's shape; builds every variable
            at construction (needed under tf.distribute when the energy
            declares no input). Defaults to None: built from the first batch.
        **kwargs: `keras.Model` keyword arguments (e.g. `name`).
    """

    config_objects = ("energy",)
    # compile(steps_per_execution="auto") runs several steps per compiled call for a
    # small energy (see `method.auto_steps_per_execution`).
    multi_step_calls = True

    def __init__(self, energy, input_shape=None, **kwargs):
        super().__init__(input_shape=input_shape, **kwargs)
        self.energy = energy

    def build_now(self, parts_shape=None):
        inputs = getattr(self.energy, "inputs", None)
        declared = tuple(inputs[0].shape[1:]) if inputs else None
        super().build_now(parts_shape or declared)
        if not self.built and getattr(self.energy, "built", False) and not self.example_shape:
            # A built energy (an RBM knows its size) with no state to create.
            self.built = True

    def build_parts(self, input_shape):
        self.energy(self.zeros(input_shape[1:]))

    def call(self, inputs, training=False):
        self.check_shape(inputs)
        return self.energy(inputs, training=training)
