"""tools/train.py on streamed data: the paper-scale ImageNet configs at 224 px on mocked TFDS,
a folder and TFRecord shards, a bad file in the stream, and a kill -9 resume."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.tools.test_train import CONFIGS
from tests.tools.test_train import run_in_process

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
