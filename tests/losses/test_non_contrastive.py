"""SimSiam, BYOL, Barlow Twins and VICReg losses against NumPy transcriptions of their formulas."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.losses import BarlowTwinsLoss
from keras_ebm.losses import BYOLLoss
from keras_ebm.losses import NegativeCosine
from keras_ebm.losses import SymmetricNegativeCosine
from keras_ebm.losses import VICRegLoss
from keras_ebm.losses import barlow_twins_loss
from keras_ebm.losses import byol_loss
from keras_ebm.losses import negative_cosine
from keras_ebm.losses import symmetric_negative_cosine
from keras_ebm.losses import vicreg_loss

ATOL = 1e-5
ROOT = pathlib.Path(__file__).resolve().parents[2]


def numpy_negative_cosine(p, z):
    """SimSiam eq. 1: D(p, z) = -mean_i p_i/|p_i| . z_i/|z_i|."""
    p, z = p.astype(np.float64), z.astype(np.float64)
    return -np.mean([p[i] @ z[i] / (np.linalg.norm(p[i]) * np.linalg.norm(z[i]))
                     for i in range(len(p))])


def numpy_byol(p1, p2, z1, z2):
    """BYOL eq. 2, as written: |q/|q| - z'/|z'||^2, both directions summed, mean over images."""
    def unit(x):
        x = x.astype(np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    first = np.sum((unit(p1) - unit(z2)) ** 2, axis=1)
    second = np.sum((unit(p2) - unit(z1)) ** 2, axis=1)
    return np.mean(first + second)


def numpy_barlow_twins(z_a, z_b, lambda_, epsilon=1e-5):
    """Barlow Twins eq. 1-2 with BatchNorm1d(affine=False) standardisation (biased variance)."""
    z_a, z_b = z_a.astype(np.float64), z_b.astype(np.float64)
    n, d = z_a.shape
    z_a = (z_a - z_a.mean(0)) / np.sqrt(z_a.var(0) + epsilon)
    z_b = (z_b - z_b.mean(0)) / np.sqrt(z_b.var(0) + epsilon)
    c = np.zeros((d, d))
    for i in range(d):
        for j in range(d):
            c[i, j] = sum(z_a[b, i] * z_b[b, j] for b in range(n)) / n
    on_diagonal = sum((1 - c[i, i]) ** 2 for i in range(d))
    off_diagonal = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    return on_diagonal + lambda_ * off_diagonal, c


def numpy_vicreg(z_a, z_b, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, gamma=1.0,
                 epsilon=1e-4):
    """VICReg as in facebookresearch/vicreg main_vicreg.py (unbiased statistics)."""
    z_a, z_b = z_a.astype(np.float64), z_b.astype(np.float64)
    d = z_a.shape[1]
    invariance = np.mean((z_a - z_b) ** 2)

    def variance(z):
        return np.mean(np.maximum(0.0, gamma - np.sqrt(z.var(0, ddof=1) + epsilon)))

    def covariance(z):
        cov = np.cov(z, rowvar=False)
        return (np.sum(cov ** 2) - np.sum(np.diag(cov) ** 2)) / d

    var = (variance(z_a) + variance(z_b)) / 2
    cov = covariance(z_a) + covariance(z_b)
    return sim_coeff * invariance + std_coeff * var + cov_coeff * cov, (invariance, var, cov)


def _random(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


# SimSiam / BYOL ---------------------------------------------------------------


@pytest.mark.parametrize("n,d", [(1, 3), (8, 16), (33, 5)])
def test_negative_cosine_matches_numpy(n, d):
    p, z = _random((2, n, d), n * d)
    np.testing.assert_allclose(float(negative_cosine(p, z)), numpy_negative_cosine(p, z),
                               atol=ATOL)
    per_example = np.asarray(negative_cosine(p, z, reduce=False))
    assert per_example.shape == (n,)
    np.testing.assert_allclose(per_example.mean(), numpy_negative_cosine(p, z), atol=ATOL)


@pytest.mark.parametrize("n,d", [(2, 4), (16, 32)])
def test_symmetric_negative_cosine_and_byol_match_numpy(n, d):
    p1, p2, z1, z2 = _random((4, n, d), n + d)
    expected = (numpy_negative_cosine(p1, z2) + numpy_negative_cosine(p2, z1)) / 2
    np.testing.assert_allclose(float(symmetric_negative_cosine(p1, p2, z1, z2)), expected,
                               atol=ATOL)
    byol = float(byol_loss(p1, p2, z1, z2))
    np.testing.assert_allclose(byol, numpy_byol(p1, p2, z1, z2), atol=ATOL)
    # 2 - 2 cos = 2 + 2 D in each direction, summed: 4 + 4 * (symmetric D).
    np.testing.assert_allclose(byol, 4 + 4 * expected, atol=ATOL)
    assert np.asarray(byol_loss(p1, p2, z1, z2, reduce=False)).shape == (n,)


def test_collapsed_batch_gives_minus_one_and_byol_zero():
    # p equal to z (up to a positive scale): cos = 1 for every pair.
    z = _random((6, 8), 0)
    np.testing.assert_allclose(float(negative_cosine(z, z)), -1.0, atol=ATOL)
    np.testing.assert_allclose(float(negative_cosine(3.0 * z, z)), -1.0, atol=ATOL)
    np.testing.assert_allclose(float(negative_cosine(-z, z)), 1.0, atol=ATOL)
    z1, z2 = _random((2, 6, 8), 1)
    np.testing.assert_allclose(float(symmetric_negative_cosine(z2, z1, z1, z2)), -1.0, atol=ATOL)
    np.testing.assert_allclose(float(byol_loss(z2, z1, z1, z2)), 0.0, atol=ATOL)
    np.testing.assert_allclose(float(byol_loss(-z2, -z1, z1, z2)), 8.0, atol=ATOL)


@pytest.mark.parametrize("fn", [negative_cosine, symmetric_negative_cosine, byol_loss])
def test_stop_gradient_blocks_the_targets_only(fn):
    p1, p2, z1, z2 = (tf.Variable(x) for x in _random((4, 5, 6), 2))

    def gradients(stop_gradient):
        with tf.GradientTape() as tape:
            if fn is negative_cosine:
                loss = fn(p1, z2, stop_gradient=stop_gradient)
            else:
                loss = fn(p1, p2, z1, z2, stop_gradient=stop_gradient)
        return tape.gradient(loss, [p1, p2, z1, z2],
                             unconnected_gradients=tf.UnconnectedGradients.ZERO)

    stopped = gradients(True)
    assert np.abs(stopped[2].numpy()).max() == 0.0
    assert np.abs(stopped[3].numpy()).max() == 0.0
    assert np.abs(stopped[0].numpy()).max() > 1e-3
    ablation = gradients(False)  # the collapse ablation: gradient reaches the targets
    assert np.abs(ablation[3].numpy()).max() > 1e-3
    np.testing.assert_allclose(ablation[0].numpy(), stopped[0].numpy(), atol=1e-7)


# Barlow Twins -----------------------------------------------------------------


@pytest.mark.parametrize("n,d", [(4, 3), (16, 8), (40, 5)])
@pytest.mark.parametrize("lambda_", [5e-3, 0.5])
def test_barlow_twins_matches_numpy(n, d, lambda_):
    z_a = _random((n, d), n)
    z_b = 0.5 * z_a + _random((n, d), n + 1) + 2.0
    loss, c = barlow_twins_loss(z_a, z_b, lambda_=lambda_)
    expected, expected_c = numpy_barlow_twins(z_a, z_b, lambda_)
    np.testing.assert_allclose(np.asarray(c), expected_c, atol=ATOL)
    np.testing.assert_allclose(float(loss), expected, atol=ATOL * max(1.0, expected))


def test_barlow_twins_cross_correlation_is_pearson_and_identical_views_zero_diagonal():
    z_a, z_b = _random((2, 64, 6), 3)
    _, c = barlow_twins_loss(z_a, 3.0 * z_b - 1.0, epsilon=0.0)
    pearson = np.corrcoef(z_a.T, z_b.T)[:6, 6:]
    np.testing.assert_allclose(np.asarray(c), pearson, atol=ATOL)
    # Identical views: C_ii = var / (var + eps), 1 up to eps / var, so the on-diagonal term is
    # sum_i (eps / (var_i + eps))^2 ~ 1e-10: 0.
    loss, c = barlow_twins_loss(z_a, z_a, lambda_=0.0)
    variance = z_a.astype(np.float64).var(0)
    np.testing.assert_allclose(np.diag(np.asarray(c)), variance / (variance + 1e-5), atol=1e-6)
    np.testing.assert_allclose(float(loss), 0.0, atol=ATOL)
    _, c = barlow_twins_loss(z_a, z_a, epsilon=0.0)
    np.testing.assert_allclose(np.diag(np.asarray(c)), 1.0, atol=1e-6)
    # Decorrelated identical views (orthogonal +-1 columns): C = I, the loss is 0.
    hadamard = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], "float32")
    loss, c = barlow_twins_loss(hadamard[:, 1:], hadamard[:, 1:], epsilon=0.0)
    np.testing.assert_allclose(np.asarray(c), np.eye(3), atol=ATOL)
    np.testing.assert_allclose(float(loss), 0.0, atol=ATOL)


# VICReg -----------------------------------------------------------------------


@pytest.mark.parametrize("n,d", [(3, 2), (16, 8), (50, 12)])
@pytest.mark.parametrize("coeffs", [(25.0, 25.0, 1.0, 1.0), (1.0, 2.0, 3.0, 0.5)])
def test_vicreg_matches_numpy(n, d, coeffs):
    sim, std, cov, gamma = coeffs
    # Per-dimension scales from below gamma to above it: the variance hinge is active in some.
    z_a = _random((n, d), n) * np.linspace(0.2, 2.0, d, dtype="float32") * gamma
    z_b = z_a + 0.3 * _random((n, d), n + 7)
    loss, terms = vicreg_loss(z_a, z_b, sim, std, cov, gamma)
    expected, (invariance, variance, covariance) = numpy_vicreg(z_a, z_b, sim, std, cov, gamma)
    assert sorted(terms) == ["covariance", "invariance", "variance"]
    np.testing.assert_allclose(float(terms["invariance"]), invariance, atol=ATOL)
    np.testing.assert_allclose(float(terms["variance"]), variance, atol=ATOL)
    np.testing.assert_allclose(float(terms["covariance"]), covariance, atol=ATOL)
    assert variance > 0.01 and covariance > 1e-3  # every term is exercised
    np.testing.assert_allclose(float(loss), expected, atol=ATOL * max(1.0, expected))


def test_vicreg_variance_closed_forms():
    n = 8
    signs = np.where(np.arange(n) % 2 == 0, 1.0, -1.0).astype("float32")[:, None]
    # Columns +-a: mean 0, unbiased variance a^2 n / (n - 1), so std = sqrt(a^2 n/(n-1) + eps).
    scales = np.array([2.0, 3.0, 5.0], "float32")
    wide = signs * scales
    _, terms = vicreg_loss(wide, wide)
    assert float(terms["variance"]) == 0.0  # every std >= gamma = 1
    a = 0.5
    narrow = signs * np.full(4, a, "float32")
    _, terms = vicreg_loss(narrow, narrow, gamma=1.0)
    std = np.sqrt(a ** 2 * n / (n - 1) + 1e-4)
    np.testing.assert_allclose(float(terms["variance"]), 1.0 - std, atol=ATOL)
    # A collapsed batch (every row the same): std = sqrt(eps) in every dimension, no covariance,
    # no invariance error between identical views: L = std_coeff * (gamma - sqrt(eps)).
    collapsed = np.tile(_random((1, 5), 4), (n, 1))
    loss, terms = vicreg_loss(collapsed, collapsed, gamma=2.0)
    np.testing.assert_allclose(float(terms["variance"]), 2.0 - 0.01, atol=ATOL)
    np.testing.assert_allclose(float(terms["covariance"]), 0.0, atol=ATOL)
    np.testing.assert_allclose(float(terms["invariance"]), 0.0, atol=ATOL)
    np.testing.assert_allclose(float(loss), 25.0 * (2.0 - 0.01), atol=1e-4)


# Loss classes -----------------------------------------------------------------


def _classes_and_calls():
    p1, p2, z1, z2 = _random((4, 6, 5), 5)
    return [
        (NegativeCosine(stop_gradient=False), (z1, p1), negative_cosine(p1, z1)),
        (SymmetricNegativeCosine(), ((z1, z2), (p1, p2)),
         symmetric_negative_cosine(p1, p2, z1, z2)),
        (BYOLLoss(), ((z1, z2), (p1, p2)), byol_loss(p1, p2, z1, z2)),
        (BarlowTwinsLoss(lambda_=0.01, epsilon=1e-3), (z1, z2),
         barlow_twins_loss(z1, z2, 0.01, 1e-3)[0]),
        (VICRegLoss(10.0, 20.0, 2.0, gamma=0.5, epsilon=1e-3), (z1, z2),
         vicreg_loss(z1, z2, 10.0, 20.0, 2.0, 0.5, 1e-3)[0]),
    ]


@pytest.mark.parametrize("index", range(5))
def test_loss_classes_match_functions_and_round_trip(index):
    loss_fn, args, expected = _classes_and_calls()[index]
    np.testing.assert_allclose(float(loss_fn(*args)), float(expected), atol=ATOL)
    config = loss_fn.get_config()
    restored = type(loss_fn).from_config(config)
    assert restored.get_config() == config
    serialized = keras.saving.serialize_keras_object(loss_fn)
    assert serialized["registered_name"] == f"keras_ebm>{type(loss_fn).__name__}"
    deserialized = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(deserialized) is type(loss_fn)
    assert deserialized.get_config() == config
    np.testing.assert_allclose(float(deserialized(*args)), float(expected), atol=ATOL)


def test_per_example_classes_weight_images_and_batch_classes_refuse_weights():
    p1, p2, z1, z2 = _random((4, 6, 5), 6)
    weights = np.zeros(6, "float32")
    weights[2] = 1.0
    per_image = np.asarray(byol_loss(p1, p2, z1, z2, reduce=False))
    weighted = float(BYOLLoss()((z1, z2), (p1, p2), sample_weight=weights)) * 6
    np.testing.assert_allclose(weighted, per_image[2], atol=ATOL)
    for loss_fn in (BarlowTwinsLoss(), VICRegLoss()):
        with pytest.raises(ValueError, match="sample_weight"):
            loss_fn(z1, z2, sample_weight=weights)


def test_cross_replica_without_strategy_changes_nothing():
    z_a, z_b = _random((2, 10, 4), 7)
    plain, c = barlow_twins_loss(z_a, z_b)
    gathered, c_gathered = barlow_twins_loss(z_a, z_b, cross_replica=True)
    assert float(plain) == float(gathered)
    np.testing.assert_array_equal(np.asarray(c), np.asarray(c_gathered))
    plain, terms = vicreg_loss(z_a, z_b)
    gathered, terms_gathered = vicreg_loss(z_a, z_b, cross_replica=True)
    assert float(plain) == float(gathered)
    assert {k: float(v) for k, v in terms.items()} == {
        k: float(v) for k, v in terms_gathered.items()}


# Under MirroredStrategy on 2 logical CPUs: the logical devices must be configured before
# TensorFlow initialises, so this runs in a subprocess.
MIRRORED_CHECK = """
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
import numpy as np
from keras_ebm import distribute
from keras_ebm.losses import barlow_twins_loss, vicreg_loss

