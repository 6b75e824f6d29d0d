"""tools/folder_to_tfrecords.py: the records hold the folder loader's split, and bad input."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.data import datasets
from keras_ebm.data import tfrecords

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "folder_to_tfrecords.py")
CLASSES = {"cat": 9, "dog": 7, "owl": 4}  # class -> images: 20 images, 14 train and 6 test


def png(seed, size=(6, 5)):
    image = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    return tf.io.encode_png(image).numpy()


def make_folder(root, classes=CLASSES):
    """A folder of small distinct PNGs, plus entries the folder loader skips."""
    seed = 0
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            (root / name / f"{i:02d}.png").write_bytes(png(seed))
            seed += 1
    if classes is not CLASSES:
        return root
    # Skipped by the loader, so by the converter too: a dotfile, a folder named like an
    # image, a file without an image extension and a hidden class folder.
    (root / "cat" / "._00.png").write_bytes(b"AppleDouble")
    (root / "cat" / "folder.png").mkdir()
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.png").write_bytes(png(999))
    return root


def run_tool(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, TOOL, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def error_lines(stderr):
    # TensorFlow's C++ start-up messages are not ours; keep the tool's own lines.
    return [line for line in stderr.splitlines()
            if line.strip() and not line.startswith(("WARNING: All log", "I0000", "E0000",
                                                      "W0000"))]


def read_split(output, info, split):
    """Parsed records of a split, shard by shard in dataset_info.json's order."""
    records = []
    for shard in info["splits"][split]["shards"]:
        count = 0
        for serialized in tf.data.TFRecordDataset(str(output / shard["file"])):
            encoded, label, index, filename = tfrecords.parse_example(serialized)
            full = tf.io.parse_single_example(serialized, tfrecords.FEATURES)
            records.append({
                "encoded": encoded.numpy(), "label": int(label), "index": int(index),
                "filename": filename.numpy().decode(),
                "text": full["image/class/text"].numpy().decode(),
                "format": full["image/format"].numpy().decode(),
                "height": int(full["image/height"]), "width": int(full["image/width"])})
            count += 1
        assert count == shard["num_examples"], shard
    return records


