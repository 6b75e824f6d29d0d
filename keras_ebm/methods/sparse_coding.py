"""Strategy 6: a regulariser (the sparsity of the code) limits the volume of low energy."""

import keras
import tensorflow as tf

from keras_ebm import distribute
from keras_ebm.methods.energy_method import EnergyMethod


def _atom_owners(energy):
    """The layers of `energy` (itself included) with atoms to renormalise."""
    found = [energy] if hasattr(energy, "normalize_atoms") else []
    for layer in getattr(energy, "_flatten_layers", lambda **_: [])(include_self=False):
        if hasattr(layer, "normalize_atoms") and layer not in found:
            found.append(layer)
    return found


@keras.saving.register_keras_serializable(package="keras_ebm")
class SparseCoding(EnergyMethod):
    """Dictionary learning: pushes down the sparse-coding energy of the data, nothing else.

    The lecture's strategy 6, "a regulariser that limits the volume of low
    energy". The energy is `keras_ebm.energies.SparseCodingEnergy`,

        E(x) = min_z ||f(x) - D z||^2 + lambda ||z||_1,

    with z found by ISTA/FISTA and the K atoms of D kept at unit norm. The
    loss is the mean energy of the data, as in `ConstantVolume`: no contrasted
    points, because the sparsity term keeps the energy from being low
    everywhere (only features near sparse combinations of the atoms are
    reconstructed cheaply). After each update the atoms are renormalised
    (`after_update`), Olshausen & Field's constraint.

    Args:
        energy: a `SparseCodingEnergy` (or a layer or model holding one: every
            sub-layer with `normalize_atoms` is renormalised after each update).
        **kwargs: `input_shape` and `keras.Model` keyword arguments.

    Example:

    >>> features = RBFFeatures(64, width=0.7); features.initialize_grid((-4.0, 4.0))  # 8 x 8
    >>> energy = SparseCodingEnergy(128, sparsity=0.1, features=features)  # overcomplete
    >>> energy.initialize_from_data(x_train)
    >>> model = SparseCoding(energy)
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-2))
    >>> model.fit(x_train, batch_size=256, epochs=20)
    >>> calibrated_log_likelihood(model.energy, x_train, x_test)

    References:
        Olshausen & Field, Nature 1996; LeCun, Chopra, Hadsell, Ranzato &
        Huang, "A tutorial on energy-based learning", 2006 (sparse coding
        as a regulariser of the volume of low energy).
    """

    tracker_names = ("loss",)

    def __init__(self, energy, **kwargs):
        super().__init__(energy, **kwargs)
        self.build_now()

    def contrastive_loss(self, inputs, training):
        # Pushed down: the data. Pushed up: nothing; the sparsity term bounds the low set.
        return tf.reduce_mean(self.energy(inputs, training=training)), {}

    def after_update(self, inputs, outputs):
        owners = _atom_owners(self.energy)
        if not owners:
            return

        def normalize():
            for owner in owners:
                owner.normalize_atoms()

        distribute.update_state(normalize, anchor=owners[0].dictionary)
