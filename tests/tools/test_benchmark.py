"""tools/benchmark.py smoke runs: tiny settings, one JSON line, keys and positive values.

No timing assertions: these runs only check that every benchmark runs and reports.
"""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARK = os.path.join(ROOT, "tools", "benchmark.py")
TINY_SSL = ["--backbone=tiny_cnn", "--image_size=8", "--batch_size=8", "--steps=1",
            "--warmup=1", "--rounds=1", "--matmul_size=128", "--projection_hidden_dim=16",
            "--projection_dim=8"]


def run_benchmark(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run([sys.executable, BENCHMARK, *args], capture_output=True,
                               text=True, env=env, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, completed.stdout
    return json.loads(lines[0])


def assert_positive(result, keys):
    for key in keys:
        value = result[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)


SSL_KEYS = ["images_per_sec", "images_per_sec_end_to_end", "gflops_per_sec",
            "matmul_peak_gflops", "gflop_per_step", "end_to_end_fraction"]


@pytest.mark.parametrize("method", ["simclr", "moco", "pirl"])
def test_ssl_benchmark_reports_throughput_and_flops(method):
    extra = {"moco": ["--queue_size=32"],
             "pirl": ["--num_negatives=16", "--bank_size=64", "--image_size=12"]}.get(method, [])
    result = run_benchmark(f"--method={method}", *TINY_SSL, *extra)
    assert result["method"] == method
    assert result["batch_size"] == 8 and result["jit_compile"] is False
    assert result["mixed_precision"] == "none" and result["fused_batch_norm"] is True
    assert_positive(result, SSL_KEYS)
    assert result["flop_method"]
    if method == "moco":
        assert result["bn_splits"] == 1 and result["queue_size"] == 32
    if method == "pirl":
        # 12x12 images cut by the 3x3 jigsaw: 4x4 patches (the preset's smallest); a linear
        # image head.
        assert result["patch_shape"] == [4, 4, 3] and result["num_negatives"] == 16
        assert result["projection_head"] == "16->8"


def test_ssl_benchmark_bfloat16_and_pipeline_augmentation():
    result = run_benchmark("--method=simclr", *TINY_SSL, "--mixed_precision=bfloat16",
                           "--augment_in=pipeline", "--nofused_batch_norm")
    assert result["mixed_precision"] == "bfloat16" and result["augment_in"] == "pipeline"
    assert result["fused_batch_norm"] is False
    assert_positive(result, SSL_KEYS)


def test_pcd_rbm_benchmark_compares_with_scikit_learn():
    result = run_benchmark("--method=pcd_rbm", "--steps=1", "--warmup=1", "--num_chains=40")
    assert result["batch_size"] == 20 and result["minibatches_per_epoch"] == 1257 // 20
    for setting in ("fit_sgd_20_chains", "fit_adam_40_chains", "fit_per_minibatch_adam_40_chains",
                    "epoch_program_adam_40_chains", "epoch_program_sgd_20_chains"):
        assert_positive(result[setting], ["seconds_per_epoch", "sklearn_seconds_per_epoch",
                                          "sklearn_over_keras_ebm"])
    # The default fit path runs the whole epoch (62 minibatches) per compiled call.
    assert result["fit_sgd_20_chains"]["steps_per_execution"] == 62
    assert result["fit_per_minibatch_adam_40_chains"]["steps_per_execution"] == 1
    assert set(result["targets_met"]) == {"sklearn_setting_faster_than_sklearn",
                                          "config_within_1.5x_of_sklearn"}


def test_langevin_benchmark_compares_compiled_and_eager():
    result = run_benchmark("--method=langevin", "--steps=1", "--warmup=1", "--num_chains=16",
                           "--mcmc_steps=5")
    assert result["num_chains"] == 16 and result["mcmc_steps"] == 5
    assert_positive(result, ["compiled_seconds", "eager_seconds", "speedup"])


def test_bad_flag_value_exits_with_status_2():
    completed = subprocess.run([sys.executable, BENCHMARK, "--method=simclr", "--steps=0"],
                               capture_output=True, text=True, timeout=60, check=False,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert completed.returncode == 2
    assert "--steps" in completed.stderr
