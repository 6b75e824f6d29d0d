"""SavedModels load and serve without keras_ebm, and match the Keras model."""

import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from keras_ebm.backbones import get_backbone
from keras_ebm.energies import RBM
from keras_ebm.export import export_encoder
from keras_ebm.export import export_saved_model
from keras_ebm.export import next_version

FRESH_PROCESS = r"""
import sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
serve = model.signatures[sys.argv[2]]
x = np.load(sys.argv[3])
outputs = serve(**{sys.argv[4]: tf.constant(x)})
np.save(sys.argv[5], outputs[sys.argv[6]].numpy())
assert "keras_ebm" not in sys.modules, "the SavedModel must not need keras_ebm"
"""

SAVED_MODEL_CLI = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def _serve_in_fresh_process(tmp_path, export, signature, input_name, output_name, x):
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", FRESH_PROCESS, export, signature, str(tmp_path / "x.npy"),
                    input_name, str(tmp_path / "y.npy"), output_name],
                   check=True, env=_env(), cwd=str(tmp_path), timeout=120)
    return np.load(tmp_path / "y.npy")


def test_encoder_export_serves_embeddings_equal_to_keras(tmp_path):
    encoder = get_backbone("tiny_cnn", (8, 8, 1))
    x = np.random.default_rng(0).random((5, 8, 8, 1)).astype("float32")
    export = export_encoder(str(tmp_path / "export"), encoder, (8, 8, 1))
    assert export.endswith(os.path.join("export", "1"))
    served = _serve_in_fresh_process(tmp_path, export, "serving_default", "images", "embeddings", x)
    np.testing.assert_allclose(served, encoder.predict(x, verbose=0), atol=1e-5)
    # saved_model_cli shows the signature and runs it.
    shown = subprocess.run([*SAVED_MODEL_CLI, "show", "--dir", export, "--tag_set", "serve",
                            "--signature_def", "serving_default"], capture_output=True, text=True,
                           env=_env(), check=True, timeout=120).stdout
    assert "images" in shown and "embeddings" in shown
    np.save(tmp_path / "cli_x.npy", x)
    subprocess.run([*SAVED_MODEL_CLI, "run", "--dir", export, "--tag_set", "serve",
                    "--signature_def", "serving_default", "--inputs",
                    f"images={tmp_path / 'cli_x.npy'}", "--outdir", str(tmp_path / "cli_out")],
                   capture_output=True, text=True, env=_env(), check=True, timeout=120)
    np.testing.assert_allclose(np.load(tmp_path / "cli_out" / "embeddings.npy"),
                               encoder.predict(x, verbose=0), atol=1e-5)


def test_energy_export_has_energy_signature(tmp_path):
    rbm = RBM(6, 3)
    rbm.build((None, 6))
    x = (np.random.default_rng(1).random((4, 6)) > 0.5).astype("float32")
    energy_fn = lambda inputs: tf.cast(rbm(inputs), tf.float32)  # noqa: E731
    export = export_saved_model(
        str(tmp_path / "ebm"), rbm,
        {"serving_default": (energy_fn, "x", "energy"), "energy": (energy_fn, "x", "energy")},
        tf.TensorSpec([None, 6], tf.float32))
    for signature in ("serving_default", "energy"):
        served = _serve_in_fresh_process(tmp_path, export, signature, "x", "energy", x)
        np.testing.assert_allclose(served, np.asarray(rbm(x)), atol=1e-5)


def test_versions_increase_and_no_staging_folder_is_left(tmp_path):
    encoder = get_backbone("tiny_cnn", (8, 8, 1))
    base = str(tmp_path / "export")
    assert next_version(base) == 1
    export_encoder(base, encoder, (8, 8, 1))
    export_encoder(base, encoder, (8, 8, 1), skip_unchanged=False)  # unchanged: skipped by default
    assert sorted(os.listdir(base)) == ["1", "2"]
