"""FusedBatchNormalization against Keras's BatchNormalization and the formula in NumPy."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.backbones import small_resnet
from keras_ebm.layers import FusedBatchNormalization
from keras_ebm.layers import ProjectionHead
from keras_ebm.layers import set_fused_batch_norm

# Batch renormalization is in Keras from 3.14 on.
KERAS_HAS_RENORM = "renorm" in inspect.signature(keras.layers.BatchNormalization).parameters


def _pair(shape, **kwargs):
    """A Keras and a fused layer with the same (non-trivial) weights and statistics."""
    rng = np.random.default_rng(0)
    keras_layer = keras.layers.BatchNormalization(**kwargs)
    fused_layer = FusedBatchNormalization(**kwargs)
    keras_layer.build(shape)
    fused_layer.build(shape)
    weights = [rng.uniform(0.5, 1.5, size=w.shape).astype("float32")
               for w in keras_layer.get_weights()]
    keras_layer.set_weights(weights)
    fused_layer.set_weights(weights)
    return keras_layer, fused_layer


def _forward_backward(layer, x, upstream, training=True):
    """[output, d(output . upstream)/d(x, trainable weights)] as tensors."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        objective = tf.reduce_sum(tf.cast(y, "float32") * upstream)
    return [y] + tape.gradient(objective, [x] + layer.trainable_variables)


def _run(layer, x, upstream, training):
    return [np.asarray(tf.cast(t, "float32"))
            for t in _forward_backward(layer, tf.constant(x), upstream, training)]


def _numpy_batch_norm(x, gamma, beta, epsilon):
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    variance = x.var(axis=axes)  # biased, as Keras
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta, mean, variance


@pytest.mark.parametrize("shape", [(16, 5, 5, 6), (12, 7)])
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False)])
def test_training_matches_keras_and_numpy(shape, center, scale):
    kwargs = dict(momentum=0.9, epsilon=1e-3, center=center, scale=scale)
    keras_layer, fused_layer = _pair(shape, **kwargs)
    rng = np.random.default_rng(1)
    x = (rng.normal(size=shape) * 3 + 2).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    moving_before = [np.asarray(keras_layer.moving_mean), np.asarray(keras_layer.moving_variance)]
    expected = _run(keras_layer, x, upstream, training=True)
    got = _run(fused_layer, x, upstream, training=True)
    assert len(got) == len(expected) == 2 + center + scale
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)
    # The formula, and the moving statistics' update with the biased variance.
    gamma = np.asarray(fused_layer.gamma) if scale else 1.0
    beta = np.asarray(fused_layer.beta) if center else 0.0
    y, mean, variance = _numpy_batch_norm(x.astype("float64"), gamma, beta, 1e-3)
    np.testing.assert_allclose(got[0], y, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(fused_layer.moving_mean),
                               0.9 * moving_before[0] + 0.1 * mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(fused_layer.moving_variance),
                               0.9 * moving_before[1] + 0.1 * variance, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(fused_layer.moving_variance),
                               np.asarray(keras_layer.moving_variance), rtol=1e-5)


