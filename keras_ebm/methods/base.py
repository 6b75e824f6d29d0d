"""Shared plumbing of the self-supervised embedding methods."""

import keras
from keras import ops

from keras_ebm import distribute


def serialize(obj):
    return None if obj is None else keras.saving.serialize_keras_object(obj)


def deserialize(config):
    return None if config is None else keras.saving.deserialize_keras_object(config)


def clone_layer(layer):
    """A fresh copy of `layer` with the same architecture (new, unbuilt weights)."""
    if isinstance(layer, keras.Model) and getattr(layer, "inputs", None):
        return keras.models.clone_model(layer)  # Functional and Sequential models
    return layer.__class__.from_config(layer.get_config())


def contrastive_accuracy(logits, labels):
    """Fraction of rows whose lowest energy (highest logit) is the positive."""
    predictions = ops.cast(ops.argmax(logits, axis=-1), "int32")
    return ops.mean(ops.cast(ops.equal(predictions, ops.cast(labels, "int32")), "float32"))


class ContrastiveEmbeddingMethod(keras.Model):
    """Base of the methods that learn an encoder by contrasting embeddings.

    It owns the encoder, the projection head and the optional augmenter, turns
    a batch into two views, tracks the loss and the contrastive accuracy with
    `keras.metrics.Mean`, and serialises its parts. `model(images)` returns the
    encoder's embeddings, the representation used downstream.

    A subclass writes `train_step` (and `contrastive_loss` for `test_step`).

    Args:
        encoder: a Keras model mapping images to embeddings h.
        projection_head: a Keras layer mapping h to the projections z the loss
            sees (`keras_ebm.layers.ProjectionHead`).
        augmenter: None, or a Keras layer or callable applied with
            `training=True` to the images to make each view. With one,
            `fit(images)` works; without one, `fit` takes `(view_a, view_b)`.
        **kwargs: `keras.Model` keyword arguments.
    """

    def __init__(self, encoder, projection_head, augmenter=None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.projection_head = projection_head
        self.augmenter = augmenter
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="contrastive_accuracy")

    # -- building -----------------------------------------------------------
    def _encoder_input_shape(self):
        inputs = getattr(self.encoder, "inputs", None)
        if inputs:
            return tuple(inputs[0].shape)
        return None

    def build_from_encoder(self):
        """Builds every part when the encoder's input shape is known.

        Called by subclasses at the end of `__init__`, so that the optimizer
        sees every variable before `fit` (required under tf.distribute).
        """
        shape = self._encoder_input_shape()
        if shape is not None:
            self.build(shape)

    def build(self, input_shape):
        if not self.encoder.built:
            self.encoder.build(input_shape)
        embedding_shape = self.encoder.compute_output_shape(input_shape)
        if not self.projection_head.built:
            self.projection_head.build(embedding_shape)
        self.build_state(embedding_shape, self.projection_head.compute_output_shape(embedding_shape))
        self.built = True

    def build_state(self, embedding_shape, projection_shape):
        """Hook for subclasses: create momentum encoders, queues, banks."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3 (TensorFlow backend, keras/src/backend/tensorflow/trainer.py)
        # starts fit() and evaluate() under a strategy by averaging one batch
        # over the replicas, strategy.reduce("MEAN", batch, axis=None), only to
        # build the model symbolically from its shape. Under
        # MultiWorkerMirroredStrategy that reduce fails on a structured batch
        # (PIRL's (images, indices): "Attempt to convert a value (PerReplica...)
        # to a Tensor") and costs a collective over a whole batch otherwise.
        # These methods build their variables in __init__ (build_from_encoder),
        # so the symbolic build has only the optimizer left to build: do that,
        # in the strategy's scope, as Keras would.
        compiled = [getattr(self, "_compile_metrics", None), getattr(self, "_compile_loss", None)]
        if (getattr(self, "_distribute_strategy", None) is None or not self.built
                or any(c is not None and not c.built for c in compiled)):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    # -- data ---------------------------------------------------------------
    def make_views(self, data):
        """Returns two views of the batch: augmented twice, or the given pair."""
        # Unwrap what Keras adds: (x,), (x, None, None) from train_on_batch.
        while isinstance(data, (tuple, list)) and (len(data) == 1 or data[-1] is None):
            data = data[0] if len(data) == 1 else tuple(data[:-1])
        if self.augmenter is not None:
            images = data[0] if isinstance(data, (tuple, list)) else data
            return (self.augmenter(images, training=True),
                    self.augmenter(images, training=True))
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise ValueError(
                f"{self.__class__.__name__} has no augmenter, so fit() needs (view_a, view_b) "
                "pairs; pass augmenter=... to train on plain images")
        return data[0], data[1]

    # -- forward ------------------------------------------------------------
    def call(self, inputs, training=False):
        return self.encoder(inputs, training=training)

    def project(self, images, training=False):
        """z = g(f(x)): encoder then projection head."""
        return self.projection_head(self.encoder(images, training=training), training=training)

    # -- metrics ------------------------------------------------------------
    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    def update_trackers(self, loss, logits, labels):
        """Updates the trackers; returns the step's logs (see `distribute.step_logs`)."""
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(contrastive_accuracy(logits, labels))
        return distribute.step_logs({m.name: m.result() for m in self.metrics})

    def apply_gradients(self, tape, loss):
        """Steps 2 and 3 of the Keras trainer: gradients, then the update.

        `loss` must come from `scale_loss` inside the tape, so that float16
        loss scaling (`keras.optimizers.LossScaleOptimizer`) sees it.
        """
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))

    def scale_loss(self, loss, local_size=None, global_size=None):
        """The loss to differentiate: this replica's share, then the optimizer's loss scale.

        Call it inside the `GradientTape`. On one device without float16 it is
        `loss` itself.
        """
        loss = distribute.scale_loss_for_replicas(loss, local_size, global_size)
        return self.optimizer.scale_loss(loss)

    def test_step(self, data):
        # Subclasses define contrastive_loss(view_a, view_b, training) -> (loss, logits, labels).
        view_a, view_b = self.make_views(data)
        loss, logits, labels = self.contrastive_loss(view_a, view_b, training=False)
        return self.update_trackers(loss, logits, labels)

    # -- serialisation ------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update({
            "encoder": serialize(self.encoder),
            "projection_head": serialize(self.projection_head),
            "augmenter": serialize(self.augmenter) if isinstance(self.augmenter,
                                                                 keras.layers.Layer) else None,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "projection_head", "augmenter", "image_head", "patch_head"):
            if key in config:
                config[key] = deserialize(config[key])
        return cls(**config)

