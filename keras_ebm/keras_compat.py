"""Every private Keras (and tf.distribute) API keras_ebm uses, each behind a public fallback.

keras_ebm needs a few things Keras 3 has no public API for. They are all here,
so that a Keras release that moves or renames them breaks nothing but this
module, and `import keras_ebm` never fails because of them: each private
import is tried once, at import, and each function below falls back to public
API when the private path is missing or fails.

Each function, its private API, and its public fallback:

- `weights_file_writer`
  - private: `keras.src.saving.saving_lib` (`_walk_saveable`, `_save_state`,
    `H5IOStore`), `KerasSaveable`, `naming.to_snake_case`
  - fallback: `model.save_weights`
- `track_variable`
  - private: `Layer._track_variable`
  - fallback: assigning the variable to an attribute of the layer (Keras
    tracks it the same way)
- `flatten_layers`
  - private: `Layer._flatten_layers`
  - fallback: the same walk over `Model.layers`, or the layers a layer holds
    in its attributes
- `multi_worker_mode`
  - private: `strategy.extended._in_multi_worker_mode()` (TensorFlow)
  - fallback: more than one chief or worker task in the strategy's cluster spec
- `set_initial_epoch`
  - private: `Model._initial_epoch`, which Keras's `fit` reads after
    `on_train_begin` (Keras's own `BackupAndRestore` sets it)
  - fallback: none: `fit` starts at its `initial_epoch` argument
- `keep_error_message`
  - private: the `_keras_call_info_injected` flag Keras's layer call reads on
    an error
  - fallback: none: Keras then adds its multi-line call information to the
    message
- `in_xla_context`
  - private: `tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext`
  - fallback: False (not known to be compiled by XLA)

Where the private path could silently do something else in another Keras, it
checks itself: the weights writer compares its walk of the model with the
one of Keras's own `save_weights` and, if they differ, uses `save_weights`.

`KERAS_TESTED` holds the lowest and the newest Keras the test suite runs with
(CI runs it with both, .ci/run; the lowest is setup.cfg's floor); a Keras
outside that range gets one warning at import.
"""

import collections
import contextlib
import importlib
import os
import re
import warnings

import keras

KERAS_TESTED = ("3.12.4", "3.15.1")  # (lowest, newest)


def _version_tuple(version):
    return tuple(int(part) for part in re.findall(r"\d+", str(version).split("+")[0])[:3])


def keras_version_tested(version=None):
    """True if `version` (default: the installed Keras) is inside `KERAS_TESTED`."""
    version = _version_tuple(keras.__version__ if version is None else version)
    return _version_tuple(KERAS_TESTED[0]) <= version <= _version_tuple(KERAS_TESTED[1])


_warned = False


def check_keras_version():
    """Warns (once per process) if the installed Keras is outside `KERAS_TESTED`."""
    global _warned
    if _warned or keras_version_tested():
        return
    _warned = True
    warnings.warn(
        f"keras_ebm is tested with Keras {KERAS_TESTED[0]} to {KERAS_TESTED[1]}; Keras "
        f"{keras.__version__} is installed. keras_ebm falls back to public Keras API where "
        "the private API it uses has moved, which may be slower (see keras_ebm.keras_compat).",
        stacklevel=2)


check_keras_version()


# -- private imports: each may fail, and then its fallback is used -------------------
def _import(name):
    try:
        return importlib.import_module(name)
    except (ImportError, AttributeError):  # moved, renamed, or importing what moved
        return None


# What a private API that changed raises when called the old way (not I/O errors).
_PRIVATE_API_ERRORS = (AttributeError, TypeError, ValueError, KeyError, IndexError,
                       RuntimeError)

_saving_lib = _import("keras.src.saving.saving_lib")
_keras_saveable = _import("keras.src.saving.keras_saveable")
_naming = _import("keras.src.utils.naming")
_control_flow_util = _import("tensorflow.python.ops.control_flow_util")
_SAVING_PRIVATE = all(
    module is not None and all(hasattr(module, name) for name in names)
    for module, names in ((_saving_lib, ("_walk_saveable", "_save_state", "H5IOStore")),
                          (_keras_saveable, ("KerasSaveable",)),
                          (_naming, ("to_snake_case",))))


# -- weights files ---------------------------------------------------------------------
def weights_file_writer(model):
    """A writer of `model`'s `.weights.h5` file: `writer.write(path)`.

    `model.load_weights` reads it.

    `model.save_weights` finds what to save by reading every attribute of the
    model, its layers and its optimizer; between train steps that walk grows
    the process's native memory by about 70 KiB per call (docs/resume.md, "Soak"). With
    Keras's private saving API the writer walks once, checks that it found
    exactly what `save_weights` saves, at the same paths, keeps the objects,
    and then has each save its variables into Keras's own HDF5 store, as
    `save_weights` does; it walks again only if the number of model or
    optimizer variables changes. Without that API, or if the check fails,
    `write` is `model.save_weights`.

    `path` need not end in `.weights.h5` (a temporary name is fine).
    """
    if _SAVING_PRIVATE:
        return _WalkOnceWriter(model)
    return _SaveWeightsWriter(model)


