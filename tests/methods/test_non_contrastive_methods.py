"""BYOL, SimSiam, Barlow Twins and VICReg: the loss they report, their state, styles, saving."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_model_styles import encoder
from test_model_styles import head
from test_model_styles import images
from test_model_styles import noise_augmenter

from keras_ebm.layers import ProjectionHead
from keras_ebm.losses import barlow_twins_loss
from keras_ebm.losses import byol_loss
from keras_ebm.losses import symmetric_negative_cosine
from keras_ebm.losses import vicreg_loss
from keras_ebm.methods import BYOL
from keras_ebm.methods import BarlowTwins
from keras_ebm.methods import SimSiam
from keras_ebm.methods import VICReg

METHODS = ("byol", "simsiam", "barlow_twins", "vicreg")


def tiny_encoder(batch_norm=False):
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    if batch_norm:
        x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    return keras.Model(inputs, outputs)


def views(n=8):
    rng = np.random.default_rng(0)
    a = rng.random((n, 6, 6, 1)).astype("float32")
    return a, np.clip(a + 0.05 * rng.normal(size=a.shape), 0, 1).astype("float32")


def build(method, f, g, batch_norm=False, **kwargs):
    """One of the four methods on encoder f and head g (and a predictor for BYOL/SimSiam)."""
    predictor = ProjectionHead((8,), int(g.output_dim), batch_norm=batch_norm)
    if method == "byol":
        return BYOL(f, g, predictor, **{"total_steps": 10, **kwargs})
    if method == "simsiam":
        return SimSiam(f, g, predictor, **kwargs)
    if method == "barlow_twins":
        return BarlowTwins(f, g, **kwargs)
    return VICReg(f, g, **kwargs)


def make(method, batch_norm=False, **kwargs):
    model = build(method, tiny_encoder(batch_norm),
                  ProjectionHead((8,), 5, batch_norm=batch_norm), batch_norm, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    return model


# Non-default hyperparameters, so that the checks see them reach the loss.
SETTINGS = {"byol": {"tau_base": 0.9}, "simsiam": {},
            "barlow_twins": {"lambda_": 0.02, "scale_loss": 0.5},
            "vicreg": {"sim_coeff": 10.0, "std_coeff": 20.0, "cov_coeff": 2.0, "gamma": 0.5}}


def pure_loss(model, a, b):
    """The loss of the pure functions on the method's embeddings of (a, b), and its terms."""
    z_a, z_b = model.project(a), model.project(b)
    if isinstance(model, BYOL):
        def target(x):
            return model.target_projection_head(model.target_encoder(x))
        return byol_loss(model.predictor(z_a), model.predictor(z_b), target(a), target(b)), {}
    if isinstance(model, SimSiam):
        return symmetric_negative_cosine(model.predictor(z_a), model.predictor(z_b), z_a, z_b), {}
    if isinstance(model, BarlowTwins):
        return model.scale_loss * barlow_twins_loss(z_a, z_b, model.lambda_)[0], {}
    return vicreg_loss(z_a, z_b, model.sim_coeff, model.std_coeff, model.cov_coeff, model.gamma)


@pytest.mark.parametrize("method", METHODS)
def test_step_reports_the_pure_loss_and_descends(method):
    a, b = views()
    model = make(method, **SETTINGS[method])
    before = [w.numpy().copy() for w in model.trainable_weights]
    expected, terms = pure_loss(model, a, b)
    logs = model.train_on_batch((a, b), return_dict=True)
    np.testing.assert_allclose(logs["loss"], float(expected), rtol=1e-5)
    for name, value in terms.items():  # VICReg's three unweighted terms
        np.testing.assert_allclose(logs[name], float(value), rtol=1e-5, atol=1e-7)
    assert set(logs) == {"loss", *terms}
    assert any(not np.allclose(w0, w.numpy()) for w0, w in zip(before, model.trainable_weights))
    # Lower after training on the pair (SimSiam's and BYOL's steps are not gradient steps of
    # one fixed loss, their targets move: the loss may rise on the way, as SimSiam's does).
    model.fit(tf.data.Dataset.from_tensors((a, b)).repeat(30), epochs=1, verbose=0)
    assert float(model.contrastive_loss((a, b), training=False)[0]) < logs["loss"]


def byol_tau(step, total_steps, tau_base):
    return 1 - (1 - tau_base) * (math.cos(math.pi * step / total_steps) + 1) / 2


def test_byol_target_is_the_scheduled_ema_of_the_online_network():
    a, b = views()
    model = make("byol", total_steps=4, tau_base=0.9)
    pairs = model.copy_pairs(model.target_encoder, model.target_projection_head)
    assert len(pairs) == len(model.encoder.weights) + len(model.projection_head.weights)
    for target, online in pairs:  # the target starts as a copy, out of the gradient's reach
        np.testing.assert_array_equal(np.asarray(target), np.asarray(online))
        assert not target.trainable
    assert not {id(w) for w in model.target_encoder.weights} & {
        id(w) for w in model.trainable_variables}
    model.train_on_batch((a, b))  # step k = 0: the EMA of two equal networks
    for step in (1, 2):
        # At step k the target takes the EMA with the online weights before the step (those
        # step k - 1 produced) and that step's tau.
        online = [np.asarray(w).copy() for _, w in pairs]
        target = [np.asarray(w).copy() for w, _ in pairs]
        model.train_on_batch((a, b))
        tau = byol_tau(step - 1, 4, 0.9)
        for (new, _), t, o in zip(pairs, target, online):
            np.testing.assert_allclose(np.asarray(new), tau * t + (1 - tau) * o, rtol=1e-5,
                                       atol=1e-7)
    assert int(model.optimizer.iterations) == 3


