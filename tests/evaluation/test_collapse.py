"""Tests of the label-free collapse monitor: RankMe, SimSiam's std and CollapseMonitor."""

import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.backbones.small_cnn import small_cnn
from keras_ebm.backbones.small_cnn import small_resnet
from keras_ebm.evaluation import CollapseError
from keras_ebm.evaluation import CollapseMonitor
from keras_ebm.evaluation import effective_rank
from keras_ebm.evaluation import normalized_std


def rankme_transcription(z, eps=1e-7):
    """RankMe from the eigenvalues of the smaller Gram matrix (an SVD-free route)."""
    z = np.asarray(z, dtype=np.float64)
    gram = z.T @ z if z.shape[0] >= z.shape[1] else z @ z.T
    singular_values = np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0.0, None))
    p = singular_values / singular_values.sum() + eps
    return math.exp(-sum(pk * math.log(pk) for pk in p))


def with_singular_values(values, rows, columns, seed=0):
    """A [rows, columns] matrix whose non-zero singular values are `values`."""
    rng = np.random.default_rng(seed)
    left = np.linalg.qr(rng.normal(size=(rows, len(values))))[0]
    right = np.linalg.qr(rng.normal(size=(columns, len(values))))[0]
    return left @ np.diag(values) @ right.T


# -- effective_rank -----------------------------------------------------------
@pytest.mark.parametrize("shape", [(200, 16), (16, 200), (64, 64), (512, 3)])
def test_effective_rank_matches_a_numpy_transcription(shape):
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    scales = rng.uniform(0.01, 10.0, size=shape[1])  # an uneven spectrum, not all ranks equal
    z = rng.normal(size=shape) * scales + rng.normal(size=shape[1])
    assert effective_rank(z) == pytest.approx(rankme_transcription(z), rel=1e-9)
    assert effective_rank(z, eps=0.0) == pytest.approx(rankme_transcription(z, 0.0), rel=1e-9)
    assert effective_rank(tf.constant(z, tf.float32)) == pytest.approx(
        rankme_transcription(z), rel=1e-4)
    assert isinstance(effective_rank(z), float)


def test_effective_rank_closed_forms():
    rng = np.random.default_rng(0)
    rank_one = np.outer(rng.normal(size=300), rng.normal(size=32))
    assert effective_rank(rank_one) == pytest.approx(1.0, abs=1e-3)
    constant_rows = np.tile(rng.normal(size=(1, 32)), (300, 1))
    assert effective_rank(constant_rows) == pytest.approx(1.0, abs=1e-3)
    orthogonal = np.linalg.qr(rng.normal(size=(24, 24)))[0]
    assert effective_rank(orthogonal) == pytest.approx(24.0, abs=1e-3)
    for k in (1, 2, 5, 13):
        z = with_singular_values([3.0] * k, rows=100, columns=20, seed=k)
        assert effective_rank(z) == pytest.approx(k, abs=1e-3)
        assert effective_rank(1e-6 * z) == pytest.approx(k, abs=1e-3)  # scale-free
    # Unequal singular values sit strictly between 1 and their count.
    assert 1.0 < effective_rank(with_singular_values([10.0, 1.0, 0.1], 50, 10)) < 3.0


def test_effective_rank_edge_cases():
    assert effective_rank(np.zeros((10, 4))) == 0.0
    assert math.isnan(effective_rank(np.array([[1.0, np.nan], [0.0, 1.0]])))
    with pytest.raises(ValueError, match=r"\[examples, dimensions\]"):
        effective_rank(np.ones(5))


# -- normalized_std -----------------------------------------------------------
def test_normalized_std_closed_forms():
    rng = np.random.default_rng(0)
    constant_rows = np.tile(rng.normal(size=(1, 64)), (200, 1))
    assert normalized_std(constant_rows) == pytest.approx(0.0, abs=1e-12)
    # Rows along one direction with different lengths: L2-normalised first, so still 0.
    assert normalized_std(rng.uniform(0.1, 5.0, size=(200, 1)) * constant_rows[:1]) == \
        pytest.approx(0.0, abs=1e-12)
    for dimensions in (64, 256):
        gaussian = rng.normal(size=(4000, dimensions))
        assert normalized_std(gaussian) == pytest.approx(1 / math.sqrt(dimensions), rel=0.1)
    assert normalized_std(np.zeros((10, 8))) == 0.0


