"""The MLP projection head of SimCLR and MoCo v2."""

import keras

from keras_ebm.layers.batch_normalization import FusedBatchNormalization


@keras.saving.register_keras_serializable(package="keras_ebm")
class ProjectionHead(keras.layers.Layer):
    """Projection head g(h): Dense -> [BatchNorm] -> ReLU, repeated, then a linear output.

    z = W_out relu(BN(W_k ... relu(BN(W_1 h))))

    The contrastive loss is computed on z, while downstream tasks use the
    encoder's h (SimCLR section 4.2 shows h keeps more information).

    Args:
        hidden_dims: int or sequence of ints, default (2048,). Width of each
            hidden layer; an empty sequence gives a linear head.
        output_dim: int, default 128. Dimension of the projections z.
        batch_norm: bool, default True. Batch normalisation after each hidden
            Dense (SimCLR v1 uses it; MoCo v2's head does not).
        output_batch_norm: bool, default False. Batch normalisation on the
            output (SimCLR v2).
        **kwargs: base layer keyword arguments.

    Example:

    >>> head = ProjectionHead(hidden_dims=(512,), output_dim=128)
    >>> head(np.zeros((4, 256), "float32")).shape
    (4, 128)

    Reference:
        Chen et al., SimCLR, ICML 2020; Chen et al., Improved Baselines with
        Momentum Contrastive Learning (MoCo v2), 2020.
    """

    def __init__(self, hidden_dims=(2048,), output_dim=128, batch_norm=True,
                 output_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(hidden_dims, int):
            hidden_dims = (hidden_dims,)
        self.hidden_dims = tuple(int(d) for d in hidden_dims)
        self.output_dim = int(output_dim)
        self.batch_norm = bool(batch_norm)
        self.output_batch_norm = bool(output_batch_norm)
        self.hidden_layers = []
        for i, width in enumerate(self.hidden_dims):
            block = [keras.layers.Dense(width, use_bias=not self.batch_norm, name=f"dense_{i}")]
            if self.batch_norm:
                block.append(FusedBatchNormalization(momentum=0.9, epsilon=1e-5,
                                                    name=f"bn_{i}"))
            block.append(keras.layers.ReLU(name=f"relu_{i}"))
            self.hidden_layers.extend(block)
        self.output_layer = keras.layers.Dense(self.output_dim, use_bias=not self.output_batch_norm,
                                               name="output")
        self.output_norm = (FusedBatchNormalization(momentum=0.9, epsilon=1e-5,
                                                   center=False, name="output_bn")
                            if self.output_batch_norm else None)

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.hidden_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.output_layer.build(shape)
        shape = self.output_layer.compute_output_shape(shape)
        if self.output_norm is not None:
            self.output_norm.build(shape)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        for layer in self.hidden_layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                x = layer(x, training=training)
            else:
                x = layer(x)
        x = self.output_layer(x)
        if self.output_norm is not None:
            x = self.output_norm(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update({
            "hidden_dims": list(self.hidden_dims),
            "output_dim": self.output_dim,
            "batch_norm": self.batch_norm,
            "output_batch_norm": self.output_batch_norm,
        })
        return config
