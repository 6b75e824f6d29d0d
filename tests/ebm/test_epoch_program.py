"""ContrastiveDivergence.train_epoch (one XLA program per epoch) against NumPy."""

import keras
import numpy as np
import pytest

from keras_ebm.energies import RBM
from keras_ebm.energies import MLPEnergy
from keras_ebm.memory.replay_buffer import ReplayBuffer
from keras_ebm.methods.contrastive_divergence import ContrastiveDivergence
from keras_ebm.samplers import Gibbs
from keras_ebm.samplers import Langevin


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _numpy_pcd_epoch(weights, visible_bias, hidden_bias, chains, element, learning_rate, k):
    """PCD-k with plain SGD on loss = mean F(data) - mean F(samples), written out by hand."""
    W, b, c, x_chain = (np.array(a, np.float64)
                        for a in (weights, visible_bias, hidden_bias, chains))
    for i, data in enumerate(element["minibatches"]):
        for step in range(k):
            hidden = (element["hidden_uniforms"][i, step] < _sigmoid(c + x_chain @ W)).astype(float)
            x_chain = (element["visible_uniforms"][i, step]
                       < _sigmoid(b + hidden @ W.T)).astype(float)
        p_data, p_chain = _sigmoid(c + data @ W), _sigmoid(c + x_chain @ W)
        # dF/dW = -v sigmoid(c + vW)^T, dF/db = -v, dF/dc = -sigmoid(c + vW)
        grad_W = -data.T @ p_data / len(data) + x_chain.T @ p_chain / len(x_chain)
        grad_b = -data.mean(0) + x_chain.mean(0)
        grad_c = -p_data.mean(0) + p_chain.mean(0)
        W, b, c = W - learning_rate * grad_W, b - learning_rate * grad_b, c - learning_rate * grad_c
    return W, b, c, x_chain


@pytest.mark.parametrize("k", [1, 2])
def test_train_epoch_equals_numpy_pcd(k):
    keras.utils.set_random_seed(0)
    x = (np.random.default_rng(0).random((13, 6)) < 0.4).astype("float32")
    model = ContrastiveDivergence(
        RBM(6, 3), Gibbs(num_steps=k), persistent=True,
        replay_buffer=ReplayBuffer(5, (6,), reinit_fraction=0.0, noise="bernoulli"))
    model.compile(optimizer=keras.optimizers.SGD(0.3), jit_compile=True)
    model(x[:2])
    rbm = model.energy
    rbm.kernel.assign(np.random.default_rng(1).normal(0, 0.5, (6, 3)).astype("float32"))
    element = next(iter(model.epoch_dataset(x, batch_size=4, seed=3)))
    element_np = {key: value.numpy() for key, value in element.items()}
    assert element_np["minibatches"].shape == (3, 4, 6)  # 13 // 4 updates, remainder dropped
    assert element_np["hidden_uniforms"].shape == (3, k, 5, 3)
    assert element_np["visible_uniforms"].shape == (3, k, 5, 6)
    expected = _numpy_pcd_epoch(rbm.kernel, rbm.visible_bias, rbm.hidden_bias,
                                model.replay_buffer.chains, element_np, 0.3, k)
    model.fit(model.epoch_dataset(x, batch_size=4, seed=3), epochs=1, steps_per_epoch=1, verbose=0)
    for got, want in zip((rbm.kernel, rbm.visible_bias, rbm.hidden_bias,
                          model.replay_buffer.chains),
                         expected):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    assert int(model.optimizer.iterations) == 3  # one optimizer step per minibatch


def test_epoch_dataset_is_a_function_of_seed_and_epoch():
    x = (np.random.default_rng(0).random((40, 6)) < 0.5).astype("float32")
    model = ContrastiveDivergence(RBM(6, 3), Gibbs(1))  # CD-1: chains = the minibatch
    first = list(model.epoch_dataset(x, batch_size=8, seed=1, epochs=3))
    resumed = list(model.epoch_dataset(x, batch_size=8, seed=1, initial_epoch=2, epochs=3))
    assert len(first) == 3 and len(resumed) == 1
    np.testing.assert_array_equal(first[2]["minibatches"], resumed[0]["minibatches"])
    np.testing.assert_array_equal(first[2]["visible_uniforms"], resumed[0]["visible_uniforms"])
    assert not np.array_equal(first[0]["minibatches"], first[1]["minibatches"])
    assert first[0]["hidden_uniforms"].shape == (5, 1, 8, 3)
    # every example appears once per epoch (40 = 5 minibatches of 8)
    rows = sorted(map(tuple, first[0]["minibatches"].numpy().reshape(-1, 6)))
    assert rows == sorted(map(tuple, x))


def test_epoch_program_needs_an_rbm_and_gibbs():
    with pytest.raises(ValueError, match="Gibbs sampler"):
        ContrastiveDivergence(MLPEnergy([8]), Langevin(num_steps=2)).epoch_dataset(
            np.zeros((8, 2), "float32"), batch_size=4)
    model = ContrastiveDivergence(RBM(6, 3), Gibbs(1), persistent=True, chains_per_step=2,
                                  replay_buffer=ReplayBuffer(5, (6,), noise="bernoulli"))
    with pytest.raises(ValueError, match="chains_per_step=None"):
        model.epoch_dataset(np.zeros((8, 6), "float32"), batch_size=4)