def test_normalized_std_matches_a_transcription():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(50, 7)) + 3.0 * rng.normal(size=7)
    unit = [row / math.sqrt(sum(v * v for v in row)) for row in z]
    columns = list(zip(*unit))
    stds = [math.sqrt(sum((v - sum(c) / len(c)) ** 2 for v in c) / (len(c) - 1)) for c in columns]
    assert normalized_std(z) == pytest.approx(sum(stds) / len(stds), rel=1e-12)
    with pytest.raises(ValueError, match="at least 2 rows"):
        normalized_std(np.ones((1, 4)))


# -- CollapseMonitor ----------------------------------------------------------
IMAGES = np.random.default_rng(0).uniform(size=(256, 8, 8, 1)).astype("float32")
TARGETS = np.random.default_rng(1).normal(size=(256, 16)).astype("float32")


def tiny_model(activation=None):
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(16, activation=activation, bias_initializer="ones", name="embedding"),
    ])


class RecordWeights(keras.callbacks.Callback):
    """Copies of the model's weights before training (key 0) and at each epoch end (from 1)."""

    def on_train_begin(self, logs=None):
        self.weights = {0: [np.array(w) for w in self.model.weights]}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch + 1] = [np.array(w) for w in self.model.weights]


class ZeroEmbeddingKernel(keras.callbacks.Callback):
    """Sets the last layer's kernel to zero at the end of the given epochs: a constant output."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = set(epochs)

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 in self.epochs:
            kernel = self.model.get_layer("embedding").kernel
            kernel.assign(tf.zeros_like(kernel))


def fit_with_zeroing(monitor, zero_at, epochs=6, **fit_kwargs):
    model = tiny_model()
    model.compile(keras.optimizers.SGD(0.05), "mse")
    recorder = RecordWeights()
    history = model.fit(IMAGES, TARGETS, epochs=epochs, batch_size=64, verbose=0,
                        callbacks=[recorder, ZeroEmbeddingKernel(zero_at), monitor], **fit_kwargs)
    return model, recorder, history


def assert_weights_equal(model, snapshot):
    current = [np.array(w) for w in model.weights]
    assert len(current) == len(snapshot)
    for value, expected in zip(current, snapshot):
        np.testing.assert_array_equal(value, expected)


def test_monitor_stops_at_a_constant_output_and_restores_the_last_good_weights():
    monitor = CollapseMonitor(x_held=IMAGES[:128])
    model, recorder, history = fit_with_zeroing(monitor, zero_at=[3])
    assert monitor.stopped_epoch == 3 and monitor.restored_epoch == 2
    assert len(history.history["loss"]) == 3  # stopped after epoch 3 of 6
    assert_weights_equal(model, recorder.weights[2])
    assert not np.array_equal(recorder.weights[2][-2], recorder.weights[1][-2])  # it trained
    ranks = history.history["effective_rank"]
    stds = history.history["embedding_std"]
    assert len(ranks) == len(stds) == 3
    assert min(ranks[:2]) > 2.0 and ranks[2] == pytest.approx(1.0, abs=1e-3)
    assert min(stds[:2]) > 0.01 and stds[2] < 1e-6  # threshold: 0.00025
    assert [entry["epoch"] for entry in monitor.history] == [0, 1, 2, 3]
    assert monitor.history[3]["effective_rank"] == ranks[2]
    assert re.fullmatch(
        r"Representation collapse at epoch 3: effective rank 1\.00 < 1\.05, embedding std "
        r"\S+ < 0\.00025; restored the weights of epoch 2", monitor.message), monitor.message
    # The restored weights are healthy again.
    rank, std, dimensions = monitor.measure()
    assert rank == pytest.approx(ranks[1]) and std == pytest.approx(stds[1])


def test_monitor_raises_collapse_error_with_a_one_line_message():
    monitor = CollapseMonitor(x_held=IMAGES[:128], raise_error=True)
    model = tiny_model()
    model.compile(keras.optimizers.SGD(0.05), "mse")
    recorder = RecordWeights()
    with pytest.raises(CollapseError) as raised:
        model.fit(IMAGES, TARGETS, epochs=6, batch_size=64, verbose=0,
                  callbacks=[recorder, ZeroEmbeddingKernel([2]), monitor])
    message = str(raised.value)
    assert isinstance(raised.value, RuntimeError)
    assert "\n" not in message and message == monitor.message
    assert message.startswith("Representation collapse at epoch 2: effective rank 1.00 < 1.05")
    assert message.endswith("restored the weights of epoch 1")
    assert_weights_equal(model, recorder.weights[1])


def test_monitor_stops_a_training_that_collapses():
    # MSE toward -1 through a ReLU output with a large step: the units die one by
    # one and the output ends at the constant 0 (rank passes through ~1 on the way).
    keras.utils.set_random_seed(0)
    model = tiny_model(activation="relu")
    model.compile(keras.optimizers.SGD(0.5), "mse")
    recorder = RecordWeights()
    monitor = CollapseMonitor(x_held=IMAGES[:128])
    history = model.fit(IMAGES, np.full((256, 16), -1.0, "float32"), epochs=15, batch_size=64,
                        verbose=0, callbacks=[recorder, monitor])
    assert monitor.stopped_epoch is not None and monitor.stopped_epoch < 15
    assert len(history.history["effective_rank"]) == monitor.stopped_epoch
    assert monitor.restored_epoch == monitor.stopped_epoch - 1
    assert_weights_equal(model, recorder.weights[monitor.restored_epoch])
    rank, std, dimensions = monitor.measure()
    assert rank >= 1.05 and std >= 1e-3 / math.sqrt(dimensions)
    assert monitor.message.startswith(f"Representation collapse at epoch {monitor.stopped_epoch}")


def test_patience_counts_collapsed_epochs_in_a_row():
    monitor = CollapseMonitor(x_held=IMAGES[:128], patience=2)
    model, recorder, history = fit_with_zeroing(monitor, zero_at=[2, 4], epochs=5)
    assert monitor.stopped_epoch is None and monitor.message is None  # epoch 3 recovered
    assert len(history.history["loss"]) == 5
    stds = history.history["embedding_std"]
    assert stds[1] < 1e-6 < stds[2] and stds[3] < 1e-6 < stds[4]

    monitor = CollapseMonitor(x_held=IMAGES[:128], patience=2)
    model, recorder, history = fit_with_zeroing(monitor, zero_at=[3, 4], epochs=6)
    assert monitor.stopped_epoch == 4 and monitor.restored_epoch == 2
    assert "at epoch 4 (2 epochs in a row)" in monitor.message
    assert_weights_equal(model, recorder.weights[2])


def test_stop_false_only_records():
    monitor = CollapseMonitor(x_held=IMAGES[:128], stop=False)
    model, recorder, history = fit_with_zeroing(monitor, zero_at=[2], epochs=3)
    assert len(history.history["loss"]) == 3 and monitor.stopped_epoch is None
    assert monitor.message.startswith("Representation collapse at epoch 2")
    assert_weights_equal(model, recorder.weights[3])
    with pytest.raises(ValueError, match="raise_error=True needs stop=True"):
        CollapseMonitor(x_held=IMAGES, stop=False, raise_error=True)


def test_healthy_random_init_cnn_is_not_stopped():
    encoder = small_cnn((8, 8, 1), widths=(8, 16), batch_norm=False)
    model = keras.Sequential([encoder, keras.layers.Dense(16)])
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    monitor = CollapseMonitor(x_held=IMAGES[:128], embed=lambda x: encoder(x, training=False),
                              raise_error=True)
    history = model.fit(IMAGES, TARGETS, epochs=3, batch_size=64, verbose=0, callbacks=[monitor])
    assert monitor.stopped_epoch is None and monitor.message is None
    assert len(history.history["effective_rank"]) == 3
    assert min(history.history["effective_rank"]) > 1.05
    assert min(history.history["embedding_std"]) > 1e-3 / math.sqrt(16)


def test_default_thresholds_separate_constant_output_from_random_init_cnns():
    monitor = CollapseMonitor()
    rng = np.random.default_rng(0)
    for seed in range(2):
        keras.utils.set_random_seed(seed)
        for shape in ((8, 8, 1), (32, 32, 3)):
            images = rng.uniform(size=(128, *shape)).astype("float32")
            for encoder in (small_cnn(shape, widths=(8, 16), batch_norm=False),
                            small_resnet(shape, widths=(8, 16), batch_norm=False)):
                z = np.asarray(encoder(images, training=False))
                assert effective_rank(z) > monitor.min_effective_rank, (seed, shape)
                assert normalized_std(z) > monitor.threshold_std(z.shape[1]), (seed, shape)
    for dimensions in (8, 128, 2048):
        constant = np.tile(rng.normal(size=(1, dimensions)), (512, 1)).astype("float32")
        constant += 1e-6 * rng.normal(size=constant.shape).astype("float32")  # float noise
        assert effective_rank(constant) < monitor.min_effective_rank
        assert normalized_std(constant) < monitor.threshold_std(dimensions)


def test_either_value_below_its_threshold_is_a_collapse():
    rng = np.random.default_rng(0)
    line = np.sign(rng.normal(size=(64, 1))) * rng.normal(size=(1, 32))  # rows +v or -v
    near_constant = 1.0 + 8e-4 * rng.normal(size=(64, 1024))  # a constant plus a little noise
    threshold = CollapseMonitor().threshold_std
    assert effective_rank(line) < 1.05 and normalized_std(line) > 100 * threshold(32)
    assert effective_rank(near_constant) > 1.06 and normalized_std(near_constant) < threshold(1024)
    for embeddings in (line, near_constant):
        model = tiny_model()
        model.compile(keras.optimizers.SGD(0.0), "mse")
        monitor = CollapseMonitor(x_held=IMAGES[:64], embed=lambda x, z=embeddings: z[:len(x)])
        model.fit(IMAGES, TARGETS, epochs=2, batch_size=64, verbose=0, callbacks=[monitor])
        assert monitor.stopped_epoch == 1


@pytest.mark.filterwarnings("ignore:Gradients do not exist")
def test_monitor_uses_the_model_encoder_and_reports_no_good_epoch():
    class WithEncoder(keras.Model):
        def __init__(self):
            super().__init__()
            self.encoder = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                             keras.layers.Dense(8, kernel_initializer="zeros",
                                                                bias_initializer="ones")])
            self.head = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                          keras.layers.Dense(16)])

        def call(self, x, training=False):
            return self.head(x, training=training)

    model = WithEncoder()
    model.compile(keras.optimizers.SGD(0.0), "mse")
    monitor = CollapseMonitor(x_held=IMAGES[:64])
    model.fit(IMAGES, TARGETS, epochs=3, batch_size=64, verbose=0, callbacks=[monitor])
    assert monitor.stopped_epoch == 1 and monitor.restored_epoch is None
    assert monitor.message.endswith(
        "no earlier epoch was above the thresholds, weights left as they are")

    plain = tiny_model()  # no encoder: the model's own output is embedded
    plain.compile(keras.optimizers.SGD(0.0), "mse")
    monitor = CollapseMonitor(x_held=IMAGES[:64])
    plain.fit(IMAGES, TARGETS, epochs=2, batch_size=64, verbose=0, callbacks=[monitor])
    assert monitor.stopped_epoch is None and len(monitor.history) == 3


def test_monitor_config_round_trip_and_missing_held_batch():
    monitor = CollapseMonitor(x_held=IMAGES, min_effective_rank=20.0, min_std=0.01, patience=3,
                              raise_error=True, batch_size=32)
    config = monitor.get_config()
    assert config == {"min_effective_rank": 20.0, "min_std": 0.01, "patience": 3, "stop": True,
                      "raise_error": True, "batch_size": 32, "min_rank_ratio": None,
                      "knn_every": 5, "knn_k": 20}
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(monitor))
    assert isinstance(rebuilt, CollapseMonitor) and rebuilt.get_config() == config
    assert rebuilt.x_held is None
    model = tiny_model()
    model.compile(keras.optimizers.SGD(0.0), "mse")
    with pytest.raises(ValueError, match="x_held is not set"):
        model.fit(IMAGES, TARGETS, epochs=1, verbose=0, callbacks=[rebuilt])
    with pytest.raises(ValueError, match="patience"):
        CollapseMonitor(x_held=IMAGES, patience=0)
    with pytest.raises(ValueError, match="min_rank_ratio must be in"):
        CollapseMonitor(x_held=IMAGES, min_rank_ratio=1.0)


class EncoderAndProjections(keras.Model):
    """An encoder with a healthy output and a head whose rank `rank` is chosen (zeroed units)."""

    def __init__(self):
        super().__init__()
        self.encoder = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                         keras.layers.Dense(16)])
        self.head = keras.layers.Dense(32)

    def project(self, x, training=False):
        return self.head(self.encoder(x, training=training))

    def call(self, x, training=False):
        return self.project(x, training=training)


class KeepRank(keras.callbacks.Callback):
    """From epoch `at` on, keeps only the first `rank` columns of the head's kernel."""

    def __init__(self, at, rank):
        super().__init__()
        self.at, self.rank = at, rank

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.at:
            kernel = self.model.head.kernel
            mask = np.zeros(kernel.shape, "float32")
            mask[:, :self.rank] = 1.0
            kernel.assign(kernel * mask)


