"""Layers: energies on embeddings, heads, and fused batch normalisation."""

from keras_ebm.layers.batch_normalization import FusedBatchNormalization
from keras_ebm.layers.batch_normalization import set_fused_batch_norm
from keras_ebm.layers.cosine_energy import CosineEnergy
from keras_ebm.layers.jigsaw import Jigsaw
from keras_ebm.layers.jigsaw import PatchHead
from keras_ebm.layers.projection_head import ProjectionHead
