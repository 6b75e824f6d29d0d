"""NT-Xent: the normalised temperature-scaled cross-entropy of SimCLR."""

import keras
from keras import ops

from keras_ebm import distribute
from keras_ebm.layers.cosine_energy import normalize

# Added to the self-similarity logits: exp(-1e9) is exactly 0 in float32.
_MASK_LOGIT = -1e9


def nt_xent(projections_a, projections_b, temperature=0.5, reduce=True, cross_replica=False):
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
        cross_replica: bool, default False. Under a tf.distribute strategy,
            in replica context: gather the projections of every replica
            (`keras_ebm.distribute.cross_replica_concat`) and contrast this
            replica's 2n views against all 2N views of the global batch, as
            SimCLR does on TPUs. The loss is then the mean over this replica's
            2n views; the logits are [2n, 2N] (columns: all first views, then
            all second views). Without a strategy it changes nothing.

    Returns:
        `(loss, logits, labels)`: the loss, the [2N, 2N] logits (negative
        energies, self-similarity set to -1e9) and the [2N] index of each
        row's positive, so that metrics can reuse them. With
        `cross_replica=True` under several replicas: [2n, 2N] logits and [2n]
        labels of this replica's views.

    Example:

    >>> z = np.random.randn(8, 16).astype("float32")
    >>> loss, logits, labels = nt_xent(z, z + 0.01, temperature=0.5)

    Reference:
        Chen et al., A Simple Framework for Contrastive Learning of Visual
        Representations, ICML 2020, eq. 1.
    """
    anchors = normalize(ops.concatenate([projections_a, projections_b], axis=0))
    n = ops.shape(projections_a)[0]
    if cross_replica:
        # Anchors: this replica's 2n views. Candidates: all 2N views of the
        # global batch, [all first views; all second views], replica r's rows
        # at `offset` in each half. The gather's gradient returns each replica
        # the summed gradient of its own rows.
        # One gather of [n, 2, D]: one collective, and one in the backward pass.
        gathered = distribute.cross_replica_concat(
            ops.stack([normalize(projections_a), normalize(projections_b)], axis=1))
        offset, total = distribute.replica_offset(n)
        candidates = ops.concatenate([gathered[:, 0], gathered[:, 1]], axis=0)
    else:
        candidates, offset, total = anchors, 0, n
    logits = ops.matmul(anchors, ops.transpose(candidates)) / temperature
    # Row i (first view of image offset+i) has its positive at column
    # total+offset+i and itself at column offset+i; row n+i the reverse.
    own_rows = ops.arange(n) + offset
    self_columns = ops.concatenate([own_rows, own_rows + total], axis=0)
    labels = ops.concatenate([own_rows + total, own_rows], axis=0)
    logits = logits + _MASK_LOGIT * ops.one_hot(self_columns, 2 * total, dtype=logits.dtype)
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
