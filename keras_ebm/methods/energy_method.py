"""Shared plumbing of the classical energy-based training methods."""

import keras

from keras_ebm import distribute


class EnergyMethod(keras.Model):
    """Base of the methods that train an energy E(x) (CD, ML, NCE, ...).

    It owns the energy, creates one `keras.metrics.Mean` per tracker name,
    builds the energy, returns E(x) from `model(x)`, and (de)serialises the
    energy. A subclass writes `train_step` / `test_step` and extends
    `get_config` / `from_config` with its own arguments.

    Each tracker is stored as the attribute `<name>_tracker` (e.g.
    `loss_tracker`), so the attribute paths, and thus the layout of saved
    `.keras` files, are those of a hand-written model.

    Args:
        energy: a layer or model mapping x to energies of shape [batch].
        tracker_names: sequence of str, the names of the `Mean` trackers, in
            the order `metrics` lists them. Defaults to `("loss",)`.
        **kwargs: `keras.Model` keyword arguments (e.g. `name`).
    """

    # Config keys `from_config` deserialises (when present and not None).
    _config_objects = ("energy",)

    def __init__(self, energy, tracker_names=("loss",), **kwargs):
        super().__init__(**kwargs)
        self.energy = energy
        self._tracker_names = tuple(tracker_names)
        for tracker_name in self._tracker_names:
            setattr(self, f"{tracker_name}_tracker", keras.metrics.Mean(name=tracker_name))
        if getattr(energy, "built", False):
            self.built = True

    @property
    def metrics(self):
        return [getattr(self, f"{name}_tracker") for name in self._tracker_names]

    def build(self, input_shape):
        if not self.energy.built:
            self.energy.build(input_shape)
        self.built = True

    def call(self, inputs):
        return self.energy(inputs)

    def scale_loss(self, loss):
        """The loss to differentiate: this replica's share, then the optimizer's loss scale.

        Keras sums the replicas' gradients, so under tf.distribute each replica
        differentiates its mean loss divided by the number of replicas (equal
        per-replica batches): the summed gradient is the global-batch one.
        Call it inside the `GradientTape`; on one device without float16 it is
        `loss` itself.
        """
        return self.optimizer.scale_loss(distribute.scale_loss_for_replicas(loss))

    def update_trackers(self, **values):
        """Updates the tracker of each keyword; returns their results as logs."""
        trackers = {name: getattr(self, f"{name}_tracker") for name in values}
        for name, value in values.items():
            trackers[name].update_state(value)
        return distribute.step_logs({tracker.name: tracker.result()
                                     for tracker in trackers.values()})

    def get_config(self):
        return {"name": self.name, "energy": keras.saving.serialize_keras_object(self.energy)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls._config_objects:
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
