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

Image folders are treated as untrusted input: only regular files are read
(dotfiles such as macOS's `._x.png`, FIFOs, devices, sockets and folders named
like images are skipped), each file's size and its width x height are checked
from the header before anything is decoded (`max_image_pixels`), and
`max_train_examples` is applied before decoding, so a large folder or split
costs only what is kept.
"""

import dataclasses
import os
import re
import stat
import struct

import numpy as np
import tensorflow as tf

_ACCEPTED_SPECS = (
    "'digits', 'tfds:NAME' (e.g. 'tfds:cifar10', 'tfds:mnist:3.*.*') "
    "or 'folder:PATH' (one sub-folder of images per class)"
)
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

# The largest image (width x height, summed over the frames of an animation)
# that `load` decodes by default: 4096 x 4096 = 16,777,216 pixels, 64 MiB as
# uint8 RGBA and 256 MiB as the float32 RGBA it becomes. That is far above the
# sizes one trains these models on, yet low enough that a decompression bomb
# (a 20000 x 20000 PNG of zeros is ~400 KB on disk and 1.6 GB as float32)
# cannot exhaust memory. Raise it with `load(..., max_image_pixels=N)` (or
# `--max_image_pixels=N`), or pass `None` to turn the check off.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
_KNOWN_FORMATS = "PNG, JPEG, GIF, BMP or WebP"
_MAX_HEADER_STEPS = 1 << 16  # JPEG segments, GIF blocks or WebP chunks walked


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

    streaming = False

    @property
    def image_shape(self):
        """The `(height, width, channels)` of the images."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_examples(self):
        """The number of training images."""
        return len(self.x_train)

    @property
    def num_test_examples(self):
        """The number of test images."""
        return len(self.x_test)

    def standin(self):
        """The train images (what `keras_ebm.presets.build` reads)."""
        return self.x_train

    def train_batches(self, batch_size, seed=0, initial_epoch=0, epochs=None,
                      steps_per_epoch=None, with_index=False, initial_step=0,
                      input_context=None):
        """Training batches whose order depends only on (seed, epoch).

        The same call as `StreamingImages.train_batches`, over `x_train`; see
        `keras_ebm.training.epoch_ordered_dataset`.
        """
        shard = ((input_context.input_pipeline_id, input_context.num_input_pipelines)
                 if input_context is not None else (0, 1))
        return epoch_ordered_batches(
            self.x_train, batch_size // shard[1], seed=seed, initial_epoch=initial_epoch,
            epochs=epochs, steps_per_epoch=steps_per_epoch, with_index=with_index,
            initial_step=initial_step, num_shards=shard[1], shard_index=shard[0])

    def labelled(self, split, batch_size=256, max_examples=None):
        """`(images, labels)` batches of `split` ("train" or "test"), in order."""
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        if max_examples is not None:
            x, y = x[:max_examples], y[:max_examples]
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)

    def labels(self, split, max_examples=None):
        """The labels of `split` ("train" or "test"), in order."""
        y = self.y_train if split == "train" else self.y_test
        return y if max_examples is None else y[:max_examples]

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


def _split_indices(y, seed=0):
    """Train and test indices of a 70/30 split of the labels `y`.

    Stratified when every class has at least 2 examples. The split depends
    only on the labels and the seed, never on the images, so a folder can be
    split into file lists before anything is decoded.
    """
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(y))
    _, counts = np.unique(y, return_counts=True)
    stratify = y if counts.min() >= 2 and len(counts) > 1 else None
    try:
        return train_test_split(
            indices, test_size=0.3, random_state=seed, stratify=stratify
        )
    except ValueError:
        # Too few examples per class for a stratified test split.
        return train_test_split(indices, test_size=0.3, random_state=seed)


def _split(x, y, seed=0):
    """70/30 split of arrays, stratified when every class has 2+ examples."""
    train, test = _split_indices(y, seed)
    return x[train], x[test], y[train], y[test]


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


def tfds_builder(spec, name, data_dir):
    """The TFDS builder of `name`, or a one-line `DataError` naming `spec`."""
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
    return builder


