"""Tests of the encoders: shapes, parameter counts, the registry, `.keras` round trips."""

import keras
import numpy as np
import pytest

from keras_ebm.backbones import get_backbone
from keras_ebm.backbones import resnet18_cifar
from keras_ebm.backbones import resnet50
from keras_ebm.backbones import small_cnn
from keras_ebm.backbones import small_resnet
from keras_ebm.backbones.registry import BACKBONES


@pytest.mark.parametrize("input_shape", [(8, 8, 1), (32, 32, 3)])
@pytest.mark.parametrize(
    "build, kwargs, dimensions",
    [
        (small_cnn, dict(widths=(8, 16, 24)), 24),
        (small_cnn, dict(widths=(8, 16), batch_norm=False), 16),
        (small_resnet, dict(widths=(8, 16, 24)), 24),
        (small_resnet, dict(widths=(8, 16), blocks_per_stage=2, batch_norm=False), 16),
        (resnet18_cifar, dict(width=4), 32),
    ],
)
def test_output_shape(build, kwargs, dimensions, input_shape):
    encoder = build(input_shape=input_shape, **kwargs)
    images = np.random.default_rng(0).normal(size=(3, *input_shape)).astype("float32")
    assert isinstance(encoder, keras.Model)
    assert encoder.output_shape == (None, dimensions)
    assert encoder(images, training=False).shape == (3, dimensions)


def test_small_cnn_downsamples_digits_to_two_by_two():
    encoder = small_cnn((8, 8, 1))
    assert encoder.get_layer("conv3_relu").output.shape == (None, 2, 2, 256)
    assert encoder.output_shape == (None, 256)
    assert encoder.name == "small_cnn"


def test_batch_norm_settings_and_bias_free_convolutions():
    encoder = small_resnet((8, 8, 1), widths=(4, 8))
    norms = [layer for layer in encoder.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    convolutions = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Conv2D)]
    assert norms and all(n.momentum == 0.9 and n.epsilon == 1e-5 for n in norms)
    assert convolutions and not any(c.use_bias for c in convolutions)


def test_resnet18_cifar_matches_torchvision_parameter_count():
    encoder = resnet18_cifar()
    trainable = sum(int(np.prod(w.shape)) for w in encoder.trainable_weights)
    assert trainable == 11_168_832
    assert encoder.output_shape == (None, 512)
    assert encoder.get_layer("stem_conv").kernel.shape == (3, 3, 3, 64)
    assert encoder.get_layer("stage4_block2_out").output.shape == (None, 4, 4, 512)


def test_resnet50_builds_at_cifar_size():
    encoder = resnet50((32, 32, 3), name="encoder")
    assert encoder.name == "encoder"
    assert encoder.output_shape == (None, 2048)


def test_get_backbone():
    assert BACKBONES == ("small_cnn", "small_resnet", "resnet18_cifar", "resnet50", "tiny_cnn")
    tiny = get_backbone("tiny_cnn", (8, 8, 1))
    assert tiny.name == "tiny_cnn" and tiny.output_shape == (None, 16)
    assert get_backbone("tiny_cnn", (8, 8, 1), widths=(4,)).output_shape == (None, 4)
    assert get_backbone("small_resnet", (8, 8, 1), widths=(4, 6)).output_shape == (None, 6)
    with pytest.raises(ValueError, match="known backbones: small_cnn, small_resnet, resnet18"):
        get_backbone("vgg16", (32, 32, 3))


@pytest.mark.parametrize(
    "build, kwargs",
    [(small_cnn, dict(widths=(8, 16))), (small_resnet, dict(widths=(8, 16), blocks_per_stage=2))],
)
def test_keras_file_round_trip(build, kwargs, tmp_path):
    encoder = build((8, 8, 1), name="encoder", **kwargs)
    images = np.random.default_rng(1).normal(size=(4, 8, 8, 1)).astype("float32")
    # One training-mode call moves the batch norm statistics away from their initial values.
    encoder(images, training=True)
    for norm in [layer for layer in encoder.layers
                 if isinstance(layer, keras.layers.BatchNormalization)]:
        norm.moving_mean.assign(np.full(norm.moving_mean.shape, 0.1, "float32"))
    path = str(tmp_path / "encoder.keras")
    encoder.save(path)
    restored = keras.saving.load_model(path)
    assert restored.name == "encoder"
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(images, training=False)),
        keras.ops.convert_to_numpy(encoder(images, training=False)),
    )
