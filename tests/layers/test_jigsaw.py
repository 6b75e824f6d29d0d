"""Jigsaw and PatchHead: patches reassemble to the image; crops, sizes, errors, configs."""

import numpy as np
import pytest
import tensorflow as tf

from keras_ebm.layers import Jigsaw
from keras_ebm.layers import PatchHead


def test_patches_reassemble_to_the_image_under_the_inverse_permutation():
    images = np.random.default_rng(0).random((4, 12, 9, 2)).astype("float32")
    jigsaw = Jigsaw(grid_size=3, seed=0)
    patches, permutation = jigsaw(images, training=True, return_permutation=True)
    assert patches.shape == (4, 9, 4, 3, 2)
    permutation = permutation.numpy()
    assert all(sorted(p) == list(range(9)) for p in permutation)
    assert (permutation != np.arange(9)).any()  # shuffled
    # Output position k holds cell permutation[k]: undo with the inverse permutation.
    restored = tf.gather(patches, np.argsort(permutation, axis=1), axis=1, batch_dims=1)
    np.testing.assert_array_equal(Jigsaw.assemble(restored, 3).numpy(), images)
    # Patch k is exactly the cell permutation[k] (row-major).
    row, column = divmod(int(permutation[1, 0]), 3)
    np.testing.assert_array_equal(patches[1, 0].numpy(),
                                  images[1, 4 * row:4 * row + 4, 3 * column:3 * column + 3])


def test_inference_keeps_the_order_and_remainders_are_dropped():
    images = np.random.default_rng(1).random((2, 10, 10, 1)).astype("float32")
    patches = Jigsaw(grid_size=3)(images, training=False)
    np.testing.assert_array_equal(Jigsaw.assemble(patches, 3).numpy(), images[:, :9, :9])


def test_patch_crops_are_random_in_training_and_central_otherwise():
    images = np.arange(2 * 12 * 12, dtype="float32").reshape(2, 12, 12, 1)
    jigsaw = Jigsaw(grid_size=3, patch_size=2, seed=3)
    central = jigsaw(images, training=False).numpy()
    assert central.shape == (2, 9, 2, 2, 1)
    np.testing.assert_array_equal(central[0, 4], images[0, 5:7, 5:7])  # centre of cell (1, 1)
    patches, permutation = jigsaw(images, training=True, return_permutation=True)
    for b in range(2):
        for k in range(9):
            row, column = divmod(int(permutation[b, k]), 3)
            cell = images[b, 4 * row:4 * row + 4, 4 * column:4 * column + 4, 0]
            top, left = np.argwhere(cell == patches[b, k, 0, 0, 0].numpy())[0]
            np.testing.assert_array_equal(patches[b, k, ..., 0], cell[top:top + 2, left:left + 2])


def test_resize_before_cutting():
    jigsaw = Jigsaw(grid_size=3, resize_to=24)
    assert jigsaw.patch_shape((8, 8, 1)) == (8, 8, 1)
    assert jigsaw(np.zeros((2, 8, 8, 1), "float32")).shape == (2, 9, 8, 8, 1)
    assert jigsaw.compute_output_shape((None, 8, 8, 1)) == (None, 9, 8, 8, 1)


def test_images_too_small_for_the_grid():
    with pytest.raises(ValueError, match="too small for a 3x3 grid"):
        Jigsaw(grid_size=3).patch_shape((2, 2, 1))
    with pytest.raises(ValueError, match="too small for a 3x3 grid"):
        Jigsaw(grid_size=3, patch_size=5)(np.zeros((1, 12, 12, 1), "float32"))
    with pytest.raises(ValueError):
        Jigsaw(grid_size=0)
    with pytest.raises(ValueError):
        Jigsaw(patch_size=(0, 2))


def test_config_round_trips():
    jigsaw = Jigsaw(grid_size=2, patch_size=(3, 4), resize_to=24, seed=5, name="j")
    clone = Jigsaw.from_config(jigsaw.get_config())
    assert (clone.grid_size, clone.patch_size, clone.resize_to, clone.seed) == (
        2, (3, 4), (24, 24), 5)
    head = PatchHead(patch_dim=6, output_dim=5)
    assert head(np.zeros((3, 9, 7), "float32")).shape == (3, 5)
    assert head.patch_embedding.kernel.shape == (7, 6)  # one embedding shared by the patches
    clone = PatchHead.from_config(head.get_config())
    assert (clone.patch_dim, clone.output_dim) == (6, 5)
    with pytest.raises(ValueError):
        PatchHead(patch_dim=0)
