"""PIRL: a few steps train and update the bank; .keras round trips keep the bank; errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.backbones import small_cnn
from keras_ebm.data import make_augmenter
from keras_ebm.layers import Jigsaw
from keras_ebm.layers import PatchHead
from keras_ebm.layers import ProjectionHead
from keras_ebm.methods import PIRL

NUM_IMAGES = 32


class CentreJigsaw(Jigsaw):
    """The jigsaw without its random permutations: patches in row-major order."""

    def call(self, images, training=False, return_permutation=False):
        return super().call(images, training=False, return_permutation=return_permutation)


def make_pirl(encoder_shape=(None, None, 1), **kwargs):
    # 12x12 images cut into 4x4 patches: the encoder takes any spatial size.
    encoder = small_cnn(encoder_shape, widths=(4, 8), name="encoder")
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


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def numpy_nce(q, k, negatives, temperature):
    """The lecture's NCE, literally (float64): negatives [K, D] shared or [N, K, D] per row."""
    q, k, negatives = _unit(q), _unit(k), _unit(negatives)
    losses = []
    for i in range(len(q)):
        rows = negatives if negatives.ndim == 2 else negatives[i]
        total = np.exp(rows @ q[i] / temperature).sum()
        positive = np.exp(q[i] @ k[i] / temperature)
        h = np.exp(rows @ q[i] / temperature) / (np.exp(rows @ q[i] / temperature) + total)
        losses.append(-np.log(positive / (positive + total)) - np.log(1.0 - h).sum())
    return np.mean(losses)


@pytest.mark.parametrize("negative_sampling", ["per_sample", "shared"])
def test_loss_is_the_weighted_nce_of_patches_and_image(negative_sampling):
    model = make_pirl(loss_weight=0.3, num_negatives=32, negative_sampling=negative_sampling)
    images, indices = data()
    patches = model.jigsaw(images[:4], training=False)
    model.memory_bank.num_draws.assign(7)
    loss, outputs = model.contrastive_loss((images[:4], patches, indices[:4]), training=False)
    model.memory_bank.num_draws.assign(7)
    per_sample = negative_sampling == "per_sample"
    negatives = model.memory_bank.sample(32, batch_size=4 if per_sample else None).numpy()
    entries = model.memory_bank.entries.numpy()
    memory = entries[indices[:4]]
    if per_sample:
        # A set of 32 bank entries for each image, and not the same set for all.
        assert negatives.shape == (4, 32, 6)
        assert not np.allclose(negatives[0], negatives[1])
    else:
        assert negatives.shape == (32, 6)
    # Every negative is a bank entry.
    distances = np.abs(negatives.reshape(-1, 1, 6) - entries[None]).max(-1)
    np.testing.assert_allclose(distances.min(1), 0.0, atol=1e-7)
    patch_z = model.embed_patches(patches).numpy().astype("float64")
    image_z = model.project(images[:4]).numpy().astype("float64")
    expected = (0.3 * numpy_nce(patch_z, memory, negatives, 0.1)
                + 0.7 * numpy_nce(image_z, memory, negatives, 0.1))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
    assert outputs["image_projections"].shape == (4, 6)
    assert 0.0 <= float(outputs["contrastive_accuracy"]) <= 1.0


def test_patch_jitter_draws_per_patch():
    """jigsaw_jitter='patch': each patch of the cut image gets its own augmentation draw."""
    keras.utils.set_random_seed(1)
    images, indices = data()
    jitter = keras.layers.GaussianNoise(0.5, seed=3)
    model = make_pirl(jigsaw=CentreJigsaw(3), patch_augmenter=jitter)
    clean = model.jigsaw(images[:4], training=False).numpy()
    view, patches, _ = model.prepare((images[:4], indices[:4]), training=True)
    np.testing.assert_array_equal(np.asarray(view), images[:4])   # no augmenter: image as is
    noise = np.asarray(patches) - clean
    assert noise.shape == (4, 9, 4, 4, 1) and noise.std() > 0.3
    # Independent draws: no two patches share their noise (a whole-image augmentation
    # would jitter the patches of one image together).
    flat = noise.reshape(36, -1)
    correlation = np.corrcoef(flat)[np.triu_indices(36, 1)]
    assert np.abs(correlation).max() < 0.9
    # jigsaw_jitter='image': the augmenter sees the whole 12x12 image before the cut.
    seen = []
    model = make_pirl(jigsaw=CentreJigsaw(3), jigsaw_jitter="image",
                      augmenter=lambda x, training: seen.append(tuple(x.shape)) or x)
    model.prepare((images[:4], indices[:4]), training=True)
    assert seen == [(4, 12, 12, 1), (4, 12, 12, 1)]


def test_patch_augmenter_must_take_patches():
    with pytest.raises(ValueError, match="patch augmenter maps jigsaw patches"):
        make_pirl(encoder_shape=(12, 12, 1), augmenter=make_augmenter((12, 12, 1)))
    with pytest.raises(ValueError, match="patch_augmenter needs jigsaw_jitter='patch'"):
        make_pirl(jigsaw_jitter="image", patch_augmenter=make_augmenter((4, 4, 1)))
    # The image's augmenter with jigsaw_jitter='image', a patch-sized one for the patches.
    make_pirl(encoder_shape=(12, 12, 1), augmenter=make_augmenter((12, 12, 1)),
              jigsaw_jitter="image")
    make_pirl(encoder_shape=(12, 12, 1), augmenter=make_augmenter((12, 12, 1)),
              patch_augmenter=make_augmenter((4, 4, 1)))


def test_keras_file_round_trip_keeps_the_bank(tmp_path):
    model = make_pirl(nce_form="infonce", bank_momentum=0.2, negative_sampling="shared",
                      patch_augmenter=make_augmenter((4, 4, 1), seed=0, name="patch_augmenter"))
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
                "nce_form", "jigsaw_jitter", "negative_sampling"):
        assert loaded.get_config()[key] == model.get_config()[key]
    assert loaded.jigsaw.grid_size == 3 and isinstance(loaded.patch_head, PatchHead)
    assert loaded.patch_augmenter.name == "patch_augmenter"
    clone = PIRL.from_config(model.get_config())
    assert clone.memory_bank.entries.shape == (NUM_IMAGES, 6)


def test_bad_input():
    with pytest.raises(ValueError, match="smaller than num_negatives"):
        make_pirl(bank_size=8, num_negatives=16)
    with pytest.raises(ValueError, match="bank_size"):
        make_pirl(bank_size=None)
    for kwargs in [dict(loss_weight=1.5), dict(bank_momentum=1.0), dict(temperature=0.0),
                   dict(nce_form="softmax"), dict(jigsaw_jitter="cell"),
                   dict(negative_sampling="batch")]:
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