def test_byol_momentum_schedule_closed_form():
    model = make("byol", total_steps=1000, tau_base=0.996)
    for step, expected in [(0, 0.996), (500, 1 - 0.004 / 2), (1000, 1.0), (2000, 1.0),
                           (250, byol_tau(250, 1000, 0.996))]:
        np.testing.assert_allclose(float(model.target_momentum(step)), expected, rtol=1e-7,
                                   atol=1e-7)


def test_simsiam_stop_gradient_ablation_changes_the_encoder_gradients_only():
    a, b = views()
    gradients, losses = [], []
    for stop_gradient in (True, False):
        keras.utils.set_random_seed(1)
        model = make("simsiam", stop_gradient=stop_gradient)
        with tf.GradientTape() as tape:
            loss, _ = model.contrastive_loss((a, b), training=True)
        losses.append(float(loss))
        predictor = {id(w) for w in model.predictor.trainable_weights}
        gradients.append([(id(w) in predictor, w.path, np.asarray(g)) for w, g in zip(
            model.trainable_variables, tape.gradient(loss, model.trainable_variables))])
    assert losses[0] == losses[1]
    for (in_predictor, path, with_stop), (_, _, without) in zip(*gradients):
        if in_predictor:  # the predictor sits on the p branch only
            np.testing.assert_allclose(without, with_stop, rtol=1e-6, atol=1e-8)
        else:  # without the stop-gradient, z's own branch adds to the gradient
            assert not np.allclose(without, with_stop, atol=1e-6), path


@pytest.mark.parametrize("style", ["functional", "sequential_input", "sequential", "subclassed"])
@pytest.mark.parametrize("method", METHODS)
def test_trains_with_every_style_of_encoder(method, style):
    model = build(method, encoder(style, (8, 8, 1)), head(style), augmenter=noise_augmenter())
    # Eager (4 times faster here) but for the Sequential without keras.Input, which builds
    # inside the traced step; the other tests trace every method's step.
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=style != "sequential")
    history = model.fit(images(8), batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert np.all(np.isfinite(history.history["loss"]))
    assert model.example_shape == (8, 8, 1)
    if method == "byol":
        for target, online in model.copy_pairs(model.target_encoder,
                                               model.target_projection_head):
            assert not target.trainable and online.trainable


@pytest.mark.parametrize("method", METHODS)
def test_save_load_and_config_round_trip(tmp_path, method):
    a, _ = views()
    model = make(method, batch_norm=True, augmenter=keras.layers.GaussianNoise(0.01),
                 **SETTINGS[method])
    model.fit(tf.data.Dataset.from_tensors(a).repeat(3), epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    parts = {*type(model).config_objects, "augmenter"}
    assert ({k: v for k, v in loaded.get_config().items() if k not in parts}
            == {k: v for k, v in model.get_config().items() if k not in parts})
    np.testing.assert_allclose(np.asarray(loaded(a)), np.asarray(model(a)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(loaded.project(a)), np.asarray(model.project(a)),
                               atol=1e-6)
    # Every variable: weights, batch-norm statistics, the predictor, BYOL's target.
    assert len(loaded.weights) == len(model.weights)
    for original, restored in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(np.asarray(restored), np.asarray(original), atol=1e-6,
                                   err_msg=original.path)
    # get_config / from_config rebuilds the same architecture.
    clone = type(model).from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(clone(a)), np.asarray(model(a)), atol=1e-6)
    np.testing.assert_allclose(float(clone.contrastive_loss(views(), training=False)[0]),
                               float(model.contrastive_loss(views(), training=False)[0]),
                               rtol=1e-5)
    if method == "byol":  # the reloaded target stays out of the gradient's reach, and follows
        loaded.compile(optimizer=keras.optimizers.SGD(0.1))
        assert not loaded.target_encoder.trainable_weights
        target = [np.asarray(w).copy() for w in loaded.target_encoder.weights]
        loaded.fit(tf.data.Dataset.from_tensors(a).repeat(2), epochs=1, verbose=0)
        assert any(not np.allclose(np.asarray(w), t)
                   for w, t in zip(loaded.target_encoder.weights, target))


def test_bad_arguments():
    with pytest.raises(ValueError, match="total_steps"):
        make("byol", total_steps=0)
    with pytest.raises(ValueError, match="tau_base"):
        make("byol", tau_base=1.5)
    with pytest.raises(ValueError, match="lambda_"):
        make("barlow_twins", lambda_=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        make("vicreg", gamma=0.0)
