"""Score matching (exact, denoising, sliced): the lecture's strategy 4."""

import keras
import tensorflow as tf

from keras_ebm.losses.score_matching import denoising_score_matching
from keras_ebm.losses.score_matching import energy_gradient
from keras_ebm.losses.score_matching import exact_score_matching
from keras_ebm.losses.score_matching import sliced_score_matching
from keras_ebm.methods.energy_method import EnergyMethod

VARIANTS = ("exact", "denoising", "sliced")


@keras.saving.register_keras_serializable(package="keras_ebm")
class ScoreMatching(EnergyMethod):
    """Fits the energy's gradient to the data: small slope and large curvature at the data.

    The lecture's strategy 4, "minimise the gradient and maximise the
    curvature around data points". With s(x) = -grad_x E(x) the model's
    score, the loss is one of (`keras_ebm.losses.score_matching`):

    - ``"exact"`` (Hyvärinen 2005): mean 1/2 ||grad E(x)||^2 - tr(Hessian E(x));
      one extra backward pass per input dimension, for low dimensions;
    - ``"denoising"`` (Vincent 2011): mean 1/2 ||sigma s(x + sigma n) + n||^2,
      the score of the data blurred by N(0, sigma^2 I);
    - ``"sliced"`` (Song et al. 2019): mean v^T grad(s) v + 1/2 ||s||^2 over
      ``num_projections`` Gaussian directions v per example (SSM-VR).

    With a `keras_ebm.energies.NoiseConditionalEnergy`, each example is
    blurred at a level sigma drawn from the energy's ladder, and the loss of
    ``variant`` fits E(., sigma) to the blurred data, weighted by sigma^2
    (Song & Ermon 2019; for "exact" and "sliced", their loss on the blurred
    points). Sample it with `keras_ebm.samplers.NoiseAnnealedLangevin`: a
    single energy's loss leaves the masses of separated modes free
    (Wenliang & Kanagawa 2020), while the blurred levels tie them.

    No partition function and no contrasted samples enter the loss: the
    curvature term does the pushing up, around each data point. The energy
    is therefore known only up to an additive constant (and, in practice,
    its scale is loose where there are no data): evaluate it with
    `keras_ebm.evaluation.calibrated_log_likelihood` and sample it with
    annealed Langevin dynamics on the score.

    Args:
        energy: a layer or model mapping x [batch, D] to energies [batch]
            (`keras_ebm.energies.MLPEnergy`, any Keras model). Needs a smooth
            activation (swish, softplus, tanh): the exact and sliced losses
            differentiate twice, and a ReLU network has zero curvature.
        variant: "exact", "denoising" or "sliced". Defaults to "exact".
        sigma: positive float, the corruption of ``"denoising"``. Defaults to
            0.1. Unused with a noise-conditional energy, whose levels are
            the corruptions.
        num_projections: int >= 1, directions per example of ``"sliced"``.
            Defaults to 1.
        **kwargs: `input_shape` and `keras.Model` keyword arguments.

    Example:

    >>> model = ScoreMatching(MLPEnergy((128, 128)), variant="sliced")
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> model.fit(x_train, batch_size=256, epochs=100)
    >>> calibrated_log_likelihood(model.energy, x_train, x_test)

    References:
        Hyvärinen, Estimation of non-normalized statistical models by score
        matching, JMLR 2005; Vincent, A connection between score matching and
        denoising autoencoders, Neural Computation 2011; Song, Garg, Shi &
        Ermon, Sliced score matching, UAI 2019; Song & Ermon, Generative
        modeling by estimating gradients of the data distribution, NeurIPS
        2019; Wenliang & Kanagawa, Blindness of score-based methods to
        isolated components and mixing proportions, 2020.
    """

    tracker_names = ("loss", "energy_data")
    loss_ignores_some_variables = True  # the energy's additive constant has no gradient

    def __init__(self, energy, variant="exact", sigma=0.1, num_projections=1, **kwargs):
        super().__init__(energy, **kwargs)
        if variant not in VARIANTS:
            raise ValueError(f"ScoreMatching: variant must be one of {VARIANTS}, got {variant!r}")
        if not sigma > 0:
            raise ValueError(f"ScoreMatching: sigma must be > 0, got {sigma}")
        if int(num_projections) < 1:
            raise ValueError(f"ScoreMatching: num_projections must be >= 1, got "
                             f"{num_projections}")
        self.variant = variant
        self.sigma = float(sigma)
        self.num_projections = int(num_projections)
        self.build_now()

    @property
    def noise_conditional(self):
        """Whether the energy has noise levels (`NoiseConditionalEnergy`): trained at each."""
        return hasattr(self.energy, "sigmas") and hasattr(self.energy, "at")

    def prepare(self, data, training):
        x = tf.convert_to_tensor(super().prepare(data, training))
        # The random draws (levels, corruption, projections) come before the tape.
        none = tf.zeros((), x.dtype)
        levels = (tf.random.uniform(tf.shape(x)[:1], 0, len(self.energy.sigmas), tf.int32)
                  if self.noise_conditional else tf.zeros((), tf.int32))
        noise = (tf.random.normal(tf.shape(x), dtype=x.dtype)
                 if self.variant == "denoising" or self.noise_conditional else none)
        projections = none
        if self.variant == "sliced":
            shape = tf.concat([[self.num_projections], tf.shape(x)], axis=0)
            projections = tf.random.normal(shape, dtype=x.dtype)
        return x, levels, noise, projections

    def contrastive_loss(self, inputs, training):
        x, levels, noise, projections = inputs
        energy, sigma, weight = self.energy, self.sigma, 1.0
        if self.noise_conditional:  # each example at its level, weighted by sigma^2
            sigmas = tf.gather(tf.constant(self.energy.sigmas, x.dtype), levels)
            energy = lambda z: self.energy.at(z, sigmas, training=training)  # noqa: E731
            sigma = tf.reshape(sigmas, [-1] + [1] * (len(x.shape) - 1))
            weight = tf.square(sigmas)
        if self.variant == "denoising":  # its sigma^2 weighting is built in
            losses = denoising_score_matching(energy, x, noise, sigma, training=training)
        else:
            # Noise-conditional: the score of the data blurred at each example's level.
            points = x + sigma * noise if self.noise_conditional else x
            if self.variant == "exact":
                losses = exact_score_matching(energy, points, training=training)
            else:
                projections.set_shape([self.num_projections, *x.shape])
                losses = sliced_score_matching(energy, points, projections, training=training)
            losses = weight * losses
        # The energy of the data, tracked (its level is free: no term fixes it).
        return tf.reduce_mean(losses), {"energy_data": self.energy(x, training=False)}

    def score(self, x):
        """The model's score s(x) = -grad_x E(x), shaped like x."""
        return -energy_gradient(self.energy, x)[1]

    def get_config(self):
        return {**super().get_config(), "variant": self.variant, "sigma": self.sigma,
                "num_projections": self.num_projections}
