"""A label-free representation-collapse monitor: RankMe's effective rank and SimSiam's std."""

import logging
import math

import keras
import numpy as np
import tensorflow as tf


class CollapseError(RuntimeError):
    """Raised by `CollapseMonitor(raise_error=True)` when the representation has collapsed."""


def _embedding_matrix(embeddings, name):
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2:
        raise ValueError(f"{name}: embeddings must be [examples, dimensions], got shape "
                         f"{embeddings.shape}.")
    return embeddings


def effective_rank(embeddings, eps=1e-7):
    """RankMe, the smooth rank of an embedding matrix (Garrido et al. 2023).

    With ``s`` the singular values of the ``[N, D]`` matrix ``Z`` (raw, not
    centred), ``p_k = s_k / ||s||_1 + eps`` and the rank is
    ``exp(-sum_k p_k log p_k)``: the exponential of the entropy of the
    normalised singular-value spectrum. ``eps`` is added after the
    normalisation and the matrix is not centred, as in the paper's
    definition ``p_k = sigma_k(Z) / ||sigma(Z)||_1 + eps`` and the
    transcriptions checked (the ``calc_rankme`` of Meta's I-JEPA-style
    training code and of decalmlutils, both with ``eps = 1e-7`` for
    float32). It lies in ``[1, min(N, D)]`` up to the ``eps`` term: 1 for
    rows that all point along one direction (a constant output included),
    ``k`` for ``k`` equal non-zero singular values. Because ``Z`` is not
    centred, a large shared mean counts as one direction. An all-zero matrix
    has no spectrum to normalise: its rank is 0. With fewer rows than
    dimensions the rank cannot exceed ``N`` (the paper uses 25,600 rows).

    Computed with NumPy in float64.

    Args:
        embeddings: ``[N, D]`` array or tensor.
        eps: float added to each normalised singular value. Defaults to 1e-7.

    Returns:
        A Python float; NaN if ``embeddings`` holds a non-finite value.

    Example:
    >>> round(effective_rank(np.eye(4)), 4)  # 4 equal singular values
    4.0

    Reference:
        Garrido, Balestriero, Najman and LeCun, RankMe: Assessing the
        downstream performance of pretrained self-supervised representations
        by their rank, ICML 2023 (arXiv:2210.02885).
    """
    embeddings = _embedding_matrix(embeddings, "effective_rank")
    if not np.all(np.isfinite(embeddings)):
        return float("nan")
    singular_values = np.linalg.svd(embeddings, compute_uv=False)
    total = singular_values.sum()
    if total == 0.0:
        return 0.0
    p = singular_values / total + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def normalized_std(embeddings):
    """SimSiam's collapse indicator: the mean per-dimension std of the L2-normalised rows.

    Each row ``z`` is divided by ``||z||_2`` (zero rows stay zero), the
    standard deviation of each of the ``D`` dimensions is taken over the
    ``N`` rows (``ddof=1``, as lightly's ``std_of_l2_normalized``), and the
    ``D`` values are averaged, as in Chen & He's Figure 2 (middle). It is 0
    when every row points the same way (outputs collapsed to a constant
    vector) and about ``1 / sqrt(D)`` for zero-mean isotropic Gaussian
    outputs.

    Args:
        embeddings: ``[N, D]`` array or tensor, ``N >= 2``.

    Returns:
        A Python float; NaN if ``embeddings`` holds a non-finite value.

    Example:
    >>> normalized_std(np.ones((8, 3)))
    0.0

    Reference:
        Chen and He, Exploring Simple Siamese Representation Learning,
        CVPR 2021, Section 4.1.
    """
    embeddings = _embedding_matrix(embeddings, "normalized_std")
    if len(embeddings) < 2:
        raise ValueError(f"normalized_std needs at least 2 rows, got {len(embeddings)}.")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.maximum(norms, 1e-12)
    return float(np.mean(np.std(unit, axis=0, ddof=1)))


