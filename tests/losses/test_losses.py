import math

import numpy as np
import pytest

from keras_ebm.losses import InfoNCE
from keras_ebm.losses import NTXent
from keras_ebm.losses import info_nce
from keras_ebm.losses import nt_xent


def _normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def numpy_nt_xent(z_a, z_b, temperature):
    """Transcription of SimCLR eq. 1, averaged over all 2N views."""
    z = _normalize(np.concatenate([z_a, z_b]).astype(np.float64))
    n = len(z_a)
    losses = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        numerator = np.exp(z[i] @ z[positive] / temperature)
        denominator = sum(np.exp(z[i] @ z[k] / temperature) for k in range(2 * n) if k != i)
        losses.append(-np.log(numerator / denominator))
    return np.mean(losses)


def numpy_info_nce(q, k_pos, k_neg, temperature):
    q, k_pos, k_neg = (_normalize(a.astype(np.float64)) for a in (q, k_pos, k_neg))
    logits = np.concatenate([(q * k_pos).sum(1, keepdims=True), q @ k_neg.T], axis=1) / temperature
    return -_log_softmax(logits)[:, 0].mean()


@pytest.mark.parametrize("batch_size", [2, 5, 16])
@pytest.mark.parametrize("dim", [3, 32])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_numpy(batch_size, dim, temperature):
    rng = np.random.default_rng(batch_size * dim)
    z_a = rng.normal(size=(batch_size, dim)).astype("float32")
    z_b = rng.normal(size=(batch_size, dim)).astype("float32")
    loss, logits, labels = nt_xent(z_a, z_b, temperature)
    np.testing.assert_allclose(float(loss), numpy_nt_xent(z_a, z_b, temperature), rtol=1e-4)
    assert logits.shape == (2 * batch_size, 2 * batch_size)
    np.testing.assert_array_equal(np.asarray(labels),
                                  np.r_[np.arange(batch_size, 2 * batch_size),
                                        np.arange(batch_size)])


@pytest.mark.parametrize("batch_size", [2, 7, 64])
def test_nt_xent_uniform_logits_give_log_2n_minus_1(batch_size):
    # All views identical: every candidate has the same energy, so the loss is log(2N - 1).
    z = np.ones((batch_size, 8), "float32")
    loss, _, _ = nt_xent(z, z, temperature=0.5)
    np.testing.assert_allclose(float(loss), math.log(2 * batch_size - 1), rtol=1e-5)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_orthogonal_closed_form(temperature):
    # Positives aligned (cos 1), all others orthogonal (cos 0):
    # loss = log(1 + (2N - 2) exp(-1/T)).
    n = 6
    z = np.eye(n, 10, dtype="float32")
    loss, _, _ = nt_xent(z, 3.0 * z, temperature)
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / temperature))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4, atol=1e-7)


def test_nt_xent_masks_self_similarity():
    z = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    _, logits, _ = nt_xent(z, z, 0.5)
    assert np.all(np.diag(np.asarray(logits)) < -1e8)


def test_ntxent_class_matches_function_and_weights():
    rng = np.random.default_rng(1)
    z_a, z_b = rng.normal(size=(2, 6, 4)).astype("float32")
    loss_fn = NTXent(temperature=0.3)
    np.testing.assert_allclose(float(loss_fn(z_a, z_b)), float(nt_xent(z_a, z_b, 0.3)[0]),
                               rtol=1e-5)
    # Per-image losses: a weight of zero on all but image 0 gives image 0's mean over both views.
    per_view = np.asarray(nt_xent(z_a, z_b, 0.3, reduce=False)[0])
    weights = np.zeros(6, "float32")
    weights[0] = 1.0
    weighted = float(loss_fn(z_a, z_b, sample_weight=weights)) * 6  # sum_over_batch_size
    np.testing.assert_allclose(weighted, (per_view[0] + per_view[6]) / 2, rtol=1e-5)
    restored = NTXent.from_config(loss_fn.get_config())
    assert restored.temperature == pytest.approx(0.3)


@pytest.mark.parametrize("batch_size,num_negatives", [(1, 1), (4, 16), (32, 100)])
@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_info_nce_matches_numpy(batch_size, num_negatives, temperature):
    rng = np.random.default_rng(num_negatives)
    q, k = rng.normal(size=(2, batch_size, 16)).astype("float32")
    negatives = rng.normal(size=(num_negatives, 16)).astype("float32")
    loss, logits, labels = info_nce(q, k, negatives, temperature)
    np.testing.assert_allclose(float(loss), numpy_info_nce(q, k, negatives, temperature), rtol=1e-4)
    assert logits.shape == (batch_size, 1 + num_negatives)
    assert np.all(np.asarray(labels) == 0)


def test_info_nce_closed_forms():
    q = np.eye(4, 8, dtype="float32")
    # Every key identical to every query: uniform logits give log(1 + K).
    loss, _, _ = info_nce(np.ones((3, 8), "float32"), np.ones((3, 8), "float32"),
                          np.ones((20, 8), "float32"), 0.2)
    np.testing.assert_allclose(float(loss), math.log(21), rtol=1e-5)
    # Positive aligned, negatives orthogonal: log(1 + K exp(-1/T)).
    negatives = np.eye(8, dtype="float32")[4:]
    loss, _, _ = info_nce(q, q, negatives, 0.5)
    np.testing.assert_allclose(float(loss), math.log(1 + 4 * math.exp(-2)), rtol=1e-5)


def test_infonce_class_matches_function():
    rng = np.random.default_rng(2)
    q, k = rng.normal(size=(2, 5, 8)).astype("float32")
    negatives = rng.normal(size=(30, 8)).astype("float32")
    loss_fn = InfoNCE(temperature=0.2)
    np.testing.assert_allclose(float(loss_fn(q, (k, negatives))),
                               float(info_nce(q, k, negatives, 0.2)[0]), rtol=1e-5)
    assert InfoNCE.from_config(loss_fn.get_config()).temperature == pytest.approx(0.2)
