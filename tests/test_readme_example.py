"""The README's library example, run as written (fewer epochs), resumes after kill -9."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np

from keras_ebm import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 8


def example_script(workdir):
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    code = re.search(r"```python\n(import keras_ebm\n.*?)```", readme, re.S).group(1)
    assert "keras_ebm.training.fit(" in code and "epochs=300" in code
    code = code.replace("epochs=300", f"epochs={EPOCHS}").replace("runs/moco_library", workdir)
    return "import keras\nkeras.utils.set_random_seed(0)\n" + code


def run(workdir, kill_at_epoch=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    process = subprocess.Popen([sys.executable, "-c", example_script(workdir)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if kill_at_epoch is None:
        output = process.communicate(timeout=600)[0]
        assert process.returncode == 0, output
        return output
    latest = os.path.join(workdir, "checkpoints", checkpoints.LATEST)
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        try:
            if checkpoints.read_record(latest, verify=False)["epoch"] >= kill_at_epoch:
                break
        except checkpoints.CheckpointError:
            pass  # not written yet
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return None


def weights(workdir):
    import keras

    import keras_ebm  # noqa: F401  (registers the classes)

    model = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    return [np.asarray(w) for w in model.weights]


def test_readme_example_resumes_after_kill_and_equals_an_uninterrupted_run(tmp_path):
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    run(whole)
    run(killed, kill_at_epoch=2)
    assert not os.path.exists(os.path.join(killed, "model.keras"))
    output = run(killed)
    assert "Resuming from epoch" in output and "linear-probe accuracy" in output
    for a, b in zip(weights(whole), weights(killed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
