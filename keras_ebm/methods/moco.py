"""MoCo v2: contrast queries against a queue of momentum-encoded keys."""

import keras
import tensorflow as tf
from keras import ops

from keras_ebm import distribute
from keras_ebm.layers.cosine_energy import normalize
from keras_ebm.losses.info_nce import info_nce
from keras_ebm.memory.queue import Queue
from keras_ebm.methods.embedding import EmbeddingMethod
from keras_ebm.methods.embedding import contrastive_accuracy
from keras_ebm.methods.method import ema_update

# Seeds the key shuffle of the shuffle-BN substitute, with the step counter.
SHUFFLE_SEED = 1958


@keras.saving.register_keras_serializable(package="keras_ebm")
class MoCo(EmbeddingMethod):
    """MoCo (v2): momentum contrast with a queue of negative keys.

    Energy: E(q, k) = -cos(q, k) / temperature between a query q = g(f(x_q))
    and a key k = g_k(f_k(x_k)) from a momentum (EMA) copy of the encoder and
    head. Contrasted samples: a FIFO queue of the keys of past batches
    (`model.queue`). Loss: InfoNCE, which pushes down the energy of each query
    with the key of its own image and pushes up its energy with the queue.

    At the start of each step the key encoder follows the query encoder,
    theta_k <- m theta_k + (1 - m) theta_q (as in Algorithm 1, before the keys
    are encoded); after the update the batch's keys are enqueued.

    Shuffle BN on one device: with several GPUs MoCo computes batch-norm
    statistics per GPU and shuffles the keys across GPUs, so that a query and
    its key never share statistics (otherwise the model can find the positive
    through them and "cheat"). Here the batch is split into `bn_splits` groups
    that each get their own batch-norm statistics, and the keys are randomly
    permuted before the split and restored after it (a permutation drawn from
    the step counter, so a resumed run draws the same ones; the whole step
    compiles with XLA).

    Under tf.distribute (build and compile in `strategy.scope()`, feed global
    batches) each replica encodes its share of the batch; the keys of all
    replicas are gathered before they enter the queue, so every replica
    enqueues the same global batch of keys. The EMA update and the enqueue run
    through `keras_ebm.distribute.update_state`: once per device copy of the
    variables, each copy updated from identical values, so the copies stay
    equal without any communication. The gradient is each replica's share of
    the mean over the global batch. Training then matches one device on the
    global batch (with `bn_splits=1` and no batch norm; with batch norm the
    statistics are per replica, as in the paper's multi-GPU runs).

    Args:
        encoder: Keras model f mapping images to embeddings h.
        projection_head: Keras layer g mapping h to z (MoCo v2: a 2-layer MLP).
        queue_size: int, default 4096. Number of negative keys K.
        momentum: float in [0, 1), default 0.99. EMA coefficient m of the key
            encoder (0.999 in the ImageNet paper, 0.99 for CIFAR-sized runs).
        temperature: positive float, default 0.2.
        augmenter: None or a layer/callable making a random view (see SimCLR).
        bn_splits: int, default 8. Groups with their own batch-norm statistics
            (1 disables the shuffle-BN substitute). The batch must hold at
            least `bn_splits` images.
        **kwargs: `input_shape` (see `EmbeddingMethod`) and `keras.Model`
            keyword arguments.

    Attributes:
        key_encoder, key_projection_head: the momentum copies, paired with
            the query encoder and head weight by weight (by position in the
            model, names and shapes checked; any Keras model style works).
            Their weights
            are not trainable: the EMA moves them; their layers run in
            training mode, so batch norm uses the statistics of the shuffled
            key batch as in the paper; saved with the model).
        queue: `keras_ebm.memory.Queue` of the negative keys, saved with the model.

    Example:

    >>> model = MoCo(encoder, ProjectionHead((512,), 128, batch_norm=False),
    ...              queue_size=4096, momentum=0.99, temperature=0.2,
    ...              augmenter=keras_ebm.data.make_augmenter((32, 32, 3)))
    >>> model.compile(optimizer=keras.optimizers.SGD(0.06, momentum=0.9))
    >>> model.fit(images, batch_size=256, epochs=200)

    Reference:
        He, Fan, Wu, Xie & Girshick, Momentum Contrast for Unsupervised Visual
        Representation Learning, CVPR 2020 (Algorithm 1); Chen, Fan, Girshick &
        He, Improved Baselines with Momentum Contrastive Learning, 2020.
    """

    def __init__(self, encoder, projection_head, queue_size=4096, momentum=0.99,
                 temperature=0.2, augmenter=None, bn_splits=8, **kwargs):
        super().__init__(encoder, projection_head, augmenter=augmenter, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"MoCo: momentum must be in [0, 1), got {momentum}")
        if temperature <= 0:
            raise ValueError(f"MoCo: temperature must be > 0, got {temperature}")
        if int(queue_size) < 1 or int(bn_splits) < 1:
            raise ValueError(f"MoCo: queue_size and bn_splits must be >= 1, "
                             f"got {queue_size} and {bn_splits}")
        self.queue_size = int(queue_size)
        self.momentum = float(momentum)
        self.temperature = float(temperature)
        self.bn_splits = int(bn_splits)
        self.key_encoder, self.key_projection_head = self.copy_parts()
        self.queue = None
        self.build_now()

    def build_state(self, embedding_shape, projection_shape):
        # The key encoder starts as an exact copy of the query encoder.
        self.start_copies(self.key_encoder, self.key_projection_head)
        self.queue = Queue(self.queue_size, int(projection_shape[-1]), name="queue")

    def _weight_pairs(self):
        return self.copy_pairs(self.key_encoder, self.key_projection_head)

    def momentum_update(self):
        """theta_k <- m theta_k + (1 - m) theta_q for the trainable weights.

        Batch-norm moving statistics of the key encoder are updated by its own
        forward passes, as in the reference implementation. Replica-safe: in a
        replica context each device copy of the key weights follows that
        device's copy of the (mirrored, identical) query weights.
        """
        ema_update(self._weight_pairs(), self.momentum)

    def _encode_in_groups(self, images, encoder, head, training, shuffle):
        """z = g(f(x)) with batch-norm statistics computed per group of the batch."""
        if self.bn_splits == 1:
            return head(encoder(images, training=training), training=training)
        images = tf.convert_to_tensor(images)
        batch_size = tf.shape(images)[0]
        tf.debugging.assert_greater_equal(
            batch_size, self.bn_splits,
            message=f"MoCo: the batch must hold at least bn_splits={self.bn_splits} images")
        if shuffle:
            # A permutation drawn from the step counter: reproducible on resume,
            # the same on every replica, and compilable with XLA (unlike
            # tf.random.shuffle and dynamic_partition/dynamic_stitch). NOTE: XLA
            # draws another, equally random, permutation than TF's kernel for a
            # seed read from a variable.
            optimizer = getattr(self, "optimizer", None)
            step = (tf.cast(optimizer.iterations, "int64") if optimizer is not None
                    else tf.constant(0, "int64"))
            noise = tf.random.stateless_uniform(
                [batch_size], seed=tf.stack([tf.constant(SHUFFLE_SEED, "int64"), step]),
                alg="philox")
            order = tf.argsort(noise)
            images = tf.gather(images, order)
        # Group g holds positions [ceil(g B / splits), ceil((g + 1) B / splits)).
        bounds = [(g * batch_size + self.bn_splits - 1) // self.bn_splits
                  for g in range(self.bn_splits + 1)]
        outputs = tf.concat([head(encoder(images[bounds[g]:bounds[g + 1]], training=training),
                                  training=training) for g in range(self.bn_splits)], axis=0)
        # Put every projection back at its image's position (un-shuffle).
        return tf.gather(outputs, tf.argsort(order)) if shuffle else outputs

    def before_update(self, inputs):
        # 1. The key encoder follows the query encoder (EMA).
        self.momentum_update()

    def contrastive_loss(self, inputs, training):
        view_query, view_key = inputs
        # 2. Keys from the momentum encoder (shuffled batch-norm groups), no gradient.
        keys = ops.stop_gradient(normalize(self._encode_in_groups(
            view_key, self.key_encoder, self.key_projection_head, training, shuffle=True)))
        queries = self._encode_in_groups(view_query, self.encoder, self.projection_head,
                                         training, shuffle=False)
        # 3. Energies of each query with its key (pushed down) and with the
        #    queue (pushed up): InfoNCE.
        loss, logits, labels = info_nce(queries, keys, self.queue.keys, self.temperature)
        # Keys of every replica (the global batch; a no-op on one device).
        return loss, {"contrastive_accuracy": contrastive_accuracy(logits, labels),
                      "keys": distribute.cross_replica_concat(keys)}

    def after_update(self, inputs, outputs):
        # 4. The newest keys of the global batch enter the queue, the oldest
        #    leave it (the same keys on every replica: the copies stay equal).
        self.queue.enqueue(outputs["keys"])

    def get_config(self):
        config = super().get_config()
        config.update({
            "queue_size": self.queue_size,
            "momentum": self.momentum,
            "temperature": self.temperature,
            "bn_splits": self.bn_splits,
        })
        return config
