"""InfoNCE: one positive against a set of negatives (CPC, MoCo)."""

import keras
from keras import ops

from keras_ebm.layers.cosine_energy import normalize


def info_nce(queries, positive_keys, negative_keys, temperature=0.2, reduce=True):
    """InfoNCE loss of each query against its positive key and shared negatives.

        l_i = -log( exp(q_i . k_i+ / T) / (exp(q_i . k_i+ / T) + sum_j exp(q_i . k_j / T)) )

    with all vectors L2-normalised. In energy terms E(q, k) = -q . k / T: the
    positive pair's energy is pushed down and the negatives' energies up.

    Args:
        queries: float tensor [N, D].
        positive_keys: float tensor [N, D]; row i is the positive of query i.
        negative_keys: float tensor [K, D], negatives shared by all queries
            (MoCo's queue).
        temperature: positive float, default 0.2 (MoCo v2).
        reduce: bool, default True; if False `loss` is the vector [N].

    Returns:
        `(loss, logits, labels)`: logits [N, 1 + K] with the positive in column
        0, and labels (all zeros) [N].

    Example:

    >>> q = np.random.randn(4, 8).astype("float32")
    >>> loss, logits, labels = info_nce(q, q, np.random.randn(16, 8), 0.2)
    >>> logits.shape
    (4, 17)

    Reference:
        van den Oord et al., Representation Learning with Contrastive
        Predictive Coding, 2018; He et al., Momentum Contrast (MoCo), CVPR 2020,
        Algorithm 1.
    """
    queries = normalize(queries)
    positive_keys = normalize(positive_keys)
    negative_keys = normalize(negative_keys)
    positive_logits = ops.sum(queries * positive_keys, axis=-1, keepdims=True)
    negative_logits = ops.matmul(queries, ops.transpose(negative_keys))
    logits = ops.concatenate([positive_logits, negative_logits], axis=1) / temperature
    labels = ops.zeros((ops.shape(queries)[0],), dtype="int32")
    losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return (ops.mean(losses) if reduce else losses), logits, labels


@keras.saving.register_keras_serializable(package="keras_ebm")
class InfoNCE(keras.losses.Loss):
    """InfoNCE as a `keras.losses.Loss`: `loss(queries, (positive_keys, negative_keys))`.

    See `info_nce` for the formula.

    Args:
        temperature: positive float, default 0.2.
        **kwargs: `keras.losses.Loss` arguments.

    Example:

    >>> loss = InfoNCE(temperature=0.2)
    >>> value = loss(q, (k_positive, k_negatives))

    Reference:
        van den Oord et al., CPC, 2018; He et al., MoCo, CVPR 2020.
    """

    def __init__(self, temperature=0.2, name="info_nce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        positive_keys, negative_keys = y_pred
        losses, _, _ = info_nce(y_true, positive_keys, negative_keys, self.temperature,
                                reduce=False)
        return losses

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature})
        return config
