"""The siamese contrastive embedding of the lecture (DrLIM), with a cosine or L2 energy."""

import keras
from keras import ops

from keras_ebm.losses.margin import ENERGIES
from keras_ebm.losses.margin import margin_loss
from keras_ebm.methods.embedding import EmbeddingMethod
from keras_ebm.methods.embedding import contrastive_accuracy


@keras.saving.register_keras_serializable(package="keras_ebm")
class ContrastiveEmbedding(EmbeddingMethod):
    """A siamese network trained with a margin loss: the lecture's contrastive embedding.

    Energy: E(a, b) = 1 - cos(a, b) (`energy="cosine"`) or |a - b|
    (`energy="l2"`) between the projections z = g(f(x)) of two images, both
    computed by the same (siamese) encoder and head. Contrasted samples:
    positive pairs are two augmentations of one image; negative pairs are
    views of two different images of the batch. Loss: the DrLIM margin hinge
    (`keras_ebm.losses.margin_loss`), E(pos)^2 + mean max(0, margin - E(neg))^2.

    Besides the loss and contrastive accuracy it tracks `projection_norm`
    (mean |z|), `energy_positive` and `energy_negative` (mean energies): the
    cosine-vs-L2 experiment reads the norms from the training history.

    Args:
        encoder: Keras model f mapping images to embeddings h.
        projection_head: None (default: the energy is taken on h) or a Keras
            layer g mapping h to z.
        energy: "cosine" (default) or "l2".
        margin: positive float, default 0.5; in units of the energy.
        augmenter: None, or a layer/callable making a random view (as SimCLR).
        **kwargs: `input_shape` (see `EmbeddingMethod`) and `keras.Model`
            keyword arguments.

    Example:

    >>> encoder = keras_ebm.backbones.small_cnn((8, 8, 1))
    >>> model = ContrastiveEmbedding(encoder, ProjectionHead((512,), 64),
    ...                              energy="cosine", margin=0.5,
    ...                              augmenter=keras_ebm.data.make_augmenter((8, 8, 1)))
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> model.fit(images, batch_size=256, epochs=100)

    Reference:
        Hadsell, Chopra & LeCun, Dimensionality Reduction by Learning an
        Invariant Mapping (DrLIM), CVPR 2006; Bromley et al., Signature
        Verification using a "Siamese" Time Delay Neural Network, NIPS 1993.
    """

    tracker_names = ("loss", "contrastive_accuracy", "projection_norm", "energy_positive",
                     "energy_negative")

    def __init__(self, encoder, projection_head=None, energy="cosine", margin=0.5,
                 augmenter=None, **kwargs):
        if energy not in ENERGIES:
            raise ValueError(f"ContrastiveEmbedding: energy must be one of {ENERGIES}, "
                             f"got {energy!r}")
        if margin <= 0:
            raise ValueError(f"ContrastiveEmbedding: margin must be > 0, got {margin}")
        if projection_head is None:
            projection_head = keras.layers.Identity(name="identity_head")
        super().__init__(encoder, projection_head, augmenter=augmenter, **kwargs)
        self.energy = energy
        self.margin = float(margin)
        self.build_now()

    def contrastive_loss(self, inputs, training):
        # 1. Siamese: one encoder and head for both views (one batch of 2N).
        #    Positive pairs: two views of an image; negative: views of two images.
        projections_a, projections_b = self.project_pair(*inputs, training=training)
        # 2. The margin loss pushes positive energies down, negative ones up to the margin.
        loss, logits, labels = margin_loss(projections_a, projections_b, self.margin,
                                           self.energy)
        energies = -logits
        positives = ops.eye(ops.shape(energies)[0], dtype="float32")
        num_negatives = ops.maximum(ops.sum(1.0 - positives), 1.0)
        projections = ops.concatenate([projections_a, projections_b], axis=0)
        return loss, {
            "contrastive_accuracy": contrastive_accuracy(logits, labels),
            "projection_norm": ops.norm(ops.cast(projections, "float32"), axis=-1),
            "energy_positive": ops.sum(energies * positives) / ops.sum(positives),
            "energy_negative": ops.sum(energies * (1.0 - positives)) / num_negatives,
        }

    def get_config(self):
        return {**super().get_config(), "energy": self.energy, "margin": self.margin}
