"""Evaluation of learned representations and energies."""

from keras_ebm.evaluation.knn import knn_accuracy
from keras_ebm.evaluation.linear_probe import linear_probe
from keras_ebm.evaluation.linear_probe import evaluate_features
