"""SimCLR-style image augmentation as Keras layers.

`make_augmenter` builds the stochastic view generator of SimCLR (Chen et al.,
2020, appendix A): random resized crop, horizontal flip, colour jitter, random
grayscale and Gaussian blur. Every layer draws its randomness per sample, so
the two views of one image (and different images of one batch) differ.

All layers work on float32 images in `[0, 1]`, inside a `tf.function` train
step (`augmenter(images, training=True)`) and inside `tf.data.Dataset.map`.
In inference mode (`training=False`) the augmenter only resizes.
"""

import math

import keras
import tensorflow as tf

from keras_ebm import keras_compat


def _as_pair(value, name):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"`{name}` must be a pair. Received: {name}={value}")
        return float(value[0]), float(value[1])
    raise ValueError(f"`{name}` must be a pair. Received: {name}={value}")


def _bilinear_sample_axis(size, start, end, out_size):
    """Sample positions of one axis, as `tf.image.crop_and_resize` places them.

    Args:
        size: the input's side (a scalar tensor).
        start, end: [batch] normalised box edges (0 and 1: first and last pixel centre).
        out_size: the output's side (a Python int).

    Returns:
        `(low, high, fraction, inside)`: [batch, out_size] indices of the two
        neighbouring pixels, the interpolation weight of `high`, and whether the
        position lies inside the image (outside, crop_and_resize writes 0).
    """
    last = tf.cast(size, "float32") - 1.0
    if out_size > 1:
        step = (end - start) * last / (out_size - 1)
        position = start[:, None] * last + tf.range(out_size, dtype="float32")[None] * step[:, None]
    else:
        position = (0.5 * (start + end) * last)[:, None]
    inside = (position >= 0.0) & (position <= last)
    clipped = tf.clip_by_value(position, 0.0, last)
    low = tf.floor(clipped)
    high = tf.math.ceil(clipped)
    return tf.cast(low, "int32"), tf.cast(high, "int32"), clipped - low, inside


def crop_and_resize(images, boxes, size):
    """`tf.image.crop_and_resize(images, boxes, range(batch), size)`, bilinear, in gathers.

    The same boxes and sample positions as TensorFlow's op (one box per image,
    normalised coordinates, 0 outside the image), written with `tf.gather` so
    that it also compiles with XLA (`jit_compile=True`, GPUs, TPUs), which has
    no kernel for `CropAndResize`. The interpolation is separable: rows first,
    then columns.

    Args:
        images: [batch, H, W, C] float32 images.
        boxes: [batch, 4] boxes `(y1, x1, y2, x2)`.
        size: `(height, width)` of the output.

    Returns:
        [batch, height, width, C] float32 crops.
    """
    shape = tf.shape(images)
    top, bottom, y_weight, y_inside = _bilinear_sample_axis(
        shape[1], boxes[:, 0], boxes[:, 2], size[0])
    left, right, x_weight, x_inside = _bilinear_sample_axis(
        shape[2], boxes[:, 1], boxes[:, 3], size[1])
    upper = tf.gather(images, top, axis=1, batch_dims=1)       # [B, height, W, C]
    lower = tf.gather(images, bottom, axis=1, batch_dims=1)
    rows = upper + (lower - upper) * y_weight[:, :, None, None]
    west = tf.gather(rows, left, axis=2, batch_dims=1)         # [B, height, width, C]
    east = tf.gather(rows, right, axis=2, batch_dims=1)
    outputs = west + (east - west) * x_weight[:, None, :, None]
    inside = tf.cast(y_inside[:, :, None, None] & x_inside[:, None, :, None], outputs.dtype)
    return outputs * inside


