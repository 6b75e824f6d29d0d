"""Strategy 1: an energy whose volume of low energy is constant; only the data are pushed down."""

import keras
import tensorflow as tf

from keras_ebm.methods.energy_method import EnergyMethod


@keras.saving.register_keras_serializable(package="keras_ebm")
class ConstantVolume(EnergyMethod):
    """Pushes down the energy of the data; the energy's form keeps the low-energy volume fixed.

    The lecture's strategy 1, "build the machine so that the volume of low
    energy is constant". No contrasted points: the loss is the mean energy
    of the data,

        loss = mean_x E(x),

    and nothing else is needed because the energy cannot be low everywhere:

    - `keras_ebm.energies.KMeansEnergy`, E(x) = min_k ||x - c_k||^2: online
      K-means; the energy is low only in K balls around the prototypes;
    - `keras_ebm.energies.GaussianMixtureEnergy`, E(x) = -log p(x) of a
      mixture: a normalised density, so this is maximum likelihood.

    With an unconstrained energy (an MLP) the same loss drives E down
    everywhere: that is what strategies 2 to 7 exist to prevent. The energy
    should offer `initialize_from_data(x)` (both of the above do: k-means++);
    `sample(n)` delegates to the energy's `sample`.

    Args:
        energy: a layer mapping x [batch, D] to energies [batch] with a fixed
            volume of low energy (any Keras layer or model that wraps one).
        **kwargs: `input_shape` and `keras.Model` keyword arguments.

    Example:

    >>> energy = KMeansEnergy(32)
    >>> energy.initialize_from_data(x_train)
    >>> model = ConstantVolume(energy)
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-2))
    >>> model.fit(x_train, batch_size=256, epochs=20)
    >>> calibrated_log_likelihood(model.energy, x_train, x_test)

    References:
        LeCun, Chopra, Hadsell, Ranzato & Huang, "A tutorial on energy-based
        learning", 2006 (section 6, the volume of low energy); MacQueen 1967
        (K-means); Dempster, Laird & Rubin 1977 (mixtures).
    """

    tracker_names = ("loss",)

    def __init__(self, energy, **kwargs):
        super().__init__(energy, **kwargs)
        self.build_now()

    def contrastive_loss(self, inputs, training):
        # Pushed down: the data. Pushed up: nothing; the energy's form holds the rest up.
        return tf.reduce_mean(self.energy(inputs, training=training)), {}

    def sample(self, num_samples, temperature=1.0, seed=0):
        """Samples of p_T ∝ exp(-E / T) from the energy's own exact sampler."""
        if not hasattr(self.energy, "sample"):
            raise ValueError(f"ConstantVolume.sample: {type(self.energy).__name__} has no "
                             "sample(num_samples, temperature, seed) method")
        return self.energy.sample(num_samples, temperature=temperature, seed=seed)
