r"""Converts an image folder (one sub-folder per class) into sharded TFRecords.

    python tools/folder_to_tfrecords.py --input=/data/pets --output=/data/pets_tfrecords
    python tools/folder_to_tfrecords.py --input=/data/imagenet/train \
        --output=/data/imagenet_tfrecords --train_shards=1024 --test_shards=128

Reads the folder as `keras_ebm.data.load("folder:PATH")` does (class sub-folders
sorted by name, labels in that order; dotfiles and non-regular files skipped)
and splits it the same way (70/30, stratified, seed 0), so training on the
records (`--dataset=tfrecord:DIR`) sees the same train and test images as
training on the folder (`--dataset=folder:PATH`). Writes the layout of
`keras_ebm/data/tfrecords.py`: `train-00000-of-00035` ..., `test-...` and
`dataset_info.json`. Each record holds the file's original bytes (no
re-encoding); within a split, records keep the split's order, `image/index`
is the position in it, and shard k holds positions [k*n/S, (k+1)*n/S).

Each file is checked before it is stored, as the folder loader checks it:
a regular file, at most `8 * max_image_pixels + 1 MiB` bytes, a PNG, JPEG,
GIF, BMP or WebP header whose width x height (summed over the frames of an
animation) is at most --max_image_pixels. Only the first train image is
decoded (its shape goes into dataset_info.json, with 1 or 3 channels as the
folder loader converts it); --verify decodes every image.

Bad input (missing or empty folder, a bad or too-large image, a non-empty
--output) prints one line naming the flag or file and exits with status 2.
The records are written into a staging folder next to --output and renamed
into place at the end, so a failed or interrupted run leaves no --output.
"""

import json
import math
import os
import re
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from keras_ebm.data import datasets  # noqa: E402
from keras_ebm.data import tfrecords  # noqa: E402

FLAGS = flags.FLAGS
IMAGES_PER_SHARD = 1024
# Formats as `_read_image_header` names them -> `image/format` values.
FORMATS = {"PNG": "png", "JPEG": "jpeg", "GIF": "gif", "BMP": "bmp", "WebP": "webp"}

flags.DEFINE_string("input", None, "The image folder: one sub-folder of images per class.")
flags.DEFINE_string("output", None, "Folder to write the records into; created, and must not "
                    "exist or be empty (see --overwrite).")
flags.DEFINE_integer("train_shards", None, f"Train shards (default: about {IMAGES_PER_SHARD} "
                     "images a shard, at least 1).")
flags.DEFINE_integer("test_shards", None, f"Test shards (default: about {IMAGES_PER_SHARD} "
                     "images a shard, at least 1).")
flags.DEFINE_integer("max_image_pixels", datasets.DEFAULT_MAX_IMAGE_PIXELS,
                     "Refuse images with more pixels (read from the image header, before "
                     "anything is decoded: decompression bombs), as the folder loader does.")
flags.DEFINE_bool("overwrite", False, "Replace an --output that holds an earlier conversion "
                  "(a dataset_info.json of this format); the old one is removed only once the "
                  "new one is complete.")
flags.DEFINE_bool("verify", False, "Decode every image before storing it (slower); without it "
                  "only the headers are checked.")


class UsageError(Exception):
    """Bad input: one line, exit status 2."""


def fail(message, status=2):
    print(f"folder_to_tfrecords.py: error: {message}", file=sys.stderr)
    sys.exit(status)


def parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        fail(str(error).splitlines()[0])


