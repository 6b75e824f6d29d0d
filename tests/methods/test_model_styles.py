"""Every method with every style of Keras model as its encoder or energy.

Styles: Functional, Sequential with `keras.Input`, Sequential without it,
a subclassed `keras.Model`, and a user's subclass of a provided layer
(`ProjectionHead`, `MLPEnergy`, `RBM`). Each case trains one epoch, saves a
`.keras` file, reloads it, and checks that the outputs and every variable
(weights and state: queue, key encoder, memory bank, chains, log Z) are equal.
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_ebm.energies import RBM
from keras_ebm.energies import MLPEnergy
from keras_ebm.energies import NoiseConditionalEnergy
from keras_ebm.energies import RBFFeatures
from keras_ebm.energies import SparseCodingEnergy
from keras_ebm.layers import PatchHead
from keras_ebm.layers import ProjectionHead
from keras_ebm.memory import ReplayBuffer
from keras_ebm.methods import PIRL
from keras_ebm.methods import ConstantVolume
from keras_ebm.methods import ContractiveAutoencoder
from keras_ebm.methods import ContrastiveDivergence
from keras_ebm.methods import ContrastiveEmbedding
from keras_ebm.methods import DenoisingAutoencoder
from keras_ebm.methods import MaximumLikelihood
from keras_ebm.methods import MinimumProbabilityFlow
from keras_ebm.methods import MoCo
from keras_ebm.methods import NoiseContrastiveEstimation
from keras_ebm.methods import QuadratureMaximumLikelihood
from keras_ebm.methods import RatioMatching
from keras_ebm.methods import ScoreMatching
from keras_ebm.methods import SimCLR
from keras_ebm.methods import SparseCoding
from keras_ebm.methods.noise_contrastive_estimation import GaussianNoise
from keras_ebm.samplers import Gibbs
from keras_ebm.samplers import Langevin

STYLES = ("functional", "sequential_input", "sequential", "subclassed", "provided_subclass")
NUM = 16
DIM = 6


@keras.saving.register_keras_serializable(package="test_styles")
class UserEncoder(keras.Model):
    def __init__(self, width=4, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.conv = keras.layers.Conv2D(width, 3, activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.dense = keras.layers.Dense(6)

    def call(self, x):
        return self.dense(self.pool(self.conv(x)))

    def get_config(self):
        return {**super().get_config(), "width": self.width}


@keras.saving.register_keras_serializable(package="test_styles")
class UserHead(ProjectionHead):
    """A user's subclass of a provided layer: a head that scales its output."""

    def call(self, inputs, training=False):
        return 2.0 * super().call(inputs, training=training)


@keras.saving.register_keras_serializable(package="test_styles")
class UserEnergy(keras.Model):
    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = keras.layers.Dense(units, activation="swish")
        self.out = keras.layers.Dense(1)

    def call(self, x):
        return ops.squeeze(self.out(self.hidden(x)), -1)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="test_styles")
class UserMLPEnergy(MLPEnergy):
    def call(self, inputs, training=False):
        return super().call(inputs, training=training) + 1.0


@keras.saving.register_keras_serializable(package="test_styles")
class UserRBM(RBM):
    pass


@keras.saving.register_keras_serializable(package="test_styles")
class UserAutoencoder(keras.Model):
    def __init__(self, dim=DIM, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.hidden = keras.layers.Dense(8, activation="swish")
        self.out = keras.layers.Dense(dim, activation="sigmoid")

    def call(self, x):
        return self.out(self.hidden(x))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}


def conv_layers():
    return [keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(6)]


def encoder(style, shape):
    if style in ("functional", "provided_subclass"):
        inputs = keras.Input(shape)
        x = inputs
        for layer in conv_layers():
            x = layer(x)
        return keras.Model(inputs, x)
    if style == "sequential_input":
        return keras.Sequential([keras.Input(shape), *conv_layers()])
    if style == "sequential":
        return keras.Sequential(conv_layers())
    return UserEncoder()


