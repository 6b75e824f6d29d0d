"""SimCLR, MoCo, PIRL, PCD and ratio matching under MirroredStrategy train exactly as on one device.

They run on 2 logical CPUs.

Each case runs `mirrored_check.py` in a subprocess, because the two logical
devices must be configured before TensorFlow initialises its devices (the
pytest process has done that by now). Models have no batch norm except in the
synchronised-BN case; tolerance 1e-5. No jit_compile: XLA under
MirroredStrategy over logical CPUs fails (DESIGN section 4).
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).with_name("mirrored_check.py")
TOLERANCE = 1e-5


def run_case(case):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    result = subprocess.run([sys.executable, str(SCRIPT), case], capture_output=True, text=True,
                            timeout=120, env=env, cwd=SCRIPT.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_same_training(report):
    assert report["replicas"] == 2
    assert report["loss_diff"] < TOLERANCE, report
    assert report["weight_diff"] < TOLERANCE, report
    assert report["optimizer_diff"] < TOLERANCE, report
    assert report["copies_diff"] == 0.0, report  # every device copy identical
    assert report["moved"] > 1e-3, report        # training did change the weights


def test_simclr_gradients_summed_over_replicas_equal_one_device():
    report = run_case("grads_simclr")
    assert report["replicas"] == 2
    assert report["gradient_norm"] > 1e-3
    assert report["gradient_diff"] < TOLERANCE, report


def test_simclr_two_steps_match_one_device():
    assert_same_training(run_case("simclr"))


def test_simclr_with_sync_batch_norm_matches_one_device():
    # Synchronised BN sees the global batch, so even with batch norm the
    # replicas train exactly like one device (plain BN would not: see
    # DESIGN; each replica's statistics cover only its share).
    assert_same_training(run_case("simclr_sync_bn"))


def test_moco_two_steps_match_one_device_queue_pointer_and_ema():
    report = run_case("moco")
    assert_same_training(report)
    assert report["queue_diff"] < TOLERANCE, report
    assert report["key_encoder_diff"] < TOLERANCE, report
    # 2 steps x global batch 8 into a queue of 12: pointer 16 % 12 = 4 on one
    # device, on the mirrored model and on each of its device copies.
    assert report["pointer"] == [4, 4, 4, 4], report
    assert report["num_enqueued"] == [16, 16], report


def test_pirl_two_steps_match_one_device_bank_and_negatives():
    report = run_case("pirl")
    assert_same_training(report)
    # Both replicas' entries are written into every copy of the bank, and the per-sample
    # negatives are drawn once per step for the global batch (the same draw on every replica,
    # each taking its own rows), so every image gets the negatives it gets on one device.
    assert report["bank_diff"] < TOLERANCE, report
    assert report["bank_moved"] > 1e-3, report
    assert report["bank_counters"] == [[2, 2], [2, 2]], report
    assert report["state_copies"] == 2, report


def test_pcd_two_steps_match_one_device_replay_buffer_shards():
    # Each replica advances its half of the 8 persistent chains; the gathered chains are
    # written into every copy, and the loss is scaled so the summed gradient is the global one.
    report = run_case("pcd")
    assert_same_training(report)
    assert report["chains_diff"] < TOLERANCE, report
    assert report["chains_moved"] > 1e-3, report
    assert report["state_copies"] == 2, report


def test_ratio_matching_two_steps_match_one_device():
    # The EBM losses are divided by the number of replicas (Keras sums their gradients).
    assert_same_training(run_case("ratio_matching"))


if os.environ.get("KERAS_EBM_SKIP_DISTRIBUTE"):
    pytestmark = pytest.mark.skip("KERAS_EBM_SKIP_DISTRIBUTE is set")
