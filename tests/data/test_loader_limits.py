"""Untrusted image folders: decompression bombs, FIFOs, dotfiles, early limits.

Every test here failed before the loader checked image headers, skipped
non-regular files and applied `max_train_examples` before decoding.
"""

import io
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import keras_ebm
from keras_ebm.data import DataError
from keras_ebm.data import datasets
from keras_ebm.data import load

BOMB_SIDE = 20000


def _write_png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(tf.io.encode_png(np.asarray(image, np.uint8)).numpy())


def _make_folder(root, classes=("cat", "dog"), per_class=2, size=(6, 5)):
    rng = np.random.default_rng(0)
    for name in classes:
        for i in range(per_class):
            _write_png(os.path.join(root, name, f"{i}.png"),
                       rng.integers(0, 256, size + (3,)))


def _png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _png_bomb(side):
    """A valid side x side 8-bit grayscale PNG of zeros, ~400 KB for 20000."""
    compressor = zlib.compressobj(9)
    rows = (b"\x00" * (side + 1)) * 200  # filter byte 0, then the pixels
    idat = []
    for _ in range(side // 200):
        idat.append(compressor.compress(rows))
    idat.append(compressor.compress((b"\x00" * (side + 1)) * (side % 200)))
    idat.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", b"".join(idat)) + _png_chunk(b"IEND", b""))


def _gif(canvas, frames):
    """A GIF with a 2-colour palette; each frame is LZW coded as clear, pixel
    pairs, which keeps the code width at 3 bits."""
    width, height = canvas
    out = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0)
    out += b"\x00\x00\x00\xff\xff\xff"
    for frame_width, frame_height in frames:
        out += b"," + struct.pack("<HHHHB", 0, 0, frame_width, frame_height, 0) + b"\x02"
        codes = [4, 1] * (frame_width * frame_height) + [5]
        bits = sum(code << (3 * i) for i, code in enumerate(codes))
        data = bits.to_bytes((3 * len(codes) + 7) // 8, "little")
        for start in range(0, len(data), 255):
            block = data[start:start + 255]
            out += bytes([len(block)]) + block
        out += b"\x00"
    return out + b";"


def _bmp(width, height, top_down=False):
    row = (3 * width + 3) // 4 * 4
    pixels = bytes(range(256)) * (row * height // 256 + 1)
    pixels = pixels[:row * height]
    return (b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54)
            + struct.pack("<IiiHHIIiiII", 40, width, -height if top_down else height,
                          1, 24, 0, len(pixels), 2835, 2835, 0, 0)
            + pixels)


def _webp_vp8x(width, height, animated_frames=0):
    flags = 0x02 if animated_frames else 0
    body = (b"WEBP" + b"VP8X" + struct.pack("<I", 10) + bytes([flags, 0, 0, 0])
            + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little"))
    for _ in range(animated_frames):
        body += b"ANMF" + struct.pack("<I", 16) + bytes(16)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _jpeg(width, height, **kwargs):
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
    return tf.io.encode_jpeg(image, **kwargs).numpy()


def _header(data):
    return datasets._read_image_header(io.BytesIO(data))


# ----------------------------------------------------------------- bombs


@pytest.fixture(scope="module")
def bomb_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bomb")
    _make_folder(root, per_class=1, size=(4, 4))
    bomb = root / "dog" / "bomb.png"
    bomb.write_bytes(_png_bomb(BOMB_SIDE))
    assert bomb.stat().st_size < 1 << 20
    return root, bomb


_MEASURE = """
import json, resource, sys, time
from keras_ebm.data import DataError, load
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    load(sys.argv[1])
    message = None
except DataError as error:
    message = str(error)
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"message": message, "seconds": seconds, "grown_kib": after - before}))
"""


def test_png_bomb_refused_from_its_header_fast_and_small(bomb_folder):
    root, bomb = bomb_folder
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    package_root = os.path.dirname(os.path.dirname(keras_ebm.__file__))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", _MEASURE, f"folder:{root}"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["seconds"] < 5, result
    assert result["grown_kib"] < 1 << 20, result  # ru_maxrss is in KiB on Linux
    side, pixels = BOMB_SIDE, BOMB_SIDE * BOMB_SIDE
    assert result["message"] == (
        f"{bomb}: {side}x{side} image ({pixels} pixels) exceeds "
        f"max_image_pixels={4096 * 4096}; raise max_image_pixels (--max_image_pixels) to load it")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WebP", "GIF frames"])
def test_oversized_header_of_each_format_refused_before_decoding(tmp_path, monkeypatch,
                                                                 fmt):
    big = 5000
    small_png = tf.io.encode_png(np.zeros((4, 4, 3), np.uint8)).numpy()
    if fmt == "PNG":
        data = small_png[:16] + struct.pack(">II", big, big) + small_png[24:]
    elif fmt == "JPEG":
        data = _jpeg(4, 4)
        sof = data.index(b"\xff\xc0")
        data = data[:sof + 5] + struct.pack(">HH", big, big) + data[sof + 9:]
    elif fmt == "GIF":
        data = _gif((big, big), [(4, 4)])
    elif fmt == "GIF frames":  # a 1x1 canvas whose frame giflib decodes in full
        data = _gif((1, 1), [(2, 2)])
        start = data.index(b",") + 5
        data = data[:start] + struct.pack("<HH", big, big) + data[start + 4:]
    elif fmt == "BMP":
        data = _bmp(4, 4)[:18] + struct.pack("<ii", big, big) + _bmp(4, 4)[26:]
    else:
        data = _webp_vp8x(big, big)
    _make_folder(tmp_path, per_class=2, size=(4, 4))
    (tmp_path / "cat" / "big.png").write_bytes(data)
    decoded = []
    real_decode = tf.io.decode_image
    monkeypatch.setattr(tf.io, "decode_image",
                        lambda contents, **kw: decoded.append(contents)
                        or real_decode(contents, **kw))
    with pytest.raises(DataError) as error:
        load(f"folder:{tmp_path}")
    side = "1x1" if fmt == "GIF frames" else f"{big}x{big}"
    assert str(error.value) == (
        f"{tmp_path / 'cat' / 'big.png'}: {side} image ({big * big} pixels) exceeds "
        "max_image_pixels=16777216; raise max_image_pixels (--max_image_pixels) to load it")
    assert len(decoded) == 2 and data not in decoded  # cat/0.png and cat/1.png


def test_pixel_cap_is_exact_configurable_and_can_be_disabled(tmp_path):
    _make_folder(tmp_path, per_class=2, size=(6, 5))
    first = tmp_path / "cat" / "0.png"
    expected = (f"{first}: 5x6 image (30 pixels) exceeds max_image_pixels=29; "
                "raise max_image_pixels (--max_image_pixels) to load it")
    with pytest.raises(DataError) as error:
        load(f"folder:{tmp_path}", max_image_pixels=29)
    assert str(error.value) == expected
    assert len(load(f"folder:{tmp_path}", max_image_pixels=30).x_train) == 2
    assert len(load(f"folder:{tmp_path}", max_image_pixels=None).x_train) == 2
    for bad in (0, -1, 2.5, "big", True):
        with pytest.raises(DataError, match=r"max_image_pixels must be a positive integer"):
            load(f"folder:{tmp_path}", max_image_pixels=bad)
    with pytest.raises(DataError, match=r"max_train_examples must be a positive integer"):
        load(f"folder:{tmp_path}", max_train_examples=0)


def test_file_over_the_byte_limit_refused_unread(tmp_path):
    _make_folder(tmp_path, per_class=2, size=(1, 1))
    big = tmp_path / "dog" / "big.png"
    big.write_bytes((tmp_path / "dog" / "0.png").read_bytes() + bytes(2 << 20))
    size = big.stat().st_size
    with pytest.raises(DataError) as error:
        load(f"folder:{tmp_path}", max_image_pixels=1)
    assert str(error.value) == (
        f"{big}: file of {size} bytes exceeds the {8 + (1 << 20)} bytes allowed by "
        "max_image_pixels=1; raise max_image_pixels (--max_image_pixels) to load it")


@pytest.mark.parametrize("contents, expected", [
    (b"hello, I am not an image at all", r"not a PNG, JPEG, GIF, BMP or WebP image"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDX" + bytes(13), r"corrupt PNG header"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", r"corrupt JPEG header \(truncated\)"),
    (b"\xff\xd8\xff\xda\x00\x08", r"corrupt JPEG header \(no frame header"),
])
def test_unreadable_header_names_the_file(tmp_path, contents, expected):
    _make_folder(tmp_path, per_class=2)
    (tmp_path / "cat" / "bad.png").write_bytes(contents)
    with pytest.raises(DataError, match=r"bad\.png: " + expected) as error:
        load(f"folder:{tmp_path}")
    assert "\n" not in str(error.value)


# ------------------------------------------------------------ header parser


@pytest.mark.parametrize("make", [
    lambda: tf.io.encode_png(np.zeros((7, 13, 1), np.uint8)).numpy(),
    lambda: tf.io.encode_png(np.zeros((3, 2, 4), np.uint16)).numpy(),
    lambda: _jpeg(13, 7),
    lambda: _jpeg(300, 17, progressive=True, xmp_metadata="<x:xmpmeta>" + "a" * 5000),
    lambda: _gif((5, 3), [(5, 3)]),
    lambda: _bmp(5, 3),
    lambda: _bmp(6, 2, top_down=True),
], ids=["png-gray", "png-rgba16", "jpeg", "jpeg-progressive-xmp", "gif", "bmp",
        "bmp-top-down"])
def test_header_size_matches_the_decoder(make):
    data = make()
    height, width = tf.io.decode_image(data, expand_animations=False).shape[:2]
    _, parsed_width, parsed_height, pixels, frames = _header(data)
    assert (parsed_width, parsed_height, pixels, frames) == (width, height, width * height, 1)


def test_header_counts_every_animation_frame():
    data = _gif((4, 3), [(4, 3), (4, 3), (2, 2)])
    assert tf.io.decode_image(data, expand_animations=False).shape == (3, 4, 3)
    assert tf.io.decode_image(data).shape == (3, 3, 4, 3)
    assert _header(data) == ("GIF", 4, 3, 12 + 12 + 4, 3)
    assert _header(_webp_vp8x(300, 200)) == ("WebP", 300, 200, 60000, 1)
    assert _header(_webp_vp8x(30, 20, animated_frames=3)) == ("WebP", 30, 20, 1800, 3)


def test_header_webp_lossy_and_lossless():
    vp8 = (b"RIFF" + struct.pack("<I", 30) + b"WEBPVP8 " + struct.pack("<I", 18)
           + b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", 640, 480) + bytes(8))
    assert _header(vp8) == ("WebP", 640, 480, 640 * 480, 1)
    bits = (640 - 1) | ((480 - 1) << 14)
    vp8l = (b"RIFF" + struct.pack("<I", 30) + b"WEBPVP8L" + struct.pack("<I", 10)
            + b"\x2f" + bits.to_bytes(4, "little") + bytes(8))
    assert _header(vp8l) == ("WebP", 640, 480, 640 * 480, 1)


# ------------------------------------------------- FIFOs, devices, dotfiles


def _load_with_timeout(spec, fifos, timeout=30):
    """Runs load(spec) in a thread; if it blocks, unblocks it and fails."""
    result = {}

    def target():
        try:
            result["data"] = load(spec)
        except BaseException as error:  # reported by the caller
            result["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    blocked = thread.is_alive()
    deadline = time.monotonic() + 30
    while thread.is_alive() and time.monotonic() < deadline:
        for fifo in fifos:  # a writer opening and closing gives the reader EOF
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        thread.join(0.1)
    assert not blocked, f"load({spec!r}) blocked on a FIFO"
    return result


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_symlink_and_folder_named_png_are_skipped(tmp_path):
    _make_folder(tmp_path, per_class=2)
    fifo = tmp_path / "cat" / "x.png"
    os.mkfifo(fifo)
    os.symlink(fifo, tmp_path / "dog" / "link.png")
    (tmp_path / "dog" / "folder.png").mkdir()
    result = _load_with_timeout(f"folder:{tmp_path}", [fifo])
    assert "error" not in result, result.get("error")
    data = result["data"]
    assert len(data.x_train) + len(data.x_test) == 4


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_folder_of_only_a_fifo_is_an_error_not_a_hang(tmp_path):
    (tmp_path / "cat").mkdir()
    fifo = tmp_path / "cat" / "x.png"
    os.mkfifo(fifo)
    result = _load_with_timeout(f"folder:{tmp_path}", [fifo])
    assert isinstance(result.get("error"), DataError), result
    assert "no images" in str(result["error"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_swapped_in_after_listing_is_refused(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    result = {}

    def target():
        try:
            datasets._decode_file(str(fifo))
        except DataError as error:
            result["error"] = str(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail("opening a FIFO blocked")
    assert result["error"] == f"{fifo}: not a regular file"


def test_appledouble_and_other_dotfiles_are_ignored(tmp_path):
    _make_folder(tmp_path, per_class=2)
    (tmp_path / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00" + bytes(80))
    (tmp_path / "dog" / ".hidden.png").write_bytes(b"garbage")
    data = load(f"folder:{tmp_path}")
    assert len(data.x_train) + len(data.x_test) == 4


# ------------------------------------------- max_train_examples while loading


def test_folder_decodes_only_the_train_examples_kept(tmp_path, monkeypatch):
    _make_folder(tmp_path, per_class=8)
    full = load(f"folder:{tmp_path}")
    decoded = []
    real_decode = datasets._decode_file

    def spy(path, *args, **kwargs):
        decoded.append(path)
        return real_decode(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "_decode_file", spy)
    data = load(f"folder:{tmp_path}", max_train_examples=3)
    assert len(decoded) == 3 + len(full.x_test)
    np.testing.assert_array_equal(data.x_train, full.x_train[:3])
    np.testing.assert_array_equal(data.y_train, full.y_train[:3])
    np.testing.assert_array_equal(data.x_test, full.x_test)
    np.testing.assert_array_equal(data.y_test, full.y_test)


def test_folder_train_file_beyond_the_limit_is_never_opened(tmp_path):
    _make_folder(tmp_path, per_class=8)
    full = load(f"folder:{tmp_path}")
    # Corrupt a train image that max_train_examples=2 leaves out.
    train, _ = datasets._split_indices(np.repeat([0, 1], 8))
    last = int(train[-1])
    path = tmp_path / ("cat", "dog")[last // 8] / f"{last % 8}.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\ncorrupt")
    data = load(f"folder:{tmp_path}", max_train_examples=2)
    np.testing.assert_array_equal(data.x_train, full.x_train[:2])
    with pytest.raises(DataError, match=re.escape(str(path))):
        load(f"folder:{tmp_path}")


def test_tfds_reads_only_the_train_examples_kept(monkeypatch):
    counted = []
    real_load = tfds.load

    def counting_load(name, split, **kwargs):
        dataset = real_load(name, split=split, **kwargs)
        if not split.startswith("train"):
            return dataset

        def count(label):
            counted.append(1)
            return label

        return dataset.map(lambda image, label: (
            image, tf.ensure_shape(tf.py_function(count, [label], label.dtype), label.shape)))

    monkeypatch.setattr(tfds, "load", counting_load)
    with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
        full = load("tfds:mnist:3.*.*")
        assert len(counted) == 10
        counted.clear()
        data = load("tfds:mnist:3.*.*", max_train_examples=4)
    assert len(counted) == 4
    assert len(data.x_train) == 4 and len(data.x_test) == 10
    np.testing.assert_array_equal(data.x_train, full.x_train[:4])
    np.testing.assert_array_equal(data.y_train, full.y_train[:4])
