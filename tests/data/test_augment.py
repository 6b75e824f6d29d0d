"""Tests of keras_ebm.data.augment: crops, RandomApply, make_augmenter."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.data import RandomApply
from keras_ebm.data import RandomResizedCrop
from keras_ebm.data import make_augmenter
from keras_ebm.data.augment import crop_and_resize


def _images(shape=(8, 12, 12, 3), seed=0):
    return np.random.default_rng(seed).uniform(size=shape).astype("float32")


def test_crop_full_box_is_identity():
    images = _images()
    crop = RandomResizedCrop(12, 12, scale=(1.0, 1.0), ratio=(1.0, 1.0), seed=0)
    np.testing.assert_allclose(crop(images, training=True), images, atol=1e-5)



@pytest.mark.parametrize("shape,size", [((6, 12, 12, 3), (12, 12)), ((5, 9, 7, 2), (4, 1)),
                                        ((5, 9, 7, 2), (1, 5)), ((3, 8, 8, 1), (10, 6))])
def test_crop_and_resize_equals_tensorflows_op_and_compiles_with_xla(shape, size):
    rng = np.random.default_rng(1)
    images = _images(shape)
    batch = shape[0]
    # Boxes inside, across the border (TF writes 0 there), flipped, and degenerate.
    y1, x1 = rng.uniform(-0.3, 0.9, batch), rng.uniform(-0.3, 0.9, batch)
    boxes = np.stack([y1, x1, y1 + rng.uniform(-0.4, 0.7, batch),
                      x1 + rng.uniform(-0.4, 0.7, batch)], axis=1).astype("float32")
    boxes[0] = [0.0, 0.0, 1.0, 1.0]
    boxes[-1] = [0.5, 0.5, 0.5, 0.5]
    expected = tf.image.crop_and_resize(images, boxes, tf.range(batch), size, method="bilinear")
    np.testing.assert_allclose(crop_and_resize(images, boxes, size), expected, atol=1e-5)
    compiled = tf.function(lambda i, b: crop_and_resize(i, b, size), jit_compile=True)
    np.testing.assert_allclose(compiled(images, boxes), expected, atol=1e-5)


def test_augmenter_compiles_with_xla():
    images = _images((4, 16, 16, 3))
    augmenter = make_augmenter((16, 16, 3), seed=0)
    views = tf.function(lambda x: augmenter(x, training=True), jit_compile=True)(images)
    assert views.shape == images.shape
    assert np.all(np.isfinite(views)) and 0.0 <= float(tf.reduce_min(views)) <= 1.0

def test_crop_range_shape_and_per_sample_boxes():
    images = np.repeat(_images((1, 16, 16, 3)), 8, axis=0)
    crop = RandomResizedCrop(10, 6, scale=(0.1, 0.5), seed=1)
    outputs = crop(images, training=True).numpy()
    assert outputs.shape == (8, 10, 6, 3)
    assert outputs.min() >= 0.0 and outputs.max() <= 1.0
    differences = np.abs(outputs[1:] - outputs[:1]).reshape(7, -1).max(axis=1)
    assert np.all(differences > 1e-3)  # every sample got its own box
    assert crop.compute_output_shape((None, 16, 16, 3)) == (None, 10, 6, 3)


def test_crop_inference_resizes_or_is_identity():
    images = _images()
    np.testing.assert_array_equal(
        RandomResizedCrop(12, 12)(images, training=False), images
    )
    resized = RandomResizedCrop(6, 6)(images, training=False).numpy()
    np.testing.assert_allclose(
        resized, tf.image.resize(images, (6, 6)).numpy(), atol=1e-6
    )


def test_crop_one_channel_and_unbatched():
    crop = RandomResizedCrop(8, 8, scale=(0.5, 1.0), seed=2)
    assert crop(_images((4, 8, 8, 1)), training=True).shape == (4, 8, 8, 1)
    assert crop(_images((8, 8, 1)), training=True).shape == (8, 8, 1)


def test_crop_config_round_trip():
    crop = RandomResizedCrop(5, 7, scale=(0.3, 0.9), ratio=(0.5, 2.0), seed=3)
    config = crop.get_config()
    assert config["height"] == 5 and config["ratio"] == (0.5, 2.0)
    clone = RandomResizedCrop.from_config(config)
    assert clone.get_config() == config
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCrop(5, 5, scale=(0.0, 1.0))


def test_random_apply_rates():
    images = _images((32, 4, 4, 3))
    halve = keras.layers.Rescaling(0.5)
    np.testing.assert_array_equal(
        RandomApply(halve, 0.0)(images, training=True), images
    )
    np.testing.assert_allclose(
        RandomApply(halve, 1.0)(images, training=True), 0.5 * images
    )
    outputs = RandomApply(halve, 0.5, seed=0)(images, training=True).numpy()
    applied = np.all(np.isclose(outputs, 0.5 * images), axis=(1, 2, 3))
    kept = np.all(outputs == images, axis=(1, 2, 3))
    assert np.all(applied ^ kept) and 0 < applied.sum() < 32
    np.testing.assert_array_equal(
        RandomApply(halve, 1.0)(images, training=False), images
    )


def test_random_apply_config_round_trip():
    layer = RandomApply(keras.layers.Rescaling(0.5), 0.3, seed=4)
    clone = RandomApply.from_config(layer.get_config())
    assert isinstance(clone.layer, keras.layers.Rescaling)
    assert clone.rate == 0.3 and clone.seed == 4
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("shape", [(8, 8, 1), (12, 12, 3)])
def test_augmenter_range_and_variety(shape):
    augmenter = make_augmenter(shape, seed=0)
    images = np.repeat(_images((1,) + shape), 16, axis=0)
    outputs = augmenter(images, training=True).numpy()
    assert outputs.shape == images.shape and outputs.dtype == np.float32
    assert outputs.min() >= 0.0 and outputs.max() <= 1.0
    flat = outputs.reshape(16, -1)
    assert len({row.tobytes() for row in flat}) == 16  # every view differs
    np.testing.assert_array_equal(augmenter(images, training=False), images)


def test_augmenter_layers_follow_arguments():
    names = [layer.name for layer in make_augmenter((8, 8, 1)).layers]
    assert names == ["crop", "flip", "random_color_jitter", "blur", "clip"]
    names = [layer.name for layer in make_augmenter((16, 16, 3)).layers]
    assert "grayscale" in names
    bare = make_augmenter(
        (16, 16, 3), strength=0.0, flip=False, grayscale_probability=0.0,
        blur_probability=0.0,
    )
    assert [layer.name for layer in bare.layers] == ["crop", "clip"]


def test_augmenter_in_tf_function_and_tf_data():
    augmenter = make_augmenter((8, 8, 3), seed=1)

    @tf.function
    def step(images):
        return augmenter(images, training=True)

    images = _images((4, 8, 8, 3))
    first, second = step(images).numpy(), step(images).numpy()
    assert first.shape == (4, 8, 8, 3)
    assert not np.allclose(first, second)  # fresh randomness per call
    dataset = tf.data.Dataset.from_tensor_slices(_images((6, 8, 8, 3))).batch(3)
    dataset = dataset.map(lambda batch: augmenter(batch, training=True))
    batches = list(dataset.as_numpy_iterator())
    assert [batch.shape for batch in batches] == [(3, 8, 8, 3)] * 2
    assert all(batch.min() >= 0.0 and batch.max() <= 1.0 for batch in batches)


def test_augmenter_keras_file_round_trip(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            make_augmenter((8, 8, 3), seed=0),
            RandomResizedCrop(6, 6, name="resize"),
        ]
    )
    path = str(tmp_path / "augmenter.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    images = _images((2, 8, 8, 3))
    np.testing.assert_array_equal(
        restored(images, training=False), model(images, training=False)
    )
    augmenter = restored.layers[0]
    assert [layer.name for layer in augmenter.layers] == [
        layer.name for layer in model.layers[0].layers
    ]
    assert isinstance(augmenter.get_layer("random_color_jitter"), RandomApply)
    assert augmenter(images, training=True).shape == (2, 8, 8, 3)


def test_augmenter_random_state_is_saved_with_the_weights(tmp_path):
    # Every random layer (crop, flip, colour jitter, grayscale, blur) carries its generator
    # state in its weights: restored into a fresh augmenter, it draws what the original draws.
    x = np.random.default_rng(0).random((8, 16, 16, 3)).astype("float32")
    original = make_augmenter((16, 16, 3), seed=0)
    original(x, training=True)
    original(x, training=True)
    path = str(tmp_path / "augmenter.weights.h5")
    original.save_weights(path)
    expected = np.asarray(original(x, training=True))  # the third draw
    restored = make_augmenter((16, 16, 3), seed=0)
    second_draw = np.asarray(restored(x, training=True))
    assert not np.allclose(second_draw, expected)
    restored.load_weights(path)
    np.testing.assert_allclose(np.asarray(restored(x, training=True)), expected, atol=1e-6)
    stateful = {layer.name for layer in original.layers if layer.non_trainable_weights}
    assert {"crop", "flip", "random_color_jitter", "grayscale", "blur"} <= stateful
    # The wrapped Keras layers' states are among the weights (not only the wrappers' own).
    assert len(original.get_layer("random_color_jitter").non_trainable_weights) > 1
