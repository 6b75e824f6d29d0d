"""Smoke tests of tools/ebm_recipes.run on tiny budgets (the real runs are in configs/)."""

import json
import os
import sys
import types

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))

import ebm_recipes  # noqa: E402
from absl import flags  # noqa: E402


def flag_values(**overrides):
    values = {name: flags.FLAGS[name].default for name in flags.FLAGS
              if flags.FLAGS.find_module_defining_flag(name) == ebm_recipes.__name__
              or flags.FLAGS.find_module_defining_flag(name).endswith("ebm_recipes")}
    values.update(method="pcd", dataset="binary_digits", epochs=1, batch_size=20, learning_rate=0.01,
                  optimizer="adamw", seed=0, steps_per_epoch=3, weight_decay=0.0,
                  keep_checkpoints=3)
    values.update(overrides)
    return types.SimpleNamespace(**values)


@pytest.mark.parametrize("method,dataset", [("pcd", "binary_digits"), ("nce", "binary_digits"),
                                            ("cd", "toy:rings"), ("dae", "binary_digits")])
def test_run_writes_model_metrics_pictures_and_export(tmp_path, method, dataset):
    values = flag_values(method=method, dataset=dataset, num_chains=64, chains_per_step=32,
                         mcmc_steps=2, energy_hidden_units=["8"], toy_train_samples=400,
                         toy_test_samples=200, grid_size=40)
    workdir, export_dir = str(tmp_path / "work"), str(tmp_path / "export")
    metrics = ebm_recipes.run(values, workdir, export_dir)
    assert os.path.exists(os.path.join(workdir, "model.keras"))
    with open(os.path.join(workdir, "metrics.json")) as f:
        assert json.load(f)["method"] == method
    assert any(name.endswith(".png") for name in os.listdir(workdir))
    if dataset == "binary_digits" and method != "dae":
        assert metrics["test_log_likelihood"] < 0
    if dataset.startswith("toy:"):
        assert "gaussian_test_log_likelihood" in metrics
    import tensorflow as tf

    loaded = tf.saved_model.load(metrics["saved_model"])
    assert set(loaded.signatures) >= {"serving_default", "energy"}


def test_binary_only_methods_reject_continuous_data(tmp_path):
    with pytest.raises(ValueError, match="--method=mpf"):
        ebm_recipes.run(flag_values(method="mpf", dataset="toy:moons", toy_train_samples=100,
                                    toy_test_samples=50), str(tmp_path / "w"), str(tmp_path / "e"))
