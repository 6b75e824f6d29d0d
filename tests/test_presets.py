"""keras_ebm.presets and keras_ebm.training: every EBM preset builds, trains, resumes, saves."""

import os

import keras
import numpy as np
import pytest

from keras_ebm import presets
from keras_ebm import training
from keras_ebm.data.binary_digits import load_binary_digits
from keras_ebm.data.toy_2d import toy_2d


@pytest.mark.parametrize("method,data", [("pcd", "binary"), ("nce", "binary"), ("cd", "toy"),
                                         ("dae", "binary"), ("ratio_matching", "binary"),
                                         ("mpf", "binary"), ("ml", "binary"), ("ml", "toy"),
                                         ("kmeans", "toy"), ("gmm", "toy")])
def test_ebm_presets_train_resume_and_save(tmp_path, method, data):
    x = load_binary_digits()[0][0][:200] if data == "binary" else toy_2d("rings", 200, seed=0)
    settings = dict(epochs=2, batch_size=20, num_chains=32, mcmc_steps=2,
                    energy_hidden_units=(8,)) if method in ("cd", "pcd") else dict(
                    epochs=2, batch_size=20, energy_hidden_units=(8,))
    settings.update({"ml": {"ml_grid_size": 16}, "kmeans": {"num_clusters": 8},
                     "gmm": {"num_components": 4}}.get(method, {}))
    model = presets.build(method, x, steps_per_epoch=3, **settings)
    workdir = str(tmp_path / "work")
    result = training.fit(model, x, workdir=workdir, epochs=2, batch_size=20, steps_per_epoch=3,
                          verbose=0)
    assert result.epochs_run == 2 and np.isfinite(result.history.history["loss"]).all()
    # A rerun of the finished call trains nothing.
    assert training.fit(model, x, workdir=workdir, epochs=2, batch_size=20, steps_per_epoch=3,
                        verbose=0).epochs_run == 0
    path = training.save_model(model, str(tmp_path / "model.keras"))
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x[:5])), np.asarray(model(x[:5])), rtol=1e-5,
                               atol=1e-5)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp.keras")]


def test_binary_only_presets_reject_continuous_data():
    with pytest.raises(presets.SettingError, match="method=mpf needs binary data"):
        presets.build("mpf", toy_2d("moons", 100, seed=0))


def test_defaults_and_unknown_settings():
    assert presets.defaults("moco")["temperature"] == 0.2
    assert presets.defaults("simclr")["temperature"] == 0.5
    assert presets.defaults("pirl")["temperature"] == 0.07
    with pytest.raises(ValueError, match="no setting queue_size"):
        presets.resolve("simclr", {"queue_size": 10})
    with pytest.raises(ValueError, match="momentum=1.0 must be >= 0 and < 1"):
        presets.check_settings({"momentum": 1.0})
    with pytest.raises(ValueError, match="temperature=nan must be a finite number"):
        presets.check_settings({"temperature": float("nan")})


def test_ssl_rollback_restarts_from_the_last_good_checkpoint(tmp_path):
    x = np.random.default_rng(0).random((64, 8, 8, 1)).astype("float32")
    settings = dict(backbone="tiny_cnn", epochs=3, batch_size=16, queue_size=32, bn_splits=1,
                    projection_hidden_dims=(8,), projection_dim=4)

    class PoisonOnce(keras.callbacks.Callback):
        done = False

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and not PoisonOnce.done:
                PoisonOnce.done = True
                self.model.encoder.weights[0].assign(np.full(
                    self.model.encoder.weights[0].shape, np.nan, "float32"))

    model = presets.build("moco", x, **settings)
    result = training.fit(model, x, workdir=str(tmp_path), epochs=3, batch_size=16,
                          optimizer=presets.optimizer_factory("moco", 4, **settings),
                          on_divergence="rollback", callbacks=[PoisonOnce()], verbose=0)
    assert result.rollbacks == 1 and np.isfinite(result.history.history["loss"]).all()
    with pytest.raises(training.Diverged):
        PoisonOnce.done = False
        training.fit(presets.build("moco", x, **settings), x, workdir=str(tmp_path / "b"),
                     epochs=3, batch_size=16, callbacks=[PoisonOnce()], verbose=0)


NON_CONTRASTIVE = dict(backbone="tiny_cnn", epochs=2, batch_size=16, projection_hidden_dims=(8,),
                       projection_dim=4)


@pytest.mark.parametrize("method", presets.NON_CONTRASTIVE_METHODS)
def test_non_contrastive_presets_build_train_and_fingerprint(tmp_path, method):
    import keras_ebm

    x = np.random.default_rng(0).random((64, 8, 8, 1)).astype("float32")
    settings = dict(NON_CONTRASTIVE, **({"predictor_hidden_dims": (8,)}
                                        if method in ("byol", "simsiam") else {}))
    model = presets.build(method, x, steps_per_epoch=4, **settings)
    cls = {"byol": keras_ebm.methods.BYOL, "simsiam": keras_ebm.methods.SimSiam,
           "barlow_twins": keras_ebm.methods.BarlowTwins, "vicreg": keras_ebm.methods.VICReg}
    assert type(model) is cls[method]
    if method == "byol":
        assert model.total_steps == 2 * 4 and model.tau_base == 0.99
    if method == "simsiam":
        assert model.stop_gradient and model.projection_head.output_batch_norm
        assert not presets.build(method, x, simsiam_stop_gradient=False, **settings).stop_gradient
    result = training.fit(model, x, workdir=str(tmp_path), epochs=2, batch_size=16, verbose=0,
                          callbacks=[presets.collapse_monitor(x, examples=32)])
    assert np.isfinite(result.history.history["loss"]).all()
    assert len(result.history.history["effective_rank"]) == 2
    state, _ = presets.fingerprint(method, presets.resolve(method, settings), (8, 8, 1))
    if method in ("byol", "simsiam"):
        assert state["predictor_hidden_dims"] == (8,)