def test_a_collapse_of_the_projections_alone_stops_the_run():
    # A dimensional collapse of the projections (rank 2 of 32) with a healthy
    # encoder (rank ~ 8 of 16), as SimSiam without stop-gradient shows it.
    keras.utils.set_random_seed(0)
    model = EncoderAndProjections()
    model.compile(keras.optimizers.SGD(1e-3), "mse")
    recorder = RecordWeights()
    monitor = CollapseMonitor(x_held=IMAGES[:128], min_rank_ratio=0.3)
    history = model.fit(IMAGES, TARGETS[:, :1].repeat(32, axis=1), epochs=5, batch_size=64,
                        verbose=0, callbacks=[recorder, KeepRank(at=3, rank=2), monitor])
    assert monitor.stopped_epoch == 3 and monitor.restored_epoch == 2
    ranks = history.history["effective_rank"]
    projection_ranks = history.history["projection_rank"]
    assert len(ranks) == len(projection_ranks) == len(history.history["projection_std"]) == 3
    assert min(ranks) > 0.3 * max(ranks)  # the encoder never collapsed
    assert min(projection_ranks[:2]) > 3.0 and projection_ranks[2] < 2.01
    z = np.asarray(model.head(model.encoder(IMAGES[:128])))
    assert effective_rank(z) > monitor.history[3]["projection_rank"]  # weights restored
    assert re.fullmatch(
        r"Representation collapse at epoch 3: effective rank \S+ >= \S+, embedding std \S+ >= "
        r"\S+, projection rank \S+ < \S+, projection std \S+ >= \S+; restored the weights of "
        r"epoch 2", monitor.message), monitor.message
    assert_weights_equal(model, recorder.weights[2])
    # project=False watches the embeddings only: the same run is not stopped.
    keras.utils.set_random_seed(0)
    model = EncoderAndProjections()
    model.compile(keras.optimizers.SGD(1e-3), "mse")
    monitor = CollapseMonitor(x_held=IMAGES[:128], min_rank_ratio=0.3, project=False)
    history = model.fit(IMAGES, TARGETS[:, :1].repeat(32, axis=1), epochs=4, batch_size=64,
                        verbose=0, callbacks=[KeepRank(at=3, rank=2), monitor])
    assert monitor.stopped_epoch is None and "projection_rank" not in history.history


