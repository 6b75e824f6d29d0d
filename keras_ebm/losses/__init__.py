"""Contrastive losses, each a pure function plus a thin ``keras.losses.Loss``."""

from keras_ebm.losses.info_nce import InfoNCE
from keras_ebm.losses.info_nce import info_nce
from keras_ebm.losses.margin import MarginLoss
from keras_ebm.losses.margin import margin_loss
from keras_ebm.losses.margin import pairwise_energy
from keras_ebm.losses.nce import NCE
from keras_ebm.losses.nce import nce
from keras_ebm.losses.nt_xent import NTXent
from keras_ebm.losses.nt_xent import nt_xent
