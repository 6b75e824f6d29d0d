"""Barlow Twins: make the cross-correlation of the two views' embeddings the identity."""

import keras

from keras_ebm.losses.non_contrastive import barlow_twins_loss
from keras_ebm.methods.embedding import EmbeddingMethod


@keras.saving.register_keras_serializable(package="keras_ebm")
class BarlowTwins(EmbeddingMethod):
    """Barlow Twins: self-supervised learning via redundancy reduction.

    Energy: the invariance term sum_i (1 - C_ii)^2 of the cross-correlation
    matrix C of the two views' projections z = g(f(x)), each standardised
    along the batch: it is lowest when every dimension of one view's
    projection is perfectly correlated with the same dimension of the other's.
    Contrasted samples: none. Only the positive pairs are pulled together;
    what replaces the negatives is a regulariser of the batch's statistics,
    the redundancy-reduction term lambda sum_{i != j} C_ij^2, which
    decorrelates the dimensions, so the embeddings cannot collapse to one
    point (a constant dimension has no correlation to give). Loss:
    `keras_ebm.losses.barlow_twins_loss` times `scale_loss`.

    Scale: the loss is a sum over the D dimensions of the projection (the
    paper's D = 8192), not a mean, so it starts near D and its gradient grows
    with D; the paper's learning rates (LARS, 0.2 for the weights) go with
    that scale. solo-learn multiplies it by `scale_loss` = 0.1 for CIFAR with
    D = 2048 (early versions of the reference code had such a factor too).

    Under tf.distribute (build and compile in `strategy.scope()`, feed global
    batches) the standardisation and C are computed over the global batch:
    every replica gathers the projections of all replicas (the loss's
    `cross_replica` path, as the reference code's all-reduce of C) and
    differentiates its share of the global loss, so training matches one
    device on the global batch when the encoder has no batch norm
    (`keras_ebm.distribute.sync_batch_norm` makes its statistics global too).

    Args:
        encoder: Keras model f mapping images to embeddings h (the
            representation kept after training).
        projection_head: Keras layer g mapping h to z (the paper: 3 layers of
            8192 with batch norm on the hidden ones,
            `ProjectionHead((8192, 8192), 8192)`).
        lambda_: float >= 0, default 5e-3 (the paper; 0.0051 in the reference
            code and solo-learn), the weight of the off-diagonal terms.
        scale_loss: positive float, default 1 (the paper), multiplies the loss.
        augmenter: None or a layer/callable making a random view (see SimCLR).
        **kwargs: `input_shape` (see `EmbeddingMethod`) and `keras.Model`
            keyword arguments.

    Example:

    >>> encoder = keras_ebm.backbones.small_cnn((8, 8, 1))
    >>> model = BarlowTwins(encoder, ProjectionHead((512,), 512), lambda_=5e-3,
    ...                     augmenter=keras_ebm.data.make_augmenter((8, 8, 1)))
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> model.fit(images, batch_size=256, epochs=10)

    Reference:
        Zbontar, Jing, Misra, LeCun & Deny, Barlow Twins: Self-Supervised
        Learning via Redundancy Reduction, ICML 2021 (Algorithm 1, eq. 1-2).
    """

    tracker_names = ("loss",)

    def __init__(self, encoder, projection_head, lambda_=5e-3, scale_loss=1.0, augmenter=None,
                 **kwargs):
        super().__init__(encoder, projection_head, augmenter=augmenter, **kwargs)
        if lambda_ < 0:
            raise ValueError(f"BarlowTwins: lambda_ must be >= 0, got {lambda_}")
        if scale_loss <= 0:
            raise ValueError(f"BarlowTwins: scale_loss must be > 0, got {scale_loss}")
        self.lambda_ = float(lambda_)
        self.scale_loss = float(scale_loss)
        self.build_now()

    def contrastive_loss(self, inputs, training):
        # 1. z = g(f(x)) of both views (one pass per view).
        projections_a, projections_b = self.project_views(*inputs, training=training)
        # 2. Cross-correlation of the standardised views over the (global) batch:
        #    diagonal pulled to 1, off-diagonal to 0.
        loss, _ = barlow_twins_loss(projections_a, projections_b, self.lambda_,
                                    cross_replica=True)
        return self.scale_loss * loss, {}

    def get_config(self):
        return {**super().get_config(), "lambda_": self.lambda_, "scale_loss": self.scale_loss}
