"""PIRL: pretext-invariant representations, contrasted against a memory bank with NCE."""

import keras
from keras import ops

from keras_ebm.layers.jigsaw import Jigsaw
from keras_ebm.losses.nce import NCE_FORMS
from keras_ebm.losses.nce import nce
from keras_ebm.memory.memory_bank import MemoryBank
from keras_ebm.methods.embedding import EmbeddingMethod
from keras_ebm.methods.embedding import check_images
from keras_ebm.methods.embedding import contrastive_accuracy
from keras_ebm.methods.embedding import declared_input_shape
from keras_ebm.methods.method import serialize
from keras_ebm.methods.method import unpack_inputs

JIGSAW_JITTERS = ("patch", "image")
NEGATIVE_SAMPLINGS = ("per_sample", "shared")


@keras.saving.register_keras_serializable(package="keras_ebm")
class PIRL(EmbeddingMethod):
    """PIRL: a representation of an image invariant to its jigsaw transform.

    Energy: E(a, b) = -cos(a, b) / temperature between the image head's
    f(v_I) (v_I the encoder's features of image I), the patch head's g(v_It)
    (v_It the features of the nine shuffled jigsaw patches of I) and the
    memory-bank entry m_I, a running average of f(v_I). Contrasted samples:
    `num_negatives` entries m_I' drawn at random from the memory bank, a set
    of its own for each image (`negative_sampling="per_sample"`, as Wu et
    al.'s memory bank and PIRL's code) or one set for the whole batch
    (`"shared"`). Loss:
    PIRL's NCE (`keras_ebm.losses.nce`),

        L = loss_weight * L_NCE(m_I, g(v_It)) + (1 - loss_weight) * L_NCE(m_I, f(v_I))

    which pushes down the energy of the image and of its patches with the
    image's entry, and pushes up their energy with the other images' entries.
    After each step the entries of the batch move towards f(v_I):
    m_I <- normalize(bank_momentum m_I + (1 - bank_momentum) normalize(f(v_I))).

    The training data are `(images, indices)`, the index of each image in the
    training set (`ImageDataset.train_dataset(batch_size, with_index=True)`).
    The encoder sees both the images and the patches. A fully convolutional
    encoder (spatial dimensions None) takes the patches at their size; an
    encoder that declares a fixed input size gets the patches resized to it,
    and one that declares none (a Sequential without `keras.Input`, a
    subclassed model) gets them resized to the image size.

    Augmentation, as PIRL (section 4.1 and its code in VISSL): the image
    branch goes through `augmenter`; the jigsaw branch cuts the image into
    patches and jitters each patch on its own (`jigsaw_jitter="patch"`), with
    `patch_augmenter` (default: `augmenter`, which must then take patches)
    drawing its randomness per patch. `jigsaw_jitter="image"` augments the
    whole image with `augmenter` and cuts the augmented image instead.

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
            to the image before f (and, with `jigsaw_jitter="image"`,
            separately to the image before the jigsaw).
        patch_augmenter: None (default: `augmenter`) or a layer/callable
            mapping patches [N, h, w, C] to patches of the same shape, applied
            with `training=True` to every jigsaw patch with its own random
            draw (`keras_ebm.data.make_augmenter(patch_shape)`). Only with
            `jigsaw_jitter="patch"`.
        jigsaw_jitter: "patch" (default, PIRL) or "image": augment each patch
            independently after cutting, or the whole image before.
        negative_sampling: "per_sample" (default, PIRL) or "shared": draw
            `num_negatives` bank entries for each image of the batch, or one
            set shared by the batch.
        nce_form: "nce" (default; the lecture's formula) or "infonce".
        **kwargs: `input_shape` (see `EmbeddingMethod`) and `keras.Model`
            keyword arguments.

    Attributes:
        memory_bank: the `keras_ebm.memory.MemoryBank`, saved with the model.

    Example:

    >>> encoder = keras_ebm.backbones.small_cnn((8, 8, 1))
    >>> model = PIRL(encoder, ProjectionHead((), 128), PatchHead(128, 128),
    ...              num_negatives=1024, bank_size=len(x_train),
    ...              jigsaw=Jigsaw(3, resize_to=24), augmenter=make_augmenter((8, 8, 1)),
    ...              patch_augmenter=make_augmenter((8, 8, 1), crop_scale=(0.5, 1.0)))
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> model.fit(dataset.train_dataset(256, with_index=True), epochs=100, shuffle=False)

    Reference:
        Misra & van der Maaten, Self-Supervised Learning of Pretext-Invariant
        Representations, CVPR 2020, section 3 (eq. 3-5).
    """

    def __init__(self, encoder, image_head, patch_head, num_negatives=4096, temperature=0.07,
                 loss_weight=0.5, bank_momentum=0.5, bank_size=None, jigsaw=None, augmenter=None,
                 nce_form="nce", patch_augmenter=None, jigsaw_jitter="patch",
                 negative_sampling="per_sample", **kwargs):
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
        if jigsaw_jitter not in JIGSAW_JITTERS:
            raise ValueError(f"PIRL: jigsaw_jitter must be one of {JIGSAW_JITTERS}, "
                             f"got {jigsaw_jitter!r}")
        if negative_sampling not in NEGATIVE_SAMPLINGS:
            raise ValueError(f"PIRL: negative_sampling must be one of {NEGATIVE_SAMPLINGS}, "
                             f"got {negative_sampling!r}")
        if patch_augmenter is not None and jigsaw_jitter != "patch":
            raise ValueError("PIRL: patch_augmenter needs jigsaw_jitter='patch' (with 'image' "
                             "the augmenter acts on the whole image before the cut)")
        self.patch_head = patch_head
        self.num_negatives = int(num_negatives)
        self.temperature = float(temperature)
        self.loss_weight = float(loss_weight)
        self.bank_momentum = float(bank_momentum)
        self.bank_size = int(bank_size)
        self.jigsaw = jigsaw if jigsaw is not None else Jigsaw(grid_size=3, name="jigsaw")
        self.nce_form = nce_form
        self.patch_augmenter = patch_augmenter
        self.jigsaw_jitter = jigsaw_jitter
        self.negative_sampling = negative_sampling
        self.memory_bank = None
        self.patch_size = None
        self.build_now()

    @property
    def image_head(self):
        return self.projection_head

    def build_state(self, embedding_shape, projection_shape):
        # The size the encoder takes patches at: its declared input size, the
        # image size if it declares none, or their own size (fully convolutional).
        image_shape = self.example_shape
        declared = declared_input_shape(self.encoder)
        target = image_shape[:2] if declared is None else tuple(declared[:2])
        if None not in target and tuple(target) != tuple(
                self.jigsaw.patch_shape((None, *image_shape))[:2]):
            self.patch_size = tuple(int(d) for d in target)
        if None not in tuple(image_shape)[:2]:
            self.check_patch_augmenter(self.jigsaw.patch_shape((None, *image_shape)))
        patch_features_shape = (None, self.jigsaw.num_patches, embedding_shape[-1])
        patch_dim = self.patch_head(self.zeros(patch_features_shape[1:])).shape[-1]
        if patch_dim != projection_shape[-1]:
            raise ValueError(f"PIRL: the image head gives {projection_shape[-1]} dimensions "
                             f"but the patch head {patch_dim}; they must agree")
        self.memory_bank = MemoryBank(self.bank_size, int(projection_shape[-1]),
                                      momentum=self.bank_momentum, name="memory_bank")

    def patch_augment(self):
        """The callable that jitters the patches one by one, or None."""
        if self.jigsaw_jitter != "patch":
            return None
        return self.patch_augmenter if self.patch_augmenter is not None else self.augmenter

    def check_patch_augmenter(self, patch_shape):
        augment = self.patch_augment()
        if augment is None:
            return
        shape = tuple(int(d) for d in patch_shape)
        try:
            output_shape = tuple(augment(self.zeros(shape), training=False).shape[1:])
        except Exception as error:  # noqa: BLE001 - any failure means it cannot take patches
            output_shape = f"an error: {str(error).splitlines()[0] if str(error) else error!r}"
        if output_shape != shape:
            raise ValueError(f"PIRL: the patch augmenter maps jigsaw patches of {shape} to "
                             f"{output_shape}; pass patch_augmenter=keras_ebm.data."
                             f"make_augmenter({shape}) or jigsaw_jitter='image'")

    # -- the contract -------------------------------------------------------
    def prepare(self, data, training):
        """The image view I, its jigsaw patches I_t and the images' indices."""
        data = unpack_inputs(data)
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise ValueError("PIRL: fit() needs (images, indices) batches, the index of each "
                             "image in the training set (train_dataset(..., with_index=True))")
        self.check_shape(data[0])
        images, indices = check_images("PIRL", data[0]), data[1]
        if not training:
            return images, self.jigsaw(images, training=False), indices
        augment = (lambda x: x) if self.augmenter is None else (
            lambda x: self.augmenter(x, training=True))
        patch_augment = self.patch_augment()
        if patch_augment is None:
            return augment(images), self.jigsaw(augment(images), training=True), indices
        # PIRL: cut, then jitter each of the B * P patches with its own draw.
        patches = self.jigsaw(images, training=True)
        _, num_patches, height, width, channels = patches.shape
        flat = ops.reshape(patches, (-1, height, width, channels))
        flat = patch_augment(flat, training=True)
        patches = ops.reshape(flat, (-1, num_patches, height, width, channels))
        return augment(images), patches, indices

    def embed_patches(self, patches, training=False):
        """g(v_It): patches [B, P, h, w, C] through the encoder, then the patch head: [B, D]."""
        _, num_patches, height, width, channels = patches.shape
        batch_size = ops.shape(patches)[0]
        patches = ops.reshape(patches, (-1, height, width, channels))
        if self.patch_size is not None:
            patches = ops.image.resize(patches, self.patch_size)
        features = self.encoder(patches, training=training)
        features = ops.reshape(features, (batch_size, num_patches, features.shape[-1]))
        return self.patch_head(features, training=training)

    def contrastive_loss(self, inputs, training):
        images, patches, indices = inputs
        image_projections = self.project(images, training=training)          # f(v_I)
        patch_projections = self.embed_patches(patches, training=training)   # g(v_It)
        memory = self.memory_bank.read(indices)                              # m_I
        # m_I', I' in D_N: [B, K, D] (a set per image) or [K, D] (one set).
        negatives = self.memory_bank.sample(
            self.num_negatives, batch_size=(ops.shape(indices)[0]
                                            if self.negative_sampling == "per_sample" else None))
        # Energies with m_I pushed down, with the m_I' pushed up.
        loss_patches, logits, labels = nce(patch_projections, memory, negatives,
                                           self.temperature, self.nce_form)
        loss_image, _, _ = nce(image_projections, memory, negatives, self.temperature,
                               self.nce_form)
        loss = self.loss_weight * loss_patches + (1.0 - self.loss_weight) * loss_image
        return loss, {"contrastive_accuracy": contrastive_accuracy(logits, labels),
                      "image_projections": image_projections}

    def after_update(self, inputs, outputs):
        # The batch's entries move towards f(v_I) (the bank is not trained).
        self.memory_bank.update(inputs[2], outputs["image_projections"])

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
            "patch_augmenter": (serialize(self.patch_augmenter)
                                if isinstance(self.patch_augmenter, keras.layers.Layer) else None),
            "jigsaw_jitter": self.jigsaw_jitter,
            "negative_sampling": self.negative_sampling,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("image_head", "patch_head", "jigsaw", "patch_augmenter"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return super().from_config(config)