@keras.saving.register_keras_serializable(package="keras_ebm")
class CollapseMonitor(keras.callbacks.Callback):
    """Watches a held batch's embeddings each epoch and stops training at a representation collapse.

    At the start of training and at every epoch end it embeds the fixed
    batch ``x_held`` (``training=False``), computes `effective_rank`
    (RankMe) and `normalized_std` (SimSiam's std of the L2-normalised
    embeddings), adds them to the epoch's logs as ``effective_rank`` and
    ``embedding_std`` (so ``History``, the progress bar and a ``TensorBoard``
    callback listed after this one record them) and appends them to
    `history`.

    An epoch is collapsed when **either** value is below its threshold: a
    collapse to one direction shows as a rank near 1 even when the std
    stays large (rows ``+v`` and ``-v``), and outputs that are a constant
    plus a little noise show as a std near 0 while the un-centred rank,
    which counts every small singular value, can stay well above 1. After
    ``patience`` collapsed epochs in a row it restores the weights of the
    last epoch that was not collapsed (kept as TensorFlow variables at each
    such epoch end; "epoch 0" is the state before the first epoch), sets
    ``model.stop_training``, stores a one-line `message` and logs it or,
    with ``raise_error``, raises `CollapseError` with it. Epochs are numbered from 1,
    as Keras's progress bar shows them.

    The default thresholds are provisional: they separate a fully collapsed
    encoder (constant output plus float32 noise: rank 1.000-1.002 for
    D <= 2048, std about 1e-6 / sqrt(D)) from randomly initialised small
    CNNs on uniform-noise images, whose global-average-pooled features are
    nearly constant too (measured rank 1.06-5.7, std 0.006-0.11 / sqrt(D)
    for 4- to 32-wide ``small_cnn``/``small_resnet`` at 8x8x1 and 32x32x3).
    They therefore catch only a complete collapse. Set both from the values a healthy run of
    the same encoder and data records in ``History`` (e.g. a fraction of the
    rank and std reached after the first epochs).

    ``x_held`` and ``embed`` are not part of `get_config`: a callback
    rebuilt from its config needs ``x_held`` (and ``embed``, if used) set
    before ``fit``.

    Args:
        x_held: a fixed batch of inputs, e.g. 512 held-out images. Embedded
            ``batch_size`` rows at a time.
        embed: callable mapping a batch of inputs to embeddings, e.g.
            ``lambda x: model.encoder(x, training=False)``, or None for
            ``model.encoder(x, training=False)`` when the model has an
            ``encoder`` (the `EmbeddingMethod`s) and ``model(x, training=False)``
            otherwise. Outputs with more than two axes are flattened per row.
        min_effective_rank: float, collapse below this effective rank.
            Defaults to 1.05 (provisional, see above).
        min_std: float, collapse below this `normalized_std`, or None for
            ``1e-3 / sqrt(D)`` (D: the embedding dimension). Defaults to None
            (provisional, see above).
        patience: int >= 1, collapsed epochs in a row before stopping.
            Defaults to 1.
        stop: bool; if False the monitor only records, logs a warning and sets
            `message` at a collapse, and neither restores, stops nor raises.
            Defaults to True.
        raise_error: bool, raise `CollapseError` after restoring (needs
            ``stop``). Defaults to False.
        batch_size: int, rows of ``x_held`` embedded per call. Defaults to 256.

    Attributes:
        history: list of dicts ``{"epoch", "effective_rank", "embedding_std"}``,
            epoch 0 being the state before training.
        stopped_epoch: the epoch (from 1) at which training was stopped, or None.
        restored_epoch: the epoch whose weights were restored, or None.
        message: the one-line report of the last collapse, or None.

    Example:

    >>> monitor = CollapseMonitor(x_held=images[:512], min_effective_rank=20.0)
    >>> method.fit(images, epochs=100, callbacks=[monitor])
    >>> monitor.message, method.history.history["effective_rank"]

    References:
        Garrido et al., RankMe, ICML 2023; Chen and He, Exploring Simple
        Siamese Representation Learning, CVPR 2021.
    """

    def __init__(self, x_held=None, embed=None, min_effective_rank=1.05, min_std=None,
                 patience=1, stop=True, raise_error=False, batch_size=256):
        super().__init__()
        if int(patience) < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        if raise_error and not stop:
            raise ValueError("raise_error=True needs stop=True")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.x_held = x_held
        self.embed = embed
        self.min_effective_rank = float(min_effective_rank)
        self.min_std = None if min_std is None else float(min_std)
        self.patience = int(patience)
        self.stop = bool(stop)
        self.raise_error = bool(raise_error)
        self.batch_size = int(batch_size)
        self._reset()

    def _reset(self):
        self.history = []
        self.stopped_epoch = None
        self.restored_epoch = None
        self.message = None
        self._weights = None
        self._good_weights = None
        self._good_epoch = None
        self._collapsed_epochs = 0
        self._started = False

    # -- measuring ------------------------------------------------------------
    def embeddings(self):
        """The ``[N, D]`` embeddings of ``x_held`` under the current weights, as NumPy."""
        if self.x_held is None:
            raise ValueError("CollapseMonitor: x_held is not set (it is not part of the "
                             "config); pass a fixed batch of inputs, e.g. 512 held-out images")
        embed = self.embed if self.embed is not None else self._default_embed
        x_held = self.x_held
        parts = [np.asarray(embed(x_held[start:start + self.batch_size]))
                 for start in range(0, len(x_held), self.batch_size)]
        embeddings = np.concatenate(parts, axis=0)
        return embeddings.reshape(len(embeddings), -1)

    def _default_embed(self, x):
        encoder = getattr(self.model, "encoder", None)
        if callable(encoder):
            return encoder(x, training=False)
        return self.model(x, training=False)

    def threshold_std(self, dimensions):
        """The std threshold for ``dimensions``-wide embeddings."""
        return self.min_std if self.min_std is not None else 1e-3 / math.sqrt(dimensions)

    def measure(self):
        """``(effective_rank, embedding_std, dimensions)`` of ``x_held`` now."""
        embeddings = self.embeddings()
        return effective_rank(embeddings), normalized_std(embeddings), embeddings.shape[1]

    def _collapsed(self, rank, std, dimensions):
        return rank < self.min_effective_rank or std < self.threshold_std(dimensions)

    # -- weights ------------------------------------------------------------
    def _keep_weights(self, epoch):
        if self._good_weights is None or len(self._weights) != len(self.model.weights):
            self._weights = list(self.model.weights)
            with tf.init_scope():
                self._good_weights = [tf.Variable(w.value, trainable=False)
                                      for w in self._weights]
        else:
            for good_value, weight in zip(self._good_weights, self._weights):
                good_value.assign(weight.value)
        self._good_epoch = epoch

    # -- the callback ---------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_begin(self, epoch, logs=None):
        # The state before the first epoch of this fit: measured here rather
        # than in on_train_begin, so that weights a resuming callback restores
        # there are the ones kept.
        if self._started:
            return
        self._started = True
        rank, std, dimensions = self.measure()
        self.history.append({"epoch": epoch, "effective_rank": rank, "embedding_std": std})
        if not self._collapsed(rank, std, dimensions):
            self._keep_weights(epoch)

    def on_epoch_end(self, epoch, logs=None):
        rank, std, dimensions = self.measure()
        number = epoch + 1
        if logs is not None:
            logs["effective_rank"] = rank
            logs["embedding_std"] = std
        self.history.append({"epoch": number, "effective_rank": rank, "embedding_std": std})
        if not self._collapsed(rank, std, dimensions):
            self._collapsed_epochs = 0
            if self.stop:
                self._keep_weights(number)
            return
        self._collapsed_epochs += 1
        if self._collapsed_epochs < self.patience:
            return
        min_std = self.threshold_std(dimensions)
        below = "" if self.patience == 1 else f" ({self._collapsed_epochs} epochs in a row)"
        self.message = (
            f"Representation collapse at epoch {number}{below}: effective rank {rank:.2f} "
            f"{'<' if rank < self.min_effective_rank else '>='} {self.min_effective_rank:g}, "
            f"embedding std {std:.3g} {'<' if std < min_std else '>='} {min_std:.3g}")
        if not self.stop:
            logging.warning(self.message)
            return
        if self._good_weights is None:
            self.message += "; no earlier epoch was above the thresholds, weights left as they are"
        else:
            for weight, good_value in zip(self._weights, self._good_weights):
                weight.assign(good_value)
            self.restored_epoch = self._good_epoch
            self.message += f"; restored the weights of epoch {self._good_epoch}"
        self.stopped_epoch = number
        self.model.stop_training = True
        if self.raise_error:  # the message goes with the error (one report, not two)
            raise CollapseError(self.message)
        logging.error(self.message)

    def get_config(self):
        return {"min_effective_rank": self.min_effective_rank, "min_std": self.min_std,
                "patience": self.patience, "stop": self.stop,
                "raise_error": self.raise_error, "batch_size": self.batch_size}

    @classmethod
    def from_config(cls, config):
        """A monitor with these settings; set ``x_held`` (and ``embed``) before ``fit``."""
        return cls(**config)
