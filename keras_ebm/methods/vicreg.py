"""VICReg: invariance, with variance and covariance regularisers instead of negatives."""

import keras

from keras_ebm.losses.non_contrastive import vicreg_loss
from keras_ebm.methods.embedding import EmbeddingMethod


@keras.saving.register_keras_serializable(package="keras_ebm")
class VICReg(EmbeddingMethod):
    """VICReg: variance-invariance-covariance regularisation.

    Energy: the invariance term s(z, z') = mean (z - z')^2, the squared
    distance between the projections z = g(f(x)) of two views (the paper's
    "expander" g). Contrasted samples: none. Only the positive pairs are
    pulled together; what replaces the negatives are two regularisers of each
    branch's batch statistics: the variance hinge keeps the standard deviation
    of every dimension above gamma (the embeddings cannot collapse to one
    point) and the covariance term decorrelates the dimensions. Loss:
    sim_coeff s + std_coeff v + cov_coeff c (`keras_ebm.losses.vicreg_loss`,
    the reference code's form); the trackers show the three unweighted terms.

    Under tf.distribute all three terms are those of the global batch, as
    for Barlow Twins (the projections of every replica are gathered, as the
    reference code's all-gather does).

    Args:
        encoder: Keras model f mapping images to embeddings h (the
            representation kept after training).
        projection_head: Keras layer g mapping h to z (the paper's expander,
            the same shape as Barlow Twins' projector).
        sim_coeff: float >= 0, default 25 (lambda), weight of the invariance.
        std_coeff: float >= 0, default 25 (mu), weight of the variance hinge.
        cov_coeff: float >= 0, default 1 (nu), weight of the covariance.
        gamma: positive float, default 1, the target standard deviation.
        augmenter: None or a layer/callable making a random view (see SimCLR).
        **kwargs: `input_shape` (see `EmbeddingMethod`) and `keras.Model`
            keyword arguments.

    Example:

    >>> encoder = keras_ebm.backbones.small_cnn((8, 8, 1))
    >>> model = VICReg(encoder, ProjectionHead((512,), 512),
    ...                augmenter=keras_ebm.data.make_augmenter((8, 8, 1)))
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> model.fit(images, batch_size=256, epochs=10)

    Reference:
        Bardes, Ponce & LeCun, VICReg: Variance-Invariance-Covariance
        Regularization for Self-Supervised Learning, ICLR 2022 (Algorithm 1,
        eq. 1-6).
    """

    tracker_names = ("loss", "invariance", "variance", "covariance")

    def __init__(self, encoder, projection_head, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0,
                 gamma=1.0, augmenter=None, **kwargs):
        super().__init__(encoder, projection_head, augmenter=augmenter, **kwargs)
        if min(sim_coeff, std_coeff, cov_coeff) < 0 or gamma <= 0:
            raise ValueError(f"VICReg: the coefficients must be >= 0 and gamma > 0, got "
                             f"{sim_coeff}, {std_coeff}, {cov_coeff} and {gamma}")
        self.sim_coeff = float(sim_coeff)
        self.std_coeff = float(std_coeff)
        self.cov_coeff = float(cov_coeff)
        self.gamma = float(gamma)
        self.build_now()

    def contrastive_loss(self, inputs, training):
        # 1. z = g(f(x)) of both views (one pass per view).
        projections_a, projections_b = self.project_views(*inputs, training=training)
        # 2. Invariance between the views; variance and covariance of each branch over
        #    the (global) batch.
        return vicreg_loss(projections_a, projections_b, self.sim_coeff, self.std_coeff,
                           self.cov_coeff, self.gamma, cross_replica=True)

    def get_config(self):
        return {**super().get_config(), "sim_coeff": self.sim_coeff,
                "std_coeff": self.std_coeff, "cov_coeff": self.cov_coeff, "gamma": self.gamma}