def _load_tfds(spec, name, data_dir, size, max_train_examples=None):
    import tensorflow_datasets as tfds

    builder = tfds_builder(spec, name, data_dir)

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
    if test is not None and max_train_examples is not None:
        # Stop reading, and decoding, after the examples kept. (A `train[:N]`
        # split would pick other examples: TFDS interleaves its shards.)
        # Without a test split the whole train split is needed to cut one.
        train = train.take(max_train_examples)
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


class _BadHeader(Exception):
    """The start of a file is not an image header that can be read."""


def _read_exact(f, count):
    data = f.read(count)
    if len(data) != count:
        raise _BadHeader("truncated")
    return data


def _skip_gif_sub_blocks(f, steps):
    """Skips data sub-blocks up to the 0 terminator; returns the steps left."""
    while steps > 0:
        steps -= 1
        (length,) = _read_exact(f, 1)
        if length == 0:
            return steps
        f.seek(length, os.SEEK_CUR)
    raise _BadHeader("too many blocks")


def _gif_size(f, head):
    """Canvas size and the pixels giflib allocates: every frame is decoded."""
    width, height, flags = struct.unpack("<HHB", head[6:11])
    f.seek(13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 13))
    frames, frame_pixels, steps = 0, 0, _MAX_HEADER_STEPS * 16
    try:
        while steps > 0:
            steps -= 1
            block = f.read(1)
            if block == b",":  # image descriptor
                _, _, w, h, flags = struct.unpack("<HHHHB", _read_exact(f, 9))
                frames += 1
                frame_pixels += w * h
                if flags & 0x80:  # local color table
                    f.seek(3 << ((flags & 7) + 1), os.SEEK_CUR)
                _read_exact(f, 1)  # LZW minimum code size
                steps = _skip_gif_sub_blocks(f, steps)
            elif block == b"!":  # extension: label, then sub-blocks
                _read_exact(f, 1)
                steps = _skip_gif_sub_blocks(f, steps)
            else:  # trailer, end of file, or bytes where giflib stops too
                break
        else:
            raise _BadHeader("too many blocks")
    except _BadHeader as bad:
        if str(bad) != "truncated":
            raise
    return width, height, max(width * height, frame_pixels), max(frames, 1)


def _jpeg_size(f):
    """Width and height from the frame header (SOFn), walking the segments."""
    f.seek(2)
    for _ in range(_MAX_HEADER_STEPS):
        if _read_exact(f, 1) != b"\xff":
            raise _BadHeader("no marker where a segment should start")
        marker = 0xFF
        while marker == 0xFF:  # fill bytes
            (marker,) = _read_exact(f, 1)
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            continue  # TEM, RSTn, SOI: markers without a length
        if marker in (0xD9, 0xDA):  # EOI, SOS
            raise _BadHeader("no frame header before the image data")
        (length,) = struct.unpack(">H", _read_exact(f, 2))
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if length < 8:
                raise _BadHeader(f"frame header of {length} bytes")
            _, height, width = struct.unpack(">BHH", _read_exact(f, 5))
            return width, height
        if length < 2:
            raise _BadHeader(f"segment of {length} bytes")
        f.seek(length - 2, os.SEEK_CUR)
    raise _BadHeader("too many segments before the frame header")


def _webp_size(f, head):
    """Canvas size, and the pixels of all frames of an animation."""
    chunk = head[12:16]
    if chunk == b"VP8X":
        flags = head[20]
        width = 1 + int.from_bytes(head[24:27], "little")
        height = 1 + int.from_bytes(head[27:30], "little")
        frames = 1
        if flags & 0x02:  # animation: count the ANMF chunks
            frames = 0
            f.seek(30)
            for _ in range(_MAX_HEADER_STEPS):
                header = f.read(8)
                if len(header) < 8:
                    break
                size = int.from_bytes(header[4:], "little")
                frames += header[:4] == b"ANMF"
                f.seek(size + (size & 1), os.SEEK_CUR)
            else:
                raise _BadHeader("too many chunks")
            frames = max(frames, 1)
        return width, height, width * height * frames, frames
    if chunk == b"VP8 ":
        if head[23:26] != b"\x9d\x01\x2a":
            raise _BadHeader("no VP8 start code")
        width, height = struct.unpack("<HH", head[26:30])
        width, height = width & 0x3FFF, height & 0x3FFF
    elif chunk == b"VP8L":
        if head[20] != 0x2F:
            raise _BadHeader("no VP8L signature")
        bits = int.from_bytes(head[21:25], "little")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    else:
        raise _BadHeader(f"unknown first chunk {chunk!r}")
    return width, height, width * height, 1