def numpy_knn(train_x, train_y, test_x, test_y, k, temperature=0.07):
    """Weighted kNN vote, written out: cosine similarities, top k, exp(s / T) votes."""
    a = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    b = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    correct = 0
    for row, label in zip(b @ a.T, test_y):
        top = np.argsort(-row)[:k]
        votes = np.zeros(train_y.max() + 1)
        np.add.at(votes, train_y[top], np.exp((row[top] - row[top].max()) / temperature))
        correct += int(np.argmax(votes) == label)
    return correct / len(test_y)


def test_online_knn_is_logged_before_training_every_few_epochs_and_at_the_end():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, size=200)
    images = (0.2 * rng.uniform(size=(200, 8, 8, 1))
              + 0.8 * (labels[:, None, None, None] == np.arange(8)[None, :, None, None])
              ).astype("float32")
    keras.utils.set_random_seed(0)
    model = tiny_model()
    model.compile(keras.optimizers.SGD(0.01), "mse")
    train, test = (images[:150], labels[:150]), (images[150:], labels[150:])
    batches = tf.data.Dataset.from_tensor_slices(test).batch(16)  # batches work too
    monitor = CollapseMonitor(x_held=images[:64], knn_data=(train, batches), knn_every=2,
                              knn_k=5)
    history = model.fit(images, rng.normal(size=(200, 16)).astype("float32"), epochs=5,
                        batch_size=50, verbose=0, callbacks=[monitor])
    logged = {entry["epoch"]: entry["knn_accuracy"] for entry in monitor.history
              if "knn_accuracy" in entry}
    assert sorted(logged) == [0, 2, 4, 5]
    assert history.history["knn_accuracy"] == [logged[2], logged[4], logged[5]]
    features = lambda x: np.asarray(model(x, training=False))  # noqa: E731
    expected = numpy_knn(features(train[0]), train[1], features(test[0]), test[1], k=5)
    assert logged[5] == pytest.approx(expected) and monitor.knn() == pytest.approx(expected)
    assert expected > 0.9  # the classes are separable: a wrong vote would show
    with pytest.raises(ValueError, match="knn_data must be"):
        CollapseMonitor(x_held=images, knn_data=(train,))


