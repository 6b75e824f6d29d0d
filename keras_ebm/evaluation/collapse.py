"""A label-free representation-collapse monitor: RankMe's effective rank and SimSiam's std."""

import logging
import math

import keras
import numpy as np
import tensorflow as tf

from keras_ebm.evaluation.knn import knn_accuracy


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
    `history`. When the model also has projections (``project``, by default
    the ``project`` method of the `EmbeddingMethod`s: z = g(f(x)), what the
    loss sees), their rank and std are logged too, as ``projection_rank``
    and ``projection_std``, and are held to the same thresholds.

    An epoch is collapsed when a value falls below its threshold: the
    embeddings' rank below ``min_effective_rank``, either representation's
    rank below ``min_rank_ratio`` times the highest rank it reached in this
    fit, or either std below ``min_std``. A collapse to one direction shows
    as a rank near 1 even when the std stays large (rows ``+v`` and ``-v``),
    outputs that are a constant plus a little noise show as a std near 0
    while the un-centred rank, which counts every small singular value, can
    stay well above 1, and a *dimensional* collapse may show in the
    projections only. The absolute rank floor is not applied to the
    projections: through a linear head, features with a large shared mean
    have an un-centred rank near 1 without any collapse (a randomly
    initialised ResNet-50 on noise images: 1.04).
    After ``patience`` collapsed epochs in a row it restores the weights of
    the last epoch that was not collapsed (kept as TensorFlow variables at
    each such epoch end; "epoch 0" is the state before the first epoch),
    sets ``model.stop_training``, stores a one-line `message` and logs it
    or, with ``raise_error``, raises `CollapseError` with it. Epochs are
    numbered from 1, as Keras's progress bar shows them.

    The defaults (1.05, no ratio; std
    ``1e-3 / sqrt(D)``) catch only a complete collapse: they separate a
    fully collapsed encoder (constant output plus float32 noise: rank
    1.000-1.002 for D <= 2048, std about 1e-6 / sqrt(D)) from randomly
    initialised small CNNs on uniform-noise images, whose
    global-average-pooled features are nearly constant too (measured rank
    1.06-5.7, std 0.006-0.11 / sqrt(D) for 4- to 32-wide
    ``small_cnn``/``small_resnet`` at 8x8x1 and 32x32x3). A dimensional
    collapse needs the ratio. SimSiam without its stop-gradient is the
    measured example: on the embedded digits its projections' rank falls
    from about 75 to 4.8 while the encoder's stays near 70 and both stds
    stay near ``1 / sqrt(D)``; healthy SimSiam's projections keep a rank
    of about 25 (31% of their peak). `keras_ebm.presets.collapse_monitor`
    (the CLI) uses ``min_rank_ratio=0.15``, set from healthy and collapsing
    runs of the digits configs (docs/methods/README.md, "Collapse").

    With ``knn_data`` (labels used for monitoring only, as solo-learn's and
    lightly's online kNN), it also logs ``knn_accuracy``: the weighted kNN
    accuracy (`keras_ebm.evaluation.knn_accuracy`, ``knn_k`` neighbours) of
    the encoder's features of the test split against those of the train
    split, before training and every ``knn_every`` epochs (and at the last
    epoch), so TensorBoard shows whether training helps and not only
    whether the loss falls.

    ``x_held``, ``embed``, ``project`` and ``knn_data`` are not part of
    `get_config`: a callback rebuilt from its config needs ``x_held`` (and
    the others, if used) set before ``fit``.

    Args:
        x_held: a fixed batch of inputs, e.g. 512 held-out images. Embedded
            ``batch_size`` rows at a time.
        embed: callable mapping a batch of inputs to embeddings, e.g.
            ``lambda x: model.encoder(x, training=False)``, or None for
            ``model.encoder(x, training=False)`` when the model has an
            ``encoder`` (the `EmbeddingMethod`s) and ``model(x, training=False)``
            otherwise. Outputs with more than two axes are flattened per row.
        project: callable mapping a batch of inputs to projections, False for
            none, or None for ``model.project(x, training=False)`` when the
            model has a ``project`` method. Defaults to None.
        min_effective_rank: float, collapse below this effective rank of the
            embeddings. Defaults to 1.05 (see above).
        min_rank_ratio: float in [0, 1) or None; collapse also when a rank
            falls below this fraction of the highest rank the same
            representation reached in this fit. Defaults to None.
        min_std: float, collapse below this `normalized_std`, or None for
            ``1e-3 / sqrt(D)`` (D: the dimension of the representation).
            Defaults to None (see above).
        patience: int >= 1, collapsed epochs in a row before stopping.
            Defaults to 1.
        stop: bool; if False the monitor only records, logs a warning and sets
            `message` at a collapse, and neither restores, stops nor raises.
            Defaults to True.
        raise_error: bool, raise `CollapseError` after restoring (needs
            ``stop``). Defaults to False.
        batch_size: int, rows of ``x_held`` embedded per call. Defaults to 256.
        knn_data: None, or ``(train, test)``, each an ``(images, labels)``
            pair of arrays or a re-iterable of ``(images, labels)`` batches
            (e.g. ``dataset.labelled("test")``, a ``tf.data.Dataset``).
            Defaults to None (no kNN).
        knn_every: int >= 1, epochs between kNN evaluations. Defaults to 5.
        knn_k: int >= 1, neighbours of the kNN vote. Defaults to 20.

    Attributes:
        history: list of dicts ``{"epoch", "effective_rank", "embedding_std"}``
            (plus ``projection_rank``, ``projection_std`` and, on kNN epochs,
            ``knn_accuracy``), epoch 0 being the state before training.
        stopped_epoch: the epoch (from 1) at which training was stopped, or None.
        restored_epoch: the epoch whose weights were restored, or None.
        message: the one-line report of the last collapse, or None.

    Example:

    >>> monitor = CollapseMonitor(x_held=images[:512], min_rank_ratio=0.15,
    ...                           knn_data=((x_train, y_train), (x_test, y_test)))
    >>> method.fit(images, epochs=100, callbacks=[monitor])
    >>> monitor.message, method.history.history["projection_rank"]

    References:
        Garrido et al., RankMe, ICML 2023; Chen and He, Exploring Simple
        Siamese Representation Learning, CVPR 2021; Wu et al., Unsupervised
        Feature Learning via Non-Parametric Instance Discrimination, CVPR 2018.
    """

    def __init__(self, x_held=None, embed=None, min_effective_rank=1.05, min_std=None,
                 patience=1, stop=True, raise_error=False, batch_size=256, project=None,
                 min_rank_ratio=None, knn_data=None, knn_every=5, knn_k=20):
        super().__init__()
        if int(patience) < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        if raise_error and not stop:
            raise ValueError("raise_error=True needs stop=True")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if int(knn_every) < 1 or int(knn_k) < 1:
            raise ValueError(f"knn_every and knn_k must be at least 1, got {knn_every}, {knn_k}")
        if knn_data is not None and len(knn_data) != 2:
            raise ValueError("knn_data must be (train, test), each (images, labels) or batches "
                             "of them")
        self.x_held = x_held
        self.embed = embed
        self.project = project
        self.min_effective_rank = float(min_effective_rank)
        self.min_std = None if min_std is None else float(min_std)
        if min_rank_ratio is not None and not 0.0 <= float(min_rank_ratio) < 1.0:
            raise ValueError(f"min_rank_ratio must be in [0, 1), got {min_rank_ratio}")
        self.min_rank_ratio = None if min_rank_ratio is None else float(min_rank_ratio)
        self.patience = int(patience)
        self.stop = bool(stop)
        self.raise_error = bool(raise_error)
        self.batch_size = int(batch_size)
        self.knn_data = knn_data
        self.knn_every = int(knn_every)
        self.knn_k = int(knn_k)
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
        self._below = []
        self._peaks = {}

    # -- measuring ------------------------------------------------------------
    def _rows(self, function, x):
        parts = [np.asarray(function(x[start:start + self.batch_size]))
                 for start in range(0, len(x), self.batch_size)]
        rows = np.concatenate(parts, axis=0)
        return rows.reshape(len(rows), -1)

    def _held(self):
        if self.x_held is None:
            raise ValueError("CollapseMonitor: x_held is not set (it is not part of the "
                             "config); pass a fixed batch of inputs, e.g. 512 held-out images")
        return self.x_held

    def embeddings(self):
        """The ``[N, D]`` embeddings of ``x_held`` under the current weights, as NumPy."""
        return self._rows(self.embed if self.embed is not None else self._default_embed,
                          self._held())

    def projections(self):
        """The ``[N, D']`` projections of ``x_held``, or None when there are none."""
        project = self._projector()
        return None if project is None else self._rows(project, self._held())

    def _default_embed(self, x):
        encoder = getattr(self.model, "encoder", None)
        if callable(encoder):
            return encoder(x, training=False)
        return self.model(x, training=False)

    def _projector(self):
        if self.project is False:
            return None
        if self.project is not None:
            return self.project
        if self.embed is None and callable(getattr(self.model, "project", None)):
            return lambda x: self.model.project(x, training=False)
        return None

    def threshold_std(self, dimensions):
        """The std threshold for ``dimensions``-wide embeddings."""
        return self.min_std if self.min_std is not None else 1e-3 / math.sqrt(dimensions)

    def measure(self):
        """``(effective_rank, embedding_std, dimensions)`` of ``x_held``'s embeddings now."""
        embeddings = self.embeddings()
        return effective_rank(embeddings), normalized_std(embeddings), embeddings.shape[1]

    def measure_projections(self):
        """``(projection_rank, projection_std, dimensions)`` now, or None without projections."""
        projections = self.projections()
        if projections is None:
            return None
        return effective_rank(projections), normalized_std(projections), projections.shape[1]

    def threshold_rank(self, peak=0.0, absolute=True):
        """The rank threshold, given the highest rank this fit has measured (``peak``).

        ``absolute=False`` (the projections) leaves out ``min_effective_rank``.
        """
        floor = self.min_effective_rank if absolute else 0.0
        return max(floor, (self.min_rank_ratio or 0.0) * peak)

    def _check(self, kind, rank, std, dimensions):
        """Records the peak of ``kind``; returns [(name, value, threshold)] and collapsed."""
        peak = self._peaks[kind] = max(self._peaks.get(kind, 0.0), rank)
        names = {"embeddings": ("effective rank", "embedding std"),
                 "projections": ("projection rank", "projection std")}[kind]
        # The absolute floor is for the encoder's embeddings: projections through a
        # linear head of features with a large shared mean have an un-centred rank
        # near 1 without any collapse (a random ResNet-50 on noise: 1.04).
        checks = [(names[0], rank, self.threshold_rank(peak, absolute=kind == "embeddings")),
                  (names[1], std, self.threshold_std(dimensions))]
        return checks, any(value < threshold for _, value, threshold in checks)

    def _features(self, data):
        """Encoder features and labels of ``(images, labels)`` arrays or of batches of them."""
        embed = self.embed if self.embed is not None else self._default_embed
        if isinstance(data, tuple) and len(data) == 2 and hasattr(data[0], "shape"):
            return self._rows(embed, data[0]), np.asarray(data[1]).reshape(-1)
        features, labels = [], []
        for images, batch_labels in data:
            features.append(self._rows(embed, images))
            labels.append(np.asarray(batch_labels).reshape(-1))
        return np.concatenate(features), np.concatenate(labels)

    def knn(self):
        """The kNN accuracy of the test features against the train features, now."""
        train, test = self.knn_data
        return knn_accuracy(*self._features(train), *self._features(test), k=self.knn_k)

    def _record(self, number, logs):
        """Measures everything; returns (entry, collapsed)."""
        rank, std, dimensions = self.measure()
        entry = {"epoch": number, "effective_rank": rank, "embedding_std": std}
        self._below, collapsed = self._check("embeddings", rank, std, dimensions)
        projected = self.measure_projections()
        if projected is not None:
            rank, std, dimensions = projected
            entry.update(projection_rank=rank, projection_std=std)
            checks, projections_collapsed = self._check("projections", rank, std, dimensions)
            self._below += checks
            collapsed = collapsed or projections_collapsed
        last = (self.params or {}).get("epochs")
        if self.knn_data is not None and (number % self.knn_every == 0 or number == last
                                          or number == 0):
            entry["knn_accuracy"] = self.knn()
        if logs is not None:
            logs.update({k: v for k, v in entry.items() if k != "epoch"})
        self.history.append(entry)
        return entry, collapsed

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
        _, collapsed = self._record(epoch, None)
        if not collapsed:
            self._keep_weights(epoch)

    def on_epoch_end(self, epoch, logs=None):
        number = epoch + 1
        _, collapsed = self._record(number, logs)
        if not collapsed:
            self._collapsed_epochs = 0
            if self.stop:
                self._keep_weights(number)
            return
        self._collapsed_epochs += 1
        if self._collapsed_epochs < self.patience:
            return
        below = "" if self.patience == 1 else f" ({self._collapsed_epochs} epochs in a row)"
        self.message = f"Representation collapse at epoch {number}{below}: " + ", ".join(
            f"{name} {value:{'.2f' if 'rank' in name else '.3g'}} "
            f"{'<' if value < threshold else '>='} {threshold:.3g}"
            for name, value, threshold in self._below)
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

    def knn_history(self):
        """``{epoch: knn_accuracy}`` of the epochs the online kNN ran."""
        return {entry["epoch"]: entry["knn_accuracy"] for entry in self.history
                if "knn_accuracy" in entry}

    def save_record(self, path, **extra):
        """Writes `history` (and `message`, ``extra``) as JSON to ``path``; returns ``path``."""
        import json

        with open(path, "w") as f:
            json.dump({**extra, "message": self.message, "history": self.history}, f,
                      indent=2, default=float)
        return path

    def get_config(self):
        return {"min_effective_rank": self.min_effective_rank, "min_std": self.min_std,
                "patience": self.patience, "stop": self.stop,
                "raise_error": self.raise_error, "batch_size": self.batch_size,
                "min_rank_ratio": self.min_rank_ratio, "knn_every": self.knn_every,
                "knn_k": self.knn_k}

    @classmethod
    def from_config(cls, config):
        """A monitor with these settings; set ``x_held`` (and ``embed``) before ``fit``."""
        return cls(**config)
