"""Evaluation of learned representations and energies."""

from keras_ebm.evaluation.ais import ais_log_partition
from keras_ebm.evaluation.collapse import CollapseError
from keras_ebm.evaluation.collapse import CollapseMonitor
from keras_ebm.evaluation.collapse import effective_rank
from keras_ebm.evaluation.collapse import normalized_std
from keras_ebm.evaluation.density import calibrated_log_likelihood
from keras_ebm.evaluation.density import fit_temperature
from keras_ebm.evaluation.density import grid_log_likelihood
from keras_ebm.evaluation.density import grid_log_partition
from keras_ebm.evaluation.density import grid_sample
from keras_ebm.evaluation.energy_report import draw_samples
from keras_ebm.evaluation.energy_report import evaluate_energy
from keras_ebm.evaluation.knn import knn_accuracy
from keras_ebm.evaluation.linear_probe import PROTOCOL
from keras_ebm.evaluation.linear_probe import evaluate_features
from keras_ebm.evaluation.linear_probe import evaluation_rows
from keras_ebm.evaluation.linear_probe import format_table
from keras_ebm.evaluation.linear_probe import linear_probe
from keras_ebm.evaluation.log_partition import rbm_log_likelihood
from keras_ebm.evaluation.log_partition import rbm_log_partition
from keras_ebm.evaluation.mmd import mmd
from keras_ebm.evaluation.mmd import mmd_floor
from keras_ebm.evaluation.plots import plot_digit_grid
from keras_ebm.evaluation.plots import plot_energy_surface
