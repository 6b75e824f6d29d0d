"""NT-Xent: the normalised temperature-scaled cross-entropy of SimCLR."""

import keras
from keras import ops

from keras_ebm.layers.cosine_energy import normalize

# Added to the self-similarity logits: exp(-1e9) is exactly 0 in float32.
_MASK_LOGIT = -1e9


def nt_xent(projections_a, projections_b, temperature=0.5, reduce=True):
    """NT-Xent loss over the 2N views of a batch (both view directions).

    With z_1..z_2N the L2-normalised projections of both views and i+ the
    other view of the same image,

        l_i = -log( exp(cos(z_i, z_i+) / T) / sum_{k != i} exp(cos(z_i, z_k) / T) )
        L   = mean_i l_i

    In energy terms, E(z_i, z_k) = -cos(z_i, z_k) / T; the loss pushes the
    energy of the positive pair down and that of the 2N - 2 other views up.
    The self-similarity z_i . z_i is masked out of the softmax.

    Args:
        projections_a: float tensor [N, D], projections of the first views.
        projections_b: float tensor [N, D], projections of the second views;
            row i is the positive of row i of `projections_a`.
        temperature: positive float, default 0.5.
        reduce: bool, default True. If False, `loss` is the per-view vector
            [2N] instead of its mean.

    Returns:
        `(loss, logits, labels)`: the loss, the [2N, 2N] logits (negative
        energies, self-similarity set to -1e9) and the [2N] index of each
        row's positive, so that metrics can reuse them.

    Example:

    >>> z = np.random.randn(8, 16).astype("float32")
    >>> loss, logits, labels = nt_xent(z, z + 0.01, temperature=0.5)

    Reference:
        Chen et al., A Simple Framework for Contrastive Learning of Visual
        Representations, ICML 2020, eq. 1.
    """
    z = normalize(ops.concatenate([projections_a, projections_b], axis=0))
    n = ops.shape(projections_a)[0]
    logits = ops.matmul(z, ops.transpose(z)) / temperature
    logits = logits + _MASK_LOGIT * ops.eye(2 * n, dtype=logits.dtype)
    labels = ops.concatenate([ops.arange(n, 2 * n), ops.arange(0, n)], axis=0)
    losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return (ops.mean(losses) if reduce else losses), logits, labels


@keras.saving.register_keras_serializable(package="keras_ebm")
class NTXent(keras.losses.Loss):
    """NT-Xent as a `keras.losses.Loss`: `loss(projections_a, projections_b)`.

    `y_true` holds the first views' projections and `y_pred` the second
    views'. The per-example loss is the mean of the two directions, so sample
    weights apply per image. See `nt_xent` for the formula.

    Args:
        temperature: positive float, default 0.5.
        **kwargs: `keras.losses.Loss` arguments (`reduction`, `name`, `dtype`).

    Example:

    >>> loss = NTXent(temperature=0.5)
    >>> value = loss(np.eye(4, 8), np.eye(4, 8))

    Reference:
        Chen et al., SimCLR, ICML 2020.
    """

    def __init__(self, temperature=0.5, name="nt_xent", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        losses, _, _ = nt_xent(y_true, y_pred, self.temperature, reduce=False)
        return ops.mean(ops.reshape(losses, (2, -1)), axis=0)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature})
        return config
