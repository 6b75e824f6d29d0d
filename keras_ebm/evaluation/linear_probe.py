"""Linear evaluation of frozen features with a few labels per class, or all of them."""

import collections
import warnings

import numpy as np
import tensorflow as tf
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from keras_ebm.evaluation.knn import knn_accuracy


def _draw_labelled(labels, labels_per_class, rng):
    """Indices of ``labels_per_class`` examples of each class, drawn without replacement."""
    indices = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < labels_per_class:
            raise ValueError(
                f"Class {label} has {len(members)} train examples, fewer than "
                f"labels_per_class={labels_per_class}."
            )
        indices.append(rng.choice(members, labels_per_class, replace=False))
    return np.concatenate(indices)


def linear_probe(
    train_features,
    train_labels,
    test_features,
    test_labels,
    labels_per_class=None,
    num_draws=10,
    seed=0,
    *,
    standardize=True,
    C=1.0,
    max_iter=1000,
):
    """Fits a logistic regression on frozen features and scores it on the test set.

    With ``labels_per_class=None`` the classifier sees every train label once.
    Otherwise it sees ``labels_per_class`` examples of each class, drawn from
    the train set with ``np.random.default_rng(seed + draw)`` for each of
    ``num_draws`` draws, and is always scored on the full test set. When
    ``standardize`` is set, a ``StandardScaler`` is fit on *all* train features
    (in self-supervised learning unlabeled features are available) and applied
    to both sets. The classifier is scikit-learn's multinomial
    ``LogisticRegression(C=C, max_iter=max_iter)`` (L2 penalty, lbfgs).

    Settings and reference figures on scikit-learn's digits split with
    ``train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)``, mean
    over 10 draws at 1 / 5 / 10 labels per class / all labels:

    - pixels divided by 16, ``standardize=False``, ``C=1``: 68.9 / 85.0 /
      89.5 / 97.0%, exactly the raw-pixel figures of DESIGN.md.
    - raw pixels, the defaults (``standardize=True``, ``C=1``): 63.3 / 82.6 /
      88.8 / 97.2%; standardising blows up nearly constant border pixels,
      which costs most with one label per class. ``C`` in [0.01, 10] does not
      change this by more than a point.

    keras_ebm's evaluation protocol (``PROTOCOL``, used by ``tools/train.py``,
    the tools and every figure in the docs) uses ``standardize=False`` for
    every row, raw pixels and learned features alike, because it reproduces
    the raw-pixel reference exactly. ``max_iter=1000`` is
    enough for lbfgs on these problems; 10 draws on 1257 x 256 features take
    about a second.

    Args:
        train_features: ``[num_train, dimensions]`` features; all are used to
            fit the scaler.
        train_labels: ``[num_train]`` integer labels.
        test_features: ``[num_test, dimensions]`` features.
        test_labels: ``[num_test]`` integer labels.
        labels_per_class: labelled examples per class, or None for all train
            labels. Defaults to None.
        num_draws: number of label draws to average over; ignored when
            ``labels_per_class`` is None. Defaults to 10.
        seed: seed of the first draw. Defaults to 0.
        standardize: whether to standardise the features. Defaults to True.
        C: inverse L2 regularisation strength. Defaults to 1.0.
        max_iter: lbfgs iterations. Defaults to 1000.

    Returns:
        A dict with ``mean`` and ``std`` (Python floats, test accuracy over the
        draws) and ``accuracies`` (list of floats, one per draw; one entry when
        ``labels_per_class`` is None).

    Raises:
        ValueError: if a class has fewer than ``labels_per_class`` train examples.

    Example:
    >>> X, y = sklearn.datasets.load_digits(return_X_y=True)
    >>> result = linear_probe(X[:1200] / 16, y[:1200], X[1200:] / 16, y[1200:],
    ...                       labels_per_class=10, standardize=False)
    >>> sorted(result)
    ['accuracies', 'mean', 'std']
    """
    train_features = np.asarray(train_features, dtype=np.float64)
    test_features = np.asarray(test_features, dtype=np.float64)
    train_labels = np.asarray(train_labels).reshape(-1)
    test_labels = np.asarray(test_labels).reshape(-1)
    train_features = train_features.reshape(len(train_features), -1)
    test_features = test_features.reshape(len(test_features), -1)
    if standardize:
        scaler = StandardScaler().fit(train_features)
        train_features = scaler.transform(train_features)
        test_features = scaler.transform(test_features)

    if labels_per_class is None:
        draws = [np.arange(len(train_labels))]
    else:
        draws = [
            _draw_labelled(train_labels, labels_per_class, np.random.default_rng(seed + draw))
            for draw in range(num_draws)
        ]
    accuracies = []
    for indices in draws:
        classifier = LogisticRegression(C=C, max_iter=max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            classifier.fit(train_features[indices], train_labels[indices])
        accuracies.append(float(classifier.score(test_features, test_labels)))
    return dict(
        mean=float(np.mean(accuracies)), std=float(np.std(accuracies)), accuracies=accuracies
    )


# The one evaluation protocol of keras_ebm: every probe and kNN figure in the
# README, the docs, tools/train.py and the tools uses these settings.
PROTOCOL = {"labels_per_class": (1, 10, None), "num_draws": 10, "seed": 0, "knn_k": 20,
            "standardize": False}


# The "raw pixels" row of a streamed dataset is kept for images of at most
# this many values (64 x 64 x 3); larger images would hold the whole
# evaluation split in memory as raw pixels.
RAW_PIXELS_MAX_VALUES = 64 * 64 * 3


def _streamed_features(dataset, split, encoders, raw_pixels, max_examples):
    """{name: features} and labels of one split, embedded batch by batch."""
    spec = [tf.TensorSpec((None, *dataset.image_shape), tf.float32)]
    calls = {name: tf.function(lambda x, e=encoder: e(x, training=False), input_signature=spec)
             for name, encoder in encoders.items()}
    features = {name: [] for name in (["raw pixels"] if raw_pixels else []) + list(calls)}
    labels = []
    for images, batch_labels in dataset.labelled(split, batch_size=256,
                                                 max_examples=max_examples):
        labels.append(batch_labels.numpy())
        if raw_pixels:
            features["raw pixels"].append(np.reshape(images.numpy(), (len(images), -1)))
        for name, call in calls.items():
            features[name].append(np.asarray(call(images)))
    return {k: np.concatenate(v) for k, v in features.items()}, np.concatenate(labels)


def evaluation_rows(dataset, encoders, num_draws=None, seed=None, raw_pixels=False,
                    evaluate=True, max_examples=None):
    """Probes and kNN of each encoder's features under `PROTOCOL`, as table rows.

    Args:
        dataset: a dataset of `keras_ebm.data.load`: an `ImageDataset`
            (x_train, y_train, x_test, y_test), or a `StreamingImages`, whose
            splits are embedded batch by batch (only the features are held).
        encoders: dict {row name: Keras model mapping images to features}.
        num_draws, seed: override `PROTOCOL`'s label draws and seed.
        raw_pixels: bool, add a "raw pixels" row first (for streamed images
            of at most `RAW_PIXELS_MAX_VALUES` values). Defaults to False.
        evaluate: bool, False embeds only (the other workers of a multi-worker
            run, whose predict takes part in collectives) and returns {}.
        max_examples: int or None, embed at most this many images of each
            split (the first, in the split's order), which bounds the cost
            on large datasets. Defaults to None (all).

    Returns:
        dict {row name: `evaluate_features` result}.

    Example:

    >>> rows = evaluation_rows(dataset, {"simclr": model.encoder}, raw_pixels=True)
    >>> print(format_table(rows))
    """
    if getattr(dataset, "streaming", False):
        if not evaluate:
            return {}
        raw_pixels = raw_pixels and np.prod(dataset.image_shape) <= RAW_PIXELS_MAX_VALUES
        train, y_train = _streamed_features(dataset, "train", encoders, raw_pixels,
                                            max_examples)
        test, y_test = _streamed_features(dataset, "test", encoders, raw_pixels, max_examples)
        features = {name: (train[name], test[name]) for name in train}
    else:
        cut = slice(None, max_examples)
        x_train, y_train = dataset.x_train[cut], dataset.y_train[cut]
        x_test, y_test = dataset.x_test[cut], dataset.y_test[cut]
        features = {name: (encoder.predict(x_train, batch_size=512, verbose=0),
                           encoder.predict(x_test, batch_size=512, verbose=0))
                    for name, encoder in encoders.items()}
        if not evaluate:
            return {}
        if raw_pixels:
            flat = lambda x: np.reshape(x, (len(x), -1))  # noqa: E731
            features = {"raw pixels": (flat(x_train), flat(x_test)), **features}
    # Few-label probes need that many labels of every class in the train split.
    fewest = int(np.bincount(y_train, minlength=dataset.num_classes).min())
    budgets = tuple(k for k in PROTOCOL["labels_per_class"] if k is None or k <= fewest)
    return {name: evaluate_features(
        train, y_train, test, y_test, labels_per_class=budgets,
        num_draws=PROTOCOL["num_draws"] if num_draws is None else num_draws,
        seed=PROTOCOL["seed"] if seed is None else seed, knn_k=PROTOCOL["knn_k"],
        standardize=PROTOCOL["standardize"]) for name, (train, test) in features.items()}


def format_table(rows):
    """The rows of `evaluation_rows` as a text table of linear-probe and kNN accuracies."""
    columns = ["probe_1", "probe_10", "probe_all", "knn"]
    titles = ["1 label/class", "10 labels/class", "all labels", "kNN (k=20)"]
    lines = ["linear-probe accuracy (mean over label draws) and kNN accuracy, test split",
             f"{'features':<32}" + "".join(f"{t:>17}" for t in titles)]
    for name, result in rows.items():
        lines.append(f"{name:<32}" + "".join(
            f"{100 * result[c]:>16.1f}%" if c in result else f"{'-':>17}" for c in columns))
    return "\n".join(lines)


def evaluate_features(
    train_features,
    train_labels,
    test_features,
    test_labels,
    labels_per_class=(1, 10, None),
    num_draws=10,
    seed=0,
    knn_k=20,
    *,
    standardize=True,
    knn_temperature=0.07,
):
    """Runs linear probes at several label budgets and the kNN monitor on frozen features.

    Args:
        train_features: ``[num_train, dimensions]`` features.
        train_labels: ``[num_train]`` integer labels.
        test_features: ``[num_test, dimensions]`` features.
        test_labels: ``[num_test]`` integer labels.
        labels_per_class: the label budgets of the probes; None means all
            labels. Defaults to ``(1, 10, None)``.
        num_draws: label draws per budget. Defaults to 10.
        seed: seed of the first draw. Defaults to 0.
        knn_k: neighbours of the kNN monitor; None skips it. Defaults to 20.
        standardize: passed to ``linear_probe``. Defaults to True.
        knn_temperature: passed to ``knn_accuracy``. Defaults to 0.07.

    Returns:
        An ``OrderedDict`` of Python floats in ``[0, 1]``: ``probe_<n>`` (mean
        over draws) for each budget, ``probe_all`` for None, then ``knn``, e.g.
        ``{"probe_1": ..., "probe_10": ..., "probe_all": ..., "knn": ...}``.

    Example:
    >>> X, y = sklearn.datasets.load_digits(return_X_y=True)
    >>> list(evaluate_features(X[:1200], y[:1200], X[1200:], y[1200:]))
    ['probe_1', 'probe_10', 'probe_all', 'knn']
    """
    results = collections.OrderedDict()
    for budget in labels_per_class:
        key = "probe_all" if budget is None else f"probe_{budget}"
        results[key] = linear_probe(
            train_features,
            train_labels,
            test_features,
            test_labels,
            labels_per_class=budget,
            num_draws=num_draws,
            seed=seed,
            standardize=standardize,
        )["mean"]
    if knn_k is not None:
        results["knn"] = knn_accuracy(
            np.reshape(train_features, (len(train_features), -1)),
            train_labels,
            np.reshape(test_features, (len(test_features), -1)),
            test_labels,
            k=knn_k,
            temperature=knn_temperature,
        )
    return results
