"""The self-supervised family: an encoder, a projection head and two views of each image."""

import keras
import tensorflow as tf
from keras import ops

from keras_ebm.methods.method import Method
from keras_ebm.methods.method import check_float_inputs
from keras_ebm.methods.method import copy_model
from keras_ebm.methods.method import paired_weights
from keras_ebm.methods.method import serialize
from keras_ebm.methods.method import unpack_inputs


def contrastive_accuracy(logits, labels):
    """Fraction of rows whose lowest energy (highest logit) is the positive."""
    predictions = ops.cast(ops.argmax(logits, axis=-1), "int32")
    return ops.mean(ops.cast(ops.equal(predictions, ops.cast(labels, "int32")), "float32"))


def declared_input_shape(model):
    """The example shape a model declares with `keras.Input`, or None."""
    inputs = getattr(model, "inputs", None)
    if inputs and not isinstance(inputs, dict):
        return tuple(inputs[0].shape[1:])
    return None


def check_images(name, images):
    """Float images in [0, 1]: integer dtypes raise at once, other ranges when the step runs."""
    check_float_inputs(name, images)
    images = tf.convert_to_tensor(images)
    message = (f"{name}: images must be float32 in [0, 1] (divide uint8 images by 255 "
               "before fit or predict)")
    # NOTE: TensorFlow-only (tf.debugging); XLA compiles the asserts away.
    with tf.control_dependencies([
            tf.debugging.assert_greater_equal(tf.reduce_min(images), tf.cast(-1e-3, images.dtype),
                                              message=message),
            tf.debugging.assert_less_equal(tf.reduce_max(images), tf.cast(1.001, images.dtype),
                                           message=message)]):
        return tf.identity(images)


class EmbeddingMethod(Method):
    """Base of the methods that learn an encoder by contrasting embeddings of two views.

    It owns the encoder f, the projection head g and the optional augmenter,
    turns a batch into two views (`prepare`), builds every part by calling it
    on a small batch (any Keras model works: Functional, Sequential with or
    without `keras.Input`, subclassed), and serialises them. `model(images)`
    returns the encoder's embeddings h = f(x), the representation kept.

    Inputs are float images in [0, 1]; uint8 images raise a clear error.

    Args:
        encoder: a Keras model mapping images to embeddings h.
        projection_head: a Keras layer mapping h to the projections z the loss
            sees (`keras_ebm.layers.ProjectionHead`).
        augmenter: None, or a Keras layer or callable applied with
            `training=True` to the images to make each view. With one,
            `fit(images)` works; without one, `fit` takes `(view_a, view_b)`.
        input_shape: tuple or None, one image's shape; needed only when the
            encoder declares none (no `keras.Input`) and the method must exist
            before `fit` (tf.distribute). Defaults to None.
        **kwargs: `keras.Model` keyword arguments.
    """

    tracker_names = ("loss", "contrastive_accuracy")
    config_objects = ("encoder", "projection_head")

    def __init__(self, encoder, projection_head, augmenter=None, input_shape=None, **kwargs):
        super().__init__(input_shape=input_shape, **kwargs)
        self.encoder = encoder
        self.projection_head = projection_head
        self.augmenter = augmenter

    def build_now(self, parts_shape=None):
        super().build_now(parts_shape or declared_input_shape(self.encoder))

    # -- the contract -------------------------------------------------------
    def prepare(self, data, training):
        """Two views of the batch: augmented twice, or the given pair."""
        data = unpack_inputs(data)
        name = self.__class__.__name__
        if self.augmenter is not None:
            images = check_images(name, data[0] if isinstance(data, (tuple, list)) else data)
            self.check_shape(images)
            return (self.augmenter(images, training=True),
                    self.augmenter(images, training=True))
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise ValueError(
                f"{name} has no augmenter, so fit() needs (view_a, view_b) "
                "pairs; pass augmenter=... to train on plain images")
        self.check_shape(data[0])
        return check_images(name, data[0]), check_images(name, data[1])

    # -- building -----------------------------------------------------------
    def build_parts(self, input_shape):
        embeddings = self.encoder(self.zeros(input_shape[1:]), training=False)
        projections = self.projection_head(embeddings, training=False)
        self.build_state(tuple(embeddings.shape), tuple(projections.shape))

    def build_state(self, embedding_shape, projection_shape):
        """Hook for subclasses: create momentum encoders, queues, banks."""

    # -- momentum (EMA) copies: MoCo's key encoder, BYOL's target network ---
    def copy_parts(self):
        """Fresh copies `(encoder, projection_head)` of the architecture (new weights).

        Call it in `__init__`; `start_copies` builds them in `build_state`.
        """
        owner = type(self).__name__
        return copy_model(self.encoder, owner), copy_model(self.projection_head, owner)

    def copy_pairs(self, encoder_copy, head_copy):
        """`(copy_weight, weight)` pairs of the copies with the encoder and head, in order.

        Paired by position in the model (names and shapes checked, see
        `paired_weights`), so any Keras model style works.
        """
        owner = type(self).__name__
        return (paired_weights(encoder_copy, self.encoder, owner)
                + paired_weights(head_copy, self.projection_head, owner))

    def start_copies(self, encoder_copy, head_copy):
        """Builds the copies and starts them as exact copies of the encoder and head."""
        head_copy(encoder_copy(self.zeros(self.example_shape)))
        for copy_weight, weight in self.copy_pairs(encoder_copy, head_copy):
            copy_weight.assign(weight)
            # No gradient reaches the copy (the EMA moves it), but its layers
            # stay trainable: with `layer.trainable = False` Keras's batch norm
            # would normalise with its moving statistics, while MoCo's key
            # encoder and BYOL's target run in training mode, with the
            # statistics of their batch, and update their own moving averages.
            copy_weight.trainable = False

    # -- forward ------------------------------------------------------------
    def call(self, inputs, training=False):
        self.check_shape(inputs)
        return self.encoder(inputs, training=training)

    def project(self, images, training=False):
        """z = g(f(x)): encoder then projection head."""
        return self.projection_head(self.encoder(images, training=training), training=training)

    def project_pair(self, view_a, view_b, training):
        """z of both views, run as one batch of 2N (batch norm sees all 2N views)."""
        projections = self.project(ops.concatenate([view_a, view_b], axis=0), training=training)
        return ops.split(projections, 2, axis=0)

    def project_views(self, view_a, view_b, training):
        """z of both views, one pass per view (batch norm sees each view's batch on its own).

        As the reference code of BYOL, SimSiam, Barlow Twins and VICReg does.
        """
        return self.project(view_a, training=training), self.project(view_b, training=training)

    # -- serialisation ------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config["augmenter"] = (serialize(self.augmenter)
                               if isinstance(self.augmenter, keras.layers.Layer) else None)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("augmenter"), dict):
            config["augmenter"] = keras.saving.deserialize_keras_object(config["augmenter"])
        return super().from_config(config)