def _read_image_header(f):
    """Reads `(format, width, height, pixels, frames)` from an image's header.

    Recognises the formats `tf.io.decode_image` decodes, by the same magic
    bytes, and reads no more than the header: the first 32 bytes, and for
    JPEG, GIF and animated WebP the segment, block or chunk headers.
    `pixels` is what decoding allocates: width x height, or for animations
    the total over the frames (TensorFlow's GIF decoder decodes every frame
    even when it returns only the first).

    Raises:
        _BadHeader: with the reason, when the header cannot be read.
    """
    head = f.read(32)
    if head.startswith(b"\xff\xd8\xff"):
        fmt = "JPEG"
    elif head.startswith(b"\x89PNG\r\n\x1a\n"):
        fmt = "PNG"
    elif head.startswith(b"GIF8"):
        fmt = "GIF"
    elif head.startswith(b"BM"):
        fmt = "BMP"
    elif head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        fmt = "WebP"
    else:
        raise _BadHeader(f"not a {_KNOWN_FORMATS} image")
    minimum = {"JPEG": 3, "PNG": 24, "GIF": 13, "BMP": 26, "WebP": 30}[fmt]
    try:
        if len(head) < minimum:
            raise _BadHeader("truncated")
        if fmt == "PNG":
            if head[12:16] != b"IHDR":
                raise _BadHeader("no IHDR chunk")
            width, height = struct.unpack(">II", head[16:24])
            return fmt, width, height, width * height, 1
        if fmt == "JPEG":
            width, height = _jpeg_size(f)
            return fmt, width, height, width * height, 1
        if fmt == "GIF":
            return (fmt,) + _gif_size(f, head)
        if fmt == "BMP":
            # Read as TensorFlow's decoder does: int32 width and height, a
            # negative height meaning rows stored top-down.
            width, height = (abs(v) for v in struct.unpack("<ii", head[18:26]))
            return fmt, width, height, width * height, 1
        return (fmt,) + _webp_size(f, head)
    except _BadHeader as bad:
        raise _BadHeader(f"corrupt {fmt} header ({bad})") from None


def _max_file_bytes(max_image_pixels):
    """The largest file read for a pixel cap: 8 bytes a pixel (16-bit RGBA
    stored uncompressed) and 1 MiB of metadata."""
    return 8 * max_image_pixels + (1 << 20)


def _open_regular_file(path):
    """Opens `path` for reading if it is a regular file; never blocks.

    The open is non-blocking, so a FIFO or device put in place after the
    folder was listed is refused instead of waiting for a writer.
    """
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    flags = os.O_RDONLY | nonblocking | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"{path}: not a regular file")
        if nonblocking:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), info.st_size
    except BaseException:
        os.close(fd)
        raise


