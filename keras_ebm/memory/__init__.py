"""Training state that contrasting needs, held in non-trainable variables."""

from keras_ebm.memory.queue import Queue
