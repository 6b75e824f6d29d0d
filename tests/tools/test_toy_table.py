"""tools/toy_table.py: runs, keeps and tabulates the strategies on the 2-D toys."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = ["--epochs=1", "--toy_train_samples=600", "--toy_test_samples=4000", "--grid_size=40"]


def run_table(tmp_path, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "toy_table.py"), *args,
         f"--runs={tmp_path / 'runs'}", f"--out={tmp_path / 'out'}",
         "--extra=" + ",".join(SMOKE)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def test_table_runs_keeps_and_reports_against_the_gaussian(tmp_path):
    readme = open(os.path.join(ROOT, "README.md")).read()
    result = run_table(tmp_path, "--methods=gmm,ml", "--toys=moons")
    assert result.returncode == 0, result.stderr[-3000:]
    entries = json.loads((tmp_path / "out" / "toy_strategies.json").read_text())
    assert [(e["method"], e["toy"], e["status"]) for e in entries] == [
        ("gmm", "moons", 0), ("ml", "moons", 0)]
    table = (tmp_path / "out" / "toy_strategies.md").read_text()
    gaussian = entries[0]["gaussian_test_log_likelihood"]
    assert f"| – | fitted Gaussian (reference) | {gaussian:.2f} |" in table
    gain = entries[1]["calibrated_test_log_likelihood"] - gaussian
    assert "| 2 | maximum likelihood (quadrature) | " in table and f"({gain:+.2f}, T " in table
    assert "not built yet" not in table  # every strategy has its methods
    assert (tmp_path / "out" / "toy_strategies.png").stat().st_size > 10000
    assert str(tmp_path) not in (tmp_path / "out" / "toy_strategies.json").read_text()
    assert open(os.path.join(ROOT, "README.md")).read() == readme
    again = run_table(tmp_path, "--methods=gmm,ml", "--toys=moons")
    assert again.returncode == 0 and again.stdout.count(": kept (") == 2, again.stdout


def test_unknown_methods_and_toys_get_one_line_and_status_2(tmp_path):
    for flag, word in (("--methods=kmeans,hmm", "--methods: unknown hmm"),
                       ("--toys=spiral", "--toys: unknown spiral")):
        result = run_table(tmp_path, flag)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1].startswith(f"toy_table.py: error: {word}")
        assert "Traceback" not in result.stderr