def test_the_rank_ratio_catches_a_dimensional_collapse_relative_to_the_peak():
    # Rank ~ 11 of 32 at first, then 2: below 0.5 x the peak, above the absolute 1.05.
    keras.utils.set_random_seed(0)
    model = EncoderAndProjections()
    model.compile(keras.optimizers.SGD(1e-3), "mse")
    monitor = CollapseMonitor(x_held=IMAGES[:128], min_rank_ratio=0.5)
    history = model.fit(IMAGES, TARGETS[:, :1].repeat(32, axis=1), epochs=5, batch_size=64,
                        verbose=0, callbacks=[KeepRank(at=2, rank=2), monitor])
    assert monitor.stopped_epoch == 2 and monitor.restored_epoch == 1
    peak = max(entry["projection_rank"] for entry in monitor.history[:2])
    assert history.history["projection_rank"][1] < 0.5 * peak
    assert monitor.threshold_rank(peak) == pytest.approx(0.5 * peak)
    assert f"projection rank {history.history['projection_rank'][1]:.2f} < {0.5 * peak:.3g}" \
        in monitor.message
    assert monitor.threshold_rank(1.0) == 1.05  # the absolute floor, for the embeddings only
    assert monitor.threshold_rank(1.0, absolute=False) == 0.5
    keras.utils.set_random_seed(0)
    model = EncoderAndProjections()
    model.compile(keras.optimizers.SGD(1e-3), "mse")
    monitor = CollapseMonitor(x_held=IMAGES[:128])  # no ratio: rank 2 is no collapse
    model.fit(IMAGES, TARGETS[:, :1].repeat(32, axis=1), epochs=3, batch_size=64, verbose=0,
              callbacks=[KeepRank(at=2, rank=2), monitor])
    assert monitor.stopped_epoch is None


def test_projections_near_rank_one_without_a_fall_are_no_collapse():
    # Projections with a large shared mean: un-centred rank ~ 1 from the start (no fall),
    # a healthy encoder. Only the embeddings are held to the absolute floor.
    rng = np.random.default_rng(2)
    shared = 500.0 + rng.normal(size=(1, 8))
    projections = shared + rng.normal(size=(64, 8))
    assert effective_rank(projections) < 1.05
    model = tiny_model()
    model.compile(keras.optimizers.SGD(0.0), "mse")
    monitor = CollapseMonitor(x_held=IMAGES[:64], min_rank_ratio=0.15,
                              project=lambda x, z=projections: z[:len(x)])
    model.fit(IMAGES, TARGETS, epochs=2, batch_size=64, verbose=0, callbacks=[monitor])
    assert monitor.stopped_epoch is None
    assert monitor.history[-1]["projection_rank"] < 1.05
