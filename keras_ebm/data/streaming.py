"""Image datasets streamed from disk with tf.data: folders, TFRecord shards and TFDS splits.

`load(spec, stream=True)` (or `stream="auto"` for a large split) returns a
`StreamingImages` instead of an in-memory `ImageDataset`. Nothing is held
whole in memory: the train split is read, decoded and resized on the fly, in
parallel (`tf.data.AUTOTUNE`), and its memory does not grow with the number of
images. Both kinds of dataset answer the same calls (`num_examples`,
`image_shape`, `train_batches`, `labelled`), so `keras_ebm.training.fit`,
`keras_ebm.presets.build` and `keras_ebm.evaluation.evaluation_rows` take
either.

**Epoch order.** The order of epoch e depends only on (seed, e), as for
arrays, so a run resumed at epoch k, step s sees the batches an uninterrupted
run sees:

- folders: the files are listed once and epoch e reads them in the order of a
  stateless shuffle of all file indices with the seed (seed, e), exactly the
  order the in-memory path gives the same images;
- TFRecord shards: the shard order is a stateless shuffle keyed by (seed, e),
  shards are interleaved in that order, and each run of `shuffle_buffer`
  records is shuffled with a stateless seed keyed by (seed, e, run);
- TFDS splits: read in their file order, and shuffled the same way by runs.

**Multi-worker input.** `train_batches(..., input_context=ctx)` (what
`tf.distribute.Strategy.distribute_datasets_from_function` passes) gives each
input pipeline its own examples: a folder's pipelines take disjoint files of
each epoch's order, TFRecord pipelines take disjoint shards, TFDS pipelines
every n-th example.

**Untrusted files.** Each image is checked before it is decoded as the
in-memory folder loader checks it (regular file, size cap, width x height
from the header against `max_image_pixels`); a bad file stops the input
pipeline with a `tf.errors.InvalidArgumentError` whose message names the file.

TensorFlow-only (tf.data).
"""

import io
import json
import os

import numpy as np
import tensorflow as tf

from keras_ebm.data import datasets
from keras_ebm.data import tfrecords
from keras_ebm.data.datasets import DataError

__all__ = ["SHUFFLE_BUFFER", "StreamingImages", "load_streaming"]

# Records mixed by the shuffle of TFRecord and TFDS streams, held as encoded
# images (8192 x ~10 KB for 64x64 PNGs, x ~110 KB for ImageNet JPEGs, ~0.9 GB).
SHUFFLE_BUFFER = 8192
_INTERLEAVE = 8  # shards read at once by one TFRecord pipeline


def _check_header(contents, name, max_image_pixels):
    """Raises ValueError naming the file when its header is unreadable or too large."""
    width, height = _header_size(contents, name, max_image_pixels)
    if width * height > max_image_pixels:
        raise ValueError(f"{name.numpy().decode('utf-8', 'replace')}: {width}x{height} image "
                         f"({width * height} pixels) exceeds max_image_pixels="
                         f"{max_image_pixels}; raise max_image_pixels (--max_image_pixels) "
                         "to load it")
    return True


