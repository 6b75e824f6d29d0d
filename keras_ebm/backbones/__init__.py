"""Encoders that map images to feature vectors."""

from keras_ebm.backbones.registry import get_backbone
from keras_ebm.backbones.resnet import resnet18_cifar
from keras_ebm.backbones.resnet import resnet50
from keras_ebm.backbones.small_cnn import small_cnn
from keras_ebm.backbones.small_cnn import small_resnet
