"""Optimisers and learning-rate schedules for large-batch contrastive training."""

from keras_ebm.optimizers.lars import LARS
from keras_ebm.optimizers.schedules import WarmupCosine
from keras_ebm.optimizers.schedules import scale_learning_rate
