"""Energies: layers that map an input to one scalar energy per example.

Any Keras layer or model that maps x to a tensor of shape [batch] is an energy.
"""

from keras_ebm.energies.conv import ConvEnergy
from keras_ebm.energies.mixture import GaussianMixtureEnergy
from keras_ebm.energies.mixture import KMeansEnergy
from keras_ebm.energies.mlp import MLPEnergy
from keras_ebm.energies.noise_conditional import NoiseConditionalEnergy
from keras_ebm.energies.quadratic import QuadraticEnergy
from keras_ebm.energies.rbm import RBM
from keras_ebm.energies.sparse_coding import RBFFeatures
from keras_ebm.energies.sparse_coding import SparseCodingEnergy
from keras_ebm.energies.sparse_coding import ista
