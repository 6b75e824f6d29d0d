"""PIRL's jigsaw transform and the patch head g that embeds the shuffled patches."""

import keras
import tensorflow as tf
from keras import ops


def _size_pair(value, name):
    if value is None:
        return None
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"Jigsaw: {name} must be a positive int or a pair of them, got {value}")
    return value


@keras.saving.register_keras_serializable(package="keras_ebm")
class Jigsaw(keras.layers.Layer):
    """Cuts each image into a grid of patches and shuffles them: PIRL's transform t.

        images [B, H, W, C] -> patches [B, grid_size**2, patch_h, patch_w, C]

    The image is (optionally) resized to `resize_to`, cut into a
    `grid_size` x `grid_size` grid of cells of H // grid_size x W // grid_size
    pixels (the bottom and right remainders are dropped), and each cell is
    cropped to `patch_size`: at a random place in training, in its centre
    otherwise (PIRL: 64-pixel crops of 85-pixel cells, so that the patches
    cannot be matched by their borders). In training the patches of each image
    are put in a random order; output position k holds cell `permutation[k]`
    (row-major). At inference they stay in row-major order.

    Args:
        grid_size: int >= 1, default 3 (PIRL: a 3x3 grid).
        patch_size: None (default: the whole cell), an int or (height, width);
            at most the cell size.
        resize_to: None (default) or an int or (height, width): resize the
            images (bilinear) before cutting. For 8x8 digits, 24 gives 8x8
            cells.
        seed: None or int, default None. Seed of the crops and permutations.
        **kwargs: base layer keyword arguments.

    Example:

    >>> jigsaw = Jigsaw(grid_size=3, resize_to=24)
    >>> patches, permutation = jigsaw(images, training=True, return_permutation=True)
    >>> patches.shape, permutation.shape        # for images [B, 8, 8, 1]
    ((B, 9, 8, 8, 1), (B, 9))
    >>> Jigsaw.assemble(tf.gather(patches, tf.argsort(permutation), batch_dims=1), 3)

    Reference:
        Noroozi & Favaro, Unsupervised Learning of Visual Representations by
        Solving Jigsaw Puzzles, ECCV 2016; Misra & van der Maaten, PIRL, CVPR
        2020, section 4.1.
    """

    def __init__(self, grid_size=3, patch_size=None, resize_to=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if int(grid_size) < 1:
            raise ValueError(f"Jigsaw: grid_size must be >= 1, got {grid_size}")
        self.grid_size = int(grid_size)
        self.patch_size = _size_pair(patch_size, "patch_size")
        self.resize_to = _size_pair(resize_to, "resize_to")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="jigsaw_seed")

    @property
    def num_patches(self):
        return self.grid_size ** 2

    def patch_shape(self, image_shape):
        """The (height, width, channels) of the patches of images of `image_shape` (H, W, C).

        Raises:
            ValueError: if the images are too small for the grid or the patch size.
        """
        height, width, channels = tuple(image_shape)[-3:]
        if self.resize_to is not None:
            height, width = self.resize_to
        if height is None or width is None:
            raise ValueError("Jigsaw needs images of a known height and width")
        cell = (height // self.grid_size, width // self.grid_size)
        patch = self.patch_size or cell
        if min(cell) < 1 or patch[0] > cell[0] or patch[1] > cell[1]:
            raise ValueError(
                f"Jigsaw: images of {height}x{width} are too small for a {self.grid_size}x"
                f"{self.grid_size} grid of {patch[0]}x{patch[1]} patches (cells of "
                f"{cell[0]}x{cell[1]}); resize them (resize_to=...) or use smaller patches")
        return (patch[0], patch[1], channels)

    def build(self, input_shape):
        self.patch_shape(input_shape)
        self.built = True

    def call(self, images, training=False, return_permutation=False):
        images = ops.convert_to_tensor(images)
        if self.resize_to is not None:
            images = ops.image.resize(images, self.resize_to, interpolation="bilinear")
        patch_height, patch_width, channels = self.patch_shape(images.shape)
        grid = self.grid_size
        cell_height, cell_width = images.shape[1] // grid, images.shape[2] // grid
        batch_size = ops.shape(images)[0]
        images = images[:, :grid * cell_height, :grid * cell_width, :]
        cells = ops.reshape(images, (batch_size, grid, cell_height, grid, cell_width, channels))
        cells = ops.transpose(cells, (0, 1, 3, 2, 4, 5))
        patches = ops.reshape(cells, (batch_size, grid * grid, cell_height, cell_width, channels))
        if (patch_height, patch_width) != (cell_height, cell_width):
            patches = self._crop(patches, patch_height, patch_width, cell_height, cell_width,
                                 training)
        if training:
            # A random permutation per image: argsort of uniform noise.
            noise = keras.random.uniform((batch_size, grid * grid), seed=self.seed_generator)
            permutation = ops.cast(ops.argsort(noise, axis=-1), "int32")
            patches = tf.gather(patches, permutation, axis=1, batch_dims=1)
        else:
            permutation = ops.tile(ops.arange(grid * grid, dtype="int32")[None], (batch_size, 1))
        return (patches, permutation) if return_permutation else patches

    def _crop(self, patches, patch_height, patch_width, cell_height, cell_width, training):
        batch_size = ops.shape(patches)[0]
        shape = (batch_size, self.num_patches)
        if training:
            top = keras.random.randint(shape, 0, cell_height - patch_height + 1, dtype="int32",
                                       seed=self.seed_generator)
            left = keras.random.randint(shape, 0, cell_width - patch_width + 1, dtype="int32",
                                        seed=self.seed_generator)
        else:
            top = ops.full(shape, (cell_height - patch_height) // 2, dtype="int32")
            left = ops.full(shape, (cell_width - patch_width) // 2, dtype="int32")
        rows = top[..., None] + ops.arange(patch_height, dtype="int32")   # [B, P, ph]
        columns = left[..., None] + ops.arange(patch_width, dtype="int32")  # [B, P, pw]
        patches = tf.gather(patches, rows, axis=2, batch_dims=2)
        return tf.gather(patches, columns, axis=3, batch_dims=2)

    @staticmethod
    def assemble(patches, grid_size=3):
        """Puts row-major patches [B, grid_size**2, h, w, C] back into images [B, g h, g w, C]."""
        patches = ops.convert_to_tensor(patches)
        _, _, height, width, channels = patches.shape
        batch_size = ops.shape(patches)[0]
        cells = ops.reshape(patches, (batch_size, grid_size, grid_size, height, width, channels))
        cells = ops.transpose(cells, (0, 1, 3, 2, 4, 5))
        return ops.reshape(cells, (batch_size, grid_size * height, grid_size * width, channels))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_patches) + self.patch_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "grid_size": self.grid_size,
            "patch_size": list(self.patch_size) if self.patch_size else None,
            "resize_to": list(self.resize_to) if self.resize_to else None,
            "seed": self.seed,
        })
        return config


