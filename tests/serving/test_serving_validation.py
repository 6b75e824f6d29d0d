"""Serving signatures validate their input in the graph; unchanged models are not re-exported."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.backbones import get_backbone
from keras_ebm.energies import RBM
from keras_ebm.export import check_export_dir
from keras_ebm.export import export_encoder
from keras_ebm.export import export_saved_model

# Loads a SavedModel without keras_ebm and serves each case; prints one JSON line of results.
FRESH_PROCESS = r"""
import json
import sys
import numpy as np
import tensorflow as tf
export, signature, input_name, output_name, cases = sys.argv[1:6]
serve = tf.saved_model.load(export).signatures[signature]
results = {}
for name, x in np.load(cases).items():
    try:
        out = serve(**{input_name: tf.constant(x)})[output_name].numpy()
        np.save(name + ".out.npy", out)
        results[name] = "served"
    except tf.errors.InvalidArgumentError as error:
        results[name] = "InvalidArgumentError: " + error.message
assert "keras_ebm" not in sys.modules, "the SavedModel must not need keras_ebm"
print("RESULTS " + json.dumps(results))
"""


def _serve_cases(tmp_path, export, signature, input_name, output_name, cases):
    np.savez(tmp_path / "cases.npz", **cases)
    stdout = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, export, signature, input_name, output_name,
         str(tmp_path / "cases.npz")],
        check=True, capture_output=True, text=True, cwd=str(tmp_path), timeout=120,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")).stdout
    line = [row for row in stdout.splitlines() if row.startswith("RESULTS ")][-1]
    return json.loads(line[len("RESULTS "):])


def test_encoder_signature_rejects_bad_images_in_a_fresh_process(tmp_path):
    encoder = get_backbone("tiny_cnn", (8, 8, 1))
    export = export_encoder(str(tmp_path / "export"), encoder, (8, 8, 1))
    good = np.random.default_rng(0).random((3, 8, 8, 1)).astype("float32")
    nan = good.copy()
    nan[0, 2, 3, 0] = np.nan
    results = _serve_cases(tmp_path, export, "serving_default", "images", "embeddings", {
        "good": good, "nan": nan, "bytes": np.full((2, 8, 8, 1), 255, "float32"),
        "big": np.zeros((1, 16, 16, 1), "float32"), "rank3": np.zeros((8, 8, 1), "float32"),
        "empty": np.zeros((0, 8, 8, 1), "float32")})
    assert results["good"] == "served"
    np.testing.assert_allclose(np.load(tmp_path / "good.out.npy"),
                               encoder.predict(good, verbose=0), atol=1e-5)
    assert "images must be finite" in results["nan"]
    assert "images must lie in [0, 1], got values in [255, 255]" in results["bytes"]
    assert "images must have shape [batch, 8, 8, 1], got [1, 16, 16, 1]" in results["big"]
    assert "images must have shape [batch, 8, 8, 1], got [8, 8, 1]" in results["rank3"]
    assert "images must have shape [batch, 8, 8, 1], got [0, 8, 8, 1]" in results["empty"]
    assert all(r.startswith("InvalidArgumentError") for k, r in results.items() if k != "good")


def test_energy_signature_rejects_bad_vectors_and_checks_the_range_asked_for(tmp_path):
    rbm = RBM(64, 4, check_binary=False)  # so that only the export's own checks apply
    rbm.build((None, 64))
    energy_fn = lambda x: tf.cast(rbm(x), tf.float32)  # noqa: E731
    endpoints = {"serving_default": (energy_fn, "x", "energy"),
                 "energy": (energy_fn, "x", "energy")}
    spec = tf.TensorSpec([None, 64], tf.float32)
    good = (np.random.default_rng(1).random((4, 64)) > 0.5).astype("float32")
    nan = good.copy()
    nan[1, 5] = np.nan
    cases = {"good": good, "nan": nan, "short": np.zeros((2, 63), "float32"),
             "wide": 3 * good}
    unbounded = _serve_cases(tmp_path, export_saved_model(str(tmp_path / "any"), rbm, endpoints,
                                                          spec), "energy", "x", "energy", cases)
    assert unbounded["good"] == unbounded["wide"] == "served"
    np.testing.assert_allclose(np.load(tmp_path / "good.out.npy"), np.asarray(rbm(good)),
                               atol=1e-5)
    assert "x must be finite" in unbounded["nan"]
    assert "x must have shape [batch, 64], got [2, 63]" in unbounded["short"]
    bounded = _serve_cases(tmp_path, export_saved_model(str(tmp_path / "unit"), rbm, endpoints,
                                                        spec, value_range=(0, 1)),
                           "serving_default", "x", "energy", cases)
    assert bounded["good"] == "served"
    assert "InvalidArgumentError: " in bounded["wide"]
    assert "x must lie in [0, 1], got values in [0, 3]" in bounded["wide"]


def test_unchanged_weights_are_not_exported_again(tmp_path, capsys):
    encoder = get_backbone("tiny_cnn", (8, 8, 1))
    base = str(tmp_path / "export")
    first = export_encoder(base, encoder, (8, 8, 1))
    assert (first.version, first.exported) == (1, True)
    assert os.path.isfile(os.path.join(first, "assets.extra", "keras_ebm_fingerprint.txt"))
    again = export_encoder(base, encoder, (8, 8, 1))
    assert again == first and (again.version, again.exported) == (1, False)
    assert "SavedModel unchanged since version 1; not exported again" in capsys.readouterr().out
    assert sorted(os.listdir(base)) == ["1"]
    kernel = encoder.trainable_variables[0]
    kernel.assign(kernel + 0.01)
    changed = export_encoder(base, encoder, (8, 8, 1))
    assert changed.endswith(os.path.join("export", "2"))
    assert (changed.version, changed.exported) == (2, True)
    assert sorted(os.listdir(base)) == ["1", "2"]


def test_check_export_dir(tmp_path):
    fine = tmp_path / "new" / "saved_models"
    assert check_export_dir(str(fine)) == str(fine)
    assert not (tmp_path / "new").exists()  # nothing is created before training
    fine.mkdir(parents=True)
    assert check_export_dir(str(fine)) == str(fine)
    assert os.listdir(fine) == []  # the probe file is gone
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=f"^{a_file} cannot be written: it is a file$"):
        check_export_dir(str(a_file))
    with pytest.raises(ValueError, match="cannot be written: .*a_file is a file"):
        check_export_dir(str(a_file / "below"))
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ValueError, match=f"^{locked} cannot be written: Permission denied"):
            check_export_dir(str(locked))
        with pytest.raises(ValueError, match="cannot be written: Permission denied"):
            check_export_dir(str(locked / "inner"))
    finally:
        locked.chmod(0o700)