def head(style, output_dim=4):
    cls = UserHead if style == "provided_subclass" else ProjectionHead
    return cls((8,), output_dim, batch_norm=False)


def energy(style, binary=False, dim=DIM):
    if style == "provided_subclass":
        return UserRBM(DIM, 3) if binary else UserMLPEnergy([8])
    if style == "subclassed":
        return UserEnergy()
    layers = [keras.layers.Dense(8, activation="swish"), keras.layers.Dense(1),
              keras.layers.Reshape(())]
    if style == "sequential":
        return keras.Sequential(layers)
    if style == "sequential_input":
        return keras.Sequential([keras.Input((dim,)), *layers])
    inputs = keras.Input((dim,))
    return keras.Model(inputs, ops.squeeze(layers[1](layers[0](inputs)), -1))


def autoencoder(style):
    if style == "subclassed":
        return UserAutoencoder()
    layers = [keras.layers.Dense(8, activation="swish"), keras.layers.Dense(DIM, "sigmoid")]
    if style == "sequential":
        return keras.Sequential(layers)
    if style == "sequential_input":
        return keras.Sequential([keras.Input((DIM,)), *layers])
    inputs = keras.Input((DIM,))
    return keras.Model(inputs, layers[1](layers[0](inputs)))


def images(size):
    return np.random.default_rng(0).random((NUM, size, size, 1)).astype("float32")


def binary():
    return (np.random.default_rng(1).random((NUM, DIM)) < 0.4).astype("float32")


def continuous():
    return np.random.default_rng(2).random((NUM, DIM)).astype("float32")


def noise_augmenter():
    return keras.layers.GaussianNoise(0.05)


def make_simclr(style):
    return SimCLR(encoder(style, (8, 8, 1)), head(style), augmenter=noise_augmenter()), images(8)


def make_moco(style):
    return MoCo(encoder(style, (8, 8, 1)), head(style), queue_size=12, bn_splits=2,
                augmenter=noise_augmenter()), images(8)


def make_contrastive_embedding(style):
    return (ContrastiveEmbedding(encoder(style, (8, 8, 1)), head(style),
                                 augmenter=noise_augmenter()), images(8))


def make_pirl(style):
    model = PIRL(encoder(style, (12, 12, 1)), head(style), PatchHead(5, 4), num_negatives=8,
                 bank_size=NUM, augmenter=noise_augmenter())
    return model, (images(12), np.arange(NUM, dtype="int64"))


def gibbs_energy(style):
    if style not in ("functional", "provided_subclass"):
        pytest.skip("Gibbs sampling needs an RBM's conditionals (RBM and its subclasses only)")
    return RBM(DIM, 3) if style == "functional" else UserRBM(DIM, 3)


def make_cd_gibbs(style):
    return ContrastiveDivergence(gibbs_energy(style), Gibbs(num_steps=2)), binary()


def make_pcd_gibbs(style):
    buffer = ReplayBuffer(10, (DIM,), reinit_fraction=0.0, noise="bernoulli")
    return ContrastiveDivergence(gibbs_energy(style), Gibbs(num_steps=1), persistent=True,
                                 replay_buffer=buffer), binary()


def langevin():
    return Langevin(num_steps=3, step_size=0.01, clip_value_min=0.0, clip_value_max=1.0)


def make_cd_langevin(style):
    return ContrastiveDivergence(energy(style), langevin()), continuous()


def make_pcd_langevin(style):
    buffer = ReplayBuffer(10, (DIM,), reinit_fraction=0.1, noise="uniform", minval=0.0,
                          maxval=1.0)
    return ContrastiveDivergence(energy(style), langevin(), persistent=True,
                                 replay_buffer=buffer), continuous()


def make_nce(style):
    x = continuous()
    return NoiseContrastiveEstimation(energy(style), GaussianNoise.from_data(x, 1.2)), x


