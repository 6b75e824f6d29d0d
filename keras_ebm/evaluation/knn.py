"""The weighted k-nearest-neighbour monitor of InstDisc and MoCo."""

import numpy as np


def _l2_normalize(features):
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"Features must be [examples, dimensions], got shape {features.shape}.")
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def knn_accuracy(
    train_features,
    train_labels,
    test_features,
    test_labels,
    k=20,
    temperature=0.07,
    chunk_size=1024,
):
    """Classifies each test feature by a vote of its k nearest train features.

    Features are L2-normalised and compared by cosine similarity ``s``. Each of
    the ``k`` most similar train examples votes for its label with weight
    ``exp(s / temperature)`` (Wu et al. 2018, used as MoCo's and SimCLR's
    training monitor); ``temperature=None`` gives every neighbour weight 1, a
    plain majority vote. Tied votes go to the smallest label. The similarity
    matrix is computed ``chunk_size`` test rows at a time.

    Args:
        train_features: ``[num_train, dimensions]`` array of reference features.
        train_labels: ``[num_train]`` integer labels.
        test_features: ``[num_test, dimensions]`` array of query features.
        test_labels: ``[num_test]`` integer labels.
        k: number of neighbours; at most ``num_train`` are used. Defaults to 20.
        temperature: temperature of the vote weights, or None for a majority
            vote. Defaults to 0.07.
        chunk_size: test rows per similarity block. Defaults to 1024.

    Returns:
        The test accuracy, a Python float in ``[0, 1]``.

    Example:
    >>> train = np.eye(2)[[0, 0, 1, 1]] + 0.1
    >>> knn_accuracy(train, [0, 0, 1, 1], np.eye(2), [0, 1], k=2)
    1.0

    Reference:
        Wu et al., Unsupervised Feature Learning via Non-Parametric Instance
        Discrimination, CVPR 2018.
    """
    train_features = _l2_normalize(train_features)
    test_features = _l2_normalize(test_features)
    train_labels = np.asarray(train_labels).reshape(-1)
    test_labels = np.asarray(test_labels).reshape(-1)
    if len(train_features) != len(train_labels) or len(test_features) != len(test_labels):
        raise ValueError("Each features array needs one label per row.")
    if k < 1:
        raise ValueError(f"`k` must be at least 1, got {k}.")
    classes, train_classes = np.unique(train_labels, return_inverse=True)
    num_classes = len(classes)
    k = min(int(k), len(train_features))

    correct = 0
    for start in range(0, len(test_features), chunk_size):
        similarities = test_features[start : start + chunk_size] @ train_features.T
        rows = np.arange(len(similarities))[:, None]
        if k < similarities.shape[1]:
            neighbours = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
        else:
            neighbours = np.broadcast_to(np.arange(k), similarities.shape)
        neighbour_similarities = similarities[rows, neighbours]
        if temperature is None:
            weights = np.ones_like(neighbour_similarities)
        else:
            # Subtracting each row's maximum leaves the vote unchanged and avoids overflow.
            weights = np.exp(
                (neighbour_similarities - neighbour_similarities.max(axis=1, keepdims=True))
                / temperature
            )
        votes = np.zeros((len(similarities), num_classes), dtype=np.float64)
        voters = (np.broadcast_to(rows, neighbours.shape), train_classes[neighbours])
        np.add.at(votes, voters, weights)
        predictions = classes[np.argmax(votes, axis=1)]
        correct += int(np.sum(predictions == test_labels[start : start + chunk_size]))
    return correct / len(test_features)
