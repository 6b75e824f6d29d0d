"""What a newcomer meets on the CLI (issue 13): one output format, warnings, help, defaults."""

import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "tools", "train.py")


def run(*args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, TRAIN, *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=600)


def test_ebm_run_from_another_folder_warns_logs_and_writes_the_common_keys(tmp_path):
    workdir = tmp_path / "work"
    result = run("--method=pcd", "--dataset=binary_digits", "--epochs=1", "--steps_per_epoch=2",
                 "--backbone=resnet50", "--num_atoms=8", "--mcmc_steps=1",
                 f"--workdir={workdir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    # A flag the method ignores gets a warning: another family's, or another method's; a
    # flag it reads gets none.
    assert "warning: --backbone is ignored by --method=pcd" in result.stderr
    assert "warning: --num_atoms is ignored by --method=pcd" in result.stderr
    assert "--mcmc_steps is ignored" not in result.stderr
    with open(workdir / "metrics.json") as f:
        metrics = json.load(f)
    # The same keys as the SSL runs, and the default export does not depend on the cwd.
    assert {"method", "model", "export", "train_seconds", "final_loss"} <= set(metrics)
    assert metrics["export"].startswith(os.path.join(ROOT, "saved_models", "pcd"))
    shutil.rmtree(metrics["export"])
    assert "test_log_likelihood" in metrics and "nats" in result.stdout
    # EBM runs write TensorBoard logs too.
    assert os.listdir(workdir / "tb")


def test_bad_dataset_is_reported_before_training_starts(tmp_path):
    result = run("--method=simclr", "--dataset=folder:/nowhere", f"--workdir={tmp_path}",
                 cwd=tmp_path)
    assert result.returncode == 2 and "--dataset" in result.stderr
    assert "Training" not in result.stdout


def test_dataset_help_lists_every_source(tmp_path):
    result = run("--helpfull", cwd=tmp_path)
    text = " ".join(result.stdout.split())
    for source in ("digits", "binary_digits", "toy:<rings|moons|8gaussians|checkerboard>",
                   "tfds:NAME", "folder:PATH", "one sub-folder of images per class"):
        assert source in text, source
