"""tools/train.py end to end: every flagfile for a few steps, and bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "tools", "train.py")
CONFIGS = os.path.join(ROOT, "configs")
SMOKE = ["--backbone=tiny_cnn", "--epochs=1", "--steps_per_epoch=2", "--batch_size=16",
         "--probe_draws=1", "--queue_size=64", "--projection_hidden_dims=16",
         "--projection_dim=8"]


def run_in_process(module, args):
    module.FLAGS.unparse_flags()
    module.FLAGS(["train.py", *args])
    module.main([])


SSL_CONFIGS = ["moco", "simclr", "moco_cifar10", "simclr_cifar10", "pirl", "pirl_imagenet",
               "simclr_imagenet", "contrastive_embedding", "contrastive_embedding_l2",
               "byol", "simsiam", "barlow_twins", "vicreg", "byol_cifar10", "simsiam_cifar10",
               "barlow_twins_cifar10", "vicreg_cifar10"]
# Extra smoke-test flags per SSL config: a small bank and jigsaw, a small mocked ImageNet.
SSL_SMOKE = {
    "pirl": ["--num_negatives=32", "--patch_dim=8"],
    "pirl_imagenet": ["--num_negatives=32", "--patch_dim=8", "--image_size=32",
                      "--jigsaw_resize=36", "--jigsaw_patch_size=10"],
    "simclr_imagenet": ["--image_size=32"],  # streamed (--stream=always), as pirl_imagenet
    **{name: ["--predictor_hidden_dims=8"] for name in (
        "byol", "simsiam", "byol_cifar10", "simsiam_cifar10")},
}
EBM_CONFIGS = sorted(os.path.basename(name)[:-len(".flags")] for name in os.listdir(CONFIGS)
                     if name.endswith(".flags")
                     and os.path.basename(name)[:-len(".flags")] not in SSL_CONFIGS)


def test_every_flagfile_is_covered():
    assert {"cd_rbm", "cdk_rbm", "pcd_rbm", "nce_rbm", "ratio_matching_rbm", "mpf_rbm", "ml_rbm",
            "dae", "pcd_rings"} <= set(EBM_CONFIGS)


@pytest.mark.parametrize("config", EBM_CONFIGS)
def test_ebm_flagfile_runs_a_few_steps(train_module, tmp_path, config):
    workdir, export_dir = tmp_path / "work", tmp_path / "export"
    run_in_process(train_module, [
        f"--flagfile={CONFIGS}/{config}.flags", "--epochs=1", "--steps_per_epoch=2",
        "--toy_train_samples=400", "--toy_test_samples=200", "--grid_size=40",
        "--energy_hidden_units=8", "--num_chains=40", "--noais",
        f"--workdir={workdir}", f"--export_dir={export_dir}"])
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["method"] == train_module.FLAGS.method
    assert (workdir / "model.keras").exists()
    assert any(name.endswith(".png") for name in os.listdir(workdir))
    loaded = tf.saved_model.load(str(export_dir / "1"))
    assert {"serving_default", "energy"} <= set(loaded.signatures)


@pytest.mark.parametrize("config", SSL_CONFIGS)
def test_flagfile_runs_a_few_steps(train_module, tmp_path, config):
    workdir, export_dir = tmp_path / "work", tmp_path / "export"
    args = [f"--flagfile={CONFIGS}/{config}.flags", *SMOKE, *SSL_SMOKE.get(config, []),
            f"--workdir={workdir}", f"--export_dir={export_dir}"]
    if "cifar10" in config or "imagenet" in config:
        with tfds.testing.mock_data(num_examples=48, policy=tfds.testing.MockPolicy.USE_CODE):
            run_in_process(train_module, args)
    else:
        run_in_process(train_module, args)
    assert train_module.FLAGS.method in config or config.startswith(train_module.FLAGS.method)
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["method"] == train_module.FLAGS.method
    assert np.isfinite(metrics["final_loss"])
    assert set(metrics["evaluation"]) == {"raw pixels", "encoder at init",
                                          f"{metrics['method']} (trained)"}
    assert (workdir / "model.keras").exists()
    assert os.listdir(workdir / "tb")
    # The collapse monitor (on by default) logs the held batch's effective rank per epoch.
    assert len(metrics["effective_rank"]) == len(metrics["projection_rank"]) == 1
    assert metrics["final_effective_rank"] == metrics["effective_rank"][-1] > 1.05
    # (projections may sit near rank 1 at initialisation: no absolute floor for them)
    assert metrics["final_projection_rank"] == metrics["projection_rank"][-1] > 0.99
    # ... and the online kNN on the test split, before training and at the last epoch.
    assert sorted(metrics["knn_accuracy"]) == ["0", "1"]
    assert 0.0 <= metrics["knn_accuracy"]["1"] <= 1.0
    # The SavedModel maps `images` to `embeddings`, without keras_ebm.
    loaded = tf.saved_model.load(str(export_dir / "1"))
    serve = loaded.signatures["serving_default"]
    shape = (32, 32, 3) if "cifar" in config or "imagenet" in config else (8, 8, 1)
    images = tf.random.uniform((3, *shape))
    assert serve(images=images)["embeddings"].shape == (3, 16)



@pytest.mark.parametrize("config", ["moco", "simclr", "pirl", "contrastive_embedding"])
def test_xla_compiles_the_whole_train_step(train_module, tmp_path, config):
    # The augmentation (random resized crop) and MoCo's shuffle-BN groups run inside the
    # compiled step: --jit_compile=true (auto on GPUs and TPUs) must compile all of it.
    workdir = tmp_path / "work"
    run_in_process(train_module, [f"--flagfile={CONFIGS}/{config}.flags", *SMOKE,
                                  *SSL_SMOKE.get(config, []), "--jit_compile=true",
                                  f"--workdir={workdir}", f"--export_dir={tmp_path / 'export'}"])
    assert train_module.use_xla()
    assert np.isfinite(json.loads((workdir / "metrics.json").read_text())["final_loss"])

def test_paper_scale_configs_say_what_the_paper_says(train_module):
    for config, temperature in [("moco_cifar10", 0.1), ("simclr_cifar10", 0.5)]:
        train_module.FLAGS.unparse_flags()
        train_module.FLAGS(["train.py", f"--flagfile={CONFIGS}/{config}.flags"])
        flags = train_module.FLAGS
        assert (flags.backbone, flags.batch_size, flags.epochs) == ("resnet18_cifar", 512, 800)
        assert flags.temperature == temperature
        if config.startswith("moco"):
            assert (flags.queue_size, flags.momentum) == (4096, 0.99)
        with open(f"{CONFIGS}/{config}.flags") as f:
            head = f.readline()
        assert head.startswith("#")


@pytest.mark.parametrize("config,published", [
    ("byol_cifar10", "92.58"), ("simsiam_cifar10", "90.51"), ("barlow_twins_cifar10", "92.10"),
    ("vicreg_cifar10", "92.07")])
def test_non_contrastive_cifar10_configs_are_solo_learns(train_module, config, published):
    train_module.FLAGS.unparse_flags()
    train_module.FLAGS(["train.py", f"--flagfile={CONFIGS}/{config}.flags"])
    flags = train_module.FLAGS
    assert (flags.backbone, flags.batch_size, flags.epochs) == ("resnet18_cifar", 256, 1000)
    assert flags.method == config[:-len("_cifar10")] and flags.collapse_monitor
    with open(f"{CONFIGS}/{config}.flags") as f:
        assert published in f.read()


def test_pirl_imagenet_config_says_what_the_paper_says(train_module):
    train_module.FLAGS.unparse_flags()
    train_module.FLAGS(["train.py", f"--flagfile={CONFIGS}/pirl_imagenet.flags"])
    flags = train_module.FLAGS
    assert (flags.method, flags.backbone, flags.num_negatives) == ("pirl", "resnet50", 32000)
    assert (flags.temperature, flags.loss_weight, flags.bank_momentum) == (0.07, 0.5, 0.5)
    assert (flags.jigsaw_resize, flags.jigsaw_patch_size, flags.projection_dim) == (255, 64, 128)


def run_cli(*args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, TRAIN, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _error_lines(stderr):
    # TensorFlow's C++ start-up messages are not ours; keep the tool's own lines.
    return [line for line in stderr.splitlines()
            if line.strip() and not line.startswith(("WARNING: All log", "I0000", "E0000",
                                                      "W0000"))]


@pytest.mark.parametrize("args,expected", [
    (["--method=no_such_method"], "--method"),
    (["--epochs=0"], "--epochs"),
    (["--learning_rate=nan"], "--learning_rate"),
    (["--no_such_flag=1"], "no_such_flag"),
    (["--dataset=imagenet_from_nowhere"], "--dataset"),
    (["--flagfile=configs/missing.flags"], "missing.flags"),
    (["--method=pirl", "--num_negatives=5000", "--jigsaw_resize=12"], "--num_negatives"),
    (["--method=pirl", "--num_negatives=64"], "too small for a 3x3 jigsaw grid"),
    (["--method=pirl", "--num_negatives=64", "--jigsaw_resize=12", "--jigsaw_patch_size=5"],
     "too small for a 3x3"),
    (["--method=contrastive_embedding", "--energy=manhattan"], "--energy"),
    (["--method=contrastive_embedding", "--margin=0"], "--margin"),
    (["--method=pirl", "--loss_weight=2"], "--loss_weight"),
    (["--max_rollbacks=-1"], "--max_rollbacks"),
    (["--keep_checkpoints=-1"], "--keep_checkpoints"),
    (["--method=pcd", "--rollback_lr_factor=1.5"], "--rollback_lr_factor"),
    (["--method=nce", "--epoch_program"], "--epoch_program"),
    (["--method=pcd", "--strategy=mirrored"], "--strategy=mirrored"),
    (["--method=pcd", "--dataset=toy:rings", "--epoch_program"], "--epoch_program"),
    # Refused once the data are known: the workdir made for the run is removed again.
    (["--method=kmeans", "--dataset=toy:rings", "--toy_train_samples=100",
      "--num_clusters=200"], "--num_clusters=200"),
    (["--method=pcd", "--dataset=toy:rings", "--step_size=0"], "--step_size"),
])
def test_bad_input_is_one_line_exit_2_nothing_exported(tmp_path, args, expected):
    export_dir = tmp_path / "export"
    result = run_cli(*args, f"--workdir={tmp_path / 'work'}", f"--export_dir={export_dir}",
                     cwd=ROOT)
    lines = _error_lines(result.stderr)
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, lines
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert not export_dir.exists()
    assert not (tmp_path / "work").exists()


def test_empty_image_folder_and_unwritable_workdir(tmp_path):
    (tmp_path / "images" / "cats").mkdir(parents=True)
    result = run_cli("--dataset=folder:" + str(tmp_path / "images"), f"--workdir={tmp_path}/w",
                     f"--export_dir={tmp_path}/e", cwd=ROOT)
    lines = _error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1 and "images" in lines[0], result.stderr
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_cli(f"--workdir={blocker}/sub", f"--export_dir={tmp_path}/e", cwd=ROOT)
    lines = _error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1 and "--workdir" in lines[0], result.stderr
    assert not (tmp_path / "e").exists()


def test_divergence_stops_with_the_step_and_quantity_and_exports_nothing(tmp_path):
    result = run_cli("--flagfile=configs/moco.flags", *SMOKE, "--steps_per_epoch=2", "--epochs=3",
                     "--learning_rate=1e30", "--warmup_epochs=0", "--noevaluate",
                     f"--workdir={tmp_path / 'w'}", f"--export_dir={tmp_path / 'e'}", cwd=ROOT)
    assert result.returncode == 1, result.stderr[-2000:]
    last = _error_lines(result.stderr)[-1]
    assert last.startswith("train.py: Non-finite") and "at training step" in last
    assert "nothing was exported" in last and "Traceback" not in result.stderr
    assert not (tmp_path / "e").exists()
    assert not (tmp_path / "w" / "model.keras").exists()


def test_collapse_stops_with_one_line_exit_1_and_exports_nothing(tmp_path):
    # Every epoch counts as collapsed under an unreachable rank threshold: the CLI path of a
    # collapse (the real one, SimSiam without its stop-gradient, is in docs/methods/simsiam.md).
    result = run_cli("--flagfile=configs/simsiam.flags", *SMOKE, "--predictor_hidden_dims=8",
                     "--nosimsiam_stop_gradient", "--collapse_min_rank=1e9", "--epochs=3",
                     "--noevaluate", f"--workdir={tmp_path / 'w'}",
                     f"--export_dir={tmp_path / 'e'}", cwd=ROOT)
    assert result.returncode == 1, result.stderr[-2000:]
    # SMOKE's --queue_size is MoCo's: SimSiam warns that it ignores it, before training.
    lines = [line for line in _error_lines(result.stderr) if "train.py: warning:" not in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith("train.py: Representation collapse at epoch 1: effective rank ")
    assert "< 1e+09" in lines[0] and "nothing was exported" in lines[0]
    assert "no epoch was checkpointed" in lines[0]  # epoch 1 was the first
    record = tmp_path / "w" / "collapse.json"
    assert f"the monitor's record is in {record}" in lines[0]
    history = json.loads(record.read_text())["history"]
    assert [row["epoch"] for row in history] == [0, 1]
    assert {"effective_rank", "projection_rank", "knn_accuracy"} <= set(history[0])
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "e").exists()
    assert not (tmp_path / "w" / "model.keras").exists()
    assert not (tmp_path / "w" / "metrics.json").exists()
