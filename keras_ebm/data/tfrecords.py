"""The TFRecord layout keras_ebm reads and `tools/folder_to_tfrecords.py` writes.

A dataset is a folder holding sharded `tf.train.Example` records, named as
the standard ImageNet layout (`train-00000-of-01024`), plus one JSON file
that says what is in them:

    <dir>/train-00000-of-00008 ... train-00007-of-00008
    <dir>/test-00000-of-00002 ... test-00001-of-00002
    <dir>/dataset_info.json

Each record holds one image as its original encoded file bytes (no
re-encoding) and its label:

- `image/encoded` (bytes): the PNG, JPEG, GIF, BMP or WebP file;
- `image/format` (bytes): `png`, `jpeg`, `gif`, `bmp` or `webp`;
- `image/class/label` (int64): the class index, from 0 (the folder
  loader's order: class sub-folders sorted by name);
- `image/class/text` (bytes): the class name;
- `image/filename` (bytes): the file's path relative to the source folder;
- `image/height`, `image/width` (int64): from the file's header;
- `image/index` (int64): the example's index within its split (PIRL's memory
  bank entry).

`dataset_info.json` records the class names, the image shape of the first
image (`[height, width, channels]`) and, per split, the number of examples
and each shard's file name and number of examples, so a reader knows the
split's size without a pass over the records:

    {"format": "keras_ebm.tfrecord.v1", "class_names": [...],
     "image_shape": [64, 64, 3], "source": "/data/pets",
     "splits": {"train": {"num_examples": 35000,
                          "shards": [{"file": "train-00000-of-00008",
                                      "num_examples": 4375}, ...]},
                "test": {...}}}
"""

import tensorflow as tf

FORMAT = "keras_ebm.tfrecord.v1"
INFO_FILE = "dataset_info.json"
SPLITS = ("train", "test")

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/format": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/class/text": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/index": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
}


def shard_name(split, shard, num_shards):
    """`train-00003-of-00008`: the standard ImageNet shard name."""
    return f"{split}-{shard:05d}-of-{num_shards:05d}"


def example_bytes(encoded, label, *, image_format, class_name, filename, height, width, index):
    """One serialised `tf.train.Example` of the layout above."""

    def as_bytes(value):
        return value if isinstance(value, bytes) else str(value).encode("utf-8")

    def bytes_feature(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[as_bytes(value)]))

    def int_feature(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    feature = {
        "image/encoded": bytes_feature(encoded),
        "image/format": bytes_feature(image_format),
        "image/class/label": int_feature(label),
        "image/class/text": bytes_feature(class_name),
        "image/filename": bytes_feature(filename),
        "image/height": int_feature(height),
        "image/width": int_feature(width),
        "image/index": int_feature(index),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)  # the same bytes in every process


def parse_example(serialized):
    """`(encoded bytes, label, index, filename)` tensors of one serialised record."""
    parsed = tf.io.parse_single_example(serialized, FEATURES)
    return (parsed["image/encoded"], parsed["image/class/label"], parsed["image/index"],
            parsed["image/filename"])
