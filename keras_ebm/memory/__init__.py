"""Training state that contrasting needs, held in non-trainable variables."""

from keras_ebm.memory.memory_bank import MemoryBank
from keras_ebm.memory.queue import Queue
from keras_ebm.memory.replay_buffer import ReplayBuffer
