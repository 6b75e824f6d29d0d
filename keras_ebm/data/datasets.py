"""Image datasets: the embedded digits, TFDS datasets and image folders.

`load(spec)` returns an `ImageDataset` of float32 images in `[0, 1]` with
shape `[N, H, W, C]` and int64 labels, whatever the source:

- `"digits"`: scikit-learn's 8x8 digits (embedded, works offline); split
  70/30 stratified with seed 0, i.e. 1257 train and 540 test images.
- `"tfds:NAME"`: a TensorFlow Datasets dataset, e.g. `"tfds:cifar10"` or
  `"tfds:mnist:3.*.*"`.
- `"folder:PATH"`: one sub-folder of PATH per class, holding png, jpg, jpeg,
  bmp or gif images.

Every bad input raises `DataError` with a one-line message naming the
dataset spec or the offending file.
"""

import dataclasses
import os
import re

import numpy as np
import tensorflow as tf

_ACCEPTED_SPECS = (
    "'digits', 'tfds:NAME' (e.g. 'tfds:cifar10', 'tfds:mnist:3.*.*') "
    "or 'folder:PATH' (one sub-folder of images per class)"
)
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


class DataError(ValueError):
    """A dataset cannot be loaded; the message is one line naming the cause."""


@dataclasses.dataclass
class ImageDataset:
    """Train and test images with labels.

    Attributes:
        name: String, the dataset spec it was loaded from.
        x_train: float32 array `[N, H, W, C]` with values in `[0, 1]`.
        y_train: int64 array `[N]` of class indices.
        x_test: float32 array `[M, H, W, C]` with values in `[0, 1]`.
        y_test: int64 array `[M]` of class indices.
        num_classes: Integer, the number of classes.
        class_names: List of strings, or `None` when unknown.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list | None = None

    @property
    def image_shape(self):
        """The `(height, width, channels)` of the images."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @classmethod
    def from_arrays(
        cls,
        name,
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=None,
        class_names=None,
    ):
        """Validates arrays and builds an `ImageDataset`.

        Args:
            name: String, the name of the dataset (used in error messages).
            x_train, x_test: Arrays `[N, H, W, C]` with finite values in
                `[0, 1]`; converted to float32.
            y_train, y_test: Integer arrays `[N]`; converted to int64.
            num_classes: Integer; defaults to `len(class_names)` or to one
                more than the largest label.
            class_names: Optional list of strings, one per class.

        Returns:
            An `ImageDataset`.

        Raises:
            DataError: if an array is empty, not 4-D, not finite, outside
                `[0, 1]`, or if images and labels differ in length or shape.
        """
        arrays = {}
        for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            x = np.asarray(x)
            y = np.asarray(y)
            if x.ndim != 4:
                raise DataError(
                    f"{name}: x_{split} must be 4-D [N, H, W, C], "
                    f"got shape {x.shape}"
                )
            if x.shape[0] == 0:
                raise DataError(f"{name}: x_{split} is empty")
            if not np.issubdtype(x.dtype, np.number) and x.dtype != bool:
                raise DataError(f"{name}: x_{split} has non-numeric dtype {x.dtype}")
            x = x.astype(np.float32, copy=False)
            if not np.all(np.isfinite(x)):
                raise DataError(f"{name}: x_{split} contains NaN or infinite values")
            low, high = float(x.min()), float(x.max())
            if low < 0.0 or high > 1.0:
                raise DataError(
                    f"{name}: x_{split} values must be in [0, 1], "
                    f"got [{low:g}, {high:g}]"
                )
            if y.ndim != 1 or y.shape[0] != x.shape[0]:
                raise DataError(
                    f"{name}: y_{split} must have shape [{x.shape[0]}] to match "
                    f"x_{split}, got {y.shape}"
                )
            if not np.issubdtype(y.dtype, np.integer):
                raise DataError(f"{name}: y_{split} must hold integer labels")
            if y.min() < 0:
                raise DataError(f"{name}: y_{split} has negative labels")
            arrays[split] = (x, y.astype(np.int64, copy=False))
        if arrays["train"][0].shape[1:] != arrays["test"][0].shape[1:]:
            raise DataError(
                f"{name}: train images {arrays['train'][0].shape[1:]} and test "
                f"images {arrays['test'][0].shape[1:]} differ in shape"
            )
        max_label = int(max(arrays["train"][1].max(), arrays["test"][1].max()))
        if num_classes is None:
            num_classes = len(class_names) if class_names else max_label + 1
        if max_label >= num_classes:
            raise DataError(
                f"{name}: label {max_label} out of range for {num_classes} classes"
            )
        return cls(
            name=name,
            x_train=arrays["train"][0],
            y_train=arrays["train"][1],
            x_test=arrays["test"][0],
            y_test=arrays["test"][1],
            num_classes=int(num_classes),
            class_names=list(class_names) if class_names is not None else None,
        )

    def train_dataset(
        self,
        batch_size,
        shuffle=True,
        seed=0,
        with_labels=False,
        with_index=False,
        drop_remainder=True,
        repeat=False,
    ):
        """Returns the train split as a batched, prefetched `tf.data.Dataset`.

        The dataset does its own shuffling (`shuffle` here), so pass
        `shuffle=False` to `Model.fit`: Keras's `fit` defaults to
        `shuffle=True`, cannot shuffle a `tf.data.Dataset`, and warns
        "`shuffle=True` was passed, but will be ignored since the data `x` was
        provided as a tf.data.Dataset" otherwise. The warning is harmless (the
        data is shuffled here either way) but can only be silenced at the
        `fit` call.

        Args:
            batch_size: Integer, the batch size.
            shuffle: Boolean, whether to shuffle (reshuffled each epoch).
                Defaults to `True`.
            seed: Integer, the shuffle seed. Defaults to `0`.
            with_labels: Boolean, whether to yield `(images, labels)`.
                Defaults to `False`.
            with_index: Boolean, whether to yield `(images, indices)`, the
                int64 index of each image in `x_train` (for memory banks).
                Defaults to `False`. Cannot be combined with `with_labels`.
            drop_remainder: Boolean, whether to drop the last partial batch.
                Defaults to `True`.
            repeat: Boolean, whether to repeat forever. Defaults to `False`.

        Returns:
            A `tf.data.Dataset` of images, `(images, labels)` or
            `(images, indices)`.

        Raises:
            DataError: if `batch_size` exceeds the number of train images.

        Example:

        >>> data = load("digits")
        >>> model.fit(data.train_dataset(256), epochs=10, shuffle=False)
        """
        num_examples = len(self.x_train)
        if batch_size < 1 or batch_size > num_examples:
            raise DataError(
                f"{self.name}: batch size {batch_size} must be between 1 and the "
                f"number of train examples ({num_examples})"
            )
        if with_labels and with_index:
            raise ValueError("Pass at most one of with_labels and with_index.")
        if with_labels:
            dataset = tf.data.Dataset.from_tensor_slices((self.x_train, self.y_train))
        elif with_index:
            indices = np.arange(num_examples, dtype=np.int64)
            dataset = tf.data.Dataset.from_tensor_slices((self.x_train, indices))
        else:
            dataset = tf.data.Dataset.from_tensor_slices(self.x_train)
        if shuffle:
            dataset = dataset.shuffle(
                num_examples, seed=seed, reshuffle_each_iteration=True
            )
        if repeat:
            dataset = dataset.repeat()
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        return dataset.prefetch(tf.data.AUTOTUNE)


