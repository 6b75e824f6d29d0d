"""PIRL: a few steps train and update the bank; .keras round trips keep the bank; errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.backbones import small_cnn
from keras_ebm.layers import Jigsaw
from keras_ebm.layers import PatchHead
from keras_ebm.layers import ProjectionHead
from keras_ebm.losses import nce
from keras_ebm.methods import PIRL

NUM_IMAGES = 32


def make_pirl(**kwargs):
    # 12x12 images cut into 4x4 patches: the encoder takes any spatial size.
    encoder = small_cnn((None, None, 1), widths=(4, 8), name="encoder")
    defaults = dict(num_negatives=16, bank_size=NUM_IMAGES, jigsaw=Jigsaw(3, seed=0),
                    temperature=0.1)
    defaults.update(kwargs)
    return PIRL(encoder, ProjectionHead((), 6, batch_norm=False), PatchHead(5, 6), **defaults)


def data():
    images = np.random.default_rng(0).random((NUM_IMAGES, 12, 12, 1)).astype("float32")
    return images, np.arange(NUM_IMAGES, dtype="int64")


def test_fit_updates_the_bank_of_the_seen_images_only():
    keras.utils.set_random_seed(0)
    model = make_pirl()
    images, indices = data()
    before = model.memory_bank.entries.numpy().copy()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    seen = slice(0, 16)
    history = model.fit(tf.data.Dataset.from_tensor_slices((images[seen], indices[seen]))
                        .batch(8), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    after = model.memory_bank.entries.numpy()
    assert not np.allclose(after[seen], before[seen])
    np.testing.assert_array_equal(after[16:], before[16:])
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, rtol=1e-5)
    assert int(model.memory_bank.num_updates.numpy()) == 2


def test_loss_is_the_weighted_nce_of_patches_and_image():
    model = make_pirl(loss_weight=0.3, num_negatives=32)
    images, indices = data()
    patches = model.jigsaw(images[:4], training=False)
    model.memory_bank.num_draws.assign(7)
    loss, outputs = model.contrastive_loss((images[:4], patches, indices[:4]), training=False)
    model.memory_bank.num_draws.assign(7)
    negatives = model.memory_bank.sample(32)
    memory = model.memory_bank.read(indices[:4])
    expected = (0.3 * nce(model.embed_patches(patches), memory, negatives, 0.1)[0]
                + 0.7 * nce(model.project(images[:4]), memory, negatives, 0.1)[0])
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)
    assert outputs["image_projections"].shape == (4, 6)
    assert 0.0 <= float(outputs["contrastive_accuracy"]) <= 1.0


def test_keras_file_round_trip_keeps_the_bank(tmp_path):
    model = make_pirl(nce_form="infonce", bank_momentum=0.2)
    images, indices = data()
    model.compile(optimizer="adam")
    model.fit(images[:16], indices[:16], batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "pirl.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, PIRL)
    np.testing.assert_array_equal(loaded.memory_bank.entries.numpy(),
                                  model.memory_bank.entries.numpy())
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0),
                               rtol=1e-5, atol=1e-6)
    for key in ("num_negatives", "temperature", "loss_weight", "bank_momentum", "bank_size",
                "nce_form"):
        assert loaded.get_config()[key] == model.get_config()[key]
    assert loaded.jigsaw.grid_size == 3 and isinstance(loaded.patch_head, PatchHead)
    clone = PIRL.from_config(model.get_config())
    assert clone.memory_bank.entries.shape == (NUM_IMAGES, 6)


def test_bad_input():
    with pytest.raises(ValueError, match="smaller than num_negatives"):
        make_pirl(bank_size=8, num_negatives=16)
    with pytest.raises(ValueError, match="bank_size"):
        make_pirl(bank_size=None)
    for kwargs in [dict(loss_weight=1.5), dict(bank_momentum=1.0), dict(temperature=0.0),
                   dict(nce_form="softmax")]:
        with pytest.raises(ValueError):
            make_pirl(**kwargs)
    # A fixed 12x12 encoder gets the 4x4 patches resized to 12x12.
    fixed = PIRL(small_cnn((12, 12, 1), widths=(4,)), ProjectionHead((), 6), PatchHead(5, 6),
                 num_negatives=4, bank_size=8)
    assert fixed.patch_size == (12, 12)
    model = make_pirl()
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="indices"):
        model.fit(data()[0], batch_size=8, epochs=1, verbose=0)
