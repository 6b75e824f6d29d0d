import importlib.util
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

TRAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools",
                     "train.py")


def load_train_tool():
    """tools/train.py, imported once as the module `keras_ebm_train_tool` (absl flags and all)."""
    name = "keras_ebm_train_tool"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TRAIN)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def train_tool():
    return load_train_tool()


@pytest.fixture()
def train_module(train_tool):
    """tools/train.py for one test; the callbacks a test adds to every fit are removed after it."""
    yield train_tool
    train_tool.EXTRA_CALLBACKS.clear()


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield
