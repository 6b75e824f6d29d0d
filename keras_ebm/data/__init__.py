"""Datasets (embedded digits, TFDS, image folders) and augmentation layers."""

from keras_ebm.data.augment import RandomApply
from keras_ebm.data.augment import RandomResizedCrop
from keras_ebm.data.augment import make_augmenter
from keras_ebm.data.binary_digits import load_binary_digits
from keras_ebm.data.datasets import DataError
from keras_ebm.data.datasets import ImageDataset
from keras_ebm.data.datasets import epoch_ordered_indices
from keras_ebm.data.datasets import load
from keras_ebm.data.energy_data import load_energy_data
from keras_ebm.data.streaming import StreamingImages
from keras_ebm.data.toy_2d import toy_2d
