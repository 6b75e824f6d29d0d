"""The RBM's input checks: binary values and [batch, num_visible] shapes, one-line messages."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from keras_ebm.energies import RBM
from keras_ebm.memory import ReplayBuffer
from keras_ebm.methods.contrastive_divergence import ContrastiveDivergence
from keras_ebm.samplers import Gibbs

GREY_MESSAGE = (
    "RBM: inputs must be binary (0 or 1); got values in [0, 16]. Binarise them, e.g. (x > 8)"
)


@pytest.fixture(scope="module")
def grey_digits():
    """scikit-learn's digits as they come: grey levels 0..16, [1797, 64]."""
    return load_digits().data.astype("float32")[:200]


@pytest.fixture(scope="module")
def binary_digits(grey_digits):
    return (grey_digits > 8).astype("float32")


def cd_model(energy, sampler=None, **compile_kwargs):
    model = ContrastiveDivergence(energy, sampler or Gibbs(num_steps=1))
    model.compile(optimizer=keras.optimizers.SGD(0.05), **compile_kwargs)
    return model


# -- binary values ----------------------------------------------------------------------


def test_eager_call_on_grey_levels_raises_one_line_value_error(grey_digits):
    with pytest.raises(ValueError) as error:
        RBM(64, 16)(grey_digits)
    message = str(error.value)
    assert message.startswith(GREY_MESSAGE)
    assert "check_binary=False" in message
    assert "\n" not in message


@pytest.mark.parametrize("method", ["free_energy", "log_prob", "set_visible_bias_from_data"])
def test_data_facing_methods_check_too(grey_digits, method):
    rbm = RBM(64, 16)
    with pytest.raises(ValueError, match=r"RBM: inputs must be binary \(0 or 1\)"):
        getattr(rbm, method)(grey_digits / 16.0)


def test_grey_levels_scaled_to_unit_interval_get_a_matching_threshold(grey_digits):
    with pytest.raises(ValueError,
                       match=r"got values in \[0, 1\]\. Binarise them, e\.g\. \(x > 0\.5\)"):
        RBM(64, 16)(grey_digits / 16.0)


def test_nan_inputs_are_named(binary_digits):
    x = binary_digits[:4].copy()
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        RBM(64, 16)(x)


def test_fit_in_graph_mode_on_grey_levels_raises_invalid_argument(grey_digits):
    model = cd_model(RBM(64, 16), jit_compile=False)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        model.fit(grey_digits, batch_size=20, epochs=1, verbose=0)
    assert GREY_MESSAGE in error.value.message


def test_tf_function_check_raises_and_passes_binary_data(grey_digits, binary_digits):
    rbm = RBM(64, 16)
    free_energy = tf.function(rbm)
    assert free_energy(tf.constant(binary_digits)).shape == (200,)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"got values in \[0, 16\]"):
        free_energy(tf.constant(grey_digits))


def test_check_is_skipped_under_xla_and_compiles(grey_digits, binary_digits):
    # XLA ignores assert ops and cannot compile the message: the check is left
    # out there (documented), so jit_compile=True still compiles and runs.
    rbm = RBM(64, 16)
    compiled = tf.function(rbm, jit_compile=True)
    np.testing.assert_allclose(compiled(tf.constant(binary_digits)),
                               rbm(binary_digits), rtol=1e-5, atol=1e-5)
    assert compiled(tf.constant(grey_digits)).shape == (200,)


def test_binary_training_is_unchanged_in_graph_and_xla(binary_digits):
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = cd_model(RBM(64, 8), jit_compile=jit)
        history = model.fit(binary_digits, batch_size=20, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][-1])


def test_check_binary_false_accepts_probabilities_and_round_trips(grey_digits):
    rbm = RBM(64, 16, check_binary=False)
    assert rbm(grey_digits / 16.0).shape == (200,)
    rbm.set_visible_bias_from_data(grey_digits / 16.0)
    clone = RBM.from_config(rbm.get_config())
    assert clone.check_binary is False
    assert RBM.from_config(RBM(4, 2).get_config()).check_binary is True


def test_mean_field_cd_needs_check_binary_false(binary_digits):
    # Gibbs(mean_field_visible=True) hands the energy probabilities p(v | h):
    # the default check refuses them, check_binary=False trains.
    with pytest.raises(tf.errors.InvalidArgumentError, match="check_binary=False"):
        cd_model(RBM(64, 8), Gibbs(1, mean_field_visible=True), jit_compile=False).fit(
            binary_digits, batch_size=20, epochs=1, verbose=0)
    model = cd_model(RBM(64, 8, check_binary=False), Gibbs(1, mean_field_visible=True),
                     jit_compile=False)
    history = model.fit(binary_digits, batch_size=20, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_sampling_and_exact_log_z_are_unaffected(binary_digits):
    rbm = RBM(6, 3)
    v = tf.constant(binary_digits[:5, :6])
    assert Gibbs(num_steps=3)(rbm, v).shape == (5, 6)
    assert Gibbs(num_steps=2, mean_field_visible=True)(rbm, v).shape == (5, 6)
    assert np.isfinite(float(rbm.log_partition()))
    assert np.isfinite(float(RBM(3, 6).log_partition()))  # enumerates the visible states
    assert rbm.hidden_probabilities(np.full((2, 6), 0.5, "float32")).shape == (2, 3)


# -- shapes -----------------------------------------------------------------------------


def test_image_shaped_inputs_give_one_clear_message(binary_digits):
    images = binary_digits[:10].reshape(10, 8, 8)
    expected = "RBM: expected inputs of shape (batch, 64), got (10, 8, 8)"
    rbm = RBM(64, 16)
    for method in (rbm, rbm.free_energy, rbm.hidden_probabilities, rbm.sample_hidden,
                   rbm.set_visible_bias_from_data):
        with pytest.raises(ValueError) as error:
            method(images)
        assert str(error.value).startswith(expected)
        assert "reshape(len(x), -1)" in str(error.value) and "\n" not in str(error.value)


def test_wrong_width_is_named(binary_digits):
    with pytest.raises(ValueError,
                       match=r"^RBM: expected inputs of shape \(batch, 64\), got \(4, 63\)$"):
        RBM(64, 16)(binary_digits[:4, :63])


def test_fit_on_image_shaped_data_names_the_shape(binary_digits):
    model = cd_model(RBM(64, 16), jit_compile=False)
    with pytest.raises(ValueError,
                       match=r"RBM: expected inputs of shape \(batch, 64\), got \(\w+, 8, 8\)"):
        model.fit(binary_digits.reshape(-1, 8, 8), batch_size=20, epochs=1, verbose=0)


def test_persistent_fit_on_image_shaped_data_with_matching_buffer_names_the_shape(binary_digits):
    # The method may build its energy on the buffer's shape when it is made,
    # or meet the shape in fit: either way the RBM names it.
    with pytest.raises(ValueError, match=r"RBM: expected inputs of shape \(batch, 64\)"):
        buffer = ReplayBuffer(20, (8, 8), reinit_fraction=0.0, noise="bernoulli")
        model = ContrastiveDivergence(RBM(64, 16), Gibbs(1), persistent=True, replay_buffer=buffer)
        model.compile(optimizer="sgd", jit_compile=False)
        model.fit(binary_digits.reshape(-1, 8, 8), batch_size=20, epochs=1, verbose=0)
