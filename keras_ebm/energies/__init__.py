"""Energies: layers that map an input to one scalar energy per example.

Any Keras layer or model that maps x to a tensor of shape [batch] is an energy.
"""

from keras_ebm.energies.conv import ConvEnergy
from keras_ebm.energies.mlp import MLPEnergy
from keras_ebm.energies.rbm import RBM
