"""The methods whose online branch ends with a predictor: BYOL and SimSiam."""

from keras_ebm.methods.embedding import EmbeddingMethod


class PredictorMethod(EmbeddingMethod):
    """Base of the methods that predict one view's projection from the other's (BYOL, SimSiam).

    It adds a predictor q to `EmbeddingMethod`'s encoder f and projection head
    g: the online branch maps a view x to z = g(f(x)) and p = q(z)
    (`online`). The predictor is built, trained and saved with the other
    parts; `model(images)` still returns h = f(x). No loss term compares
    images with each other, so the trackers show only the loss.

    Args:
        encoder: a Keras model mapping images to embeddings h.
        projection_head: a Keras layer mapping h to the projections z.
        predictor: a Keras layer mapping z to predictions p of the same
            dimension (`keras_ebm.layers.ProjectionHead` works: BYOL's is a
            4096 -> 256 MLP with batch norm, SimSiam's a 512-wide bottleneck
            with batch norm on its hidden layer).
        augmenter: None or a layer/callable making a random view (see
            `EmbeddingMethod`).
        **kwargs: `input_shape` (see `EmbeddingMethod`) and `keras.Model`
            keyword arguments.
    """

    tracker_names = ("loss",)
    config_objects = ("encoder", "projection_head", "predictor")

    def __init__(self, encoder, projection_head, predictor, augmenter=None, **kwargs):
        super().__init__(encoder, projection_head, augmenter=augmenter, **kwargs)
        self.predictor = predictor

    def build_state(self, embedding_shape, projection_shape):
        self.predictor(self.zeros(projection_shape[1:]), training=False)

    def online(self, views, training):
        """`(z_a, z_b), (p_a, p_b)`: projections and predictions of both views, per view."""
        projections = self.project_views(*views, training=training)
        return projections, tuple(self.predictor(z, training=training) for z in projections)
