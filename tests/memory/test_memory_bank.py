"""MemoryBank: reads, momentum updates and renormalisation against NumPy; its state."""

import numpy as np
import pytest

from keras_ebm.memory import MemoryBank


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_starts_with_random_unit_rows():
    bank = MemoryBank(num_entries=50, dim=8)
    entries = bank.entries.numpy()
    np.testing.assert_allclose(np.linalg.norm(entries, axis=1), 1.0, rtol=1e-5)
    assert np.abs(entries.mean(0)).max() < 0.6  # not all the same row
    assert [w.trainable for w in bank.weights] == [False] * len(bank.weights)


def test_read_matches_numpy():
    bank = MemoryBank(num_entries=10, dim=4)
    indices = np.array([3, 0, 9, 3])
    np.testing.assert_allclose(np.asarray(bank.read(indices)), bank.entries.numpy()[indices])
    np.testing.assert_allclose(np.asarray(bank(indices)), bank.entries.numpy()[indices])


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_momentum_update_and_renormalisation_match_numpy(momentum):
    rng = np.random.default_rng(0)
    bank = MemoryBank(num_entries=12, dim=5, momentum=momentum)
    before = bank.entries.numpy().copy()
    indices = np.array([1, 7, 4])
    embeddings = 3.0 * rng.normal(size=(3, 5)).astype("float32")  # not unit length
    bank.update(indices, embeddings)
    expected = before.copy()
    expected[indices] = _unit(momentum * before[indices] + (1 - momentum) * _unit(embeddings))
    np.testing.assert_allclose(bank.entries.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(bank.entries.numpy(), axis=1), 1.0, rtol=1e-5)
    assert int(bank.num_updates.numpy()) == 1


def test_sample_draws_rows_of_the_bank():
    bank = MemoryBank(num_entries=6, dim=3, seed=1)
    negatives = np.asarray(bank.sample(6))
    assert negatives.shape == (6, 3)
    negatives = np.concatenate([negatives] + [np.asarray(bank.sample(6)) for _ in range(15)])
    distances = np.abs(negatives[:, None] - bank.entries.numpy()[None]).sum(-1)
    assert np.all(distances.min(1) < 1e-6)            # every draw is a slot
    assert len(np.unique(distances.argmin(1))) == 6   # and all slots get drawn
    assert not np.allclose(np.asarray(bank.sample(6)), negatives[:6])  # fresh draws


def test_sample_per_row_draws_a_set_for_each_row():
    bank = MemoryBank(num_entries=50, dim=3, seed=2)
    negatives = np.asarray(bank.sample(8, batch_size=4))
    assert negatives.shape == (4, 8, 3)
    distances = np.abs(negatives.reshape(-1, 1, 3) - bank.entries.numpy()[None]).sum(-1)
    assert np.all(distances.min(1) < 1e-6)            # every draw is a slot
    slots = distances.argmin(1).reshape(4, 8)
    assert len({tuple(row) for row in slots}) == 4    # each row has its own set
    assert int(bank.num_draws.numpy()) == 1           # one draw per call
    bank.num_draws.assign(0)                          # the counter fixes the draw
    np.testing.assert_array_equal(np.asarray(bank.sample(8, batch_size=4)), negatives)


def test_bad_arguments():
    with pytest.raises(ValueError, match="cannot draw 7 negatives from a bank of 6"):
        MemoryBank(num_entries=6, dim=3).sample(7)
    for kwargs in [dict(num_entries=0), dict(num_entries=4, dim=0),
                   dict(num_entries=4, momentum=1.0), dict(num_entries=4, momentum=-0.1)]:
        with pytest.raises(ValueError):
            MemoryBank(**kwargs)


def test_config_round_trip():
    bank = MemoryBank(num_entries=7, dim=3, momentum=0.3, seed=2, name="bank")
    clone = MemoryBank.from_config(bank.get_config())
    assert (clone.num_entries, clone.dim, clone.momentum, clone.seed, clone.name) == (
        7, 3, 0.3, 2, "bank")