class _SaveWeightsWriter:
    """The public fallback: `model.save_weights`, which wants a `.weights.h5` name."""

    def __init__(self, model):
        self.model = model

    def write(self, path):
        path = os.fspath(path)
        if path.endswith(".weights.h5"):
            self.model.save_weights(path, overwrite=True)
            return
        staging = path + ".staging.weights.h5"
        self.model.save_weights(staging, overwrite=True)
        os.replace(staging, path)


def _unique_name(name, used_names):
    # Keras's naming of the items of a container (`_save_container_state`).
    if name in used_names:
        used_names[name] += 1
        return f"{name}_{used_names[name]}"
    used_names[name] = 0
    return name


def _find_saveables(obj, path, visited, found):
    """The (path, metadata, object) of each object `model.save_weights` asks to save itself.

    The walk of Keras's `saving_lib._save_state`, in its order and with its
    paths; `_WalkOnceWriter` checks the result against Keras's own walk.
    """
    if id(obj) in visited:
        return
    if hasattr(obj, "save_own_variables"):
        name = getattr(obj, "name", None)
        found.append((path, {"name": name} if isinstance(name, str) else None, obj))
    visited.add(id(obj))
    for attribute, child in _saving_lib._walk_saveable(obj):
        child_path = f"{path}/{attribute}" if path else attribute
        if isinstance(child, _keras_saveable.KerasSaveable):
            _find_saveables(child, child_path, visited, found)
        elif isinstance(child, (list, dict, tuple)):
            _find_container_saveables(child, child_path, visited, found, set())


def _find_container_saveables(container, path, visited, found, visited_containers):
    """`_find_saveables` for a list, tuple or dict (Keras's `_save_container_state`)."""
    if id(container) in visited_containers:
        return
    visited_containers.add(id(container))
    used_names = {}
    for item in (container.values() if isinstance(container, dict) else container):
        if isinstance(item, _keras_saveable.KerasSaveable):
            name = _unique_name(_naming.to_snake_case(type(item).__name__), used_names)
            _find_saveables(item, f"{path}/{name}", visited, found)
        elif isinstance(item, (list, dict, tuple)):
            name = _unique_name("container", used_names)
            _find_container_saveables(item, f"{path}/{name}", visited, found,
                                      visited_containers)


def _keras_entries(model):
    """The (path, metadata) of each `save_own_variables` call of Keras's own `_save_state`."""

    class Recorder(_saving_lib.H5IOStore):  # an H5IOStore, as `_save_state` checks; no file
        def __init__(self):
            self.entries = []

        def __bool__(self):
            return True

        def make(self, path, metadata=None):
            self.entries.append((path, metadata))
            return {}  # what the object saves is dropped

        def close(self):
            return None  # nothing was opened

    recorder = Recorder()
    _saving_lib._save_state(model, weights_store=recorder, assets_store=None, inner_path="",
                            visited_saveables=set())
    return recorder.entries


class _WalkOnceWriter:
    """`weights_file_writer` with Keras's private saving API (see there)."""

    def __init__(self, model):
        self.model = model
        self._saveables = None
        self._signature = None
        self._fallback = None

    def _variable_count(self):
        optimizer = getattr(self.model, "optimizer", None)
        return (len(self.model.variables),
                len(optimizer.variables) if optimizer is not None else 0)

    def _walk(self):
        found = []
        _find_saveables(self.model, "", set(), found)
        if [(path, metadata) for path, metadata, _ in found] != _keras_entries(self.model):
            raise RuntimeError("the walk differs from Keras's save_weights")
        return found

    def write(self, path):
        """Writes the model's current variables to `path` (overwriting it)."""
        if self._fallback is not None:
            self._fallback.write(path)
            return
        try:
            if self._saveables is None or self._signature != self._variable_count():
                self._saveables = self._walk()
                self._signature = self._variable_count()
            store = _saving_lib.H5IOStore(os.fspath(path), mode="w")
        except _PRIVATE_API_ERRORS as error:  # this Keras's private API differs: use the public one
            warnings.warn(f"keras_ebm: writing weights with model.save_weights ({error})")
            self._fallback = _SaveWeightsWriter(self.model)
            self._fallback.write(path)
            return
        try:
            for inner_path, metadata, saveable in self._saveables:
                saveable.save_own_variables(store.make(inner_path, metadata=metadata))
        finally:
            store.close()


# -- layers ----------------------------------------------------------------------------
def track_variable(layer, variable):
    """Makes `variable` one of `layer`'s own weights (saved, restored and listed with them).

    Private: `layer._track_variable(variable)`. Fallback: the variable is
    assigned to an attribute of the layer, which Keras tracks the same way
    (appended to the layer's trainable or non-trainable weights).
    """
    private = getattr(layer, "_track_variable", None)
    if private is None:
        _public_track_variable(layer, variable)
        return
    try:
        private(variable)
    except (AttributeError, TypeError):  # another signature or internals
        _public_track_variable(layer, variable)