@pytest.mark.parametrize("setting,message", [
    ({"tau_base": 1.5}, "tau_base=1.5 must be >= 0 and <= 1"),
    ({"barlow_lambda": -1.0}, "barlow_lambda=-1.0 must be >= 0"),
    ({"barlow_scale_loss": 0.0}, "barlow_scale_loss=0.0 must be > 0"),
    ({"sim_coeff": -1.0}, "sim_coeff=-1.0 must be >= 0"),
    ({"std_coeff": float("inf")}, "std_coeff=inf must be a finite number"),
    ({"cov_coeff": -0.5}, "cov_coeff=-0.5 must be >= 0"),
    ({"predictor_hidden_dims": ["0"]}, "predictor_hidden_dims must be positive integers"),
    ({"predictor_hidden_dims": ["99999999"]}, "predictor_hidden_dims entries must be <="),
])
def test_non_contrastive_settings_are_range_checked(setting, message):
    with pytest.raises(presets.SettingError, match=message):
        presets.check_settings(setting)


def test_collapse_monitor_restores_the_last_good_epoch_before_its_checkpoint(tmp_path):
    # The held batch's embeddings turn constant at the third epoch end: the monitor restores
    # epoch 2's weights and raises before epoch 3 is checkpointed.
    from keras_ebm.evaluation import CollapseError

    x = np.random.default_rng(0).random((64, 8, 8, 1)).astype("float32")
    model = presets.build("vicreg", x, **NON_CONTRASTIVE)
    calls = []

    def embed(images):
        calls.append(1)
        return np.ones((len(images), 4)) if len(calls) > 3 else model.encoder(images)

    monitor = presets.collapse_monitor(x, examples=32, embed=embed, batch_size=32)
    weights = []
    saver = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: weights.append(model.get_weights()))
    with pytest.raises(CollapseError, match="collapse at epoch 3.*restored the weights of "
                                            "epoch 2"):
        training.fit(model, x, workdir=str(tmp_path), epochs=4, batch_size=16, verbose=0,
                     callbacks=[monitor, saver])
    assert len(weights) == 2  # the collapsed epoch reached no later callback
    for restored, kept in zip(model.get_weights(), weights[-1]):
        np.testing.assert_array_equal(restored, kept)
    from keras_ebm import checkpoints

    assert checkpoints.checkpoint_position(str(tmp_path / "checkpoints"))[0] == 2


def test_ignored_settings_are_the_other_methods_own():
    # NCE reads its noise ratio and the common settings, not sparse coding's atoms or
    # Langevin's step; on the toys PCD reads the step size.
    assert presets.ignored_settings(
        "nce", ["noise_ratio", "num_atoms", "epochs", "learning_rate", "step_size"]) == [
        "num_atoms", "step_size"]
    assert presets.ignored_settings("pcd", ["step_size", "mala", "noise_ratio"]) == [
        "noise_ratio"]
    assert presets.ignored_settings("moco", ["queue_size", "num_negatives"]) == [
        "num_negatives"]
    # Exact score matching reads the noise levels (score_sigma: the smallest), not the
    # sliced variant's directions.
    assert presets.ignored_settings(
        "score_matching", ["score_sigma", "score_noise_levels", "num_projections"]) == [
        "num_projections"]


def test_auto_xla_keeps_the_presets_xla():
    # tools/train.py passes jit_compile="auto" unless --jit_compile is given: the toys' PCD
    # preset turns XLA on (its rings run fell from 142 to 86 s), which "auto" must not undo.
    assert presets.resolve("pcd", {"jit_compile": "auto"}, "toy")["jit_compile"] is True
    assert presets.resolve("pcd", {"jit_compile": False}, "toy")["jit_compile"] is False
    assert presets.resolve("pcd", {"jit_compile": "auto"}, "binary")["jit_compile"] == "auto"
    assert presets.resolve("nce", {"jit_compile": "auto"}, "toy")["jit_compile"] == "auto"


def test_jumps_are_range_checked_and_need_mala():
    with pytest.raises(presets.SettingError, match="jump_probability=1.0 must be >= 0 and < 1"):
        presets.check_settings({"jump_probability": 1.0})
    config = presets.resolve("pcd", {"jump_probability": 0.2, "mala": False}, "toy")
    with pytest.raises(presets.SettingError, match="jump_probability=0.2 needs mala"):
        presets.build_sampler(config, "toy")
    sampler = presets.build_sampler(presets.resolve("pcd", {}, "toy"), "toy")
    assert sampler.jump_probability == 0.3 and sampler.metropolis
    assert (sampler.clip_value_min, sampler.clip_value_max) == presets.TOY_BOUNDS
