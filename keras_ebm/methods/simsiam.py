"""SimSiam: predict the other view's projection behind a stop-gradient, no negatives."""

import keras

from keras_ebm.losses.non_contrastive import symmetric_negative_cosine
from keras_ebm.methods.predictor import PredictorMethod


@keras.saving.register_keras_serializable(package="keras_ebm")
class SimSiam(PredictorMethod):
    """SimSiam: simple Siamese representation learning.

    Energy: E(p, z) = -cos(p, z) between the prediction p = q(g(f(x))) of one
    view and the projection z = g(f(x')) of the other view, both from the same
    encoder f and projection head g. Contrasted samples: none. Only the energy
    of the positive pairs is pushed down; what keeps it from being low
    everywhere (every image mapped to one point) is the architecture instead
    of negatives: the predictor q and the stop-gradient on z, which the paper
    (section 4.1) shows to be what prevents collapse. Unlike BYOL there is no
    momentum network. Loss: D(p1, z2) / 2 + D(p2, z1) / 2 with D the negative
    cosine (`keras_ebm.losses.symmetric_negative_cosine`, minimum -1).

    Under tf.distribute (build and compile in `strategy.scope()`, feed global
    batches) each replica's loss is the mean over its share of the batch and
    it differentiates its share of the global mean (no statistic crosses the
    replicas), so training matches one device on the global batch when the
    network has no batch norm (the paper's batch norm is synchronised:
    `keras_ebm.distribute.sync_batch_norm`).

    Args:
        encoder: Keras model f mapping images to embeddings h (the
            representation kept after training).
        projection_head: Keras layer g mapping h to z (SimSiam: 3 layers of
            2048 with batch norm, the output one included,
            `ProjectionHead((2048, 2048), 2048, output_batch_norm=True)`).
        predictor: Keras layer q mapping z to p of the same dimension
            (SimSiam: a 512 bottleneck, `ProjectionHead((512,), 2048)`).
        stop_gradient: bool, default True. False lets the gradient flow
            through z as well: the paper's ablation, which collapses.
        augmenter: None or a layer/callable making a random view (see SimCLR).
        **kwargs: `input_shape` (see `EmbeddingMethod`) and `keras.Model`
            keyword arguments.

    Example:

    >>> encoder = keras_ebm.backbones.small_cnn((8, 8, 1))
    >>> model = SimSiam(encoder, ProjectionHead((512,), 512, output_batch_norm=True),
    ...                 ProjectionHead((128,), 512),
    ...                 augmenter=keras_ebm.data.make_augmenter((8, 8, 1)))
    >>> model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    >>> model.fit(images, batch_size=256, epochs=10)

    Reference:
        Chen & He, Exploring Simple Siamese Representation Learning, CVPR 2021
        (Algorithm 1, eq. 1-2, section 4.1).
    """

    def __init__(self, encoder, projection_head, predictor, stop_gradient=True, augmenter=None,
                 **kwargs):
        super().__init__(encoder, projection_head, predictor, augmenter=augmenter, **kwargs)
        self.stop_gradient = bool(stop_gradient)
        self.build_now()

    def contrastive_loss(self, inputs, training):
        # 1. z = g(f(x)) and p = q(z) of both views (one pass per view).
        (projections_a, projections_b), (predictions_a, predictions_b) = self.online(
            inputs, training=training)
        # 2. Each view's prediction regresses the other view's projection, behind a
        #    stop-gradient (unless the ablation turns it off); the two directions averaged.
        loss = symmetric_negative_cosine(predictions_a, predictions_b, projections_a,
                                         projections_b, stop_gradient=self.stop_gradient)
        return loss, {}

    def get_config(self):
        return {**super().get_config(), "stop_gradient": self.stop_gradient}