@keras.saving.register_keras_serializable(package="keras_ebm")
class PatchHead(keras.layers.Layer):
    """PIRL's head g: one shared embedding per patch, concatenated, then projected.

        g(h_1, ..., h_P) = W_out [W_patch h_1; ...; W_patch h_P]

    The input holds the encoder's features of each patch, [B, P, D], in the
    (shuffled) order the jigsaw produced; the output is [B, output_dim].

    Args:
        patch_dim: int, default 128. Width of the shared per-patch embedding.
        output_dim: int, default 128. Dimension of g(v_It); equal to the
            image head's and the memory bank's.
        **kwargs: base layer keyword arguments.

    Example:

    >>> head = PatchHead(patch_dim=128, output_dim=128)
    >>> head(np.zeros((4, 9, 256), "float32")).shape
    (4, 128)

    Reference:
        Misra & van der Maaten, PIRL, CVPR 2020, section 4.1.
    """

    def __init__(self, patch_dim=128, output_dim=128, **kwargs):
        super().__init__(**kwargs)
        if int(patch_dim) < 1 or int(output_dim) < 1:
            raise ValueError(f"PatchHead: patch_dim and output_dim must be >= 1, "
                             f"got {patch_dim} and {output_dim}")
        self.patch_dim = int(patch_dim)
        self.output_dim = int(output_dim)
        self.patch_embedding = keras.layers.Dense(self.patch_dim, name="patch_embedding")
        self.output_layer = keras.layers.Dense(self.output_dim, name="output")

    def build(self, input_shape):
        _, num_patches, features = tuple(input_shape)
        if num_patches is None:
            raise ValueError("PatchHead needs a known number of patches")
        self.patch_embedding.build((None, num_patches, features))
        self.output_layer.build((None, num_patches * self.patch_dim))
        self.built = True

    def call(self, inputs):
        embeddings = self.patch_embedding(inputs)  # [B, P, patch_dim], shared weights
        batch_size = ops.shape(embeddings)[0]
        concatenated = ops.reshape(embeddings, (batch_size, embeddings.shape[1] * self.patch_dim))
        return self.output_layer(concatenated)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"patch_dim": self.patch_dim, "output_dim": self.output_dim})
        return config
