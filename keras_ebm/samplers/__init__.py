"""MCMC samplers; each runs its steps in one compiled `tf.while_loop`."""

from keras_ebm.samplers.annealed import AnnealedLangevin
from keras_ebm.samplers.annealed import NoiseAnnealedLangevin
from keras_ebm.samplers.gibbs import Gibbs
from keras_ebm.samplers.langevin import Langevin
from keras_ebm.samplers.metropolis import MetropolisHastings
from keras_ebm.samplers.sampler import Sampler
from keras_ebm.samplers.sampler import energy_and_gradient
