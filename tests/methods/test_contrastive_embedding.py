"""ContrastiveEmbedding: both energies train; the loss is the margin loss; round trips."""

import keras
import numpy as np
import pytest

from keras_ebm.backbones import small_cnn
from keras_ebm.data import make_augmenter
from keras_ebm.layers import ProjectionHead
from keras_ebm.losses import margin_loss
from keras_ebm.methods import ContrastiveEmbedding


def images():
    return np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")


@pytest.mark.parametrize("energy", ["cosine", "l2"])
def test_fit_tracks_norms_and_energies(energy):
    model = ContrastiveEmbedding(small_cnn((8, 8, 1), widths=(4, 8)), ProjectionHead((8,), 4),
                                 energy=energy, margin=1.0,
                                 augmenter=make_augmenter((8, 8, 1), seed=0))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(images(), batch_size=8, epochs=1, verbose=0).history
    assert {"loss", "contrastive_accuracy", "projection_norm", "energy_positive",
            "energy_negative"} <= set(history)
    assert all(np.isfinite(v[-1]) for v in history.values())


def test_loss_is_the_margin_loss_of_the_projections():
    model = ContrastiveEmbedding(small_cnn((8, 8, 1), widths=(4,)), energy="l2", margin=2.0)
    assert isinstance(model.projection_head, keras.layers.Identity)
    a, b = images()[:8], images()[8:]
    loss, _ = model.contrastive_loss((a, b), training=False)
    expected = margin_loss(model.predict(a, verbose=0), model.predict(b, verbose=0), 2.0, "l2")[0]
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)
    model.compile(optimizer="adam")
    assert model.evaluate((a, b), verbose=0, return_dict=True)["loss"] == pytest.approx(
        float(loss), rel=1e-5)


def test_keras_file_round_trip(tmp_path):
    model = ContrastiveEmbedding(small_cnn((8, 8, 1), widths=(4,)), ProjectionHead((), 3),
                                 energy="l2", margin=1.5, name="ce")
    path = str(tmp_path / "ce.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert (loaded.energy, loaded.margin, loaded.name) == ("l2", 1.5, "ce")
    np.testing.assert_allclose(loaded.predict(images(), verbose=0),
                               model.predict(images(), verbose=0), rtol=1e-6)
    clone = ContrastiveEmbedding.from_config(model.get_config())
    assert clone.get_config()["energy"] == "l2"


def test_bad_input():
    encoder = small_cnn((8, 8, 1), widths=(4,))
    with pytest.raises(ValueError, match="energy"):
        ContrastiveEmbedding(encoder, energy="manhattan")
    with pytest.raises(ValueError, match="margin"):
        ContrastiveEmbedding(encoder, margin=0.0)
