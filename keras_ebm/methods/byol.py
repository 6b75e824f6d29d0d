"""BYOL: predict the projections of a slowly moving target network, no negatives."""

import math

import keras
from keras import ops

from keras_ebm.losses.non_contrastive import byol_loss
from keras_ebm.methods.method import ema_update
from keras_ebm.methods.predictor import PredictorMethod


@keras.saving.register_keras_serializable(package="keras_ebm")
class BYOL(PredictorMethod):
    """BYOL: bootstrap your own latent.

    Energy: E(p, z') = |p/|p| - z'/|z'||^2 = 2 - 2 cos(p, z') between the
    online prediction p = q(g(f(x))) of one view and the target projection
    z' = g'(f'(x')) of the other view, where f', g' are an exponential moving
    average (EMA) of the encoder and projection head. Contrasted samples:
    none. Only the energy of the positive pairs is pushed down; what keeps it
    from being low everywhere (every image mapped to one point) is the
    architecture instead of negatives: the predictor q on the online branch,
    the stop-gradient on the target branch and the slowly moving target.
    Loss: the symmetrised normalised MSE, both directions summed
    (`keras_ebm.losses.byol_loss`, in [0, 8]).

    The target follows the online network, xi <- tau xi + (1 - tau) theta,
    with BYOL's cosine schedule

        tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2,    K = total_steps,

    from tau_base at k = 0 to 1 at k = K (and 1 beyond: the target stops).
    As for MoCo's key encoder, the EMA runs at the start of each step
    (`before_update`) with the online weights the previous step produced and
    that step's tau (k = optimizer.iterations - 1). The paper applies it
    right after each optimizer step: the forward passes see the same targets
    (at the first step both networks are equal, the EMA is a no-op); only the
    EMA after the very last step is not applied.

    Under tf.distribute (build and compile in `strategy.scope()`, feed global
    batches) each replica's loss is the mean over its share of the batch and
    it differentiates its share of the global mean (no statistic crosses the
    replicas); the EMA runs through `keras_ebm.distribute.update_state`, so
    every device copy of the target stays equal. Training matches one device
    on the global batch when the network has no batch norm; the paper's
    batch norm is global (`keras_ebm.distribute.sync_batch_norm`).

    Args:
        encoder: Keras model f mapping images to embeddings h (the
            representation kept after training).
        projection_head: Keras layer g mapping h to z (BYOL: 4096 -> 256
            with batch norm, `ProjectionHead((4096,), 256)`).
        predictor: Keras layer q mapping z to p of the same dimension (BYOL:
            the same MLP shape as g).
        total_steps: int >= 1, K: the number of optimizer steps of the run
            (epochs x steps per epoch), where tau reaches 1.
        tau_base: float in [0, 1], default 0.99 (solo-learn's CIFAR value;
            0.996 in the paper's ImageNet runs).
        augmenter: None or a layer/callable making a random view (see SimCLR).
        **kwargs: `input_shape` (see `EmbeddingMethod`) and `keras.Model`
            keyword arguments.

    Attributes:
        target_encoder, target_projection_head: the EMA copies, paired with
            the online encoder and head weight by weight (any Keras model
            style). Their weights are not trainable (the EMA moves them);
            their layers run in training mode, as in the reference code; they
            are saved with the model.

    Example:

    >>> encoder = keras_ebm.backbones.small_cnn((8, 8, 1))
    >>> model = BYOL(encoder, ProjectionHead((512,), 128), ProjectionHead((512,), 128),
    ...              total_steps=200 * 8, augmenter=keras_ebm.data.make_augmenter((8, 8, 1)))
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> model.fit(images, batch_size=256, epochs=200)      # 8 steps per epoch

    Reference:
        Grill et al., Bootstrap Your Own Latent: A New Approach to
        Self-Supervised Learning, NeurIPS 2020 (Algorithm 1, eq. 2, section 3.2).
    """

    def __init__(self, encoder, projection_head, predictor, total_steps, tau_base=0.99,
                 augmenter=None, **kwargs):
        super().__init__(encoder, projection_head, predictor, augmenter=augmenter, **kwargs)
        if int(total_steps) < 1:
            raise ValueError(f"BYOL: total_steps must be >= 1, got {total_steps}")
        if not 0.0 <= tau_base <= 1.0:
            raise ValueError(f"BYOL: tau_base must be in [0, 1], got {tau_base}")
        self.total_steps = int(total_steps)
        self.tau_base = float(tau_base)
        self.target_encoder, self.target_projection_head = self.copy_parts()
        self.build_now()

    def build_state(self, embedding_shape, projection_shape):
        super().build_state(embedding_shape, projection_shape)
        # The target starts as an exact copy of the online encoder and head.
        self.start_copies(self.target_encoder, self.target_projection_head)

    def target_momentum(self, step):
        """tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, k clipped to [0, K]."""
        progress = ops.clip(ops.cast(step, "float32"), 0.0, float(self.total_steps)) / float(
            self.total_steps)
        return 1.0 - (1.0 - self.tau_base) * (ops.cos(math.pi * progress) + 1.0) / 2.0

    def before_update(self, inputs):
        # 1. The target follows the online network: the EMA of the previous step k.
        step = ops.maximum(ops.cast(self.optimizer.iterations, "int64") - 1, 0)
        ema_update(self.copy_pairs(self.target_encoder, self.target_projection_head),
                   self.target_momentum(step))

    def contrastive_loss(self, inputs, training):
        # 2. Online predictions p = q(g(f(x))) of both views.
        _, predictions = self.online(inputs, training=training)
        # 3. Target projections z' = g'(f'(x)) of both views (stop-gradient in the loss).
        targets = [self.target_projection_head(self.target_encoder(view, training=training),
                                               training=training) for view in inputs]
        # 4. Each view's prediction regresses the other view's target; both directions summed.
        return byol_loss(*predictions, *targets), {}

    def get_config(self):
        return {**super().get_config(), "total_steps": self.total_steps,
                "tau_base": self.tau_base}
