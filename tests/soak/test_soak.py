"""Soak: MoCo on digits for 30 minutes, a checkpoint every epoch (run on request, not in CI).

    pytest -m soak tests/soak -s                      # 30 minutes
    KERAS_EBM_SOAK_SECONDS=120 pytest -m soak tests/soak -s

Samples the training process's resident memory (VmRSS) and peak (VmHWM) from /proc,
the checkpoint epoch and the workdir's size every few seconds; after the budget it
kills the run with SIGKILL and reruns the command, which must resume and finish. The
report (JSON) is printed and written to $KERAS_EBM_SOAK_REPORT if set.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from keras_ebm.callbacks import checkpoint_epoch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "tools", "train.py")
KEEP = 3


def _memory_mib(pid):
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024.0
    return values


def _folder_mib(path):
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except OSError:
                pass  # deleted while we walked (a pruned snapshot)
    return total / 2**20


@pytest.mark.soak
def test_moco_soak_memory_flat_and_workdir_bounded(tmp_path):
    budget = float(os.environ.get("KERAS_EBM_SOAK_SECONDS", 1800))
    workdir, export_dir = tmp_path / "work", tmp_path / "export"
    checkpoints = workdir / "checkpoints"
    args = [sys.executable, TRAIN, "--flagfile=configs/moco.flags", "--epochs=1000000",
            "--noevaluate", f"--keep_checkpoints={KEEP}", f"--workdir={workdir}",
            f"--export_dir={export_dir}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    samples = []
    start = time.time()
    try:
        while time.time() - start < budget and process.poll() is None:
            time.sleep(5)
            memory = _memory_mib(process.pid)
            weight_files = ([n for n in os.listdir(checkpoints) if ".weights.h5" in n]
                            if checkpoints.exists() else [])
            # (the metadata can be mid-rewrite, read as 0: keep the largest epoch seen)
            epoch = max([checkpoint_epoch(str(checkpoints))] + [s["epoch"] for s in samples[-1:]])
            samples.append({"seconds": round(time.time() - start, 1), "epoch": epoch,
                            "rss_mib": memory.get("VmRSS"), "peak_rss_mib": memory.get("VmHWM"),
                            "checkpoints_mib": round(_folder_mib(checkpoints), 2),
                            "workdir_mib": round(_folder_mib(workdir), 2),
                            "weight_files": len(weight_files)})
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert samples and samples[-1]["epoch"] >= 10, f"too few epochs: {samples[-1:]}"
    # "Start": the first sample after 5 epochs (the graph is built, the caches are warm).
    first = next(s for s in samples if s["epoch"] >= 5)
    last = samples[-1]
    # The rerun resumes at the checkpoint and finishes one more epoch.
    epoch = checkpoint_epoch(str(checkpoints))
    args = [a if not a.startswith("--epochs=") else f"--epochs={epoch + 1}" for a in args]
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    report = {
        "budget_seconds": budget, "epochs_trained": last["epoch"], "keep_checkpoints": KEEP,
        "start": first, "end": last,
        "max_weight_files": max(s["weight_files"] for s in samples),
        "max_checkpoints_mib": max(s["checkpoints_mib"] for s in samples),
        "weights_file_mib": round(os.path.getsize(checkpoints / "latest.weights.h5") / 2**20, 2),
        "resumed": f"Resuming from epoch {epoch}" in result.stdout,
        "resume_returncode": result.returncode,
        "samples": samples,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    if os.environ.get("KERAS_EBM_SOAK_REPORT"):
        with open(os.environ["KERAS_EBM_SOAK_REPORT"], "w") as f:
            json.dump(report, f, indent=2)
    assert result.returncode == 0 and report["resumed"], result.stderr[-2000:]
    assert (export_dir / "1").is_dir()
    # Memory stays flat: the end is within 10% (+64 MiB) of the start.
    assert last["rss_mib"] <= 1.10 * first["rss_mib"] + 64, report
    assert last["peak_rss_mib"] <= 1.10 * first["peak_rss_mib"] + 64, report
    # The checkpoint folder is bounded: latest + its backup copy + KEEP snapshots (+ one
    # staging copy while a snapshot is being written).
    assert report["max_weight_files"] <= KEEP + 3, report
    one_file_mib = os.path.getsize(checkpoints / "latest.weights.h5") / 2**20
    assert report["max_checkpoints_mib"] <= (KEEP + 3) * one_file_mib + 1, report
