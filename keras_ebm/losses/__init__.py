"""Contrastive and non-contrastive losses: pure functions plus thin ``keras.losses.Loss``."""

from keras_ebm.losses.info_nce import InfoNCE
from keras_ebm.losses.info_nce import info_nce
from keras_ebm.losses.margin import MarginLoss
from keras_ebm.losses.margin import margin_loss
from keras_ebm.losses.margin import pairwise_energy
from keras_ebm.losses.nce import NCE
from keras_ebm.losses.nce import nce
from keras_ebm.losses.non_contrastive import BarlowTwinsLoss
from keras_ebm.losses.non_contrastive import BYOLLoss
from keras_ebm.losses.non_contrastive import NegativeCosine
from keras_ebm.losses.non_contrastive import SymmetricNegativeCosine
from keras_ebm.losses.non_contrastive import VICRegLoss
from keras_ebm.losses.non_contrastive import barlow_twins_loss
from keras_ebm.losses.non_contrastive import byol_loss
from keras_ebm.losses.non_contrastive import negative_cosine
from keras_ebm.losses.non_contrastive import symmetric_negative_cosine
from keras_ebm.losses.non_contrastive import vicreg_loss
from keras_ebm.losses.nt_xent import NTXent
from keras_ebm.losses.nt_xent import nt_xent