def _split(x, y, seed=0):
    """70/30 split, stratified when every class has at least 2 examples."""
    from sklearn.model_selection import train_test_split

    _, counts = np.unique(y, return_counts=True)
    stratify = y if counts.min() >= 2 and len(counts) > 1 else None
    try:
        return train_test_split(
            x, y, test_size=0.3, random_state=seed, stratify=stratify
        )
    except ValueError:
        # Too few examples per class for a stratified test split.
        return train_test_split(x, y, test_size=0.3, random_state=seed)


def _load_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=0, stratify=y
    )
    return ImageDataset.from_arrays(
        "digits",
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=10,
        class_names=[str(i) for i in range(10)],
    )


def _to_numpy(dataset):
    images, labels = [], []
    for image, label in dataset.as_numpy_iterator():
        images.append(image)
        labels.append(label)
    return images, labels


def _images_to_float(images, spec, size):
    """Stacks HWC images (uint8 or float) into float32 [N, H, W, C] in [0, 1]."""
    images = [image[..., None] if image.ndim == 2 else image for image in images]
    converted = []
    for image in images:
        if image.dtype == np.uint8:
            image = image.astype(np.float32) / 255.0
        elif np.issubdtype(image.dtype, np.integer):
            image = image.astype(np.float32) / float(np.iinfo(image.dtype).max)
        converted.append(image.astype(np.float32, copy=False))
    if size is not None:
        converted = [
            image if image.shape[:2] == size
            else tf.image.resize(image, size, antialias=True).numpy()
            for image in converted
        ]
    first = converted[0].shape
    for index, image in enumerate(converted):
        if image.shape != first:
            raise DataError(
                f"{spec}: image {index} has shape {image.shape}, unlike "
                f"{first} of image 0; pass --image_size to resize all images"
            )
    return np.clip(np.stack(converted), 0.0, 1.0)