def _decode_file(path, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Decodes one image file to an HWC uint8 array, checking it first.

    With a `max_image_pixels` cap, the file's size and then the width and
    height in its header are checked before the file is read in full or
    decoded; `None` skips both checks.
    """
    f, size = _open_regular_file(path)
    try:
        with f:
            if size == 0:
                raise DataError(f"{path}: empty file (0 bytes)")
            if max_image_pixels is not None:
                limit = _max_file_bytes(max_image_pixels)
                if size > limit:
                    raise DataError(
                        f"{path}: file of {size} bytes exceeds the {limit} bytes "
                        f"allowed by max_image_pixels={max_image_pixels}; raise "
                        "max_image_pixels (--max_image_pixels) to load it"
                    )
                try:
                    _, width, height, pixels, frames = _read_image_header(f)
                except _BadHeader as bad:
                    raise DataError(f"{path}: {bad}") from None
                if pixels > max_image_pixels:
                    in_frames = f" in {frames} frames" if frames > 1 else ""
                    raise DataError(
                        f"{path}: {width}x{height} image ({pixels} pixels{in_frames}) "
                        f"exceeds max_image_pixels={max_image_pixels}; raise "
                        "max_image_pixels (--max_image_pixels) to load it"
                    )
                f.seek(0)
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


def _is_regular_file(entry):
    """Whether a `DirEntry` is a regular file, following symbolic links."""
    try:
        return entry.is_file()  # S_ISREG: False for FIFOs, devices, sockets
    except OSError:
        return False


def _list_images(spec, folder):
    """Sorted names of the image files in `folder`.

    Skips dotfiles (e.g. macOS's `._x.png` AppleDouble files) and whatever is
    not a regular file once links are followed (FIFOs, devices, sockets,
    folders named like images): opening a FIFO to read it blocks forever.
    """
    try:
        with os.scandir(folder) as entries:
            return sorted(
                entry.name for entry in entries
                if not entry.name.startswith(".")
                and entry.name.lower().endswith(_IMAGE_EXTENSIONS)
                and _is_regular_file(entry)
            )
    except OSError as error:
        raise DataError(f"{spec}: cannot list {folder} ({error.strerror})") from None


def _folder_files(spec, path):
    """`(files, labels, class_names)` of an image folder (one sub-folder per class)."""
    if not path:
        raise DataError(f"{spec}: missing folder path, e.g. 'folder:/data/pets'")
    if not os.path.isdir(path):
        raise DataError(f"{spec}: {path} is not a folder")
    try:
        entries = os.listdir(path)
    except OSError as error:
        raise DataError(f"{spec}: cannot list {path} ({error.strerror})") from None
    class_names = sorted(
        entry for entry in entries
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
        for filename in _list_images(spec, class_dir):
            files.append(os.path.join(class_dir, filename))
            labels.append(label)
    if not files:
        raise DataError(
            f"{spec}: no images ({', '.join(_IMAGE_EXTENSIONS)}) in the class "
            f"folders of {path}"
        )
    return files, labels, class_names


def folder_split(spec, path, max_train_examples=None):
    """The train and test file lists of an image folder, split as `load` splits it.

    Returns:
        `(train_files, train_labels, test_files, test_labels, class_names)`:
        lists of paths and int64 label arrays, in the split's order.
    """
    files, labels, class_names = _folder_files(spec, path)
    y = np.asarray(labels, dtype=np.int64)
    if len(y) < 2:
        raise DataError(f"{spec}: need at least 2 images to split, found {len(y)}")
    train, test = _split_indices(y)
    if max_train_examples is not None:
        train = train[:max_train_examples]
    return ([files[i] for i in train], y[train], [files[i] for i in test], y[test],
            class_names)


def _load_folder(spec, path, image_size, max_train_examples=None,
                 max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    files, labels, class_names = _folder_files(spec, path)
    y = np.asarray(labels, dtype=np.int64)
    if len(y) < 2:
        raise DataError(f"{spec}: need at least 2 images to split, found {len(y)}")
    # Split the file list, then decode only the files kept, in file order.
    train, test = _split_indices(y)
    if max_train_examples is not None:
        train = train[:max_train_examples]
    kept = np.sort(np.concatenate([train, test]))
    files = [files[i] for i in kept]
    images = [_decode_file(file, max_image_pixels) for file in files]
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
    del images
    rows_train = np.searchsorted(kept, train)
    rows_test = np.searchsorted(kept, test)
    return ImageDataset.from_arrays(
        spec, x[rows_train], y[train], x[rows_test], y[test],
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


def _check_positive_int(spec, name, value):
    if value is None:
        return
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not is_int or value < 1:
        raise DataError(f"{spec}: {name} must be a positive integer or None, got {value!r}")


# `load(..., stream="auto")` streams a split whose float32 train images would
# take more than this: 1 GiB (e.g. 50,000 64x64 RGB images are 2.3 GiB).
STREAM_ABOVE_BYTES = 1 << 30


def load(spec, data_dir=None, image_size=None, max_train_examples=None,
         max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS, stream=False):
    """Loads an image dataset from a spec string.

    Args:
        spec: String, one of `"digits"`, `"tfds:NAME"` (NAME may carry a
            config or version, e.g. `"tfds:mnist:3.*.*"`) or `"folder:PATH"`.
        data_dir: String, the TFDS data directory. Defaults to TFDS's own.
        image_size: Integer or `(height, width)`; resizes every image
            (bilinear, antialiased). Required for folders of mixed sizes.
            Defaults to `None` (keep the size).
        max_train_examples: Integer; keeps only the first examples of the
            train split, and decodes no others: a folder is split into train
            and test file lists first (the same split as without the limit),
            a TFDS train split is read only that far (unless the dataset has
            no test split, when the whole train split is read to cut one).
            Defaults to `None` (keep all).
        max_image_pixels: Integer, the largest width x height (summed over
            the frames of an animated GIF or WebP) of an image read from a
            folder, checked from the file's header before it is decoded; files
            over `8 * max_image_pixels + 1 MiB` bytes are refused unread. The
            default, `DEFAULT_MAX_IMAGE_PIXELS` = 4096 x 4096 (16,777,216),
            is far above the sizes these models train on, yet stops
            decompression bombs: a 20000 x 20000 PNG of ~400 KB would decode
            to 400 MB and become 1.6 GB of float32. Pass a larger value
            (`--max_image_pixels` in tools/train.py) to load larger images,
            or `None` to skip the checks. TFDS images are not checked in
            memory; streamed, every image is.
        stream: `False` (decode the whole split into arrays: an
            `ImageDataset`), `True` (read it from disk batch by batch: a
            `keras_ebm.data.streaming.StreamingImages`, whose memory does not
            grow with the number of images) or `"auto"` (stream
            `"tfrecord:DIR"`, and folders and TFDS splits whose float32 train
            images would exceed `STREAM_ABOVE_BYTES`, 1 GiB). `"digits"`
            never streams; `"tfrecord:DIR"` (shards written by
            `tools/folder_to_tfrecords.py`) always does. Defaults to `False`.

    Returns:
        An `ImageDataset`, or a `StreamingImages` when streamed; both answer
        `num_examples`, `image_shape`, `train_batches` and `labelled`.

    Raises:
        DataError: with a one-line message naming the spec or the file, e.g.
            `"<file>: 20000x20000 image (400000000 pixels) exceeds
            max_image_pixels=16777216; raise max_image_pixels (--max_image_pixels) to load it"`.

    Example:

    >>> data = load("digits")
    >>> data.x_train.shape, data.x_test.shape
    ((1257, 8, 8, 1), (540, 8, 8, 1))
    """
    if not isinstance(spec, str):
        raise DataError(f"{spec!r}: dataset spec must be a string: {_ACCEPTED_SPECS}")
    size = _image_size_pair(image_size, spec)
    _check_positive_int(spec, "max_train_examples", max_train_examples)
    _check_positive_int(spec, "max_image_pixels", max_image_pixels)
    if max_train_examples is not None:
        max_train_examples = int(max_train_examples)
    if max_image_pixels is not None:
        max_image_pixels = int(max_image_pixels)
    kind, _, rest = spec.partition(":")
    if stream not in (True, False, "auto"):
        raise DataError(f"{spec}: stream must be True, False or 'auto', got {stream!r}")
    if stream and kind in ("folder", "tfds", "tfrecord") or kind == "tfrecord":
        from keras_ebm.data.streaming import load_streaming

        streamed = load_streaming(spec, data_dir=data_dir, image_size=size,
                                  max_train_examples=max_train_examples,
                                  max_image_pixels=max_image_pixels)
        size_bytes = 4 * streamed.num_examples * int(np.prod(streamed.image_shape))
        if stream is True or kind == "tfrecord" or size_bytes > STREAM_ABOVE_BYTES:
            return streamed
    if spec == "digits":
        data = _load_digits()
    elif kind == "tfds":
        data = _load_tfds(spec, rest, data_dir, size, max_train_examples)
    elif kind == "folder":
        data = _load_folder(spec, rest, size, max_train_examples, max_image_pixels)
    else:
        raise DataError(f"{spec!r}: unknown dataset; use {_ACCEPTED_SPECS}")
    if max_train_examples is not None:  # the loaders above already cut theirs
        data.x_train = data.x_train[:max_train_examples]
        data.y_train = data.y_train[:max_train_examples]
    if size is not None:
        data.x_train = _resize(data.x_train, size)
        data.x_test = _resize(data.x_test, size)
    return data


def epoch_ordered_indices(num_examples, batch_size, seed=0, initial_epoch=0, epochs=None,
                          steps_per_epoch=None, num_shards=1, shard_index=0):
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
        num_shards, shard_index: int, this input pipeline's share of each
            epoch (multi-worker input): the pipeline `shard_index` of
            `num_shards` takes every `num_shards`-th index of the epoch's
            order, from position `shard_index`, in batches of `batch_size`
            (the per-pipeline batch), so the pipelines read disjoint examples
            whose union, over an epoch, is the epoch's. Defaults to one shard.

    Returns:
        A `tf.data.Dataset` of int64 index vectors of shape [batch_size].

    Example:

    >>> indices = epoch_ordered_indices(len(x), 256, seed=0, initial_epoch=5, epochs=100)
    >>> batches = indices.map(lambda i: tf.gather(x, i))
    """
    num_shards, shard_index = int(num_shards), int(shard_index)
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index {shard_index} must be in [0, {num_shards})")
    full_batches = num_examples // num_shards // batch_size
    if batch_size < 1 or full_batches < 1:
        raise ValueError(f"batch size {batch_size} must be between 1 and the number of "
                         f"examples ({num_examples})")
    steps = full_batches if steps_per_epoch is None else min(int(steps_per_epoch), full_batches)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num_examples, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        if num_shards > 1:
            order = order[shard_index::num_shards]
        # The first `steps` full batches, as one [steps, batch_size] tensor: one
        # dataset element per batch, not per example.
        return tf.data.Dataset.from_tensor_slices(
            tf.reshape(order[: steps * batch_size], [steps, batch_size]))

    stop = 2**62 if epochs is None else int(epochs)
    return tf.data.Dataset.range(min(int(initial_epoch), stop), stop).flat_map(one_epoch)


def epoch_ordered_batches(x, batch_size, seed=0, initial_epoch=0, epochs=None,
                          steps_per_epoch=None, with_index=False, initial_step=0,
                          num_shards=1, shard_index=0):
    """Batches of the array `x` in the order of `epoch_ordered_indices` (same arguments).

    `with_index` yields `(batch, indices)`; `initial_step` skips that many
    batches of `initial_epoch` (a run resumed mid-epoch).
    """
    x = tf.constant(x)
    indices = epoch_ordered_indices(len(x), batch_size, seed=seed, initial_epoch=initial_epoch,
                                    epochs=epochs, steps_per_epoch=steps_per_epoch,
                                    num_shards=num_shards, shard_index=shard_index)
    if initial_step:
        indices = indices.skip(int(initial_step))

    def gather(i):
        return (tf.gather(x, i), i) if with_index else tf.gather(x, i)

    def blocks(steps):
        """The same batches, `steps` consecutive ones per element ([steps, batch, ...])."""
        return (indices.batch(int(steps), drop_remainder=True)
                .map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))

    dataset = indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    # `Method.fit` runs blocks of minibatches per compiled call for small models.
    dataset.keras_ebm_blocks = blocks
    return dataset
