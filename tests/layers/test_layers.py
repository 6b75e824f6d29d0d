import keras
import numpy as np
import pytest

from keras_ebm.layers import CosineEnergy
from keras_ebm.layers import FusedBatchNormalization
from keras_ebm.layers import ProjectionHead


def test_cosine_energy_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 7)).astype("float32")
    b = rng.normal(size=(3, 7)).astype("float32")
    energy = CosineEnergy(temperature=0.25)
    a_n = a / np.linalg.norm(a, axis=1, keepdims=True)
    b_n = b / np.linalg.norm(b, axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(energy(a, b)), -(a_n @ b_n.T) / 0.25,
                               rtol=1e-5, atol=1e-6)
    paired = np.asarray(energy(a[:3], b, pairwise=False))
    np.testing.assert_allclose(paired, np.diag(-(a_n[:3] @ b_n.T) / 0.25), rtol=1e-5, atol=1e-6)


def test_cosine_energy_is_scale_invariant_and_bounded():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 6)).astype("float32")
    energy = CosineEnergy(temperature=0.5)
    np.testing.assert_allclose(np.asarray(energy(a, 10 * a)), np.asarray(energy(a, a)), atol=1e-5)
    np.testing.assert_allclose(np.asarray(energy(a, a, pairwise=False)), -2.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(energy(a, -a, pairwise=False)), 2.0, rtol=1e-6)


def test_cosine_energy_config_and_bad_temperature():
    energy = CosineEnergy(temperature=0.1, name="e")
    restored = CosineEnergy.from_config(energy.get_config())
    assert restored.temperature == pytest.approx(0.1) and restored.name == "e"
    with pytest.raises(ValueError, match="temperature"):
        CosineEnergy(temperature=0.0)


@pytest.mark.parametrize("hidden_dims,batch_norm", [((), False), ((16,), True), ((16, 8), False)])
def test_projection_head_shapes_and_round_trip(tmp_path, hidden_dims, batch_norm):
    head = ProjectionHead(hidden_dims=hidden_dims, output_dim=4, batch_norm=batch_norm)
    x = np.random.default_rng(0).normal(size=(6, 10)).astype("float32")
    y = np.asarray(head(x))
    assert y.shape == (6, 4)
    restored = ProjectionHead.from_config(head.get_config())
    restored.build((None, 10))
    restored.set_weights(head.get_weights())
    np.testing.assert_allclose(np.asarray(restored(x)), y, atol=1e-6)
    inputs = keras.Input((10,))
    model = keras.Model(inputs, head(inputs))
    model.save(tmp_path / "head.keras")
    loaded = keras.models.load_model(tmp_path / "head.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_projection_head_batch_norm_count():
    head = ProjectionHead(hidden_dims=(8, 8), output_dim=2, batch_norm=True)
    head.build((None, 3))
    norms = [layer for layer in head.hidden_layers if isinstance(layer, FusedBatchNormalization)]
    assert len(norms) == 2
    # Dense before batch norm has no bias (it would be cancelled by the mean).
    assert not head.hidden_layers[0].use_bias
