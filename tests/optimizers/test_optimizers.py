import math

import keras
import numpy as np
import pytest

from keras_ebm.optimizers import LARS
from keras_ebm.optimizers import WarmupCosine
from keras_ebm.optimizers import scale_learning_rate


def numpy_lars(weights, gradients_per_step, excluded, learning_rate, momentum, weight_decay,
               eta, nesterov):
    """NumPy transcription of LARS (You et al. 2017; SimCLR's exclusions)."""
    weights = [w.astype("float64").copy() for w in weights]
    velocities = [np.zeros_like(w) for w in weights]
    for gradients in gradients_per_step:
        for i, (w, g) in enumerate(zip(weights, gradients)):
            g = g.astype("float64")
            lr = learning_rate
            if not excluded[i]:
                w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
                trust = eta * w_norm / (g_norm + weight_decay * w_norm) \
                    if w_norm > 0 and g_norm > 0 else 1.0
                lr = learning_rate * trust
                g = g + weight_decay * w
            velocities[i] = momentum * velocities[i] + lr * g
            step = momentum * velocities[i] + lr * g if nesterov else velocities[i]
            weights[i] = w - step
    return weights


def make_variables():
    rng = np.random.default_rng(0)
    values = [rng.normal(size=(4, 3)), rng.normal(size=(3,)), rng.normal(size=(2, 2)),
              np.zeros((2, 2))]
    names = ["dense/kernel", "dense/bias", "head/batch_norm_scale", "zero/kernel"]
    return [keras.Variable(v.astype("float32"), name=n.split("/")[-1]) for v, n in
            zip(values, names)]


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_lars_matches_numpy_for_three_steps(nesterov, weight_decay):
    variables = make_variables()
    initial = [v.numpy() for v in variables]
    optimizer = LARS(0.5, momentum=0.9, weight_decay=weight_decay, eta=0.01, nesterov=nesterov,
                     exclude_patterns=("scale",))
    rng = np.random.default_rng(1)
    gradients = [[rng.normal(size=v.shape).astype("float32") for v in variables]
                 for _ in range(3)]
    for step in gradients:
        optimizer.apply_gradients(zip(step, variables))
    # kernel: adapted; bias (1-D) and "..._scale" (pattern): excluded; a zero
    # kernel gets trust ratio 1.
    excluded = [False, True, True, False]
    assert [optimizer.is_excluded(v) for v in variables] == excluded
    expected = numpy_lars(initial, gradients, excluded, 0.5, 0.9, weight_decay, 0.01, nesterov)
    for variable, want in zip(variables, expected):
        np.testing.assert_allclose(variable.numpy(), want, rtol=1e-5, atol=1e-6)


def test_lars_excludes_bias_and_batch_norm_of_a_model_by_default():
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="dense")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, x)
    optimizer = LARS(exclude_1d=False)  # by name only: "bias" / "batch_norm"
    flags = {v.path: optimizer.is_excluded(v) for v in model.trainable_variables}
    assert flags["dense/kernel"] is False and flags["dense/bias"] is True
    by_rank = LARS(exclude_patterns=())
    assert [by_rank.is_excluded(v) for v in model.trainable_variables] == [False, True, True, True]


def test_lars_trains_a_model_and_round_trips_through_config(tmp_path):
    schedule = WarmupCosine(0.1, total_steps=20, warmup_steps=2)
    optimizer = LARS(schedule, momentum=0.8, weight_decay=1e-4, eta=0.02, nesterov=True,
                     clipnorm=1.0)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, LARS)
    assert restored.get_config()["learning_rate"]["class_name"].endswith("WarmupCosine")
    for key, value in optimizer.get_config().items():
        if key != "learning_rate":
            assert restored.get_config()[key] == value, key
    assert restored.get_config()["learning_rate"] == optimizer.get_config()["learning_rate"]
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    model.fit(x, x @ np.ones((3, 1), "float32"), epochs=2, verbose=0)
    path = tmp_path / "lars.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, LARS) and loaded.optimizer.nesterov


def test_lars_bad_arguments():
    with pytest.raises(ValueError, match="momentum"):
        LARS(momentum=1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        LARS(weight_decay=-1.0)
    with pytest.raises(ValueError, match="eta"):
        LARS(eta=0.0)


def test_warmup_cosine_values_and_config():
    schedule = WarmupCosine(2.0, total_steps=10, warmup_steps=4, final_learning_rate=0.2)

    def expected(t):
        if t < 4:
            return 2.0 * t / 4
        s = min(max((t - 4) / 6, 0.0), 1.0)
        return 0.2 + 1.8 * 0.5 * (1 + math.cos(math.pi * s))

    for t in range(0, 13):
        np.testing.assert_allclose(float(schedule(t)), expected(t), rtol=1e-5, atol=1e-7)
    assert float(schedule(4)) == pytest.approx(2.0)
    assert float(schedule(10)) == pytest.approx(0.2)
    restored = WarmupCosine.from_config(schedule.get_config())
    assert restored.get_config() == schedule.get_config()
    no_warmup = WarmupCosine(1.0, total_steps=5)
    assert float(no_warmup(0)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        WarmupCosine(1.0, total_steps=5, warmup_steps=6)
    with pytest.raises(ValueError):
        WarmupCosine(0.0, total_steps=5)


def test_scale_learning_rate_rules():
    assert scale_learning_rate(0.3, 256) == pytest.approx(0.3)
    assert scale_learning_rate(0.3, 4096) == pytest.approx(4.8)
    assert scale_learning_rate(0.075, 4096, "sqrt") == pytest.approx(4.8)
    assert scale_learning_rate(0.075, 100, rule="sqrt") == pytest.approx(0.75)
    with pytest.raises(ValueError, match="rule"):
        scale_learning_rate(0.1, 256, "log")
    with pytest.raises(ValueError):
        scale_learning_rate(0.1, 0)