def _public_track_variable(layer, variable):
    count = 0
    while hasattr(layer, f"_keras_ebm_variable_{count}"):
        count += 1
    setattr(layer, f"_keras_ebm_variable_{count}", variable)


def flatten_layers(layer, include_self=True, recursive=True):
    """`layer` (if `include_self`) and every layer inside it, nested ones too if `recursive`.

    Private: `layer._flatten_layers(...)`. Fallback: the same walk (and
    order) over the direct sublayers of each layer: `Model.layers` for a
    model, else the layers it holds in its attributes, lists and dicts.
    (`Sequential.layers` leaves out the `InputLayer`, so the fallback does too.)
    """
    private = getattr(layer, "_flatten_layers", None)
    if private is None:
        return _public_flatten_layers(layer, include_self, recursive)
    try:
        return list(private(include_self=include_self, recursive=recursive))
    except (AttributeError, TypeError):  # another signature or internals
        return _public_flatten_layers(layer, include_self, recursive)


def _direct_sublayers(layer):
    found, seen = [], {id(layer)}

    def visit(value, depth):
        if isinstance(value, keras.layers.Layer):
            if id(value) not in seen:
                seen.add(id(value))
                found.append(value)
        elif depth < 4 and isinstance(value, (list, tuple)):
            for item in value:
                visit(item, depth + 1)
        elif depth < 4 and isinstance(value, dict):
            for item in value.values():
                visit(item, depth + 1)

    try:
        children = list(layer.layers) if isinstance(layer, keras.Model) else None
    except _PRIVATE_API_ERRORS:
        children = None
    # A model's public list of direct sublayers, else what the layer holds.
    for value in [children] if children is not None else list(vars(layer).values()):
        visit(value, 0)
    return found


def _public_flatten_layers(layer, include_self=True, recursive=True):
    layers = [layer] if include_self else []
    seen = set()
    queue = collections.deque(_direct_sublayers(layer))
    while queue:  # Keras's `_flatten_layers` order
        current = queue.popleft()
        if id(current) in seen:
            continue
        seen.add(id(current))
        layers.append(current)
        if recursive:
            queue.extendleft(_direct_sublayers(current))
    return layers


# -- callbacks -------------------------------------------------------------------------
def set_initial_epoch(model, epoch):
    """Makes the `model.fit` call now in `on_train_begin` start at `epoch`.

    Private: `Model._initial_epoch` (what Keras's `BackupAndRestore` sets).
    Fallback: none (the attribute is then ignored by `fit`).
    """
    model._initial_epoch = int(epoch)


# -- tf.distribute ---------------------------------------------------------------------
def multi_worker_mode(strategy):
    """True if `strategy` spans several workers (a multi-worker `MultiWorkerMirroredStrategy`).

    Private (TensorFlow): `strategy.extended._in_multi_worker_mode()`.
    Fallback: a `MultiWorkerMirroredStrategy` whose cluster spec has more
    than one chief or worker task.
    """
    private = getattr(getattr(strategy, "extended", None), "_in_multi_worker_mode", None)
    if not callable(private):
        return _public_multi_worker_mode(strategy)
    try:
        return bool(private())
    except _PRIVATE_API_ERRORS:
        return _public_multi_worker_mode(strategy)


def _public_multi_worker_mode(strategy):
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return False
    try:
        cluster = resolver.cluster_spec().as_dict() or {}
    except _PRIVATE_API_ERRORS:
        return False
    return sum(len(cluster.get(job, ())) for job in ("chief", "worker")) > 1


# -- errors ----------------------------------------------------------------------------
def keep_error_message(error_class):
    """Class decorator: Keras raises `error_class` from a layer's `call` with its message as is.

    Keras wraps an error raised in a layer's `call` into a multi-line
    "Exception encountered when calling ..." message unless the error says
    its call information is already injected. Private: the class attribute
    `_keras_call_info_injected = True`, which Keras's call wrapper reads.
    Fallback (the attribute cannot be set): nothing; the message then carries
    Keras's call information too. Returns `error_class`.
    """
    with contextlib.suppress(AttributeError, TypeError):  # an immutable class: no flag
        error_class._keras_call_info_injected = True
    return error_class


# -- XLA -------------------------------------------------------------------------------
def in_xla_context():
    """True while tracing a function that XLA will compile (`jit_compile=True`, TPUs).

    TensorFlow has no public test for it. Private (TensorFlow):
    `control_flow_util.GraphOrParentsInXlaContext` of the default graph.
    Fallback: False (eagerly, or when the private function is missing or fails).
    """
    import tensorflow as tf

    if tf.executing_eagerly():
        return False
    private = getattr(_control_flow_util, "GraphOrParentsInXlaContext", None)
    if not callable(private):
        return False
    try:
        return bool(private(tf.compat.v1.get_default_graph()))
    except _PRIVATE_API_ERRORS:
        return False
