"""Random draws that are either stateless (a function of a seed) or from TF's global RNG.

Samplers, replay buffers and methods take `seed=None` (draw from TensorFlow's
global generator) or a stateless seed, a [2] integer tensor. A method derives
its seed from its own seed and its optimizer's step counter, which checkpoints
carry, so a run resumed after a kill draws the same noise as an uninterrupted
one. TensorFlow-only (tf.random's stateless ops).
"""

import contextlib
import threading

import tensorflow as tf
from tensorflow.python.ops import control_flow_util

_state = threading.local()


@contextlib.contextmanager
def threefry_under_xla():
    """While tracing inside it, stateless draws in an XLA-compiled function use ThreeFry.

    XLA's default stateless generator (Philox) is slow on CPU (62 draws of
    200x64 uniforms: ~27 ms, ThreeFry ~3 ms). The draws keep their
    distribution and stay a function of the seed, but differ in their bits
    from the same seed's draws outside XLA. Used by `Method` for every block
    of minibatches it compiles with XLA: under jit_compile="auto" on CPU, and
    under an explicit jit_compile=True (see `Method.make_train_function`).
    """
    previous = getattr(_state, "threefry", False)
    _state.threefry = True
    try:
        yield
    finally:
        _state.threefry = previous


def _alg():
    if getattr(_state, "threefry", False) and control_flow_util.GraphOrParentsInXlaContext(
            tf.compat.v1.get_default_graph()):
        return "threefry"
    return "auto_select"


def fold_seed(seed, index):
    """The seed of sub-draw `index` of a stateless seed (None stays None: stateful draws)."""
    if seed is None:
        return None
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), index)


def random_uniform(shape, seed=None, dtype="float32", minval=0.0, maxval=1.0):
    """U(minval, maxval): stateless from `seed` ([2] ints) when given, else TF's global RNG."""
    if seed is None:
        return tf.random.uniform(shape, minval, maxval, dtype=dtype)
    return tf.random.stateless_uniform(shape, seed, minval, maxval, dtype=dtype, alg=_alg())


def random_normal(shape, seed=None, dtype="float32"):
    """N(0, 1): stateless from `seed` ([2] ints) when given, else TF's global RNG."""
    if seed is None:
        return tf.random.normal(shape, dtype=dtype)
    return tf.random.stateless_normal(shape, seed, dtype=dtype, alg=_alg())
