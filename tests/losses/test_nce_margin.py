"""PIRL's NCE and the DrLIM margin loss against NumPy transcriptions and closed forms."""

import numpy as np
import pytest

from keras_ebm.losses import NCE
from keras_ebm.losses import MarginLoss
from keras_ebm.losses import info_nce
from keras_ebm.losses import margin_loss
from keras_ebm.losses import nce


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def numpy_nce(queries, positives, negatives, temperature, form="nce"):
    """The lecture's formula, written literally with exp and log (float64)."""
    q, k, n = _unit(queries), _unit(positives), _unit(negatives)
    losses = []
    for i in range(len(q)):
        negs = n if n.ndim == 2 else n[i]
        sum_negatives = sum(np.exp(q[i] @ m / temperature) for m in negs)
        h_positive = np.exp(q[i] @ k[i] / temperature) / (
            np.exp(q[i] @ k[i] / temperature) + sum_negatives)
        loss = -np.log(h_positive)
        if form == "nce":
            for m in negs:
                h_negative = np.exp(q[i] @ m / temperature) / (
                    np.exp(q[i] @ m / temperature) + sum_negatives)
                loss -= np.log(1.0 - h_negative)
        losses.append(loss)
    return np.array(losses)


@pytest.mark.parametrize("batch,dim,num_negatives,temperature",
                         [(1, 2, 1, 1.0), (4, 8, 16, 0.07), (5, 3, 7, 0.5)])
@pytest.mark.parametrize("form", ["nce", "infonce"])
def test_nce_matches_numpy_transcription(batch, dim, num_negatives, temperature, form):
    rng = np.random.default_rng(batch + dim)
    q = rng.normal(size=(batch, dim))
    k = rng.normal(size=(batch, dim))
    n = rng.normal(size=(num_negatives, dim))
    loss, logits, labels = nce(q.astype("float32"), k.astype("float32"), n.astype("float32"),
                               temperature, form=form, reduce=False)
    np.testing.assert_allclose(np.asarray(loss), numpy_nce(q, k, n, temperature, form),
                               rtol=2e-4, atol=1e-4)
    assert logits.shape == (batch, 1 + num_negatives)
    np.testing.assert_array_equal(np.asarray(labels), np.zeros(batch))


def test_nce_per_query_negatives_match_numpy():
    rng = np.random.default_rng(3)
    q, k, n = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=(3, 5, 4))
    loss, logits, _ = nce(q, k, n, 0.2, reduce=False)
    np.testing.assert_allclose(np.asarray(loss), numpy_nce(q, k, n, 0.2), rtol=2e-4)
    assert logits.shape == (3, 6)


@pytest.mark.parametrize("num_negatives", [1, 4, 100])
def test_nce_closed_form_when_all_similarities_are_zero(num_negatives):
    # Orthogonal positive and negatives: every h equals 1 / (K + 1), so
    # L = log(K + 1) + K log((K + 1) / K).
    dim = num_negatives + 2
    eye = np.eye(dim, dtype="float32")
    q, k, n = eye[:1], eye[1:2], eye[2:]
    loss, _, _ = nce(q, k, n, temperature=0.07)
    K = num_negatives
    np.testing.assert_allclose(float(loss), np.log(K + 1) + K * np.log((K + 1) / K), rtol=1e-5)
    # The InfoNCE form is the log-softmax term alone, and equals info_nce.
    infonce, _, _ = nce(q, k, n, temperature=0.07, form="infonce")
    np.testing.assert_allclose(float(infonce), np.log(K + 1), rtol=1e-5)
    np.testing.assert_allclose(float(infonce), float(info_nce(q, k, n, 0.07)[0]), rtol=1e-6)


def test_nce_is_finite_at_small_temperature():
    q = np.array([[1.0, 0.0]], "float32")
    loss, _, _ = nce(q, -q, q.repeat(3, 0), temperature=1e-3)
    assert np.isfinite(float(loss)) and float(loss) > 100


def test_nce_loss_class_and_config():
    rng = np.random.default_rng(0)
    q, k, n = (rng.normal(size=s).astype("float32") for s in [(4, 8), (4, 8), (6, 8)])
    loss = NCE(temperature=0.1, form="infonce")
    np.testing.assert_allclose(float(loss(q, (k, n))), float(nce(q, k, n, 0.1, "infonce")[0]),
                               rtol=1e-6)
    clone = NCE.from_config(loss.get_config())
    assert (clone.temperature, clone.form) == (0.1, "infonce")


def numpy_margin(a, b, margin, energy):
    if energy == "cosine":
        e = 1.0 - _unit(a) @ _unit(b).T
    else:
        e = np.linalg.norm(a[:, None] - b[None], axis=-1)
    n = len(a)
    off = ~np.eye(n, dtype=bool)
    return np.array([e[i, i] ** 2 + np.sum(np.maximum(0, margin - e[i][off[i]]) ** 2) / (n - 1)
                     for i in range(n)])


@pytest.mark.parametrize("energy,margin", [("cosine", 0.5), ("cosine", 1.5), ("l2", 2.0)])
def test_margin_loss_matches_numpy(energy, margin):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    loss, logits, labels = margin_loss(a.astype("float32"), b.astype("float32"), margin, energy,
                                       reduce=False)
    np.testing.assert_allclose(np.asarray(loss), numpy_margin(a, b, margin, energy), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_array_equal(np.asarray(labels), np.arange(6))
    assert logits.shape == (6, 6)


def test_margin_loss_closed_forms():
    eye = np.eye(4, dtype="float32")
    # Identical positives, orthogonal negatives (1 - cos = 1 > margin): zero loss.
    assert float(margin_loss(eye, eye, 0.5, "cosine")[0]) == pytest.approx(0.0, abs=1e-6)
    # Margin 2 on cosine: each negative pays (2 - 1)^2 = 1.
    assert float(margin_loss(eye, eye, 2.0, "cosine")[0]) == pytest.approx(1.0, abs=1e-5)
    # L2 is scale dependent: the same directions 10 times longer clear any margin below 14.1.
    assert float(margin_loss(10 * eye, 10 * eye, 2.0, "l2")[0]) == pytest.approx(0.0, abs=1e-4)
    assert float(margin_loss(eye, eye, 2.0, "l2")[0]) == pytest.approx((2 - 2 ** 0.5) ** 2,
                                                                       rel=1e-4)


def test_margin_loss_class_and_config():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(4, 3)).astype("float32")
    loss = MarginLoss(margin=1.0, energy="l2")
    np.testing.assert_allclose(float(loss(a, b)), float(margin_loss(a, b, 1.0, "l2")[0]),
                               rtol=1e-6)
    clone = MarginLoss.from_config(loss.get_config())
    assert (clone.margin, clone.energy) == (1.0, "l2")


@pytest.mark.parametrize("make", [
    lambda: NCE(form="softmax"), lambda: NCE(temperature=0.0),
    lambda: nce(np.ones((1, 2)), np.ones((1, 2)), np.ones((1, 2)), form="x"),
    lambda: MarginLoss(energy="manhattan"), lambda: MarginLoss(margin=0.0),
    lambda: margin_loss(np.ones((2, 2)), np.ones((2, 2)), margin=-1.0),
])
def test_bad_arguments_raise(make):
    with pytest.raises(ValueError):
        make()
