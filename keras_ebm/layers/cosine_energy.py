"""Cosine energy between embeddings."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_ebm")
class CosineEnergy(keras.layers.Layer):
    """Energy of a pair of embeddings: their negative cosine similarity over a temperature.

    E(a, b) = -cos(a, b) / temperature = -<a/|a|, b/|b|> / temperature

    Low energy means compatible (a positive pair); every contrastive embedding
    method in keras_ebm pushes this energy down on positive pairs and up on the
    contrasted ones. With `pairwise=True` the layer returns the N x M matrix
    E(a_i, b_j); with `pairwise=False` it returns the N energies E(a_i, b_i) of
    paired rows.

    Args:
        temperature: positive float, default 1.0. Dividing by a small
            temperature sharpens the softmax over energies.
        epsilon: float, default 1e-12, guards the normalisation of zero vectors.
        **kwargs: base layer keyword arguments.

    Example:

    >>> energy = CosineEnergy(temperature=0.5)
    >>> a = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> energy(a, a, pairwise=False)   # -1 / 0.5 for identical directions
    array([-2., -2.])
    >>> energy(a, a).shape              # pairwise
    (2, 2)

    Reference:
        Chen et al., A Simple Framework for Contrastive Learning of Visual
        Representations (SimCLR), ICML 2020.
    """

    def __init__(self, temperature=1.0, epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"CosineEnergy: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)

    def call(self, a, b, pairwise=True):
        a = normalize(a, self.epsilon)
        b = normalize(b, self.epsilon)
        if pairwise:
            similarity = ops.matmul(a, ops.transpose(b))
        else:
            similarity = ops.sum(a * b, axis=-1)
        return -similarity / self.temperature

    def compute_output_shape(self, a_shape, b_shape, pairwise=True):
        if pairwise:
            return (a_shape[0], b_shape[0])
        return (a_shape[0],)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature, "epsilon": self.epsilon})
        return config


def normalize(x, epsilon=1e-12):
    """L2-normalises the last axis of `x` in float32 (safe under mixed precision)."""
    x = ops.cast(x, "float32")
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), epsilon))
