"""Look up an encoder by name, as the tools' ``--backbone`` flag does."""

import functools

from keras_ebm.backbones.resnet import resnet18_cifar
from keras_ebm.backbones.resnet import resnet50
from keras_ebm.backbones.small_cnn import small_cnn
from keras_ebm.backbones.small_cnn import small_resnet

_FACTORIES = {
    "small_cnn": small_cnn,
    "small_resnet": small_resnet,
    "resnet18_cifar": resnet18_cifar,
    "resnet50": resnet50,
    # A very small CNN for fast tests.
    "tiny_cnn": functools.partial(small_cnn, widths=(8, 16), name="tiny_cnn"),
}

BACKBONES = tuple(_FACTORIES)


def get_backbone(name, input_shape, **kwargs):
    """Builds the encoder called ``name`` for images of ``input_shape``.

    Args:
        name: one of ``BACKBONES``: ``"small_cnn"``, ``"small_resnet"``,
            ``"resnet18_cifar"``, ``"resnet50"``, ``"tiny_cnn"`` (``small_cnn``
            with widths ``(8, 16)``, for tests).
        input_shape: shape of one image, ``(height, width, channels)``.
        **kwargs: passed to the builder, e.g. ``widths`` or ``batch_norm``;
            they override the preset ones of ``"tiny_cnn"``.

    Returns:
        A Functional ``keras.Model`` mapping images to ``[batch, features]``.

    Raises:
        ValueError: if ``name`` is not in ``BACKBONES``.

    Example:
    >>> encoder = get_backbone("small_cnn", (8, 8, 1), widths=(32, 64))
    >>> encoder.output_shape
    (None, 64)
    """
    if name not in _FACTORIES:
        raise ValueError(f"Unknown backbone {name!r}; known backbones: {', '.join(BACKBONES)}.")
    return _FACTORIES[name](input_shape=input_shape, **kwargs)