def make_ratio_matching(style):
    return RatioMatching(energy(style, binary=True)), binary()


def make_mpf(style):
    return MinimumProbabilityFlow(energy(style, binary=True)), binary()


def make_ml(style):
    return MaximumLikelihood(energy(style, binary=True)), binary()


def make_score_matching_exact(style):
    return ScoreMatching(energy(style), variant="exact"), continuous()


def make_score_matching_denoising(style):
    return ScoreMatching(energy(style), variant="denoising", sigma=0.1), continuous()


def make_score_matching_sliced(style):
    return ScoreMatching(energy(style), variant="sliced", num_projections=2), continuous()


def make_pcd_reweighted(style):
    buffer = ReplayBuffer(NUM, (DIM,), minval=0.0, maxval=1.0, track_energies=True)
    return ContrastiveDivergence(energy(style), Langevin(num_steps=2, step_size=0.01),
                                 persistent=True, replay_buffer=buffer, chains_per_step=8,
                                 reweight_chains=True), continuous()


def make_score_matching_noise_conditional(style):
    # The network reads [x, log sigma]: DIM + 1 features.
    levels = NoiseConditionalEnergy(energy(style, dim=DIM + 1), sigmas=(1.0, 0.3, 0.1))
    return ScoreMatching(levels, variant="sliced"), continuous()


def make_constant_volume(style):
    return ConstantVolume(energy(style)), continuous()


def make_quadrature_ml(style):
    points = np.random.default_rng(3).normal(size=(NUM, 2)).astype("float32")
    return QuadratureMaximumLikelihood(energy(style, dim=2), grid_size=8), points


def make_dae(style):
    if style == "provided_subclass":
        pytest.skip("keras_ebm provides no autoencoder layer to subclass")
    return DenoisingAutoencoder(autoencoder(style), noise="gaussian", noise_level=0.1), continuous()


def features(style):
    """The sparse-coding lift in each style (RBFFeatures for the provided layer)."""
    if style == "provided_subclass":
        return RBFFeatures(8, width=0.5)
    if style == "subclassed":
        return UserEnergyFeatures()
    layers = [keras.layers.Dense(8, activation="tanh")]
    if style == "sequential":
        return keras.Sequential(layers)
    if style == "sequential_input":
        return keras.Sequential([keras.Input((DIM,)), *layers])
    inputs = keras.Input((DIM,))
    return keras.Model(inputs, layers[0](inputs))


