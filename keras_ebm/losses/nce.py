"""PIRL's noise-contrastive estimation loss against negatives from a memory bank."""

import keras
from keras import ops

from keras_ebm.layers.cosine_energy import normalize

NCE_FORMS = ("nce", "infonce")


def nce(queries, positive_keys, negative_keys, temperature=0.07, form="nce", reduce=True):
    """PIRL's NCE loss of each query against its positive key and the negatives D_N.

    With s the cosine similarity, q a query (PIRL: g(v_It) or f(v_I)), k its
    positive key (PIRL: the memory-bank entry m_I) and k' in D_N the negatives,

        h(k, q) = exp(s(k, q)/T) / (exp(s(k, q)/T) + sum_{k' in D_N} exp(s(q, k')/T))
        L(q)    = -log h(k, q) - sum_{k' in D_N} log(1 - h(k', q))

    which is the lecture's L_NCE(I, I_t) = -log h(f(v_I), g(v_It))
    - sum_{I'} log(1 - h(g(v_It), f(v_I'))). The first term pushes the energy
    E = -s/T of the positive pair down, the second the negatives' up.
    `form="infonce"` keeps only the first term: the softmax cross-entropy over
    [positive, negatives] (PIRL's code offers both).

    Every log is computed from log-sum-exps, so small temperatures are safe.

    Args:
        queries: float tensor [N, D].
        positive_keys: float tensor [N, D]; row i is the positive of query i.
        negative_keys: float tensor [K, D] shared by all queries, or [N, K, D]
            with its own negatives per query.
        temperature: positive float, default 0.07 (PIRL).
        form: "nce" (default) or "infonce".
        reduce: bool, default True; if False `loss` is the vector [N].

    Returns:
        `(loss, logits, labels)`: logits s/T [N, 1 + K] with the positive in
        column 0, and labels (all zeros) [N].

    Example:

    >>> q = np.random.randn(4, 8).astype("float32")
    >>> loss, logits, labels = nce(q, q, np.random.randn(16, 8), temperature=0.07)
    >>> logits.shape
    (4, 17)

    Reference:
        Misra & van der Maaten, Self-Supervised Learning of Pretext-Invariant
        Representations (PIRL), CVPR 2020, eq. 3-4; Gutmann & Hyvarinen,
        Noise-contrastive estimation, AISTATS 2010.
    """
    if form not in NCE_FORMS:
        raise ValueError(f"nce: form must be one of {NCE_FORMS}, got {form!r}")
    if temperature <= 0:
        raise ValueError(f"nce: temperature must be > 0, got {temperature}")
    queries = normalize(queries)
    positive_keys = normalize(positive_keys)
    negative_keys = normalize(negative_keys)
    positive_logits = ops.sum(queries * positive_keys, axis=-1, keepdims=True) / temperature
    if len(negative_keys.shape) == 3:
        negative_logits = ops.einsum("nd,nkd->nk", queries, negative_keys) / temperature
    else:
        negative_logits = ops.matmul(queries, ops.transpose(negative_keys)) / temperature
    logits = ops.concatenate([positive_logits, negative_logits], axis=1)
    labels = ops.zeros((ops.shape(queries)[0],), dtype="int32")
    # -log h(k, q) = log-sum-exp over [positive, negatives] minus the positive logit.
    losses = ops.logsumexp(logits, axis=1) - positive_logits[:, 0]
    if form == "nce":
        # 1 - h(k', q) = sum_neg / (exp(s(k', q)/T) + sum_neg), in logs.
        log_sum_negatives = ops.logsumexp(negative_logits, axis=1, keepdims=True)
        log_one_minus_h = log_sum_negatives - ops.logaddexp(negative_logits, log_sum_negatives)
        losses = losses - ops.sum(log_one_minus_h, axis=1)
    return (ops.mean(losses) if reduce else losses), logits, labels


@keras.saving.register_keras_serializable(package="keras_ebm")
class NCE(keras.losses.Loss):
    """PIRL's NCE as a `keras.losses.Loss`: `loss(queries, (positive_keys, negative_keys))`.

    See `nce` for the formula.

    Args:
        temperature: positive float, default 0.07.
        form: "nce" (default) or "infonce".
        **kwargs: `keras.losses.Loss` arguments.

    Example:

    >>> loss = NCE(temperature=0.07)
    >>> value = loss(queries, (memory_entries, bank_negatives))

    Reference:
        Misra & van der Maaten, PIRL, CVPR 2020.
    """

    def __init__(self, temperature=0.07, form="nce", name="nce", **kwargs):
        super().__init__(name=name, **kwargs)
        if form not in NCE_FORMS:
            raise ValueError(f"NCE: form must be one of {NCE_FORMS}, got {form!r}")
        if temperature <= 0:
            raise ValueError(f"NCE: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.form = form

    def call(self, y_true, y_pred):
        positive_keys, negative_keys = y_pred
        losses, _, _ = nce(y_true, positive_keys, negative_keys, self.temperature, self.form,
                           reduce=False)
        return losses

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature, "form": self.form})
        return config
