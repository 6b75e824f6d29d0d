"""tools/ssl_table.py: runs, keeps and tabulates; the ablation row counts the monitor's stops."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = ["--epochs=2", "--steps_per_epoch=2", "--batch_size=16", "--probe_draws=1",
         "--backbone=tiny_cnn", "--predictor_hidden_dims=8", "--projection_dim=8"]


def run_table(tmp_path, *extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "ssl_table.py"), "--methods=simsiam",
         "--seeds=0", f"--runs={tmp_path / 'runs'}", f"--out={tmp_path / 'out'}",
         "--extra=" + ",".join([*SMOKE, *extra])],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def test_table_runs_keeps_and_reports_the_collapse_ablation(tmp_path):
    # An unreachable rank threshold makes every run a collapse: the healthy row shows 1/1
    # stopped, the ablation row 1/1 with status 1; nothing of the README is touched.
    readme = open(os.path.join(ROOT, "README.md")).read()
    result = run_table(tmp_path, "--collapse_min_rank=1e9")
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "out" / "ssl_digits.md").read_text()
    assert "| SimSiam | non-contrastive |" in table and "| 1/1 |" in table
    assert "`--nosimsiam_stop_gradient`" in table and "1/1, status 1" in table
    entries = json.loads((tmp_path / "out" / "ssl_digits.json").read_text())
    assert [(e["name"], e["status"]) for e in entries] == [
        ("simsiam", 1), ("simsiam_no_stop_gradient", 1)]
    assert entries[1]["rank_epochs"] == [0, 1] and len(entries[1]["projection_rank"]) == 2
    assert (tmp_path / "out" / "ssl_digits_rank.png").stat().st_size > 10000
    assert open(os.path.join(ROOT, "README.md")).read() == readme
    # Run again: both runs are kept (same config, seed and flags), none is trained.
    again = run_table(tmp_path, "--collapse_min_rank=1e9")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count(": kept (") == 2, again.stdout
