"""keras_ebm.experiment.run: tools/train.py as one library call, with its errors as exceptions."""

import json
import os
import re

import keras
import numpy as np
import pytest

import keras_ebm
from keras_ebm import experiment

TOY = dict(method="kmeans", dataset="toy:rings", toy_train_samples=400, toy_test_samples=200,
           grid_size=40, verbose=False)


def test_run_trains_evaluates_saves_exports_and_resumes(tmp_path):
    workdir, export_dir = str(tmp_path / "work"), str(tmp_path / "export")
    result = experiment.run(**TOY, workdir=workdir, export_dir=export_dir,
                            settings={"epochs": 3, "num_clusters": 8})
    assert isinstance(result.model, keras.Model) and result.training.epochs_run == 3
    written = json.loads(open(os.path.join(workdir, "metrics.json")).read())
    assert written["method"] == "kmeans" and written["epochs"] == 3
    assert written["calibrated_test_log_likelihood"] == pytest.approx(
        result.metrics["calibrated_test_log_likelihood"])
    assert result.metrics["export"] == os.path.join(export_dir, "1")
    loaded = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    points = np.random.default_rng(0).normal(size=(5, 2)).astype("float32")
    np.testing.assert_allclose(loaded.energy(points), result.model.energy(points), rtol=1e-5)
    # The same call again resumes at the checkpoint: nothing left to train.
    again = experiment.run(**TOY, workdir=workdir, export_dir=export_dir,
                           settings={"epochs": 3, "num_clusters": 8})
    assert again.training.epochs_run == 0 and again.training.checkpoint_epoch == 3


def test_a_run_config_is_the_defaults_plus_fields(tmp_path):
    config = experiment.RunConfig(**TOY, workdir=str(tmp_path / "w"), settings={"epochs": 1})
    result = experiment.run(config, settings={"epochs": 2, "num_clusters": 4})
    assert result.metrics["epochs"] == 2
    assert result.metrics["export"] == os.path.join(str(tmp_path / "w"), "saved_model", "1")
    assert config.settings == {"epochs": 1}  # the config given is not changed


@pytest.mark.parametrize("fields,expected", [
    ({"keep_checkpoints": -1}, "keep_checkpoints=-1 must be >= 0"),
    ({"max_rollbacks": -2}, "max_rollbacks=-2 must be >= 1"),
    ({"collapse_min_rank_ratio": 1.0}, "collapse_min_rank_ratio=1.0 must be in [0, 1)"),
    ({"method": "no_such"}, "method='no_such': choose one of"),
    ({"strategy": "mirrored"}, "strategy=mirrored: the EBM recipes train on one device"),
    ({"epoch_program": True}, "epoch_program is for method=cd|pcd"),
    ({"settings": {"learning_rate": float("nan")}}, "learning_rate=nan must be a finite"),
    ({"settings": {"no_such_setting": 1}}, "no_such_setting: no method has this setting"),
    ({"settings": {"seed": 3}}, "seed: a field of RunConfig"),
    ({"dataset": "toy:nowhere"}, "dataset='toy:nowhere': unknown toy"),
    ({"settings": {"num_clusters": 500}}, "num_clusters=500"),  # refused once the data are known
])
def test_bad_input_raises_a_setting_error_naming_it_and_leaves_nothing(tmp_path, fields,
                                                                     expected):
    workdir, export_dir = tmp_path / "work", tmp_path / "export"
    with pytest.raises(keras_ebm.presets.SettingError) as caught:
        experiment.run(**{**TOY, **fields}, workdir=str(workdir), export_dir=str(export_dir))
    name = re.match(r"[a-z_]+", expected).group()
    assert expected in str(caught.value) and str(caught.value).startswith(name)
    assert not workdir.exists() and not export_dir.exists()


def test_settings_of_other_methods_are_dropped_with_a_warning(tmp_path):
    warnings = []
    result = experiment.run(**TOY, workdir=str(tmp_path / "w"), warn=warnings.append,
                            settings={"epochs": 1, "num_clusters": 4, "queue_size": 64,
                                      "num_atoms": 3})
    assert warnings == ["warning: queue_size is ignored by method=kmeans",
                        "warning: num_atoms is ignored by method=kmeans"]
    assert result.metrics["epochs"] == 1


def test_divergence_raises_run_stopped_and_exports_nothing(tmp_path):
    export_dir = tmp_path / "export"
    with pytest.raises(experiment.RunStopped) as caught:
        experiment.run(method="pcd", dataset="toy:rings", toy_train_samples=400,
                       toy_test_samples=200, grid_size=40, verbose=False,
                       workdir=str(tmp_path / "w"), export_dir=str(export_dir),
                       settings={"epochs": 3, "learning_rate": 1e30, "energy_hidden_units": [8],
                                 "num_chains": 40, "final_learning_rate_fraction": 1.0})
    assert caught.value.reason == "diverged"
    assert str(caught.value).startswith("Non-finite") and "nothing was exported" in str(
        caught.value)
    assert not export_dir.exists() and not (tmp_path / "w" / "model.keras").exists()


def test_jit_compile_auto_reaches_the_presets_and_the_methods(tmp_path):
    # "auto" is passed through to the EBM presets (the toys' PCD turns XLA on; an RBM's Gibbs
    # blocks pick XLA on CPU themselves); an explicit value, and the self-supervised
    # methods' auto (XLA on GPUs and TPUs only), are resolved here.
    assert experiment.RunConfig(method="pcd").overrides()["jit_compile"] == "auto"
    assert experiment.RunConfig(method="pcd", jit_compile="false").overrides()[
        "jit_compile"] is False
    assert experiment.RunConfig(method="moco", jit_compile=True).overrides()[
        "jit_compile"] is True
    assert experiment.RunConfig(method="moco").overrides()["jit_compile"] is bool(
        keras_ebm.distribute.default_jit_compile())
    compiled = {}
    for name, fields in {"rbm": {"dataset": "binary_digits"},
                         "epoch_program": {"dataset": "binary_digits", "epoch_program": True},
                         "toy": {"dataset": "toy:rings", "toy_train_samples": 400,
                                 "toy_test_samples": 200, "grid_size": 40}}.items():
        result = experiment.run(method="pcd", workdir=str(tmp_path / name), verbose=False,
                                settings={"epochs": 1, "num_chains": 40,
                                          "energy_hidden_units": [8]}, **fields)
        compiled[name] = result.model._jit_compile_argument
    assert compiled == {"rbm": "auto", "epoch_program": True, "toy": True}