@keras.saving.register_keras_serializable(package="keras_ebm")
class RandomResizedCrop(keras.layers.Layer):
    """Crops a random box of each image and resizes it to a fixed size.

    For each sample independently, a box is drawn whose area is a fraction
    `s ~ U(scale)` of the image area and whose aspect ratio (width / height)
    is `r`, with `log r ~ U(log ratio)`. The box sides are clipped to the
    image and its position is uniform over the valid positions. All boxes are
    then resized to `(height, width)` with bilinear interpolation, as one
    batched `tf.image.crop_and_resize` would (written in gathers so that it
    compiles with XLA: see `crop_and_resize`).

    In inference mode the whole image is resized to `(height, width)`
    (identity when the size already matches).

    Args:
        height: Integer, the height of the output images.
        width: Integer, the width of the output images.
        scale: Pair of floats in `(0, 1]`, the range of the area fraction of
            the crop. Defaults to `(0.08, 1.0)`.
        ratio: Pair of positive floats, the range of the aspect ratio
            (width / height) of the crop, sampled log-uniformly. Defaults to
            `(3/4, 4/3)`.
        seed: Integer, the seed of the random generator. Defaults to `None`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        `(batch, H, W, C)` or `(H, W, C)` float images.

    Output shape:
        `(batch, height, width, C)` or `(height, width, C)`.

    Example:

    >>> images = np.random.uniform(size=(4, 32, 32, 3)).astype("float32")
    >>> crop = RandomResizedCrop(24, 24, scale=(0.2, 1.0), seed=0)
    >>> crop(images, training=True).shape
    TensorShape([4, 24, 24, 3])

    Reference:
        - [Szegedy et al., 2015](https://arxiv.org/abs/1409.4842) (GoogLeNet's
          "Inception crop").
        - [Chen et al., 2020](https://arxiv.org/abs/2002.05709) (SimCLR).
    """

    def __init__(
        self,
        height,
        width,
        scale=(0.08, 1.0),
        ratio=(3.0 / 4.0, 4.0 / 3.0),
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.height = int(height)
        self.width = int(width)
        self.scale = _as_pair(scale, "scale")
        self.ratio = _as_pair(ratio, "ratio")
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(
                "`scale` must satisfy 0 < scale[0] <= scale[1] <= 1. "
                f"Received: scale={scale}"
            )
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(
                "`ratio` must satisfy 0 < ratio[0] <= ratio[1]. "
                f"Received: ratio={ratio}"
            )
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # The generator's state is saved with the weights, so a resumed run
        # draws the same augmentations as an uninterrupted one.
        keras_compat.track_variable(self, self.seed_generator.state)
        self.supports_masking = False

    def _random_boxes(self, batch_size, image_height, image_width):
        image_height = tf.cast(image_height, "float32")
        image_width = tf.cast(image_width, "float32")
        area_fraction = keras.random.uniform(
            (batch_size,), self.scale[0], self.scale[1], seed=self.seed_generator
        )
        log_ratio = keras.random.uniform(
            (batch_size,),
            math.log(self.ratio[0]),
            math.log(self.ratio[1]),
            seed=self.seed_generator,
        )
        aspect_ratio = tf.exp(log_ratio)
        area = area_fraction * image_height * image_width
        # NOTE: torchvision/SimCLR retry up to 10/100 times and fall back to a
        # centre crop; clipping the sides keeps one batched draw per sample.
        crop_width = tf.minimum(tf.sqrt(area * aspect_ratio), image_width)
        crop_height = tf.minimum(tf.sqrt(area / aspect_ratio), image_height)
        offset_y = keras.random.uniform(
            (batch_size,), seed=self.seed_generator
        ) * (image_height - crop_height)
        offset_x = keras.random.uniform(
            (batch_size,), seed=self.seed_generator
        ) * (image_width - crop_width)
        # crop_and_resize maps normalised 0 and 1 to the first and last pixel
        # centres, so a box of n pixels spans (n - 1) / (size - 1).
        y1 = offset_y / tf.maximum(image_height - 1.0, 1.0)
        x1 = offset_x / tf.maximum(image_width - 1.0, 1.0)
        y2 = (offset_y + crop_height - 1.0) / tf.maximum(image_height - 1.0, 1.0)
        x2 = (offset_x + crop_width - 1.0) / tf.maximum(image_width - 1.0, 1.0)
        return tf.stack([y1, x1, y2, x2], axis=-1)

    def call(self, inputs, training=None):
        inputs = tf.convert_to_tensor(inputs)
        unbatched = inputs.shape.rank == 3
        images = inputs[None] if unbatched else inputs
        input_dtype = images.dtype
        images = tf.cast(images, "float32")
        shape = tf.shape(images)
        if training:
            boxes = self._random_boxes(shape[0], shape[1], shape[2])
            outputs = crop_and_resize(images, boxes, (self.height, self.width))
        elif images.shape[1] == self.height and images.shape[2] == self.width:
            outputs = images
        else:
            outputs = tf.image.resize(
                images, (self.height, self.width), method="bilinear"
            )
        outputs = tf.cast(outputs, input_dtype)
        return outputs[0] if unbatched else outputs

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        return input_shape[:-3] + (self.height, self.width, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "height": self.height,
                "width": self.width,
                "scale": self.scale,
                "ratio": self.ratio,
                "seed": self.seed,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_ebm")
class RandomApply(keras.layers.Layer):
    """Applies a layer to each sample independently with a probability.

    The wrapped layer is computed on the whole batch (in training mode); then
    each sample keeps the layer's output with probability `rate` and its
    input otherwise. The wrapped layer must preserve the input shape. In
    inference mode the inputs are returned unchanged.

    The random-generator states, its own and the wrapped layer's, are
    weights: checkpoints and `.keras` files carry them, so a resumed run
    draws the augmentations an uninterrupted one draws. (Keras's random
    layers keep theirs outside their weights; `make_augmenter` wraps each of
    them, with `rate=1.0` where the layer draws its own per-sample coin.)

    Args:
        layer: A `keras.layers.Layer` whose output has the input's shape.
        rate: Float in `[0, 1]`, the probability of applying `layer` to a
            sample.
        seed: Integer, the seed of the random generator. Defaults to `None`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Example:

    >>> images = np.random.uniform(size=(8, 32, 32, 3)).astype("float32")
    >>> jitter = keras.layers.RandomColorJitter(
    ...     value_range=(0, 1), brightness_factor=0.8, contrast_factor=0.8)
    >>> RandomApply(jitter, rate=0.8, seed=0)(images, training=True).shape
    TensorShape([8, 32, 32, 3])

    Reference:
        - [Chen et al., 2020](https://arxiv.org/abs/2002.05709) (SimCLR's
          `random_apply`).
    """

    def __init__(self, layer, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"`rate` must be in [0, 1]. Received: rate={rate}")
        self.layer = layer
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # The generator's state is saved with the weights, so a resumed run
        # draws the same augmentations as an uninterrupted one.
        keras_compat.track_variable(self, self.seed_generator.state)
        # ... and so is the wrapped layer's (Keras's random layers keep theirs
        # outside their weights).
        _track_seed_generators(self, layer, tracked=[self.seed_generator.state])

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        outputs = self.layer(inputs, training=training)
        if self.rate == 1.0:
            return outputs
        inputs = tf.convert_to_tensor(inputs)
        unbatched = inputs.shape.rank == 3
        batch_size = 1 if unbatched else tf.shape(inputs)[0]
        apply = keras.random.uniform((batch_size,), seed=self.seed_generator)
        apply = apply < self.rate
        if unbatched:
            return tf.where(apply[0], outputs, inputs)
        apply = tf.reshape(apply, [-1] + [1] * (inputs.shape.rank - 1))
        return tf.where(apply, outputs, tf.cast(inputs, outputs.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "layer": keras.saving.serialize_keras_object(self.layer),
                "rate": self.rate,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_ebm")
class ClipValues(keras.layers.Layer):
    """Clips the inputs to `[minval, maxval]`.

    Args:
        minval: Float, the lower bound. Defaults to `0.0`.
        maxval: Float, the upper bound. Defaults to `1.0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.
    """

    def __init__(self, minval=0.0, maxval=1.0, **kwargs):
        super().__init__(**kwargs)
        self.minval = float(minval)
        self.maxval = float(maxval)

    def call(self, inputs):
        return tf.clip_by_value(inputs, self.minval, self.maxval)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"minval": self.minval, "maxval": self.maxval})
        return config


def _track_seed_generators(owner, layer, tracked=()):
    """Registers the state of every SeedGenerator of `layer` (and sublayers) as a weight of `owner`.

    `tracked`: variables `owner` already holds as its own weights (not added twice).
    """
    seen = {id(v) for v in tracked}
    for sublayer in keras_compat.flatten_layers(layer):
        for value in list(vars(sublayer).values()):
            if isinstance(value, keras.random.SeedGenerator) and id(value.state) not in seen:
                seen.add(id(value.state))
                keras_compat.track_variable(owner, value.state)


def _seed(seed, offset):
    return None if seed is None else int(seed) + offset


def make_augmenter(
    image_shape,
    strength=1.0,
    crop_scale=(0.2, 1.0),
    flip=True,
    jitter_probability=0.8,
    grayscale_probability=0.2,
    blur_probability=0.5,
    seed=None,
    name="augmenter",
):
    """Builds SimCLR's stochastic data augmentation as a `keras.Sequential`.

    The pipeline is: `RandomResizedCrop` back to the input size, a random
    horizontal flip, colour jitter applied with probability
    `jitter_probability`, random grayscale with probability
    `grayscale_probability`, Gaussian blur with probability
    `blur_probability`, and a final clip to `[0, 1]`. The colour jitter of
    strength `s` changes brightness by up to `0.8 s`, contrast and saturation
    by factors in `[1 - 0.8 s, 1 + 0.8 s]` and hue by up to `0.2 s`.

    For 1-channel images only brightness and contrast are jittered and the
    grayscale step is skipped. A probability or strength of 0 drops the layer.
    The blur kernel is about 10% of the image side (odd, at least 3).

    Args:
        image_shape: Tuple `(height, width, channels)` of the input images.
        strength: Float, the colour jitter strength `s`. Defaults to `1.0`.
        crop_scale: Pair of floats, the area fraction range of the random
            crop. Defaults to `(0.2, 1.0)`; SimCLR uses `(0.08, 1.0)` on
            ImageNet, and small images keep more content with larger crops.
        flip: Boolean, whether to flip horizontally at random. Defaults to
            `True`.
        jitter_probability: Float, the probability of colour jitter. Defaults
            to `0.8`.
        grayscale_probability: Float, the probability of converting to
            grayscale. Defaults to `0.2`.
        blur_probability: Float, the probability of Gaussian blur. Defaults to
            `0.5`.
        seed: Integer, the base seed; each layer gets `seed + i`. Defaults to
            `None`.
        name: String, the name of the model. Defaults to `"augmenter"`.

    Returns:
        A `keras.Sequential` that maps float images in `[0, 1]` of shape
        `(batch,) + image_shape` to augmented images of the same shape.

    Example:

    >>> augmenter = make_augmenter((32, 32, 3), seed=0)
    >>> images = np.random.uniform(size=(8, 32, 32, 3)).astype("float32")
    >>> augmenter(images, training=True).shape
    TensorShape([8, 32, 32, 3])

    Reference:
        - [Chen et al., 2020](https://arxiv.org/abs/2002.05709), appendix A.
    """
    height, width, channels = (int(d) for d in image_shape)
    strength = float(strength)
    layers = [keras.Input((height, width, channels))]
    layers.append(
        RandomResizedCrop(
            height, width, scale=crop_scale, seed=_seed(seed, 0), name="crop"
        )
    )
    if flip:
        layers.append(
            RandomApply(keras.layers.RandomFlip("horizontal", seed=_seed(seed, 1)), 1.0,
                        name="flip")
        )
    if jitter_probability > 0 and strength > 0:
        # NOTE: Keras's RandomColorJitter applies the four changes in a fixed
        # order; SimCLR shuffles the order per image. Brightness is additive
        # (SimCLR v1) and the factors are clipped to Keras's allowed ranges.
        amount = min(0.8 * strength, 1.0)
        jitter_kwargs = {
            "brightness_factor": amount,
            "contrast_factor": amount,
        }
        if channels >= 3:
            # Keras samples u and multiplies saturation by u / (1 - u); map
            # the factor range [1 - amount, 1 + amount] to u.
            low, high = max(1.0 - amount, 0.0), 1.0 + amount
            jitter_kwargs["saturation_factor"] = (
                low / (1.0 + low),
                high / (1.0 + high),
            )
            # Keras shifts hue by +-u / 2 with u ~ U(0, factor).
            jitter_kwargs["hue_factor"] = min(0.4 * strength, 1.0)
        jitter = keras.layers.RandomColorJitter(
            value_range=(0, 1), seed=_seed(seed, 2), name="color_jitter",
            **jitter_kwargs,
        )
        layers.append(
            RandomApply(
                jitter,
                jitter_probability,
                seed=_seed(seed, 3),
                name="random_color_jitter",
            )
        )
    if grayscale_probability > 0 and channels >= 3:
        # RandomGrayscale draws its own per-sample coin with probability factor.
        layers.append(
            RandomApply(keras.layers.RandomGrayscale(
                factor=grayscale_probability, seed=_seed(seed, 4)), 1.0, name="grayscale")
        )
    if blur_probability > 0:
        kernel_size = max(3, int(0.1 * min(height, width)))
        kernel_size += 1 - kernel_size % 2
        # NOTE: Keras draws one sigma per batch (SimCLR one per image); the
        # per-sample coin with probability blur_probability is the layer's own.
        layers.append(
            RandomApply(keras.layers.RandomGaussianBlur(
                factor=(blur_probability, blur_probability),
                kernel_size=kernel_size,
                sigma=(0.1, 2.0),
                value_range=(0, 1),
                seed=_seed(seed, 5),
            ), 1.0, name="blur")
        )
    layers.append(ClipValues(0.0, 1.0, name="clip"))
    return keras.Sequential(layers, name=name)
