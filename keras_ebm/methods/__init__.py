"""Methods: one ``keras.Model`` per algorithm, composing energy, samples and loss."""

from keras_ebm.methods.moco import MoCo
from keras_ebm.methods.simclr import SimCLR
