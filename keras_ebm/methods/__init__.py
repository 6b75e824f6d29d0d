"""Methods: one ``keras.Model`` per algorithm, composing energy, samples and loss.

Every method is a `Method` (one `train_step`); the self-supervised ones are
`EmbeddingMethod`s (encoder, head, two views): the contrastive SimCLR, MoCo,
PIRL and ContrastiveEmbedding, and the non-contrastive BYOL, SimSiam (with a
predictor, `PredictorMethod`), BarlowTwins and VICReg. The classical ones are
`EnergyMethod`s (an energy E(x)), one or more per strategy of the lecture: 1
`ConstantVolume`, 2 `MaximumLikelihood` and `QuadratureMaximumLikelihood`, 3
`ContrastiveDivergence`, `NoiseContrastiveEstimation`, `RatioMatching` and
`MinimumProbabilityFlow`, 4 `ScoreMatching`, 5 `DenoisingAutoencoder`, 6
`SparseCoding`, 7 `ContractiveAutoencoder`.
"""

from keras_ebm.methods.barlow_twins import BarlowTwins
from keras_ebm.methods.byol import BYOL
from keras_ebm.methods.constant_volume import ConstantVolume
from keras_ebm.methods.contractive_autoencoder import ContractiveAutoencoder
from keras_ebm.methods.contrastive_divergence import ContrastiveDivergence
from keras_ebm.methods.contrastive_embedding import ContrastiveEmbedding
from keras_ebm.methods.denoising_autoencoder import DenoisingAutoencoder
from keras_ebm.methods.embedding import EmbeddingMethod
from keras_ebm.methods.energy_method import EnergyMethod
from keras_ebm.methods.maximum_likelihood import MaximumLikelihood
from keras_ebm.methods.maximum_likelihood import QuadratureMaximumLikelihood
from keras_ebm.methods.method import Method
from keras_ebm.methods.minimum_probability_flow import MinimumProbabilityFlow
from keras_ebm.methods.moco import MoCo
from keras_ebm.methods.noise_contrastive_estimation import NoiseContrastiveEstimation
from keras_ebm.methods.pirl import PIRL
from keras_ebm.methods.predictor import PredictorMethod
from keras_ebm.methods.ratio_matching import RatioMatching
from keras_ebm.methods.score_matching import ScoreMatching
from keras_ebm.methods.simclr import SimCLR
from keras_ebm.methods.simsiam import SimSiam
from keras_ebm.methods.sparse_coding import SparseCoding
from keras_ebm.methods.vicreg import VICReg