@keras.saving.register_keras_serializable(package="test_styles")
class UserEnergyFeatures(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(8, activation="tanh")

    def call(self, x):
        return self.dense(x)


def make_sparse_coding(style):
    return SparseCoding(SparseCodingEnergy(12, sparsity=0.1, num_iterations=5,
                                           features=features(style))), continuous()


def make_contractive_autoencoder(style):
    if style == "provided_subclass":
        pytest.skip("keras_ebm provides no autoencoder layer to subclass")
    return ContractiveAutoencoder(autoencoder(style), contraction=0.1), continuous()


MAKERS = {name[5:]: fn for name, fn in dict(globals()).items() if name.startswith("make_")}


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("method", sorted(MAKERS))
def test_trains_saves_and_reloads_with_its_state(method, style, tmp_path):
    keras.utils.set_random_seed(0)
    model, data = MAKERS[method](style)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    if isinstance(data, tuple):
        history = model.fit(*data, batch_size=8, epochs=1, verbose=0, shuffle=False)
        x = data[0]
    else:
        history = model.fit(data, batch_size=8, epochs=1, verbose=0, shuffle=False)
        x = data
    assert np.all(np.isfinite(history.history["loss"]))
    path = str(tmp_path / f"{method}_{style}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(np.asarray(loaded.predict(x, verbose=0)),
                               np.asarray(model.predict(x, verbose=0)), rtol=1e-5, atol=1e-5)
    # Every variable: weights and state (queues, key encoders, banks, chains, log Z).
    assert len(loaded.weights) == len(model.weights)
    for original, restored in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(np.asarray(restored), np.asarray(original), rtol=1e-6,
                                   atol=1e-6, err_msg=original.path)
    # The reloaded method trains on.
    loaded.compile(optimizer=keras.optimizers.Adam(1e-2))
    if isinstance(data, tuple):
        loaded.fit(*data, batch_size=8, epochs=1, verbose=0, shuffle=False)
    else:
        loaded.fit(data, batch_size=8, epochs=1, verbose=0, shuffle=False)


def test_moco_key_encoder_is_a_copy_for_every_style():
    for style in STYLES:
        model, _ = make_moco(style)
        for key, query in model._weight_pairs():
            np.testing.assert_array_equal(np.asarray(key), np.asarray(query))
            assert not key.trainable


def test_moco_sequential_encoder_of_the_issue_trains():
    # The case of the issue: it failed with "input depth must be evenly divisible".
    seq = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(32, 3),
                            keras.layers.Conv2D(64, 3), keras.layers.GlobalAveragePooling2D()])
    model = MoCo(seq, ProjectionHead((16,), 8, batch_norm=False), queue_size=16, bn_splits=1,
                 augmenter=noise_augmenter())
    model.compile(optimizer="adam")
    model.fit(images(8), batch_size=8, epochs=1, verbose=0)
    assert model.queue.keys.shape == (16, 8)


def test_unbuilt_methods_build_from_the_first_batch():
    model = SimCLR(keras.Sequential(conv_layers()), head("functional"),
                   augmenter=noise_augmenter())
    assert not model.built
    model.compile(optimizer="adam")
    model.fit(images(8), batch_size=8, epochs=1, verbose=0)
    assert model.built and model.example_shape == (8, 8, 1)
    # With input_shape=, everything exists at construction (tf.distribute needs it).
    moco = MoCo(UserEncoder(), head("functional"), queue_size=8, input_shape=(8, 8, 1))
    assert moco.built and moco.queue is not None and len(moco.key_encoder.weights) == 4


def test_uint8_images_raise_one_clear_error():
    model, _ = make_simclr("functional")
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="float32 in \\[0, 1\\].*uint8"):
        model.fit((255 * images(8)).astype("uint8"), batch_size=8, epochs=1, verbose=0)
    model, _ = make_simclr("functional")
    model.compile(optimizer="adam")
    with pytest.raises(Exception, match="images must be float32 in \\[0, 1\\]"):
        model.fit(255.0 * images(8), batch_size=8, epochs=1, verbose=0)


def test_a_copy_that_does_not_mirror_its_original_is_refused():
    from keras_ebm.methods.method import paired_weights

    a = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    b = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5)])
    with pytest.raises(ValueError, match="must mirror"):
        paired_weights(b, a, "MoCo")


def test_wrong_shapes_get_one_clear_error_every_time():
    from keras_ebm.methods.method import InputShapeError

    model, x = make_simclr("functional")
    model.compile(optimizer="adam")
    for shape in [(4, 6, 6, 1), (4, 8, 8, 3), (4, 8, 8)]:
        with pytest.raises(InputShapeError, match=r"expected inputs of shape \(batch, 8, 8, 1\)"):
            model.predict(np.zeros(shape, "float32"), verbose=0)
        with pytest.raises(InputShapeError, match="expected inputs of shape"):
            model.fit(np.zeros((8, *shape[1:]), "float32"), batch_size=8, epochs=1, verbose=0)
    ml, _ = make_ml("functional")
    with pytest.raises(InputShapeError, match=r"MaximumLikelihood: expected inputs of shape "
                                              r"\(batch, 6\), got \(4, 8\)"):
        ml.predict(np.zeros((4, 8), "float32"), verbose=0)
