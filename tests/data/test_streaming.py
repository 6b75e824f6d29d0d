"""Streamed datasets (keras_ebm.data.streaming): the same images and order as in memory,
epoch order keyed by (seed, epoch), disjoint multi-worker shares, TFRecords, mocked TFDS,
bad files, streamed evaluation and resumable training."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import keras_ebm
from keras_ebm.data import streaming
from keras_ebm.data import tfrecords


def write_folder(root, classes=3, per_class=20, size=12, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    for c in range(classes):
        os.makedirs(root / f"class{c}", exist_ok=True)
        for i in range(per_class):
            image = (rng.random((size, size, channels)) * 255).astype(np.uint8)
            tf.io.write_file(str(root / f"class{c}" / f"{i:03d}.png"), tf.io.encode_png(image))
    return f"folder:{root}"


def write_records(root, spec, shards=(3, 2)):
    """The folder `spec` as TFRecord shards of keras_ebm.data.tfrecords, in split order."""
    from keras_ebm.data.datasets import folder_split

    train_files, y_train, test_files, y_test, names = folder_split(spec, spec[len("folder:"):])
    root.mkdir()
    info = {"format": tfrecords.FORMAT, "class_names": names, "splits": {}}
    for split, files, labels, count in (("train", train_files, y_train, shards[0]),
                                        ("test", test_files, y_test, shards[1])):
        bounds = np.linspace(0, len(files), count + 1).astype(int)
        entries = []
        for k in range(count):
            name = tfrecords.shard_name(split, k, count)
            with tf.io.TFRecordWriter(str(root / name)) as writer:
                for i in range(bounds[k], bounds[k + 1]):
                    with open(files[i], "rb") as f:
                        writer.write(tfrecords.example_bytes(
                            f.read(), labels[i], image_format="png", class_name=names[labels[i]],
                            filename=os.path.basename(files[i]), height=0, width=0, index=i))
            entries.append({"file": name, "num_examples": int(bounds[k + 1] - bounds[k])})
        info["splits"][split] = {"num_examples": len(files), "shards": entries}
    (root / tfrecords.INFO_FILE).write_text(json.dumps(info))
    return f"tfrecord:{root}"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def records(tmp_path_factory, folder):
    return write_records(tmp_path_factory.mktemp("tfr") / "shards", folder)


def batches(data, **kwargs):
    return [b.numpy() if not isinstance(b, tuple) else tuple(t.numpy() for t in b)
            for b in data.train_batches(**kwargs)]


def test_streamed_folder_gives_the_in_memory_images_in_the_same_order(folder):
    memory = keras_ebm.data.load(folder)
    stream = keras_ebm.data.load(folder, stream=True)
    assert isinstance(stream, streaming.StreamingImages) and not memory.streaming
    assert (stream.num_examples, stream.num_test_examples) == (42, 18)
    assert stream.image_shape == memory.image_shape == (12, 12, 3)
    kwargs = dict(batch_size=8, seed=5, initial_epoch=2, epochs=4)
    expected, got = batches(memory, **kwargs), batches(stream, **kwargs)
    assert len(got) == len(expected) == 2 * (42 // 8)
    np.testing.assert_allclose(np.stack(got), np.stack(expected), atol=1e-6)
    images, labels = next(iter(stream.labelled("test", batch_size=100)))
    np.testing.assert_allclose(images.numpy(), memory.x_test, atol=1e-6)
    np.testing.assert_array_equal(labels.numpy(), memory.y_test)
    np.testing.assert_array_equal(stream.labels("train"), memory.y_train)


def test_auto_streams_only_large_splits(folder, records, monkeypatch):
    assert not keras_ebm.data.load(folder, stream="auto").streaming
    assert keras_ebm.data.load(records).streaming  # TFRecords always stream
    monkeypatch.setattr(keras_ebm.data.datasets, "STREAM_ABOVE_BYTES", 1000)
    assert keras_ebm.data.load(folder, stream="auto").streaming
    with pytest.raises(keras_ebm.data.DataError, match="stream must be"):
        keras_ebm.data.load(folder, stream="yes")


def test_resume_mid_epoch_sees_the_rest_of_the_epoch(folder, records):
    for spec in (folder, records):
        data = keras_ebm.data.load(spec, stream=True)
        whole = batches(data, batch_size=8, seed=1, initial_epoch=0, epochs=3)
        rest = batches(data, batch_size=8, seed=1, initial_epoch=1, epochs=3, initial_step=2)
        np.testing.assert_array_equal(np.stack(rest), np.stack(whole[5 + 2:]))
        again = batches(data, batch_size=8, seed=1, initial_epoch=0, epochs=3)
        np.testing.assert_array_equal(np.stack(again), np.stack(whole))
        other = batches(data, batch_size=8, seed=2, initial_epoch=0, epochs=1)
        assert not np.array_equal(np.stack(other), np.stack(whole[:5]))


def test_records_cover_the_split_once_per_epoch_and_match_the_folder(folder, records):
    memory = keras_ebm.data.load(folder)
    data = keras_ebm.data.load(records)
    assert (data.num_examples, data.num_test_examples) == (42, 18)
    assert data.class_names == memory.class_names
    for epoch in range(3):
        got = batches(data, batch_size=6, seed=0, initial_epoch=epoch, epochs=epoch + 1,
                      with_index=True)
        images = np.concatenate([b[0] for b in got])
        indices = np.concatenate([b[1] for b in got])
        assert sorted(indices) == list(range(42))  # 42 = 7 full batches of 6: every record
        np.testing.assert_allclose(images, memory.x_train[indices], atol=1e-6)
    np.testing.assert_array_equal(data.labels("train"), memory.y_train)


@pytest.mark.parametrize("kind", ["folder", "records"])
def test_two_input_pipelines_read_disjoint_examples_covering_the_epoch(folder, records, kind):
    data = keras_ebm.data.load(folder if kind == "folder" else records, stream=True)
    seen = []
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker,
                                             num_replicas_in_sync=2)
        got = data.train_batches(6, seed=3, epochs=1, with_index=True, input_context=context)
        shapes = {tuple(images.shape) for images, _ in got}
        assert shapes == {(3, 12, 12, 3)}  # the per-pipeline share of the global batch
        seen.append(np.concatenate([i.numpy() for _, i in got]))
    assert not set(seen[0]) & set(seen[1])
    if kind == "folder":  # an exact permutation: the union is the whole split
        assert sorted(np.concatenate(seen)) == list(range(42))
    else:  # whole shards per pipeline (3 shards of 14): a pipeline wraps around a short share
        assert len(set(np.concatenate(seen))) >= 28


def test_mocked_tfds_streams_resized_images():
    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        data = keras_ebm.data.load("tfds:cifar10", image_size=16, stream=True,
                                   max_train_examples=12)
        assert (data.num_examples, data.image_shape, data.num_classes) == (12, (16, 16, 3), 10)
        got = batches(data, batch_size=4, seed=0, epochs=1, with_index=True)
        assert sorted(np.concatenate([i for _, i in got])) == list(range(12))
        assert all(0.0 <= images.min() and images.max() <= 1.0 for images, _ in got)
        assert len(data.labels("test")) == 20


def test_a_bad_file_in_the_stream_is_named(tmp_path):
    spec = write_folder(tmp_path / "images", classes=2, per_class=6)
    victim = tmp_path / "images" / "class1" / "002.png"
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + (50000).to_bytes(4, "big")
                       + (50000).to_bytes(4, "big") + b"\x08\x02\x00\x00\x00" + b"\x00" * 20)
    from keras_ebm.data.datasets import folder_split

    train_files = folder_split(spec, str(tmp_path / "images"))[0]
    data = keras_ebm.data.load(spec, stream=True)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        if str(victim) in train_files:
            batches(data, batch_size=len(train_files), seed=0, epochs=1)
        else:
            list(data.labelled("test"))
    line = streaming.file_error(error.value)
    assert str(victim) in line and "exceeds max_image_pixels" in line and "\n" not in line


def test_streamed_evaluation_equals_in_memory(folder):
    memory = keras_ebm.data.load(folder)
    stream = keras_ebm.data.load(folder, stream=True)
    encoder = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Flatten(),
                                keras.layers.Dense(4, kernel_initializer="glorot_uniform")])
    kwargs = dict(num_draws=2, seed=0, raw_pixels=True, max_examples=30)
    a = keras_ebm.evaluation.evaluation_rows(memory, {"e": encoder}, **kwargs)
    b = keras_ebm.evaluation.evaluation_rows(stream, {"e": encoder}, **kwargs)
    assert list(a) == list(b) == ["raw pixels", "e"]
    for row in a:
        for key in a[row]:
            assert a[row][key] == pytest.approx(b[row][key], abs=1e-6), (row, key)


def test_fit_on_a_stream_resumes_to_the_uninterrupted_weights(folder, tmp_path):
    data = keras_ebm.data.load(folder, stream=True)

    def train(workdir, epochs):
        keras.utils.set_random_seed(0)
        model = keras_ebm.presets.build("simclr", data, backbone="tiny_cnn", batch_size=8,
                                        projection_hidden_dims=(8,), projection_dim=4, epochs=3)
        keras_ebm.training.fit(model, data, workdir=str(workdir), epochs=epochs, batch_size=8,
                               steps_per_epoch=2, verbose=0, tensorboard=False)
        return model

    whole = train(tmp_path / "a", 3)
    train(tmp_path / "b", 2)
    resumed = train(tmp_path / "b", 3)
    for x, y in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(x, y, atol=1e-6)


@pytest.mark.parametrize("contents, expected", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + (5000).to_bytes(4, "big") * 2 + b"\x08\x02"
     + b"\x00" * 20, "x.img: 5000x5000 image (25000000 pixels) exceeds max_image_pixels=1000"),
    (b"GIF89a" + (600).to_bytes(2, "little") * 2 + b"\x00" * 20,  # read by the Python parser
     "x.img: 600x600 image (360000 pixels) exceeds max_image_pixels=1000"),
    (b"", "x.img: file of 0 bytes: empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + (10).to_bytes(4, "big") * 2 + b"\x08\x02"
     + b"\x00" * 3 + b"garbage", "a corrupt or unsupported image (Invalid PNG"),
])
def test_each_file_is_checked_before_it_is_decoded(folder, contents, expected):
    data = keras_ebm.data.load(folder, stream=True, max_image_pixels=1000)
    images = tf.data.Dataset.from_tensors((tf.constant(contents), tf.constant("x.img")))
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        list(images.map(data._decode))
    assert streaming.file_error(error.value).startswith(expected)
    small = tf.io.encode_jpeg(np.zeros((40, 30, 3), np.uint8))  # 1200 pixels > 1000
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        list(tf.data.Dataset.from_tensors((small, tf.constant("y.jpg"))).map(data._decode))
    assert streaming.file_error(error.value).startswith("y.jpg: 30x40 image (1200 pixels)")


def test_an_image_of_another_size_is_named_unless_resized(tmp_path):
    spec = write_folder(tmp_path / "images", classes=1, per_class=6, size=10)
    odd = tmp_path / "images" / "class0" / "003.png"
    tf.io.write_file(str(odd), tf.io.encode_png(np.zeros((12, 12, 3), np.uint8)))
    data = keras_ebm.data.load(spec, stream=True)
    assert data.image_shape == (10, 10, 3)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        for split in ("train", "test"):
            list(data.labelled(split))
    assert streaming.file_error(error.value) == (
        f"{odd}: size 12x12 differs from 10x10 of the first image; pass --image_size to "
        "resize all images")
    resized = keras_ebm.data.load(spec, stream=True, image_size=10)
    assert sum(len(x) for split in ("train", "test") for x, _ in resized.labelled(split)) == 6
