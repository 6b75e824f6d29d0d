"""ResNet encoders: ResNet-18 with the CIFAR stem, and Keras' ResNet-50.

Both return Functional ``keras.Model`` objects mapping images to features after
global average pooling (512 and 2048 dimensions).
"""

import keras

from keras_ebm.backbones.small_cnn import basic_block
from keras_ebm.backbones.small_cnn import conv_bn_relu

RESNET18_BLOCKS = (2, 2, 2, 2)
RESNET18_WIDTHS = (64, 128, 256, 512)


def resnet18_cifar(input_shape=(32, 32, 3), width=64, batch_norm=True, name="resnet18_cifar"):
    """Builds ResNet-18 with the CIFAR stem, as used by SimCLR and MoCo on CIFAR-10.

    The ImageNet stem (7x7 stride-2 convolution and 3x3 max-pool) is replaced
    by one 3x3 stride-1 convolution, which suits 32x32 images. Four stages of
    two BasicBlocks with ``64, 128, 256, 512`` channels (scaled by
    ``width / 64``), stride 2 at the start of stages 2-4, then global average
    pooling. At ``width=64`` it has 11,168,832 trainable parameters, the count
    of torchvision's ``resnet18`` with ``conv1`` replaced by a 3x3 stride-1
    convolution, ``maxpool`` removed and ``fc`` removed (Keras adds the batch
    norms' moving means and variances as 9,600 non-trainable parameters).

    Args:
        input_shape: shape of one image, ``(height, width, channels)``.
            Defaults to ``(32, 32, 3)``.
        width: channels of the first stage; the later stages have 2x, 4x and
            8x as many. Defaults to 64.
        batch_norm: whether to use ``BatchNormalization`` (momentum 0.9,
            epsilon 1e-5). Defaults to True.
        name: the model's name. Defaults to ``"resnet18_cifar"``.

    Returns:
        A Functional ``keras.Model`` mapping ``[batch, *input_shape]`` images to
        ``[batch, 8 * width]`` features.

    Example:
    >>> encoder = resnet18_cifar()
    >>> encoder(np.zeros((2, 32, 32, 3))).shape
    (2, 512)

    Reference:
        He et al., Deep Residual Learning for Image Recognition, CVPR 2016.
        Chen et al., A Simple Framework for Contrastive Learning of Visual
        Representations (appendix B.9, CIFAR-10), ICML 2020.
    """
    widths = [stage_width * width // 64 for stage_width in RESNET18_WIDTHS]
    images = keras.Input(shape=tuple(input_shape), name="images")
    x = conv_bn_relu(images, widths[0], 1, batch_norm, name="stem")
    for stage, (filters, blocks) in enumerate(zip(widths, RESNET18_BLOCKS)):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            block_name = f"stage{stage + 1}_block{block + 1}"
            x = basic_block(x, filters, strides, batch_norm, name=block_name)
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(images, features, name=name)


def resnet50(input_shape=(224, 224, 3), name="resnet50"):
    """Builds ResNet-50 without its classifier, randomly initialised: images to 2048 features.

    A thin wrapper around ``keras.applications.ResNet50(include_top=False,
    weights=None, pooling="avg")``, the encoder of SimCLR, MoCo and PIRL on
    ImageNet.

    Args:
        input_shape: shape of one image, ``(height, width, channels)``; at least
            32x32. Defaults to ``(224, 224, 3)``.
        name: the model's name. Defaults to ``"resnet50"``.

    Returns:
        A Functional ``keras.Model`` mapping ``[batch, *input_shape]`` images to
        ``[batch, 2048]`` features.

    Example:
    >>> encoder = resnet50((64, 64, 3))
    >>> encoder(np.zeros((2, 64, 64, 3))).shape
    (2, 2048)

    Reference:
        He et al., Deep Residual Learning for Image Recognition, CVPR 2016.
    """
    # NOTE: Keras' implementation keeps its own batch norm settings (momentum
    # 0.99, epsilon 1.001e-5) and biases on its convolutions; it is used as is
    # rather than rewritten, unlike the small encoders here.
    return keras.applications.ResNet50(
        include_top=False,
        weights=None,
        input_shape=tuple(input_shape),
        pooling="avg",
        name=name,
    )