def _load_tfds(spec, name, data_dir, size):
    import tensorflow_datasets as tfds

    if not name:
        raise DataError(f"{spec}: missing dataset name, e.g. 'tfds:cifar10'")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"{spec}: no such TFDS dataset") from None
    except Exception as error:  # e.g. a bad version or config
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{spec}: cannot build the TFDS dataset: {message}") from None

    def load_split(split):
        return tfds.load(name, split=split, as_supervised=True, data_dir=data_dir)

    try:
        train = load_split("train")
    except Exception as error:
        cause = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise DataError(
            f"{spec}: cannot be downloaded or prepared ({type(error).__name__}: "
            f"{cause}); prepare it under --data_dir with tfds build or "
            "tfds.load on a machine with network access"
        ) from None
    # info.splits is empty when the data is mocked; then try the splits.
    known_splits = set(builder.info.splits.keys())
    test = None
    for split in ("test", "validation"):
        if known_splits and split not in known_splits:
            continue
        try:
            test = load_split(split)
            break
        except Exception:
            continue
    x_train, y_train = _to_numpy(train)
    if not x_train:
        raise DataError(f"{spec}: the train split is empty")
    x_train = _images_to_float(x_train, spec, size)
    y_train = np.asarray(y_train, dtype=np.int64)
    if test is not None:
        x_test, y_test = _to_numpy(test)
        x_test = _images_to_float(x_test, spec, size)
        y_test = np.asarray(y_test, dtype=np.int64)
    else:
        x_train, x_test, y_train, y_test = _split(x_train, y_train)
    num_classes, class_names = None, None
    features = builder.info.features
    label = features["label"] if features and "label" in features else None
    if label is not None and getattr(label, "num_classes", None):
        num_classes = int(label.num_classes)
        class_names = list(label.names)
    return ImageDataset.from_arrays(
        spec, x_train, y_train, x_test, y_test,
        num_classes=num_classes, class_names=class_names,
    )


def _decode_file(path):
    try:
        with open(path, "rb") as f:
            contents = f.read()
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror})") from None
    if not contents:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        image = tf.io.decode_image(contents, expand_animations=False)
        image = image.numpy()
    except (tf.errors.OpError, ValueError) as error:
        message = getattr(error, "message", None) or str(error)
        message = message.splitlines()[0] if message else "decode failed"
        # Drop TensorFlow's op decorations: "{{function_node ...}} Invalid PNG ... [Op:X]".
        message = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:\w+\]", "", message).strip()[:200]
        raise DataError(f"{path}: corrupt or unsupported image ({message})") from None
    if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise DataError(f"{path}: decoded to an empty image {image.shape}")
    return image


def _to_channels(image, channels):
    """Converts an HWC uint8 image with 1-4 channels to 1 or 3 channels."""
    if channels == 1:
        return image[..., :1]
    if image.shape[-1] in (1, 2):  # grey or grey + alpha
        return np.repeat(image[..., :1], 3, axis=-1)
    return image[..., :3]  # RGB or RGBA: drop alpha


def _load_folder(spec, path, image_size):
    if not path:
        raise DataError(f"{spec}: missing folder path, e.g. 'folder:/data/pets'")
    if not os.path.isdir(path):
        raise DataError(f"{spec}: {path} is not a folder")
    class_names = sorted(
        entry for entry in os.listdir(path)
        if os.path.isdir(os.path.join(path, entry)) and not entry.startswith(".")
    )
    if not class_names:
        raise DataError(
            f"{spec}: {path} has no class sub-folders (expected one folder of "
            "images per class)"
        )
    files, labels = [], []
    for label, class_name in enumerate(class_names):
        class_dir = os.path.join(path, class_name)
        for filename in sorted(os.listdir(class_dir)):
            if filename.lower().endswith(_IMAGE_EXTENSIONS):
                files.append(os.path.join(class_dir, filename))
                labels.append(label)
    if not files:
        raise DataError(
            f"{spec}: no images ({', '.join(_IMAGE_EXTENSIONS)}) in the class "
            f"folders of {path}"
        )
    images = [_decode_file(file) for file in files]
    channels = 3 if any(image.shape[-1] >= 3 for image in images) else 1
    images = [_to_channels(image, channels) for image in images]
    if image_size is None:
        first_size = images[0].shape[:2]
        for file, image in zip(files, images):
            if image.shape[:2] != first_size:
                raise DataError(
                    f"{file}: size {image.shape[0]}x{image.shape[1]} differs "
                    f"from {first_size[0]}x{first_size[1]} of {files[0]}; pass "
                    "--image_size to resize all images"
                )
        x = np.stack(images).astype(np.float32) / 255.0
    else:
        x = np.stack(
            [
                tf.image.resize(
                    tf.cast(image, tf.float32) / 255.0, image_size, antialias=True
                ).numpy()
                for image in images
            ]
        )
        x = np.clip(x, 0.0, 1.0)
    y = np.asarray(labels, dtype=np.int64)
    if len(y) < 2:
        raise DataError(f"{spec}: need at least 2 images to split, found {len(y)}")
    x_train, x_test, y_train, y_test = _split(x, y)
    return ImageDataset.from_arrays(
        spec, x_train, y_train, x_test, y_test,
        num_classes=len(class_names), class_names=class_names,
    )