def count(number, noun, plural=None):
    """`1 shard`, `8 shards`; `1 class`, `3 classes`."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def size_text(num_bytes):
    """`512 bytes`, `12.3 KiB`, `4.5 MiB`, `1.2 GiB`."""
    if num_bytes < 1024:
        return count(num_bytes, "byte")
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"


def default_shards(num_examples):
    """About IMAGES_PER_SHARD images a shard, at least 1 shard."""
    return max(1, math.ceil(num_examples / IMAGES_PER_SHARD))


def shard_bounds(num_examples, num_shards):
    """`[(start, stop)]` of each shard: shard k holds [k*n/S, (k+1)*n/S)."""
    return [(k * num_examples // num_shards, (k + 1) * num_examples // num_shards)
            for k in range(num_shards)]


def list_folder(path):
    """`(class_names, files, labels)` exactly as the folder loader lists `path`.

    `files` are paths relative to `path`, `/`-separated, in the loader's order
    (classes sorted by name, then each class's image files sorted by name).
    """
    try:
        paths, labels, class_names = datasets._folder_files(f"--input={path}", path)
    except datasets.DataError as error:
        raise UsageError(str(error)) from None
    files = [os.path.relpath(p, path).replace(os.sep, "/") for p in paths]
    if len(files) < 2:
        raise UsageError(f"--input={path}: need at least 2 images to split, found 1")
    return class_names, files, labels


def read_checked(path, max_image_pixels):
    """`(contents, format, width, height)` of one image file, checked as the loader
    checks it (regular file, size cap, header and pixel cap) before it is read."""
    try:
        f, size = datasets._open_regular_file(path)
    except datasets.DataError as error:
        raise UsageError(str(error)) from None
    try:
        with f:
            if size == 0:
                raise UsageError(f"{path}: empty file (0 bytes)")
            limit = datasets._max_file_bytes(max_image_pixels)
            if size > limit:
                raise UsageError(
                    f"{path}: file of {size} bytes exceeds the {limit} bytes allowed by "
                    f"--max_image_pixels={max_image_pixels}; raise --max_image_pixels to "
                    "convert it")
            try:
                fmt, width, height, pixels, frames = datasets._read_image_header(f)
            except datasets._BadHeader as bad:
                raise UsageError(f"{path}: {bad}") from None
            if pixels > max_image_pixels:
                in_frames = f" in {frames} frames" if frames > 1 else ""
                raise UsageError(
                    f"{path}: {width}x{height} image ({pixels} pixels{in_frames}) exceeds "
                    f"--max_image_pixels={max_image_pixels}; raise --max_image_pixels to "
                    "convert it")
            f.seek(0)
            contents = f.read()
    except OSError as error:
        raise UsageError(f"{path}: cannot be read ({error.strerror})") from None
    if len(contents) != size:
        raise UsageError(f"{path}: changed while it was read ({size} bytes, then "
                         f"{len(contents)})")
    return contents, FORMATS[fmt], width, height


def decode(path, contents):
    """The decoded image (HWC uint8 array), or UsageError naming the file."""
    try:
        image = tf.io.decode_image(contents, expand_animations=False).numpy()
    except (tf.errors.OpError, ValueError) as error:
        message = getattr(error, "message", None) or str(error)
        message = message.splitlines()[0] if message else "decode failed"
        message = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:\w+\]", "", message).strip()[:200]
        raise UsageError(f"{path}: corrupt or unsupported image ({message})") from None
    if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise UsageError(f"{path}: decoded to an empty image {image.shape}")
    return image


class Progress:
    """One progress line: images done, percent and images/s; at most once a second
    on a terminal (rewritten in place), every 10 seconds otherwise."""

    def __init__(self, total):
        self.total, self.done, self.start = total, 0, time.monotonic()
        self.tty = sys.stdout.isatty()
        self.interval = 1.0 if self.tty else 10.0
        self.last = self.start
        self.open = False

    def update(self, count=1, force=False):
        self.done += count
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        line = (f"{self.done}/{self.total} images ({100 * self.done / self.total:.0f}%), "
                f"{rate:.0f} images/s")
        if self.tty:
            sys.stdout.write("\r" + line)
            self.open = True
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def close(self):
        if self.open:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self.open = False


def check_output(output, source, overwrite):
    """Refuses an --output that is not empty (unless --overwrite replaces an earlier
    conversion), or one inside --input (it would become a class folder)."""
    real_output, real_source = os.path.realpath(output), os.path.realpath(source)
    if real_output == real_source or real_output.startswith(real_source + os.sep):
        raise UsageError(f"--output={output}: inside --input={source} (it would become a class "
                         "sub-folder there)")
    if real_source.startswith(real_output + os.sep):
        raise UsageError(f"--output={output}: holds --input={source}")
    if not os.path.lexists(output):
        return False
    if os.path.islink(output) or not os.path.isdir(output):
        raise UsageError(f"--output={output}: exists and is not a folder (or is a link)")
    try:
        entries = os.listdir(output)
    except OSError as error:
        raise UsageError(f"--output={output}: cannot list it ({error.strerror})") from None
    if not entries:
        return False
    info = os.path.join(output, tfrecords.INFO_FILE)
    if not overwrite:
        raise UsageError(f"--output={output}: not empty ({len(entries)} entries); pass "
                         "--overwrite to replace an earlier conversion")
    try:
        with open(info) as f:
            earlier = json.load(f).get("format")
    except (OSError, ValueError, AttributeError):
        earlier = None
    if earlier != tfrecords.FORMAT:
        raise UsageError(f"--output={output}: --overwrite replaces only an earlier conversion, "
                         f"and this folder has no {tfrecords.INFO_FILE} of format "
                         f"{tfrecords.FORMAT}")
    return True


def make_parents(path):
    """Creates the missing parent folders of `path`; returns those created, deepest first."""
    created, parent = [], os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(parent):
        if os.path.lexists(parent):
            raise UsageError(f"--output={path}: {parent} is not a folder")
        created.append(parent)
        parent = os.path.dirname(parent)
    for made, folder in enumerate(reversed(created)):
        try:
            os.mkdir(folder)
        except OSError as error:
            remove_folders(created[len(created) - made:])
            raise UsageError(f"--output={path}: cannot create {folder} "
                             f"({error.strerror})") from None
    return created


def remove_folders(folders):
    """Removes the (empty) folders that make_parents created, deepest first."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            pass


def write_split(staging, split, order, num_shards, files, labels, class_names, source,
                progress, first_image=None):
    """Writes one split's shards; returns its dataset_info entry and its bytes."""
    shards, written = [], 0
    for shard, (start, stop) in enumerate(shard_bounds(len(order), num_shards)):
        name = tfrecords.shard_name(split, shard, num_shards)
        with tf.io.TFRecordWriter(os.path.join(staging, name)) as writer:
            for position in range(start, stop):
                i = int(order[position])
                path = os.path.join(source, files[i])
                contents, fmt, width, height = read_checked(path, FLAGS.max_image_pixels)
                if FLAGS.verify or (position == 0 and first_image is not None):
                    image = decode(path, contents)
                    if position == 0 and first_image is not None:
                        first_image.append(image.shape)
                label = int(labels[i])
                writer.write(tfrecords.example_bytes(
                    contents, label, image_format=fmt, class_name=class_names[label],
                    filename=files[i], height=height, width=width, index=position))
                written += len(contents)
                progress.update()
        shards.append({"file": name, "num_examples": stop - start})
    return {"num_examples": len(order), "shards": shards}, written


def put_in_place(staging, output, replace):
    """Renames the staging folder to --output; an earlier conversion that --overwrite
    replaces is moved aside first, and back if the rename fails."""
    try:
        if not replace:
            os.rename(staging, output)  # also replaces an empty folder
            return
        parent, base = os.path.split(os.path.abspath(output))
        old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
        os.rename(output, os.path.join(old, base))
        try:
            os.rename(staging, output)
        except OSError:
            os.rename(os.path.join(old, base), output)
            os.rmdir(old)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError as error:
        raise UsageError(f"--output={output}: cannot be put in place "
                         f"({error.strerror})") from None


def convert(source, output, train_shards, test_shards, overwrite):
    """Checks the input, writes the records into staging and renames them into place."""
    start = time.monotonic()
    replace = check_output(output, source, overwrite)
    class_names, files, labels = list_folder(source)
    train, test = datasets._split_indices(np.asarray(labels, dtype=np.int64))
    shards = {"train": train_shards, "test": test_shards}
    orders = {"train": train, "test": test}
    for split in tfrecords.SPLITS:
        if shards[split] is None:
            shards[split] = default_shards(len(orders[split]))
        elif shards[split] > len(orders[split]):
            raise UsageError(f"--{split}_shards={shards[split]}: more shards than the "
                             f"{len(orders[split])} {split} images")
    created = make_parents(output)
    parent, base = os.path.split(os.path.abspath(output))
    try:
        staging = tempfile.mkdtemp(prefix=f".{base}.staging-", dir=parent)
    except OSError as error:
        remove_folders(created)
        raise UsageError(f"--output={output}: cannot write in {parent} "
                         f"({error.strerror})") from None
    classes = count(len(class_names), "class", "classes")
    print(f"Converting {count(len(files), 'image')} of {classes} from {source}: "
          f"{len(train)} train in {count(shards['train'], 'shard')}, "
          f"{len(test)} test in {count(shards['test'], 'shard')}.")
    progress = Progress(len(files))
    try:
        first_image, splits, written = [], {}, 0
        for split in tfrecords.SPLITS:
            splits[split], size = write_split(
                staging, split, orders[split], shards[split], files, labels, class_names,
                source, progress, first_image if split == "train" else None)
            written += size
        progress.update(0, force=True)
        progress.close()
        height, width, channels = (int(d) for d in first_image[0])
        info = {"format": tfrecords.FORMAT, "class_names": class_names,
                "image_shape": [height, width, 3 if channels >= 3 else 1],
                "source": os.path.abspath(source), "splits": splits}
        with open(os.path.join(staging, tfrecords.INFO_FILE), "w") as f:
            json.dump(info, f, indent=1)
            f.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 -> an ordinary folder's mode
        put_in_place(staging, output, replace)
    except BaseException:
        progress.close()
        shutil.rmtree(staging, ignore_errors=True)
        remove_folders(created)
        raise
    seconds = time.monotonic() - start
    print(f"Wrote {count(len(train), 'train image')} in {count(shards['train'], 'shard')} and "
          f"{count(len(test), 'test image')} in {count(shards['test'], 'shard')} "
          f"({classes}, {size_text(written)} of image files) to {output} in {seconds:.1f} s "
          f"({len(files) / max(seconds, 1e-9):.0f} images/s).")
    return info


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {' '.join(argv[1:])!r}; use --input and --output")
    logging.set_verbosity(logging.WARNING)
    try:
        for name in ("input", "output"):
            if not FLAGS[name].value:
                raise UsageError(f"--{name} is required")
        for name in ("train_shards", "test_shards", "max_image_pixels"):
            value = FLAGS[name].value
            if value is not None and value < 1:
                raise UsageError(f"--{name}={value} must be at least 1")
        convert(FLAGS.input, FLAGS.output, FLAGS.train_shards, FLAGS.test_shards,
                FLAGS.overwrite)
    except UsageError as error:
        fail(str(error))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
