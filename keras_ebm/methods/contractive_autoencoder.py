"""Strategy 7: E(x) = ||x - G(x)||^2, G as constant as possible (contractive autoencoder)."""

import keras
import tensorflow as tf

from keras_ebm.methods.denoising_autoencoder import ReconstructionEnergy
from keras_ebm.methods.denoising_autoencoder import run_chain
from keras_ebm.methods.energy_method import EnergyMethod
from keras_ebm.seeding import random_normal


def jacobian_frobenius(fn, x, training=False):
    """(G(x), ||dG/dx||_F^2 per example): the map's output and its Jacobian's squared norm.

    The full Jacobian [batch, out, in] by `tf.GradientTape.batch_jacobian`
    (one vectorised backward pass per output dimension: cheap for the low
    dimensions this is meant for). Differentiable: called under an outer
    tape, the penalty's gradient with respect to G's weights flows through.

    Args:
        fn: callable mapping x [batch, ...] to [batch, ...].
        x: float tensor [batch, ...].
        training: passed to `fn`. Defaults to False.

    Returns:
        (outputs shaped like fn(x), float tensor [batch]).
    """
    x = tf.convert_to_tensor(x)
    flat = tf.reshape(x, [tf.shape(x)[0], -1])
    with tf.GradientTape() as tape:
        tape.watch(flat)
        outputs = fn(tf.reshape(flat, tf.shape(x)), training=training)
        flat_outputs = tf.reshape(outputs, [tf.shape(x)[0], -1])
    jacobian = tape.batch_jacobian(flat_outputs, flat)
    return outputs, tf.reduce_sum(tf.square(jacobian), axis=[1, 2])


@keras.saving.register_keras_serializable(package="keras_ebm")
class ContractiveAutoencoder(EnergyMethod):
    """Reconstruct the data with a map G whose Jacobian is as small as possible.

    The lecture's strategy 7, "E(Y) = ||Y - G(Y)||^2, with G made as
    constant as possible". The energy is the reconstruction error of G; the
    loss is

        loss = mean ||x - G(x)||^2 + contraction * mean ||dG/dx (x')||_F^2,

    with the squared Frobenius norm of the Jacobian of the whole map G
    (Rifai et al. penalise the encoder's; on a 2-D input the full Jacobian is
    cheap). A constant G would have no Jacobian but could not reconstruct the
    data; G that reproduces the data and is flat elsewhere maps every point
    onto the data, so ||x - G(x)||^2 grows off it: the penalty, not
    contrasted points, keeps the energy from being low everywhere. The
    penalty is taken at x' = x + contraction_noise * n (n ~ N(0, I)): at 0,
    at the data as in the paper; above 0 it also flattens G in the gaps
    between parts of the data, where no reconstruction term reaches.

    Args:
        autoencoder: a layer or model mapping x to a reconstruction of the same shape.
        contraction: float >= 0, the penalty's weight. Defaults to 0.1.
        contraction_noise: float >= 0, the std of the points where the
            Jacobian is penalised, around the data. Defaults to 0.
        **kwargs: `input_shape` and `keras.Model` keyword arguments.

    Example:

    >>> cae = ContractiveAutoencoder(autoencoder, contraction=0.1)
    >>> cae.compile(optimizer="adam"); cae.fit(x_train, epochs=50)
    >>> cae.energy(x_test)   # reconstruction errors

    Reference:
        Rifai, Vincent, Muller, Glorot & Bengio, "Contractive auto-encoders:
        explicit invariance during feature extraction", ICML 2011.
    """

    tracker_names = ("loss", "reconstruction", "contraction_penalty")
    config_objects = ("autoencoder",)

    def __init__(self, autoencoder, contraction=0.1, contraction_noise=0.0, **kwargs):
        super().__init__(ReconstructionEnergy(autoencoder, name="reconstruction_energy"),
                         **kwargs)
        if not 0 <= contraction < float("inf"):
            raise ValueError(f"ContractiveAutoencoder: contraction must be finite and >= 0, got "
                             f"{contraction}")
        if not contraction_noise >= 0:
            raise ValueError(f"ContractiveAutoencoder: contraction_noise must be >= 0, got "
                             f"{contraction_noise}")
        self.autoencoder = autoencoder
        self.contraction = float(contraction)
        self.contraction_noise = float(contraction_noise)
        self.build_now()

    def prepare(self, data, training):
        x = tf.convert_to_tensor(super().prepare(data, training))
        # Where the Jacobian is penalised: the data, or points drawn around it.
        if self.contraction_noise > 0:
            return x, x + self.contraction_noise * tf.random.normal(tf.shape(x), dtype=x.dtype)
        return x, x

    def contrastive_loss(self, inputs, training):
        x, x_penalised = inputs
        reconstruction = self.autoencoder(x, training=training)
        squared_error = tf.reshape(tf.square(reconstruction - tf.cast(x, reconstruction.dtype)),
                                   [tf.shape(x)[0], -1])
        reconstruction_error = tf.reduce_mean(tf.reduce_sum(squared_error, axis=-1))
        # Push down: the reconstruction error of the data. Keep G flat: its Jacobian.
        _, penalty = jacobian_frobenius(self.autoencoder, x_penalised, training=training)
        penalty = tf.reduce_mean(tf.cast(penalty, reconstruction_error.dtype))
        loss = reconstruction_error + self.contraction * penalty
        return loss, {"reconstruction": reconstruction_error, "contraction_penalty": penalty}

    def sample(self, start, num_steps=100, noise_level=0.05, seed=None, bounds=None):
        """Runs the chain x <- G(x + noise_level * n), `num_steps` times, from `start`.

        G pulls every point onto the data (it is contractive off it); the
        small noise moves the chain along the data. Like the denoising
        autoencoder's chain (Bengio et al. 2013), with Gaussian corruption.

        Args:
            start: array [n, ...], the chains' first points (e.g. uniform noise).
            num_steps: int >= 0. Defaults to 100.
            noise_level: float >= 0, the std of the noise added before each step.
                Defaults to 0.05.
            seed: int or None; an int makes the chain's noise reproducible.
                Defaults to None (TF's global generator).
            bounds: (low, high) or None: clips every step into the box.
                Defaults to None.

        Returns:
            A float32 array shaped like `start`.
        """
        return run_chain(lambda x, step_seed: self.autoencoder(
            x + noise_level * random_normal(tf.shape(x), step_seed, x.dtype), training=False),
            start, num_steps, seed, bounds)

    def get_config(self):
        config = super().get_config()
        config.pop("energy", None)
        return {**config, "contraction": self.contraction,
                "contraction_noise": self.contraction_noise}
