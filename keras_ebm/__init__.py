"""keras_ebm: contrastive methods of energy-based learning for TensorFlow and Keras 3.

Every method pushes the energy of data points down and the energy of contrasted
points up. A method is one ``keras.Model`` in ``keras_ebm.methods`` composed of
an energy (``layers``, ``energies``), a source of contrasted samples
(``memory``, ``samplers``, in-batch negatives) and a loss (``losses``).
"""

__version__ = "0.1.0"

# Importing every subpackage registers every serialisable class, so that
# `import keras_ebm` is enough for `keras.models.load_model("model.keras")`.
from keras_ebm import backbones  # noqa: E402
from keras_ebm import callbacks  # noqa: E402
from keras_ebm import checkpoints  # noqa: E402
from keras_ebm import data  # noqa: E402
from keras_ebm import distribute  # noqa: E402
from keras_ebm import energies  # noqa: E402
from keras_ebm import evaluation  # noqa: E402
from keras_ebm import experiment  # noqa: E402
from keras_ebm import export  # noqa: E402
from keras_ebm import layers  # noqa: E402
from keras_ebm import losses  # noqa: E402
from keras_ebm import memory  # noqa: E402
from keras_ebm import methods  # noqa: E402
from keras_ebm import optimizers  # noqa: E402
from keras_ebm import presets  # noqa: E402
from keras_ebm import samplers  # noqa: E402
from keras_ebm import training  # noqa: E402