rng = np.random.default_rng(0)
z_a = rng.normal(size=(12, 5)).astype("float32")
z_b = (0.5 * z_a + rng.normal(size=(12, 5))).astype("float32")
losses = {"barlow_twins": lambda a, b: barlow_twins_loss(a, b, 0.1, cross_replica=True)[0],
          "vicreg": lambda a, b: vicreg_loss(a, b, cross_replica=True)[0]}
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
local = 6
report = {"replicas": strategy.num_replicas_in_sync, "module": distribute.__file__}
for name, fn in losses.items():
    a, b = tf.constant(z_a), tf.constant(z_b)
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        expected = fn(a, b)
    expected_grads = tape.gradient(expected, [a, b])

    def replica_fn(a, b):
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            loss = fn(a, b)
            scaled = distribute.scale_loss_for_replicas(loss)
        return (loss,) + tuple(tape.gradient(scaled, [a, b]))

    values = strategy.experimental_distribute_values_from_function(
        lambda ctx: (z_a[ctx.replica_id_in_sync_group * local:][:local],
                     z_b[ctx.replica_id_in_sync_group * local:][:local]))
    results = tf.function(lambda v: strategy.run(replica_fn, args=v))(values)
    per_replica = [strategy.experimental_local_results(r) for r in results]
    replica_losses = [float(x) for x in per_replica[0]]
    grads = [np.concatenate([np.asarray(g) for g in part]) for part in per_replica[1:]]
    report[name] = {
        "expected": float(expected), "replica_losses": replica_losses,
        "grad_diff": max(float(np.abs(g - np.asarray(e)).max())
                         for g, e in zip(grads, expected_grads)),
        "grad_norm": float(np.abs(np.asarray(expected_grads[0])).max()),
        "local_loss": float(fn(tf.constant(z_a[:local]), tf.constant(z_b[:local]))),
    }
print(json.dumps(report))
"""


def test_cross_replica_under_mirrored_strategy_equals_global_batch():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", MIRRORED_CHECK], capture_output=True,
                            text=True, timeout=120, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert pathlib.Path(report["module"]).resolve().is_relative_to(ROOT)
    for name in ("barlow_twins", "vicreg"):
        case = report[name]
        # Every replica computes the loss of the global batch of 12, not of its own 6 rows ...
        np.testing.assert_allclose(case["replica_losses"], [case["expected"]] * 2, atol=ATOL)
        assert abs(case["local_loss"] - case["expected"]) > 1e-2, case
        # ... and, each divided by the number of replicas, their gradients (through the gather)
        # are the one-device gradient of the global batch.
        assert case["grad_norm"] > 1e-3, case
        assert case["grad_diff"] < ATOL, case
