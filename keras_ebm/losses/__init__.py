"""Contrastive losses, each a pure function plus a thin ``keras.losses.Loss``."""

from keras_ebm.losses.info_nce import InfoNCE
from keras_ebm.losses.info_nce import info_nce
from keras_ebm.losses.nt_xent import NTXent
from keras_ebm.losses.nt_xent import nt_xent