def _image_size_pair(image_size, spec):
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)):
        size = (int(image_size), int(image_size))
    else:
        try:
            size = tuple(int(s) for s in image_size)
        except (TypeError, ValueError):
            size = ()
    if len(size) != 2 or min(size) < 1:
        raise DataError(
            f"{spec}: image_size must be a positive int or (height, width), "
            f"got {image_size!r}"
        )
    return size


def _resize(images, size):
    if images.shape[1:3] == size:
        return images
    resized = []
    for start in range(0, len(images), 1024):
        resized.append(
            tf.image.resize(images[start:start + 1024], size, antialias=True).numpy()
        )
    return np.clip(np.concatenate(resized), 0.0, 1.0).astype(np.float32)


def load(spec, data_dir=None, image_size=None, max_train_examples=None):
    """Loads an image dataset from a spec string.

    Args:
        spec: String, one of `"digits"`, `"tfds:NAME"` (NAME may carry a
            config or version, e.g. `"tfds:mnist:3.*.*"`) or `"folder:PATH"`.
        data_dir: String, the TFDS data directory. Defaults to TFDS's own.
        image_size: Integer or `(height, width)`; resizes every image
            (bilinear, antialiased). Required for folders of mixed sizes.
            Defaults to `None` (keep the size).
        max_train_examples: Integer; keeps only the first examples of the
            train split. Defaults to `None` (keep all).

    Returns:
        An `ImageDataset`.

    Raises:
        DataError: with a one-line message naming the spec or the file.

    Example:

    >>> data = load("digits")
    >>> data.x_train.shape, data.x_test.shape
    ((1257, 8, 8, 1), (540, 8, 8, 1))
    """
    if not isinstance(spec, str):
        raise DataError(f"{spec!r}: dataset spec must be a string: {_ACCEPTED_SPECS}")
    size = _image_size_pair(image_size, spec)
    kind, _, rest = spec.partition(":")
    if spec == "digits":
        data = _load_digits()
    elif kind == "tfds":
        data = _load_tfds(spec, rest, data_dir, size)
    elif kind == "folder":
        data = _load_folder(spec, rest, size)
    else:
        raise DataError(f"{spec!r}: unknown dataset; use {_ACCEPTED_SPECS}")
    if max_train_examples is not None:
        if max_train_examples < 1:
            raise DataError(
                f"{spec}: max_train_examples must be positive, got "
                f"{max_train_examples}"
            )
        data.x_train = data.x_train[:max_train_examples]
        data.y_train = data.y_train[:max_train_examples]
    if size is not None:
        data.x_train = _resize(data.x_train, size)
        data.x_test = _resize(data.x_test, size)
    return data


def epoch_ordered_indices(num_examples, batch_size, seed=0, initial_epoch=0, epochs=None,
                          steps_per_epoch=None):
    """Batches of example indices whose order depends only on (seed, epoch).

    Epoch e is a stateless shuffle of `range(num_examples)` with the seed
    (seed, e), cut into `steps_per_epoch` full batches. A run resumed at epoch
    k therefore sees exactly the batches an uninterrupted run sees from epoch
    k on, whatever happened before: the order is not a random state that a
    checkpoint would have to carry.

    Args:
        num_examples: int, size of the training set.
        batch_size: int, indices per batch.
        seed: int, the shuffle seed. Defaults to 0.
        initial_epoch: int, first epoch produced. Defaults to 0.
        epochs: int or None, end epoch (exclusive); None repeats forever.
        steps_per_epoch: int or None, batches per epoch; None (and at most)
            `num_examples // batch_size`.

    Returns:
        A `tf.data.Dataset` of int64 index vectors of shape [batch_size].

    Example:

    >>> indices = epoch_ordered_indices(len(x), 256, seed=0, initial_epoch=5, epochs=100)
    >>> batches = indices.map(lambda i: tf.gather(x, i))
    """
    full_batches = num_examples // batch_size
    if batch_size < 1 or full_batches < 1:
        raise ValueError(f"batch size {batch_size} must be between 1 and the number of "
                         f"examples ({num_examples})")
    steps = full_batches if steps_per_epoch is None else min(int(steps_per_epoch), full_batches)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num_examples, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        return (tf.data.Dataset.from_tensor_slices(order)
                .batch(batch_size, drop_remainder=True).take(steps))

    stop = 2**62 if epochs is None else int(epochs)
    return tf.data.Dataset.range(min(int(initial_epoch), stop), stop).flat_map(one_epoch)
