import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.layers import ProjectionHead
from keras_ebm.losses import info_nce
from keras_ebm.losses import nt_xent
from keras_ebm.methods import MoCo
from keras_ebm.methods import SimCLR


def tiny_encoder(batch_norm=False, shape=(6, 6, 1)):
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    if batch_norm:
        x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, outputs, name="tiny")


def views(n=8, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.random((n, 6, 6, 1)).astype("float32")
    return a, np.clip(a + 0.05 * rng.normal(size=a.shape), 0, 1).astype("float32")


def make(cls, **kwargs):
    head = ProjectionHead((8,), 5, batch_norm=False)
    model = cls(tiny_encoder(kwargs.pop("batch_norm", False)), head, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    return model


def test_simclr_step_reports_nt_xent_and_descends():
    a, b = views()
    model = make(SimCLR, temperature=0.5)
    before = [w.numpy().copy() for w in model.trainable_weights]
    expected, _, _ = nt_xent(model.project(a), model.project(b), 0.5)
    logs = model.train_on_batch((a, b), return_dict=True)
    np.testing.assert_allclose(logs["loss"], float(expected), rtol=1e-5)
    assert any(not np.allclose(w0, w.numpy()) for w0, w in zip(before, model.trainable_weights))
    history = model.fit(tf.data.Dataset.from_tensors((a, b)).repeat(30), epochs=1, verbose=0)
    assert history.history["loss"][-1] < logs["loss"]
    assert 0.0 <= history.history["contrastive_accuracy"][-1] <= 1.0


def test_simclr_fit_on_images_with_augmenter_and_call_returns_embeddings():
    a, _ = views(16)
    augmenter = keras.layers.GaussianNoise(0.05)
    model = make(SimCLR, augmenter=augmenter)
    history = model.fit(a, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all() and history.history["loss"][0] > 0
    np.testing.assert_allclose(np.asarray(model(a)), np.asarray(model.encoder(a)), atol=1e-6)
    assert model.encoder is not None and model.projection_head is not None


def test_fit_without_augmenter_needs_pairs():
    a, _ = views()
    model = make(SimCLR)
    with pytest.raises(ValueError, match="augmenter"):
        model.train_on_batch(a)


def test_moco_momentum_update_and_queue_against_reference():
    a, b = views(8)
    m = 0.9
    model = make(MoCo, queue_size=20, momentum=m, temperature=0.2, bn_splits=1)
    query0 = [w.numpy().copy() for w in model.encoder.weights + model.projection_head.weights]
    keys0 = [w.numpy().copy()
             for w in model.key_encoder.weights + model.key_projection_head.weights]
    for q, k in zip(query0, keys0):  # the key encoder starts as a copy
        np.testing.assert_array_equal(q, k)
    queue0 = model.queue.keys.numpy().copy()
    # The loss of the first step, computed by hand from the pre-step weights.
    q_proj = model.project(a)
    k_proj = model.key_projection_head(model.key_encoder(b))
    expected, _, _ = info_nce(q_proj, k_proj, queue0, 0.2)
    logs = model.train_on_batch((a, b), return_dict=True)
    np.testing.assert_allclose(logs["loss"], float(expected), rtol=1e-5)
    # The enqueued keys are the normalised key projections, written at slots 0..7.
    k_norm = k_proj.numpy() / np.linalg.norm(k_proj.numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(model.queue.keys.numpy()[:8], k_norm, atol=1e-6)
    np.testing.assert_array_equal(model.queue.keys.numpy()[8:], queue0[8:])
    assert int(model.queue.pointer.numpy()) == 8
    # Second step: theta_k <- m theta_k + (1 - m) theta_q with the weights after step 1.
    query1 = [w.numpy().copy() for w in model.encoder.weights + model.projection_head.weights]
    keys1 = [w.numpy().copy()
             for w in model.key_encoder.weights + model.key_projection_head.weights]
    model.train_on_batch((a, b))
    keys2 = [w.numpy() for w in model.key_encoder.weights + model.key_projection_head.weights]
    for q, k, k_new in zip(query1, keys1, keys2):
        np.testing.assert_allclose(k_new, m * k + (1 - m) * q, rtol=1e-5, atol=1e-7)
    assert not model.key_encoder.trainable_weights
    assert int(model.queue.pointer.numpy()) == 16


def test_moco_split_bn_unshuffles_keys():
    # Without batch norm, grouping and shuffling must not change any projection.
    a, _ = views(10)
    model = make(MoCo, queue_size=16, bn_splits=3)
    grouped = model._encode_in_groups(a, model.key_encoder, model.key_projection_head,
                                      training=True, shuffle=True)
    plain = model.key_projection_head(model.key_encoder(a))
    np.testing.assert_allclose(np.asarray(grouped), np.asarray(plain), atol=1e-5)


def test_moco_split_bn_uses_group_statistics():
    a, _ = views(8)
    model = make(MoCo, queue_size=16, bn_splits=2, batch_norm=True)
    grouped = np.asarray(model._encode_in_groups(a, model.encoder, model.projection_head,
                                                 training=True, shuffle=False))
    first_half = np.asarray(model.project(a[:4], training=True))
    np.testing.assert_allclose(grouped[:4], first_half, atol=1e-5)
    whole = np.asarray(model.project(a, training=True))
    assert not np.allclose(grouped[:4], whole[:4], atol=1e-4)



def test_moco_key_shuffle_groups_the_permuted_batch_and_changes_with_the_step():
    from keras_ebm.methods.moco import SHUFFLE_SEED

    a, _ = views(10)
    model = make(MoCo, queue_size=16, bn_splits=3, batch_norm=True)
    encoder, head = model.key_encoder, model.key_projection_head
    grouped = []
    for step in (0, 1):
        model.optimizer.iterations.assign(step)
        grouped.append(np.asarray(model._encode_in_groups(a, encoder, head, training=True,
                                                          shuffle=True)))
        # Reference: permute, split into groups of 4, 3, 3 (ceil bounds), project, un-permute.
        order = np.asarray(tf.argsort(tf.random.stateless_uniform(
            [10], seed=tf.constant([SHUFFLE_SEED, step], "int64"), alg="philox")))
        expected = np.empty_like(grouped[-1])
        for start, stop in ((0, 4), (4, 7), (7, 10)):
            members = order[start:stop]
            expected[members] = np.asarray(head(encoder(a[members], training=True),
                                                training=True))
        np.testing.assert_allclose(grouped[-1], expected, atol=1e-5)
    assert not np.allclose(grouped[0], grouped[1], atol=1e-4)  # another step, other groups



def test_moco_key_encoder_normalises_with_its_batch_and_is_not_trained():
    # As in the paper's reference: the key encoder runs in training mode (batch-norm
    # statistics of the key batch, moving averages updated by its own passes); only the
    # EMA moves its weights.
    a, b = views(8)
    model = make(MoCo, queue_size=16, bn_splits=1, batch_norm=True)
    key_norm = next(layer for layer in model.key_encoder.layers
                    if isinstance(layer, keras.layers.BatchNormalization))
    assert not model.key_encoder.trainable_weights
    assert not {id(w) for w in model.key_encoder.weights} & {
        id(w) for w in model.trainable_variables}
    keys = np.asarray(model.key_projection_head(model.key_encoder(b, training=True)))
    batch_mode = np.asarray(model.projection_head(model.encoder(b, training=True)))
    np.testing.assert_allclose(keys, batch_mode, atol=1e-5)  # identical copies at start
    moving_before = np.asarray(key_norm.moving_mean).copy()
    model.train_on_batch((a, b))
    assert not np.allclose(np.asarray(key_norm.moving_mean), moving_before)

@pytest.mark.parametrize("cls,kwargs", [(SimCLR, {}), (MoCo, {"queue_size": 24, "bn_splits": 1}),
                                        (MoCo, {"queue_size": 24, "bn_splits": 3})])
def test_xla_train_step_matches_the_graph_step(cls, kwargs):
    a, b = views(12)
    results = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = make(cls, batch_norm=True, **kwargs)
        step = tf.function(model.train_step, jit_compile=jit)
        logs = [float(step((a, b))["loss"]) for _ in range(2)]
        results.append((logs, [np.asarray(w) for w in model.weights]))
    assert np.all(np.isfinite(results[1][0]))
    if kwargs.get("bn_splits", 1) > 1:
        # XLA's stateless RNG gives another (equally random) key permutation for a seed
        # read from a variable, so the batch-norm groups differ: compiling is what counts.
        return
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-4)
    for compiled, graph in zip(results[1][1], results[0][1]):
        np.testing.assert_allclose(compiled, graph, rtol=1e-3, atol=1e-4)

@pytest.mark.parametrize("cls,kwargs", [(SimCLR, {"temperature": 0.3}),
                                        (MoCo, {"queue_size": 12, "bn_splits": 2})])
def test_save_load_round_trip(tmp_path, cls, kwargs):
    a, b = views(8)
    model = make(cls, batch_norm=True, augmenter=keras.layers.GaussianNoise(0.01), **kwargs)
    model.fit(tf.data.Dataset.from_tensors(a).repeat(3), epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is cls
    np.testing.assert_allclose(np.asarray(loaded(a)), np.asarray(model(a)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(loaded.project(a)), np.asarray(model.project(a)),
                               atol=1e-6)
    assert loaded.get_config()["temperature"] == model.get_config()["temperature"]
    if cls is MoCo:
        np.testing.assert_array_equal(loaded.queue.keys.numpy(), model.queue.keys.numpy())
        assert (int(loaded.queue.pointer.numpy()) == int(model.queue.pointer.numpy())
                == 0 + 3 * 8 % 12)
        np.testing.assert_allclose(np.asarray(loaded.key_encoder(a)),
                                   np.asarray(model.key_encoder(a)), atol=1e-6)
    # get_config / from_config rebuilds the same architecture.
    clone = cls.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(clone(a)), np.asarray(model(a)), atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="momentum"):
        make(MoCo, momentum=1.0)
    with pytest.raises(ValueError, match="temperature"):
        make(SimCLR, temperature=0)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("cls", [SimCLR, MoCo])
def test_mixed_precision_step_matches_float32_closely(policy, cls):
    a, b = views(8)
    kwargs = {"queue_size": 16, "bn_splits": 1} if cls is MoCo else {}
    keras.utils.set_random_seed(3)
    reference = make(cls, **kwargs)
    expected = reference.train_on_batch((a, b), return_dict=True)["loss"]
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(3)
        model = make(cls, **kwargs)
        if policy == "mixed_float16":
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        before = [w.numpy().copy() for w in model.trainable_weights]
        logs = model.train_on_batch((a, b), return_dict=True)
        first_loss = logs["loss"]
        # Dynamic loss scaling skips the steps whose scaled gradients overflow
        # (and halves the scale); within a few steps it updates the weights.
        for _ in range(8):
            model.train_on_batch((a, b))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # The loss is computed in float32 from half-precision projections.
    assert np.isfinite(first_loss)
    np.testing.assert_allclose(first_loss, expected, rtol=2e-2)
    moved = [np.abs(w0 - w.numpy()).max() for w0, w in zip(before, model.trainable_weights)]
    assert max(moved) > 0
