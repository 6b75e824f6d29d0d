"""keras_ebm: contrastive methods of energy-based learning for TensorFlow and Keras 3.

Every method pushes the energy of data points down and the energy of contrasted
points up. A method is one ``keras.Model`` in ``keras_ebm.methods`` composed of
an energy (``layers``, ``energies``), a source of contrasted samples
(``memory``, ``samplers``, in-batch negatives) and a loss (``losses``).
"""

__version__ = "0.1.0"

import importlib

_SUBPACKAGES = ("backbones", "callbacks", "data", "energies", "evaluation", "export", "layers",
                "losses", "memory", "methods", "optimizers", "samplers")


def __getattr__(name):
    # Subpackages load on first use, so `import keras_ebm` stays light and
    # `keras_ebm.methods` works without an explicit import.
    if name in _SUBPACKAGES:
        return importlib.import_module(f"keras_ebm.{name}")
    raise AttributeError(f"module 'keras_ebm' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBPACKAGES))
