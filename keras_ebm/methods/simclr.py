"""SimCLR: contrast each view against the other 2N - 2 views of the batch."""

import keras

from keras_ebm.losses.nt_xent import nt_xent
from keras_ebm.methods.embedding import EmbeddingMethod
from keras_ebm.methods.embedding import contrastive_accuracy


@keras.saving.register_keras_serializable(package="keras_ebm")
class SimCLR(EmbeddingMethod):
    """SimCLR: a simple framework for contrastive learning of visual representations.

    Energy: E(z_i, z_j) = -cos(z_i, z_j) / temperature on the projections
    z = g(f(x)) of two augmented views of each image. Contrasted samples: the
    other 2N - 2 views of the batch. Loss: NT-Xent, which pushes the energy of
    each positive pair down and the energy against every other view up.

    Under tf.distribute (build and compile in `strategy.scope()`, feed global
    batches), the batch is global: every replica gathers the projections of
    all replicas, contrasts its own views against all 2N - 2 others, and
    differentiates its share of the global mean, so training matches one
    device on the global batch. Batch norm still sees one replica's views
    unless the encoder's layers are synchronised
    (`keras_ebm.distribute.sync_batch_norm`).

    Args:
        encoder: Keras model f mapping images to embeddings h (the
            representation kept after training).
        projection_head: Keras layer g mapping h to z
            (`keras_ebm.layers.ProjectionHead`).
        temperature: positive float, default 0.5.
        augmenter: None, or a layer/callable that makes a random view of a
            batch (`keras_ebm.data.make_augmenter`). With it, `fit(images)`;
            without it, `fit` takes `(view_a, view_b)` pairs.
        **kwargs: `input_shape` (see `EmbeddingMethod`) and `keras.Model`
            keyword arguments.

    Example:

    >>> encoder = keras_ebm.backbones.small_cnn((8, 8, 1))
    >>> model = SimCLR(encoder, ProjectionHead((256,), 64), temperature=0.5,
    ...                augmenter=keras_ebm.data.make_augmenter((8, 8, 1)))
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> model.fit(images, batch_size=256, epochs=10)
    >>> embeddings = model.predict(images)

    Reference:
        Chen, Kornblith, Norouzi & Hinton, A Simple Framework for Contrastive
        Learning of Visual Representations, ICML 2020, Algorithm 1.
    """

    def __init__(self, encoder, projection_head, temperature=0.5, augmenter=None, **kwargs):
        super().__init__(encoder, projection_head, augmenter=augmenter, **kwargs)
        if temperature <= 0:
            raise ValueError(f"SimCLR: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.build_now()

    def contrastive_loss(self, inputs, training):
        # 1. Energies of all pairs of views (both views through f and g as one
        #    batch of 2N); NT-Xent pushes the positive pair's energy down and
        #    the other 2N - 2 views' up. Under several replicas the negatives
        #    come from the global batch.
        projections_a, projections_b = self.project_pair(*inputs, training=training)
        loss, logits, labels = nt_xent(projections_a, projections_b, self.temperature,
                                       cross_replica=True)
        return loss, {"contrastive_accuracy": contrastive_accuracy(logits, labels)}

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
