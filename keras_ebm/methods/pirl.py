"""PIRL: pretext-invariant representations, contrasted against a memory bank with NCE."""

import keras
import tensorflow as tf
from keras import ops

from keras_ebm.layers.jigsaw import Jigsaw
from keras_ebm.losses.nce import NCE_FORMS
from keras_ebm.losses.nce import nce
from keras_ebm.memory.memory_bank import MemoryBank
from keras_ebm.methods.base import ContrastiveEmbeddingMethod
from keras_ebm.methods.base import deserialize
from keras_ebm.methods.base import serialize


@keras.saving.register_keras_serializable(package="keras_ebm")
class PIRL(ContrastiveEmbeddingMethod):
    """PIRL: a representation of an image invariant to its jigsaw transform.

    Energy: E(a, b) = -cos(a, b) / temperature between the image head's
    f(v_I) (v_I the encoder's features of image I), the patch head's g(v_It)
    (v_It the features of the nine shuffled jigsaw patches of I) and the
    memory-bank entry m_I, a running average of f(v_I). Contrasted samples:
    `num_negatives` entries m_I' drawn at random from the memory bank. Loss:
    PIRL's NCE (`keras_ebm.losses.nce`),

        L = loss_weight * L_NCE(m_I, g(v_It)) + (1 - loss_weight) * L_NCE(m_I, f(v_I))

    which pushes down the energy of the image and of its patches with the
    image's entry, and pushes up their energy with the other images' entries.
    After each step the entries of the batch move towards f(v_I):
    m_I <- normalize(bank_momentum m_I + (1 - bank_momentum) f(v_I)).

    The training data are `(images, indices)`, the index of each image in the
    training set (`ImageDataset.train_dataset(batch_size, with_index=True)`).
    The encoder sees both the images and the patches, so it must accept the
    patch size: build it with the patch size as input size, or with spatial
    dimensions None (a fully convolutional encoder).

    Args:
        encoder: Keras model mapping images (and patches) to features v.
        image_head: Keras layer f mapping v_I to the embedding dimension D
            (PIRL: linear; `keras_ebm.layers.ProjectionHead`).
        patch_head: Keras layer g mapping the patch features [B, 9, dim v] to
            D (`keras_ebm.layers.PatchHead`).
        num_negatives: int >= 1, default 4096 (PIRL on ImageNet: 32000).
        temperature: positive float, default 0.07.
        loss_weight: float in [0, 1], default 0.5. PIRL's lambda.
        bank_momentum: float in [0, 1), default 0.5.
        bank_size: int, the number of training images (one memory slot
            each); at least `num_negatives`. Required.
        jigsaw: a `keras_ebm.layers.Jigsaw`, default `Jigsaw(grid_size=3)`.
        augmenter: None, or a layer/callable applied (with `training=True`)
            to the image before f and, separately, before the jigsaw.
        nce_form: "nce" (default; the lecture's formula) or "infonce".
        **kwargs: `keras.Model` keyword arguments.

    Attributes:
        memory_bank: the `keras_ebm.memory.MemoryBank`, saved with the model.

    Example:

    >>> encoder = keras_ebm.backbones.small_cnn((8, 8, 1))
    >>> model = PIRL(encoder, ProjectionHead((), 128), PatchHead(128, 128),
    ...              num_negatives=1024, bank_size=len(x_train),
    ...              jigsaw=Jigsaw(3, resize_to=24))
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> model.fit(dataset.train_dataset(256, with_index=True), epochs=100)

    Reference:
        Misra & van der Maaten, Self-Supervised Learning of Pretext-Invariant
        Representations, CVPR 2020, section 3 (eq. 3-5).
    """

    def __init__(self, encoder, image_head, patch_head, num_negatives=4096, temperature=0.07,
                 loss_weight=0.5, bank_momentum=0.5, bank_size=None, jigsaw=None, augmenter=None,
                 nce_form="nce", **kwargs):
        kwargs.pop("projection_head", None)
        super().__init__(encoder, image_head, augmenter=augmenter, **kwargs)
        if bank_size is None:
            raise ValueError("PIRL: pass bank_size, the number of training images")
        if int(num_negatives) < 1:
            raise ValueError(f"PIRL: num_negatives must be >= 1, got {num_negatives}")
        if int(bank_size) < int(num_negatives):
            raise ValueError(f"PIRL: the memory bank ({bank_size} entries) is smaller than "
                             f"num_negatives={num_negatives}")
        if temperature <= 0:
            raise ValueError(f"PIRL: temperature must be > 0, got {temperature}")
        if not 0.0 <= loss_weight <= 1.0:
            raise ValueError(f"PIRL: loss_weight must be in [0, 1], got {loss_weight}")
        if not 0.0 <= bank_momentum < 1.0:
            raise ValueError(f"PIRL: bank_momentum must be in [0, 1), got {bank_momentum}")
        if nce_form not in NCE_FORMS:
            raise ValueError(f"PIRL: nce_form must be one of {NCE_FORMS}, got {nce_form!r}")
        self.patch_head = patch_head
        self.num_negatives = int(num_negatives)
        self.temperature = float(temperature)
        self.loss_weight = float(loss_weight)
        self.bank_momentum = float(bank_momentum)
        self.bank_size = int(bank_size)
        self.jigsaw = jigsaw if jigsaw is not None else Jigsaw(grid_size=3, name="jigsaw")
        self.nce_form = nce_form
        self.memory_bank = None
        self.build_from_encoder()

    @property
    def image_head(self):
        return self.projection_head

    def build_state(self, embedding_shape, projection_shape):
        image_shape = self._encoder_input_shape()
        if image_shape is not None and None not in image_shape[1:3]:
            patch_shape = self.jigsaw.patch_shape(image_shape)
            if tuple(patch_shape) != tuple(image_shape[1:]):
                raise ValueError(
                    f"PIRL: the encoder takes {tuple(image_shape[1:])} inputs but the jigsaw "
                    f"makes {patch_shape} patches; build the encoder with spatial dimensions "
                    "None, or choose Jigsaw(resize_to=..., patch_size=...) to match")
        patch_features_shape = (None, self.jigsaw.num_patches, embedding_shape[-1])
        if not self.patch_head.built:
            self.patch_head.build(patch_features_shape)
        patch_dim = self.patch_head.compute_output_shape(patch_features_shape)[-1]
        if patch_dim != projection_shape[-1]:
            raise ValueError(f"PIRL: the image head gives {projection_shape[-1]} dimensions "
                             f"but the patch head {patch_dim}; they must agree")
        if self.memory_bank is None:
            self.memory_bank = MemoryBank(self.bank_size, int(projection_shape[-1]),
                                          momentum=self.bank_momentum, name="memory_bank")

    # -- data ---------------------------------------------------------------
    def unpack(self, data):
        """Returns (images, indices) from what Keras passes to train_step."""
        while isinstance(data, (tuple, list)) and (len(data) == 1 or data[-1] is None):
            data = data[0] if len(data) == 1 else tuple(data[:-1])
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise ValueError("PIRL: fit() needs (images, indices) batches, the index of each "
                             "image in the training set (train_dataset(..., with_index=True))")
        return data[0], data[1]

    def augment(self, images):
        return images if self.augmenter is None else self.augmenter(images, training=True)

    # -- forward ------------------------------------------------------------
    def embed_patches(self, patches, training=False):
        """g(v_It): patches [B, P, h, w, C] through the encoder, then the patch head: [B, D]."""
        _, num_patches, height, width, channels = patches.shape
        batch_size = ops.shape(patches)[0]
        features = self.encoder(ops.reshape(patches, (-1, height, width, channels)),
                                training=training)
        features = ops.reshape(features, (batch_size, num_patches, features.shape[-1]))
        return self.patch_head(features, training=training)

    def contrastive_loss(self, images, patches, indices, training):
        image_projections = self.project(images, training=training)          # f(v_I)
        patch_projections = self.embed_patches(patches, training=training)   # g(v_It)
        memory = self.memory_bank.read(indices)                              # m_I
        negatives = self.memory_bank.sample(self.num_negatives)              # m_I', I' in D_N
        loss_patches, logits, labels = nce(patch_projections, memory, negatives,
                                           self.temperature, self.nce_form)
        loss_image, _, _ = nce(image_projections, memory, negatives, self.temperature,
                               self.nce_form)
        loss = self.loss_weight * loss_patches + (1.0 - self.loss_weight) * loss_image
        return loss, logits, labels, image_projections

    def train_step(self, data):
        # 0. Two views of each image: the image I, and its jigsaw patches I_t.
        images, indices = self.unpack(data)
        image_view = self.augment(images)
        patches = self.jigsaw(self.augment(images), training=True)
        with tf.GradientTape() as tape:
            # 1. Forward: energies of f(v_I) and g(v_It) with the bank entry m_I
            #    (pushed down) and with random entries m_I' (pushed up).
            loss, logits, labels, image_projections = self.contrastive_loss(
                image_view, patches, indices, training=True)
            scaled_loss = self.scale_loss(loss)
        # 2.-3. Gradients and the optimizer's update (the bank is not trained).
        self.apply_gradients(tape, scaled_loss)
        # 4. The batch's entries move towards f(v_I).
        self.memory_bank.update(indices, image_projections)
        return self.update_trackers(loss, logits, labels)

    def test_step(self, data):
        images, indices = self.unpack(data)
        patches = self.jigsaw(images, training=False)
        loss, logits, labels, _ = self.contrastive_loss(images, patches, indices, training=False)
        return self.update_trackers(loss, logits, labels)

    # -- serialisation ------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config["image_head"] = config.pop("projection_head")
        config.update({
            "patch_head": serialize(self.patch_head),
            "num_negatives": self.num_negatives,
            "temperature": self.temperature,
            "loss_weight": self.loss_weight,
            "bank_momentum": self.bank_momentum,
            "bank_size": self.bank_size,
            "jigsaw": serialize(self.jigsaw),
            "nce_form": self.nce_form,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("jigsaw"), dict):
            config["jigsaw"] = deserialize(config["jigsaw"])
        return super().from_config(config)
