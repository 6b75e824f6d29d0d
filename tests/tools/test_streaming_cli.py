"""tools/train.py on streamed data: the paper-scale ImageNet configs at 224 px on mocked TFDS,
a kill -9 resume on a streamed folder, and memory on 50,000-image folders and shards."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import keras_ebm  # noqa: F401  (registers the classes model.keras needs)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "configs")


def run_in_process(module, args):
    module.FLAGS.unparse_flags()
    module.FLAGS(["train.py", *args])
    module.main([])


# Two steps of 4 images at the configs' 224 px and ResNet-50; the bank and the head are
# the config's except for what 48 mocked images cannot hold.
PAPER_SCALE = {
    "pirl_imagenet": ["--num_negatives=32"],
    "simclr_imagenet": [],
}


@pytest.mark.paper_scale  # about 100 s each; at 32 px they run in tests/tools/test_train.py
@pytest.mark.parametrize("config", sorted(PAPER_SCALE))
def test_paper_scale_config_runs_two_steps_at_224_streamed(train_module, tmp_path, config,
                                                           monkeypatch):
    from keras_ebm.data import streaming

    made = []
    original = streaming.StreamingImages.train_batches

    def spy(self, *args, **kwargs):
        made.append(self.image_shape)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(streaming.StreamingImages, "train_batches", spy)
    workdir = tmp_path / "work"
    args = [f"--flagfile={CONFIGS}/{config}.flags", "--epochs=1", "--steps_per_epoch=2",
            "--batch_size=4", "--probe_draws=1", "--max_eval_examples=16",
            *PAPER_SCALE[config], f"--workdir={workdir}", f"--export_dir={tmp_path / 'export'}"]
    with tfds.testing.mock_data(num_examples=48, policy=tfds.testing.MockPolicy.USE_CODE):
        run_in_process(train_module, args)
    flags = train_module.FLAGS
    assert (flags.backbone, flags.image_size, flags.stream) == ("resnet50", 224, "always")
    assert made == [(224, 224, 3)]  # trained from the stream, at 224 px
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert np.isfinite(metrics["final_loss"])
    assert metrics["evaluation"][f"{metrics['method']} (trained)"]["knn"] >= 0.0
    serve = tf.saved_model.load(str(tmp_path / "export" / "1")).signatures["serving_default"]
    assert serve(images=tf.random.uniform((1, 224, 224, 3)))["embeddings"].shape[0] == 1


# Runs tools/train.py with a callback that kills its own process (SIGKILL, no clean-up)
# after `step` batches of epoch `epoch`: a kill -9 at a known point, mid-epoch.
KILLER = """
import os, signal, sys
sys.path.insert(0, "tools")
import keras, train
from absl import app
epoch, step = int(sys.argv[1]), int(sys.argv[2])
class Kill(keras.callbacks.Callback):
    def on_epoch_begin(self, e, logs=None):
        self.epoch = e
    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == epoch and batch + 1 == step:
            os.kill(os.getpid(), signal.SIGKILL)
train.EXTRA_CALLBACKS.append(Kill())
sys.argv = ["train.py", *sys.argv[3:]]
app.run(train.main, flags_parser=train.parse_flags)
"""


def _folder(root, count=160, size=16, classes=4):
    rng = np.random.default_rng(0)
    for i in range(count):
        os.makedirs(root / f"c{i % classes}", exist_ok=True)
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)  # smooth: compresses well
        image = np.repeat(np.repeat(small, size // 4, 0), size // 4, 1)
        tf.io.write_file(str(root / f"c{i % classes}" / f"{i:06d}.png"), tf.io.encode_png(image))
    return f"folder:{root}"


def test_kill_9_mid_epoch_on_a_streamed_folder_resumes_to_the_uninterrupted_weights(tmp_path):
    spec = _folder(tmp_path / "images")
    args = ["--method=simclr", f"--dataset={spec}", "--stream=always", "--backbone=tiny_cnn",
            "--epochs=4", "--steps_per_epoch=4", "--batch_size=16", "--seed=3",
            "--projection_hidden_dims=16", "--projection_dim=8", "--noevaluate"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_DETERMINISTIC_OPS="1")

    def run(prefix, name):
        return subprocess.run([*prefix, *args, f"--workdir={tmp_path / name}",
                               f"--export_dir={tmp_path / ('export_' + name)}"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)

    straight = run([sys.executable, "tools/train.py"], "a")
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = run([sys.executable, "-c", KILLER, "2", "2"], "b")  # epoch 3 (0-based 2), step 2
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "export_b").exists()
    resumed = run([sys.executable, "tools/train.py"], "b")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming from epoch 2" in resumed.stdout
    a = keras.models.load_model(tmp_path / "a" / "model.keras")
    b = keras.models.load_model(tmp_path / "b" / "model.keras")
    assert len(a.weights) == len(b.weights)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(np.asarray(wb), np.asarray(wa), err_msg=wa.path)


def _train_measured(spec, workdir, extra=()):
    """Runs a short SimCLR through the CLI; returns (seconds to the first step, seconds to
    the end of epoch 1, peak RSS in MiB, stdout). The probes embed 300 images of each split
    (the 1,000-image folder's test split), so both runs do the same evaluation work."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    start = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "tools/train.py", "--method=simclr", f"--dataset={spec}",
         "--backbone=tiny_cnn", "--epochs=2", "--steps_per_epoch=10", "--batch_size=64",
         "--probe_draws=1", "--max_eval_examples=300", f"--workdir={workdir}",
         f"--export_dir={workdir}_export", *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    first_step = epoch_end = None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("Training ") and first_step is None:
            first_step = time.monotonic() - start  # printed just before the first step
        if line.startswith("10/10") and epoch_end is None:
            epoch_end = time.monotonic() - start
    _, status, usage = os.wait4(process.pid, 0)
    assert status == 0, "".join(lines)[-3000:]
    return first_step, epoch_end, usage.ru_maxrss / 1024, "".join(lines)


@pytest.mark.paper_scale  # about 6 minutes: 51,000 PNGs written, converted and trained on
def test_a_50000_image_folder_and_its_shards_train_in_the_memory_of_1000(tmp_path, capsys):
    specs = {count: _folder(tmp_path / f"images{count}", count=count, size=64, classes=10)
             for count in (1000, 50000)}
    results = {}
    for count, spec in specs.items():
        records = tmp_path / f"records{count}"
        converted = subprocess.run([sys.executable, "tools/folder_to_tfrecords.py",
                                    f"--input={spec[len('folder:'):]}", f"--output={records}"],
                                   cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert converted.returncode == 0, converted.stderr[-2000:]
        results[f"folder {count}"] = _train_measured(spec, tmp_path / f"wf{count}")
        results[f"tfrecord {count}"] = _train_measured(f"tfrecord:{records}",
                                                       tmp_path / f"wt{count}")
    with capsys.disabled():
        for name, (first, epoch, rss, _) in results.items():
            print(f"\n{name:>16}: first step at {first:.1f} s, epoch 1 (10 steps of 64) "
                  f"done at {epoch:.1f} s, peak RSS {rss:.0f} MiB")
    assert "50000 examples" not in results["folder 50000"][3]  # 70% of them train: 35000
    assert "(35000 examples" in results["folder 50000"][3]
    for kind in ("folder", "tfrecord"):
        first, _, rss, _ = results[f"{kind} 50000"]
        assert first <= 60.0
        assert rss <= results[f"{kind} 1000"][2] + 300.0
