"""The margin (hinge) loss of siamese networks (DrLIM), with a cosine or an L2 energy."""

import keras
from keras import ops

from keras_ebm.layers.cosine_energy import normalize

ENERGIES = ("cosine", "l2")


def pairwise_energy(embeddings_a, embeddings_b, energy="cosine", epsilon=1e-12):
    """The N x M matrix of energies E(a_i, b_j) between two sets of embeddings.

        cosine: E(a, b) = 1 - cos(a, b)       (in [0, 2]; blind to the norms)
        l2:     E(a, b) = |a - b|_2           (the Euclidean distance)

    Args:
        embeddings_a: float tensor [N, D].
        embeddings_b: float tensor [M, D].
        energy: "cosine" (default) or "l2".
        epsilon: float, default 1e-12; keeps the square root differentiable at 0.

    Returns:
        A float32 tensor [N, M].
    """
    if energy not in ENERGIES:
        raise ValueError(f"energy must be one of {ENERGIES}, got {energy!r}")
    if energy == "cosine":
        return 1.0 - ops.matmul(normalize(embeddings_a), ops.transpose(normalize(embeddings_b)))
    a = ops.cast(embeddings_a, "float32")
    b = ops.cast(embeddings_b, "float32")
    squared = (ops.sum(ops.square(a), axis=-1, keepdims=True)
               - 2.0 * ops.matmul(a, ops.transpose(b))
               + ops.transpose(ops.sum(ops.square(b), axis=-1, keepdims=True)))
    return ops.sqrt(ops.maximum(squared, epsilon))


def margin_loss(embeddings_a, embeddings_b, margin=0.5, energy="cosine", reduce=True):
    """Contrastive margin loss of paired embeddings against the other pairs of the batch.

    Row i of `embeddings_a` and row i of `embeddings_b` are a positive pair
    (two views of one image); a_i and b_j with j != i are a negative pair. With
    E the energy of `pairwise_energy`,

        l_i = E(a_i, b_i)^2 + 1/(N-1) sum_{j != i} max(0, margin - E(a_i, b_j))^2

    The first term pulls positive pairs together (energy down); the hinge
    pushes negative pairs apart until their energy exceeds the margin, and
    stops pushing there (energy up, but only so far).

    Args:
        embeddings_a: float tensor [N, D], N >= 2.
        embeddings_b: float tensor [N, D].
        margin: positive float, default 0.5. For `energy="cosine"` it is in
            units of 1 - cos (so in (0, 2]); for "l2" in units of distance.
        energy: "cosine" (default) or "l2".
        reduce: bool, default True; if False `loss` is the vector [N].

    Returns:
        `(loss, logits, labels)`: logits -E [N, N] (row i's positive in column
        i) and labels arange(N), so accuracy is "is the nearest b_j the positive".

    Example:

    >>> a, b = np.random.randn(8, 16), np.random.randn(8, 16)
    >>> loss, logits, labels = margin_loss(a, b, margin=0.5, energy="cosine")

    Reference:
        Hadsell, Chopra & LeCun, Dimensionality Reduction by Learning an
        Invariant Mapping (DrLIM), CVPR 2006, eq. 4; Chopra, Hadsell & LeCun,
        Learning a Similarity Metric Discriminatively, CVPR 2005.
    """
    if margin <= 0:
        raise ValueError(f"margin_loss: margin must be > 0, got {margin}")
    # NOTE: DrLIM halves both terms; the factor 1/2 is dropped (it only scales
    # the learning rate). Negatives are averaged so both terms weigh the same.
    energies = pairwise_energy(embeddings_a, embeddings_b, energy)
    batch_size = ops.shape(energies)[0]
    positives = ops.eye(batch_size, dtype="float32")
    energy_positive = ops.sum(energies * positives, axis=1)
    hinge = ops.square(ops.relu(margin - energies)) * (1.0 - positives)
    num_negatives = ops.maximum(ops.cast(batch_size, "float32") - 1.0, 1.0)
    losses = ops.square(energy_positive) + ops.sum(hinge, axis=1) / num_negatives
    labels = ops.arange(batch_size, dtype="int32")
    return (ops.mean(losses) if reduce else losses), -energies, labels


@keras.saving.register_keras_serializable(package="keras_ebm")
class MarginLoss(keras.losses.Loss):
    """The DrLIM margin loss as a `keras.losses.Loss`: `loss(embeddings_a, embeddings_b)`.

    See `margin_loss` for the formula.

    Args:
        margin: positive float, default 0.5.
        energy: "cosine" (default) or "l2".
        **kwargs: `keras.losses.Loss` arguments.

    Example:

    >>> loss = MarginLoss(margin=0.5, energy="cosine")
    >>> value = loss(projections_a, projections_b)

    Reference:
        Hadsell, Chopra & LeCun, DrLIM, CVPR 2006.
    """

    def __init__(self, margin=0.5, energy="cosine", name="margin_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if energy not in ENERGIES:
            raise ValueError(f"MarginLoss: energy must be one of {ENERGIES}, got {energy!r}")
        if margin <= 0:
            raise ValueError(f"MarginLoss: margin must be > 0, got {margin}")
        self.margin = float(margin)
        self.energy = energy

    def call(self, y_true, y_pred):
        losses, _, _ = margin_loss(y_true, y_pred, self.margin, self.energy, reduce=False)
        return losses

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin, "energy": self.energy})
        return config
