"""Layers: energies on embeddings and heads."""

from keras_ebm.layers.cosine_energy import CosineEnergy
from keras_ebm.layers.projection_head import ProjectionHead