def _header_size(contents, name, max_image_pixels):
    """`[width, height]` from an image's header (animations: the pixels of all frames as
    the width); ValueError naming the file when the header cannot be read or is too large."""
    contents, name = contents.numpy(), name.numpy().decode("utf-8", "replace")
    limit = datasets._max_file_bytes(max_image_pixels)
    if not contents:
        raise ValueError(f"{name}: empty file (0 bytes)")
    if len(contents) > limit:
        raise ValueError(f"{name}: file of {len(contents)} bytes exceeds the {limit} bytes "
                         f"allowed by max_image_pixels={max_image_pixels}; raise "
                         "max_image_pixels (--max_image_pixels) to load it")
    try:
        _, width, height, pixels, frames = datasets._read_image_header(io.BytesIO(contents))
    except datasets._BadHeader as bad:
        raise ValueError(f"{name}: {bad}") from None
    if pixels > max_image_pixels:
        raise ValueError(f"{name}: {width}x{height} image ({pixels} pixels"
                         + (f" in {frames} frames" if frames > 1 else "")
                         + f") exceeds max_image_pixels={max_image_pixels}; raise "
                         "max_image_pixels (--max_image_pixels) to load it")
    return np.array([pixels // max(height, 1), height] if frames > 1 else [width, height],
                    np.int64)


class _Decoder:
    """Encoded image bytes -> float32 [H, W, C] in [0, 1], checked, converted and resized."""

    def __init__(self, image_shape, resize, max_image_pixels):
        self.image_shape = tuple(int(d) for d in image_shape)
        self.resize = resize
        self.max_image_pixels = max_image_pixels

    def check(self, contents, name):
        """Asserts the file's size and its header's width x height before decoding.

        PNG and JPEG headers are read in the graph (the formats of nearly every
        dataset: no Python, no GIL); GIF, BMP and WebP by the folder loader's
        Python header parser.
        """
        limit = datasets._max_file_bytes(self.max_image_pixels)
        length = tf.cast(tf.strings.length(contents), tf.int64)
        fits = tf.debugging.Assert(
            tf.logical_and(length > 0, length <= limit), [tf.strings.join([name, tf.strings.format(
                f": file of {{}} bytes: empty, or over the {limit} bytes allowed by "
                f"max_image_pixels={self.max_image_pixels}; raise max_image_pixels "
                "(--max_image_pixels) to load it", [length])])])
        with tf.control_dependencies([fits]):
            head = tf.strings.substr(contents, 0, tf.cast(tf.minimum(length, 24), tf.int32))
        is_png = tf.logical_and(
            tf.equal(tf.strings.length(head), 24),
            tf.equal(tf.strings.substr(head, 0, 16, unit="BYTE"),
                     b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"))

        def png():
            size = tf.cast(tf.io.decode_raw(tf.strings.substr(head, 16, 8), tf.uint8), tf.int64)
            width = size[0] * 2**24 + size[1] * 2**16 + size[2] * 2**8 + size[3]
            height = size[4] * 2**24 + size[5] * 2**16 + size[6] * 2**8 + size[7]
            return tf.stack([width, height])

        def jpeg():
            shape = tf.cast(tf.image.extract_jpeg_shape(contents), tf.int64)
            return tf.stack([shape[1], shape[0]])

        def other():
            size = tf.py_function(lambda c, n: _header_size(c, n, self.max_image_pixels),
                                  [contents, name], tf.int64)
            return tf.ensure_shape(size, [2])

        size = tf.cond(is_png, png, lambda: tf.cond(tf.io.is_jpeg(contents), jpeg, other))
        pixels = size[0] * size[1]
        return tf.debugging.Assert(
            pixels <= self.max_image_pixels, [tf.strings.join([name, tf.strings.format(
                ": {}x{} image ({} pixels) exceeds max_image_pixels="
                f"{self.max_image_pixels}; raise max_image_pixels (--max_image_pixels) to "
                "load it", [size[0], size[1], pixels])])])

    def __call__(self, contents, name):
        if self.max_image_pixels is not None:
            with tf.control_dependencies([self.check(contents, name)]):
                contents = tf.identity(contents)
        height, width, channels = self.image_shape
        image = tf.io.decode_image(contents, channels=channels, expand_animations=False)
        image = tf.image.convert_image_dtype(image, tf.float32)  # uint8/uint16 -> [0, 1]
        if self.resize:
            image = tf.clip_by_value(tf.image.resize(image, (height, width), antialias=True),
                                     0.0, 1.0)
        else:
            shape = tf.shape(image)
            same = tf.debugging.Assert(
                tf.logical_and(tf.equal(shape[0], height), tf.equal(shape[1], width)),
                [tf.strings.join([name, tf.strings.format(
                    f": size {{}}x{{}} differs from {height}x{width} of the first image; "
                    "pass --image_size to resize all images", [shape[0], shape[1]])])])
            with tf.control_dependencies([same]):
                image = tf.identity(image)
        return tf.ensure_shape(image, self.image_shape)


class _FileList:
    """A split as a list of files with random access: exact epoch permutations."""

    def __init__(self, files, labels):
        self.files = tf.constant(np.asarray(files, dtype=object).astype(bytes))
        self.labels = tf.constant(np.asarray(labels, dtype=np.int64))
        self.num_examples = len(files)

    def read(self, index):
        path = tf.gather(self.files, index)
        return tf.io.read_file(path), tf.gather(self.labels, index), index, path

    def epochs(self, batch_size, seed, initial_epoch, epochs, steps, initial_step, shard):
        indices = datasets.epoch_ordered_indices(
            self.num_examples, batch_size, seed=seed, initial_epoch=initial_epoch,
            epochs=epochs, steps_per_epoch=steps, num_shards=shard[1], shard_index=shard[0])
        return indices.skip(int(initial_step)).unbatch().map(
            self.read, num_parallel_calls=tf.data.AUTOTUNE)

    def ordered(self):
        return tf.data.Dataset.range(self.num_examples).map(
            self.read, num_parallel_calls=tf.data.AUTOTUNE)


def _block_shuffle(records, block, seed):
    """Shuffles each run of `block` consecutive elements with a stateless seed (seed, run).

    A shuffle keyed by the epoch that needs no random state (`Dataset.shuffle`
    draws its order from the global seed); it mixes records within a block,
    after the shard order and the interleave have mixed the blocks.
    """

    def shuffle(run, elements):
        count = tf.shape(elements[0], out_type=tf.int64)[0]
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count), seed=tf.stack([seed[0] * 1000003 + seed[1], run]))
        return tf.data.Dataset.from_tensor_slices(
            tuple(tf.gather(element, order) for element in elements))

    return records.batch(block).enumerate().flat_map(lambda run, elements: shuffle(run, elements))


class _Records:
    """A split read sequentially (TFRecord shards or a TFDS split) through a shuffle buffer.

    `open_shard(k)` gives shard k's `(encoded, label, index, name)` elements;
    with `shardable`, epochs permute the shards and pipelines split them.
    """

    def __init__(self, num_shards, num_examples, open_shard, shardable, shuffle_buffer):
        self.num_shards = int(num_shards)
        self.num_examples = int(num_examples)
        self.open_shard = open_shard
        self.shardable = shardable
        self.shuffle_buffer = int(shuffle_buffer)

    def _epoch(self, epoch, seed, per_epoch, shard):
        seed = tf.cast(seed, tf.int64)
        index, count = shard
        if self.shardable:
            order = tf.random.experimental.stateless_shuffle(
                tf.range(self.num_shards, dtype=tf.int64), seed=tf.stack([seed, epoch]))
            mine = tf.data.Dataset.from_tensor_slices(order[index::count])
            records = mine.interleave(self.open_shard, cycle_length=_INTERLEAVE, block_length=1,
                                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        else:
            records = tf.data.Dataset.range(self.num_shards).flat_map(self.open_shard)
            if count > 1:
                records = records.shard(count, index)
        records = _block_shuffle(records, self.shuffle_buffer, tf.stack([seed, epoch]))
        # Uneven shards can leave a pipeline short of an epoch: it wraps around.
        return records.repeat().take(per_epoch)

    def epochs(self, batch_size, seed, initial_epoch, epochs, steps, initial_step, shard):
        full = self.num_examples // shard[1] // batch_size
        if batch_size < 1 or full < 1:
            raise ValueError(f"batch size {batch_size} must be between 1 and the number of "
                             f"examples ({self.num_examples // shard[1]})")
        steps = full if steps is None else min(int(steps), full)
        stop = 2**62 if epochs is None else int(epochs)
        data = tf.data.Dataset.range(min(int(initial_epoch), stop), stop).flat_map(
            lambda epoch: self._epoch(epoch, seed, steps * batch_size, shard))
        return data.skip(int(initial_step) * batch_size)

    def ordered(self):
        return tf.data.Dataset.range(self.num_shards).flat_map(self.open_shard)


class StreamingImages:
    """Train and test images read from files on the fly (never held whole in memory).

    Made by `keras_ebm.data.load(spec, stream=True)`; answers the calls an
    in-memory `ImageDataset` answers for training and evaluation.

    Attributes:
        name: String, the dataset spec.
        num_examples: Integer, the number of training images.
        image_shape: `(height, width, channels)` of every image as decoded.
        num_classes: Integer.
        class_names: List of strings, or `None`.
        num_test_examples: Integer, the number of test images.

    Example:

    >>> data = keras_ebm.data.load("folder:/data/pets", image_size=64, stream=True)
    >>> model = keras_ebm.presets.build("simclr", data, epochs=100)
    >>> keras_ebm.training.fit(model, data, workdir="runs/pets", epochs=100, batch_size=256)
    """

    streaming = True

    def __init__(self, name, train, test, image_shape, num_classes, class_names, decoder):
        self.name = name
        self._splits = {"train": train, "test": test}
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_classes = int(num_classes)
        self.class_names = class_names
        self._decode = decoder

    @property
    def num_examples(self):
        return self._splits["train"].num_examples

    @property
    def num_test_examples(self):
        return self._splits["test"].num_examples

    def standin(self):
        """A zero-copy array of the train split's shape (what presets read: length, shape)."""
        return np.broadcast_to(np.zeros((1, *self.image_shape), np.float32),
                               (self.num_examples, *self.image_shape))

    def _decoded(self, data, with_index=False, with_labels=False):
        def decode(contents, label, index, name):
            image = self._decode(contents, name)
            if with_index:
                return image, index
            return (image, label) if with_labels else image

        return data.map(decode, num_parallel_calls=tf.data.AUTOTUNE)

    def train_batches(self, batch_size, seed=0, initial_epoch=0, epochs=None,
                      steps_per_epoch=None, with_index=False, initial_step=0,
                      input_context=None):
        """Training batches whose order depends only on (seed, epoch).

        Args:
            batch_size: int, the global batch size (each of the
                `input_context.num_input_pipelines` pipelines yields its share).
            seed: int, the order's seed. Defaults to 0.
            initial_epoch: int, the first epoch produced. Defaults to 0.
            epochs: int or None, the end epoch (exclusive); None: forever.
            steps_per_epoch: int or None, at most this many batches per epoch.
            with_index: bool, yield `(images, indices)`, each image's index in
                the train split (PIRL's memory bank). Defaults to False.
            initial_step: int, batches of `initial_epoch` to skip (a run
                resumed mid-epoch). Defaults to 0.
            input_context: a `tf.distribute.InputContext`, or None (one pipeline).

        Returns:
            A `tf.data.Dataset` of float32 batches `[batch, H, W, C]` in [0, 1]
            (or `(images, indices)`), full batches only, prefetched.
        """
        shard = (0, 1)
        if input_context is not None:
            shard = (input_context.input_pipeline_id, input_context.num_input_pipelines)
            batch_size = batch_size // shard[1]
        data = self._splits["train"].epochs(int(batch_size), seed, initial_epoch, epochs,
                                            steps_per_epoch, initial_step, shard)
        return (self._decoded(data, with_index=with_index)
                .batch(int(batch_size), drop_remainder=True).prefetch(tf.data.AUTOTUNE))

    def labelled(self, split, batch_size=256, max_examples=None):
        """`(images, labels)` batches of a split in its fixed order (evaluation).

        Args:
            split: "train" or "test".
            batch_size: int. Defaults to 256.
            max_examples: int or None, read only the first examples.

        Returns:
            A `tf.data.Dataset` of `(float32 images, int64 labels)` batches.
        """
        data = self._splits[split].ordered()
        if max_examples is not None:
            data = data.take(int(max_examples))
        return (self._decoded(data, with_labels=True).batch(int(batch_size))
                .prefetch(tf.data.AUTOTUNE))

    def labels(self, split, max_examples=None):
        """The int64 labels of a split in its fixed order (no image is decoded)."""
        data = self._splits[split].ordered().map(lambda c, label, i, n: label)
        if max_examples is not None:
            data = data.take(int(max_examples))
        return np.fromiter(data.batch(8192).unbatch().as_numpy_iterator(), np.int64)


def _first_image(spec, contents, name, max_image_pixels):
    """(height, width, channels) of one encoded image, checked like every other."""
    try:
        _check_header(tf.constant(contents), tf.constant(name), max_image_pixels or 2**62)
        image = tf.io.decode_image(contents, expand_animations=False)
    except (ValueError, tf.errors.OpError) as error:
        message = getattr(error, "message", None) or str(error)
        raise DataError(f"{spec}: {message.splitlines()[0][:300]}") from None
    channels = 3 if image.shape[-1] >= 3 else 1
    return int(image.shape[0]), int(image.shape[1]), channels


def _shape(spec, first, size):
    height, width, channels = first
    return ((size[0], size[1], channels) if size is not None else (height, width, channels))


def _stream_folder(spec, path, size, max_train_examples, max_image_pixels, shuffle_buffer):
    del shuffle_buffer  # files are read in an exact permutation
    train_files, y_train, test_files, y_test, class_names = datasets.folder_split(
        spec, path, max_train_examples)
    with open(train_files[0], "rb") as f:
        first = _first_image(spec, f.read(), train_files[0], max_image_pixels)
    return (_FileList(train_files, y_train), _FileList(test_files, y_test),
            _shape(spec, first, size), len(class_names), class_names)


def _read_info(spec, path):
    info_path = os.path.join(path, tfrecords.INFO_FILE)
    try:
        with open(info_path) as f:
            info = json.load(f)
        splits = info["splits"]
        for split in tfrecords.SPLITS:
            for shard in splits[split]["shards"]:
                shard["file"] = os.path.join(path, os.path.basename(str(shard["file"])))
                shard["num_examples"] = int(shard["num_examples"])
        return info
    except FileNotFoundError:
        raise DataError(f"{spec}: no {tfrecords.INFO_FILE} in {path}; make the shards with "
                        "tools/folder_to_tfrecords.py") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{spec}: {info_path} is not a keras_ebm dataset description "
                        f"({type(error).__name__}: {error})") from None


def _record_split(spec, shards, max_examples, shuffle_buffer):
    shards = [dict(s) for s in shards if s["num_examples"] > 0]
    for shard in shards:
        if not os.path.isfile(shard["file"]):
            raise DataError(f"{spec}: shard {shard['file']} is missing")
    if max_examples is not None:  # the first examples in split order: whole shards first
        kept, left = [], int(max_examples)
        for shard in shards:
            if left <= 0:
                break
            kept.append({**shard, "num_examples": min(shard["num_examples"], left)})
            left -= kept[-1]["num_examples"]
        shards = kept
    if not shards:
        raise DataError(f"{spec}: a split has no records")
    files = tf.constant([s["file"] for s in shards])
    counts = tf.constant([s["num_examples"] for s in shards], tf.int64)

    def open_shard(k):
        def parse(serialized):
            encoded, label, index, name = tfrecords.parse_example(serialized)
            return encoded, label, index, tf.strings.join([tf.gather(files, k), ":", name])

        return (tf.data.TFRecordDataset(tf.gather(files, k)).take(tf.gather(counts, k))
                .map(parse))

    return _Records(len(shards), sum(s["num_examples"] for s in shards), open_shard,
                    shardable=True, shuffle_buffer=shuffle_buffer)


def _stream_tfrecords(spec, path, size, max_train_examples, max_image_pixels, shuffle_buffer):
    if not path or not os.path.isdir(path):
        raise DataError(f"{spec}: {path or '(empty)'} is not a folder of TFRecord shards")
    info = _read_info(spec, path)
    train = _record_split(spec, info["splits"]["train"]["shards"], max_train_examples,
                          shuffle_buffer)
    test = _record_split(spec, info["splits"]["test"]["shards"], None, shuffle_buffer)
    first_file = info["splits"]["train"]["shards"][0]["file"]
    record = next(iter(tf.data.TFRecordDataset(first_file).take(1)))
    encoded, _, _, name = tfrecords.parse_example(record)
    first = _first_image(spec, encoded.numpy(), f"{first_file}:{name.numpy().decode()}",
                         max_image_pixels)
    class_names = [str(c) for c in info.get("class_names") or []] or None
    num_classes = len(class_names) if class_names else None
    if num_classes is None:
        raise DataError(f"{spec}: {tfrecords.INFO_FILE} lists no class_names")
    return train, test, _shape(spec, first, size), num_classes, class_names


def _stream_tfds(spec, name, data_dir, size, max_train_examples, max_image_pixels,
                 shuffle_buffer):
    import tensorflow_datasets as tfds

    builder = datasets.tfds_builder(spec, name, data_dir)
    features = builder.info.features
    if not features or "image" not in features or "label" not in features:
        raise DataError(f"{spec}: streaming needs 'image' and 'label' features")
    known = set(builder.info.splits.keys())

    def split_source(split, max_examples):
        def read():
            data = builder.as_dataset(split=split, shuffle_files=False,
                                      decoders={"image": tfds.decode.SkipDecoding()})
            if max_examples is not None:
                data = data.take(int(max_examples))
            return data.enumerate().map(lambda i, ex: (
                ex["image"], ex["label"], i,
                tf.strings.join([spec, f":{split}:", tf.strings.as_string(i)])))

        try:
            count = int(builder.info.splits[split].num_examples) if split in known else -1
        except (KeyError, ValueError):
            count = -1
        if count < 0:
            count = int(read().cardinality())
        if count < 0:  # unknown: count the records once (no image is decoded)
            count = int(read().reduce(np.int64(0), lambda n, _: n + 1))
        if max_examples is not None:
            count = min(count, int(max_examples))
        return _Records(1, count, lambda _: read(), shardable=False,
                        shuffle_buffer=shuffle_buffer)

    try:
        train = split_source("train", max_train_examples)
    except Exception as error:
        cause = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise DataError(f"{spec}: cannot be read ({type(error).__name__}: {cause}); prepare "
                        "it under --data_dir with tfds build or tfds.load on a machine with "
                        "network access") from None
    test = None
    for split in ("test", "validation"):
        if known and split not in known:
            continue
        try:
            test = split_source(split, None)
            break
        except Exception:
            continue
    if test is None:
        raise DataError(f"{spec}: streaming needs a test or validation split")
    if train.num_examples < 1:
        raise DataError(f"{spec}: the train split is empty")
    contents, _, _, first_name = next(iter(train.open_shard(0).take(1)))
    first = _first_image(spec, contents.numpy(), first_name.numpy().decode(),
                         max_image_pixels)
    label = features["label"]
    if not getattr(label, "num_classes", None):
        raise DataError(f"{spec}: the label feature has no number of classes")
    num_classes, class_names = int(label.num_classes), list(label.names)
    return train, test, _shape(spec, first, size), num_classes, class_names


def load_streaming(spec, data_dir=None, image_size=None, max_train_examples=None,
                   max_image_pixels=datasets.DEFAULT_MAX_IMAGE_PIXELS,
                   shuffle_buffer=SHUFFLE_BUFFER):
    """A `StreamingImages` for `"folder:PATH"`, `"tfrecord:DIR"` or `"tfds:NAME"`.

    Called by `keras_ebm.data.load(spec, stream=True)`, which checks the
    arguments; see there. Files are listed (or a split's size read) here,
    and only the first training image is decoded.
    """
    size = datasets._image_size_pair(image_size, spec)
    kind, _, rest = spec.partition(":")
    if kind == "folder":
        parts = _stream_folder(spec, rest, size, max_train_examples, max_image_pixels,
                               shuffle_buffer)
    elif kind == "tfrecord":
        parts = _stream_tfrecords(spec, rest, size, max_train_examples, max_image_pixels,
                                  shuffle_buffer)
    elif kind == "tfds":
        parts = _stream_tfds(spec, rest, data_dir, size, max_train_examples, max_image_pixels,
                             shuffle_buffer)
    else:
        raise DataError(f"{spec!r}: only 'folder:PATH', 'tfrecord:DIR' and 'tfds:NAME' "
                        "datasets stream")
    train, test, shape, num_classes, class_names = parts
    decoder = _Decoder(shape, size is not None, max_image_pixels)
    return StreamingImages(spec, train, test, shape, num_classes, class_names, decoder)


def file_error(error):
    """The one line naming the file of a bad image met while streaming.

    Args:
        error: the `tf.errors.InvalidArgumentError` that a bad file raised
            out of `train_batches` or `labelled`.

    Returns:
        A string such as `"/data/cat/1.png: 20000x20000 image ... exceeds
        max_image_pixels=16777216; ..."`, or the error's first line.
    """
    text = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:  # raised by _header_size (GIF, BMP, WebP headers)
        if line.startswith("ValueError: "):
            return line[len("ValueError: "):]
    for line in lines:  # an in-graph check: "assertion failed: [<file>: <why>]"
        if "assertion failed: [" in line:
            return line.split("assertion failed: [", 1)[1].rsplit("]", 1)[0]
    for line in lines:  # a decode error, which names no file
        if "Iterator::" in line:
            cause = line.rsplit("Iterator::", 1)[1].split(": ", 1)[-1][:200]
            return (f"a corrupt or unsupported image ({cause}); find it with "
                    "tools/folder_to_tfrecords.py --verify")
    return lines[0][:300] if lines else "a bad image"