def test_records_hold_the_folder_loaders_split_in_order(tmp_path):
    source, output = make_folder(tmp_path / "images"), tmp_path / "out" / "records"
    result = run_tool(f"--input={source}", f"--output={output}", "--train_shards=3",
                      "--test_shards=2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert not error_lines(result.stderr), result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("Wrote 14 train images in 3 shards")

    info = json.loads((output / tfrecords.INFO_FILE).read_text())
    assert info["format"] == tfrecords.FORMAT
    assert info["class_names"] == sorted(CLASSES)
    assert info["image_shape"] == [6, 5, 3]
    assert info["source"] == str(source)
    names = {tfrecords.INFO_FILE}
    for split, num_shards in (("train", 3), ("test", 2)):
        shards = info["splits"][split]["shards"]
        assert [s["file"] for s in shards] == [tfrecords.shard_name(split, k, num_shards)
                                               for k in range(num_shards)]
        names |= {s["file"] for s in shards}
    assert set(os.listdir(output)) == names  # no staging left behind either
    assert set(os.listdir(output.parent)) == {"records"}

    data = datasets.load(f"folder:{source}")
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        records = read_split(output, info, split)
        n = info["splits"][split]["num_examples"]
        assert n == len(records) == len(y)
        # Shard k holds positions [k*n/S, (k+1)*n/S) of the split's order.
        num_shards = len(info["splits"][split]["shards"])
        assert [s["num_examples"] for s in info["splits"][split]["shards"]] == [
            (k + 1) * n // num_shards - k * n // num_shards for k in range(num_shards)]
        assert [r["index"] for r in records] == list(range(n))
        assert [r["label"] for r in records] == list(y)
        images = np.stack([tf.io.decode_png(r["encoded"]).numpy() for r in records])
        np.testing.assert_array_equal(images.astype(np.float32) / 255.0, x)
        for r in records:
            class_name = info["class_names"][r["label"]]
            assert r["text"] == class_name and r["filename"].startswith(class_name + "/")
            assert (r["format"], r["height"], r["width"]) == ("png", 6, 5)
            # The file's original bytes, not re-encoded.
            assert r["encoded"] == (source / r["filename"]).read_bytes()
    train_files = {r["filename"] for r in read_split(output, info, "train")}
    test_files = {r["filename"] for r in read_split(output, info, "test")}
    listed = {f"{c}/{i:02d}.png" for c, count in CLASSES.items() for i in range(count)}
    assert not train_files & test_files and train_files | test_files == listed


def test_default_shards_and_overwrite(tmp_path):
    source, output = make_folder(tmp_path / "images"), tmp_path / "records"
    result = run_tool(f"--input={source}", f"--output={output}")
    assert result.returncode == 0, result.stderr[-2000:]
    info = json.loads((output / tfrecords.INFO_FILE).read_text())
    assert [s["file"] for s in info["splits"]["train"]["shards"]] == ["train-00000-of-00001"]
    assert [s["file"] for s in info["splits"]["test"]["shards"]] == ["test-00000-of-00001"]

    result = run_tool(f"--input={source}", f"--output={output}", "--overwrite",
                      "--train_shards=2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(os.listdir(output)) == [tfrecords.INFO_FILE, "test-00000-of-00001",
                                          "train-00000-of-00002", "train-00001-of-00002"]
    assert sorted(os.listdir(tmp_path)) == ["images", "records"]


def tiny_image_folder(root):
    return make_folder(root, {"a": 2, "b": 2})


def huge_header_png():
    """A PNG header claiming 5000 x 5000 pixels: refused from the header alone."""
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR"
            + struct.pack(">II", 5000, 5000) + b"\x08\x02\x00\x00\x00" + b"\0" * 16)


def setup_case(case, tmp_path):
    """(args, expected text) of one bad input; creates what it needs in tmp_path."""
    source, output = tmp_path / "images", tmp_path / "out"
    if case == "missing folder":
        return [f"--input={tmp_path}/nowhere", f"--output={output}"], "--input"
    if case == "no classes":
        source.mkdir()
        (source / "loose.png").write_bytes(png(0))
        return [f"--input={source}", f"--output={output}"], "no class sub-folders"
    if case == "no images":
        (source / "cats").mkdir(parents=True)
        return [f"--input={source}", f"--output={output}"], "no images"
    tiny_image_folder(source)
    if case == "not an image":
        (source / "b" / "zz.png").write_bytes(b"hello, not a png")
        return [f"--input={source}", f"--output={output}"], "zz.png: not a PNG"
    if case == "too large by header":
        (source / "b" / "zz.png").write_bytes(huge_header_png())
        return ([f"--input={source}", f"--output={output}"],
                "zz.png: 5000x5000 image (25000000 pixels) exceeds --max_image_pixels")
    if case == "over --max_image_pixels":
        return [f"--input={source}", f"--output={output}", "--max_image_pixels=29"], "exceeds"
    if case == "corrupt with --verify":
        (source / "b" / "zz.png").write_bytes(png(7)[:40])
        return [f"--input={source}", f"--output={output}", "--verify"], "zz.png: corrupt"
    if case == "output not empty":
        output.mkdir()
        (output / "keep.txt").write_text("mine")
        return [f"--input={source}", f"--output={output}"], "--output"
    if case == "overwrite a folder that is not a conversion":
        output.mkdir()
        (output / "keep.txt").write_text("mine")
        return [f"--input={source}", f"--output={output}", "--overwrite"], "--overwrite"
    if case == "output inside input":
        return [f"--input={source}", f"--output={source}/records"], "inside --input"
    if case == "too many shards":
        return [f"--input={source}", f"--output={output}", "--test_shards=3"], "--test_shards=3"
    raise AssertionError(case)


# Each case is a subprocess (~8 s of TensorFlow start-up): the suite runs the six that
# exercise distinct code paths; `pytest -m paper_scale` adds the other five.
SLOW = pytest.mark.paper_scale


@pytest.mark.parametrize("case", [
    "missing folder", pytest.param("no classes", marks=SLOW), "no images",
    pytest.param("not an image", marks=SLOW), "too large by header",
    pytest.param("over --max_image_pixels", marks=SLOW), "corrupt with --verify",
    "output not empty", pytest.param("overwrite a folder that is not a conversion", marks=SLOW),
    "output inside input", pytest.param("too many shards", marks=SLOW)])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, case):
    args, expected = setup_case(case, tmp_path)
    before = {path: sorted(files) for path, _, files in os.walk(tmp_path)}
    result = run_tool(*args)
    lines = error_lines(result.stderr)
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1, lines
    assert lines[0].startswith("folder_to_tfrecords.py: error: ") and expected in lines[0], lines
    assert "Traceback" not in result.stderr
    # Nothing half-written: no output, no staging folder, an existing output untouched.
    assert {path: sorted(files) for path, _, files in os.walk(tmp_path)} == before