@pytest.mark.parametrize("shape", [(16, 5, 5, 6), (12, 7)])
def test_inference_and_frozen_layer_use_the_moving_statistics(shape):
    keras_layer, fused_layer = _pair(shape, momentum=0.9, epsilon=1e-3)
    rng = np.random.default_rng(2)
    x = rng.normal(size=shape).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    for g, e in zip(_run(fused_layer, x, upstream, False), _run(keras_layer, x, upstream, False)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    mean, variance = np.asarray(fused_layer.moving_mean), np.asarray(fused_layer.moving_variance)
    expected = ((x - mean) / np.sqrt(variance + 1e-3) * np.asarray(fused_layer.gamma)
                + np.asarray(fused_layer.beta))
    np.testing.assert_allclose(np.asarray(fused_layer(x, training=False)), expected,
                               rtol=1e-5, atol=1e-5)
    fused_layer.trainable = False  # frozen: training=True normalises with the moving statistics
    np.testing.assert_allclose(np.asarray(fused_layer(x, training=True)), expected,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(fused_layer.moving_mean), mean)


def _op_types(layer, shape, training=True):
    fn = tf.function(lambda x: layer(x, training=training))
    return {op.type for op in fn.get_concrete_function(tf.TensorSpec(shape)).graph.get_operations()}


def test_fused_kernel_is_used_and_the_fallbacks_are_keras():
    shape = (8, 4, 4, 3)
    assert "FusedBatchNormV3" in _op_types(FusedBatchNormalization(), shape)
    assert "FusedBatchNormV3" in _op_types(FusedBatchNormalization(), (8, 3), training=False)
    rng = np.random.default_rng(3)
    x = rng.normal(size=shape).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    fallbacks = [dict(axis=1), dict(synchronized=True), dict(fused=False)]
    if KERAS_HAS_RENORM:  # else the case is skipped: this Keras has no renorm
        fallbacks.insert(2, dict(renorm=True))
    for kwargs in fallbacks:
        fused_layer = FusedBatchNormalization(**kwargs)
        assert "FusedBatchNormV3" not in _op_types(fused_layer, shape), kwargs
        keras_kwargs = {k: v for k, v in kwargs.items() if k != "fused"}
        keras_layer, fused_layer = _pair(shape, **keras_kwargs)
        fused_layer.fused = kwargs.get("fused", True)
        for g, e in zip(_run(fused_layer, x, upstream, True), _run(keras_layer, x, upstream, True)):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    assert "FusedBatchNormV3" not in _op_types(FusedBatchNormalization(), (2, 3, 4))


def test_one_sample_batch_keeps_finite_statistics():
    keras_layer, fused_layer = _pair((1, 2, 2, 3))
    x = np.random.default_rng(4).normal(size=(1, 2, 2, 3)).astype("float32")
    keras_layer(x, training=True)
    fused_layer(x, training=True)
    np.testing.assert_allclose(np.asarray(fused_layer.moving_variance),
                               np.asarray(keras_layer.moving_variance), rtol=1e-5)
    single = (1, 5)  # one value per channel: variance 0
    keras_layer, fused_layer = _pair(single)
    x = np.ones(single, "float32")
    fused_layer(x, training=True)
    keras_layer(x, training=True)
    assert np.all(np.isfinite(np.asarray(fused_layer.moving_variance)))
    np.testing.assert_allclose(np.asarray(fused_layer.moving_variance),
                               np.asarray(keras_layer.moving_variance), rtol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_output_dtype_and_float32_statistics(policy):
    shape = (16, 4, 4, 8)
    x = np.random.default_rng(5).normal(size=shape).astype("float32")
    reference = FusedBatchNormalization()
    expected = np.asarray(reference(x, training=True))
    layer = FusedBatchNormalization(dtype=policy)
    y = layer(tf.cast(x, layer.compute_dtype), training=True)
    assert y.dtype == layer.compute_dtype and layer.moving_mean.dtype == "float32"
    np.testing.assert_allclose(np.asarray(tf.cast(y, "float32")), expected, atol=5e-2)
    np.testing.assert_allclose(np.asarray(layer.moving_mean), np.asarray(reference.moving_mean),
                               atol=5e-3)


def test_config_and_keras_file_round_trip(tmp_path):
    layer = FusedBatchNormalization(momentum=0.8, epsilon=1e-4, center=False, name="bn")
    restored = FusedBatchNormalization.from_config(layer.get_config())
    assert (restored.momentum, restored.epsilon, restored.center) == (0.8, 1e-4, False)
    assert restored.fused and not FusedBatchNormalization.from_config(
        FusedBatchNormalization(fused=False).get_config()).fused
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, layer(inputs))
    x = np.random.default_rng(6).normal(size=(5, 4, 4, 3)).astype("float32")
    model(x, training=True)  # moves the statistics
    model.save(tmp_path / "bn.keras")
    loaded = keras.models.load_model(tmp_path / "bn.keras")
    assert isinstance(loaded.get_layer("bn"), FusedBatchNormalization)
    np.testing.assert_allclose(np.asarray(loaded.get_layer("bn").moving_variance),
                               np.asarray(layer.moving_variance))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)


def test_xla_compiled_step_matches_graph_step():
    shape = (8, 4, 4, 6)
    rng = np.random.default_rng(7)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    upstream = tf.constant(rng.normal(size=shape).astype("float32"))
    results = []
    for jit in (False, True):
        _, layer = _pair(shape)
        step = tf.function(lambda: _forward_backward(layer, x, upstream), jit_compile=jit)
        results.append([np.asarray(t) for t in step()] + [np.asarray(layer.moving_variance)])
    for compiled, graph in zip(results[1], results[0]):
        np.testing.assert_allclose(compiled, graph, rtol=1e-4, atol=1e-4)



def test_set_fused_batch_norm_switches_every_layer_of_a_model():
    encoder = small_resnet((8, 8, 1), widths=(4, 8))
    head = ProjectionHead((6,), 3, output_batch_norm=True)
    model = keras.Sequential([encoder, head])
    model.build((None, 8, 8, 1))
    norms = [layer for layer in model._flatten_layers()
             if isinstance(layer, FusedBatchNormalization)]
    assert set_fused_batch_norm(model, False) == len(norms) > 2
    ops_off = _op_types(model, (4, 8, 8, 1))
    assert "FusedBatchNormV3" not in ops_off and "SquaredDifference" in ops_off
    assert set_fused_batch_norm(model) == len(norms)
    assert "FusedBatchNormV3" in _op_types(model, (4, 8, 8, 1))
