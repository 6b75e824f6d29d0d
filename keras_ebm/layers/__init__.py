"""Layers: energies on embeddings and heads."""

from keras_ebm.layers.cosine_energy import CosineEnergy
from keras_ebm.layers.jigsaw import Jigsaw
from keras_ebm.layers.jigsaw import PatchHead
from keras_ebm.layers.projection_head import ProjectionHead
