"""The one contract of every keras_ebm method: one `train_step` around one loss hook.

Every method, self-supervised or classical, is a `Method`. Its `train_step` is

    inputs = self.prepare(data, training=True)       # views or samples (augmenter,
                                                     # sampler, noise, flips), no gradient
    self.before_update(inputs)                       # EMA of a key/target encoder
    with tape:
        loss, outputs = self.contrastive_loss(inputs, training=True)   # the paper's equations
        scaled = scale_loss(loss)                    # replica share, loss scaling
    gradients -> optimizer update
    self.after_update(inputs, outputs)               # enqueue keys, move the bank, keep chains
    return trackers updated from `loss` and `outputs`

A method writes `contrastive_loss` and, where it has state, `prepare`,
`before_update` and `after_update`. Nothing else: the base class builds the
model from its first batch or from `input_shape`, trains, tests, tracks and
serialises. `keras.ops` in the losses and layers; `tf` here, where the code is
TensorFlow-only (`GradientTape`, `tf.init_scope`).
"""

import re

import keras
import numpy as np
import tensorflow as tf

from keras_ebm import distribute
from keras_ebm import seeding
from keras_ebm.keras_compat import keep_error_message

# Keras appends _1, _2, ... to repeated layer names.
_UNIQUE_SUFFIX = re.compile(r"_\d+$")


def serialize(obj):
    return None if obj is None else keras.saving.serialize_keras_object(obj)


def deserialize(config):
    if isinstance(config, dict):
        return keras.saving.deserialize_keras_object(config)
    return config


@keep_error_message
class InputShapeError(ValueError):
    """Inputs of another shape than the one the method was built for."""


def check_example_shape(name, expected, x):
    """Raises InputShapeError when x [batch, ...] does not fit examples of shape `expected`."""
    got = tuple(getattr(x, "shape", ()))[1:]
    if expected is None or got == () and not hasattr(x, "shape"):
        return
    if len(got) != len(expected) or any(
            e is not None and g is not None and int(e) != int(g) for e, g in zip(expected, got)):
        want = ", ".join("None" if d is None else str(d) for d in expected)
        raise InputShapeError(f"{name}: expected inputs of shape (batch, {want}), got "
                              f"{tuple(getattr(x, 'shape'))}")


def unpack_inputs(data):
    """Strips what Keras adds around a batch: `(x,)`, `(x, None, None)` -> `x`."""
    while isinstance(data, (tuple, list)) and (len(data) == 1 or data[-1] is None):
        data = data[0] if len(data) == 1 else tuple(data[:-1])
    return data


def check_float_inputs(name, x):
    """Raises one clear ValueError for integer inputs (e.g. uint8 images in 0-255)."""
    dtype = keras.backend.standardize_dtype(getattr(x, "dtype", "float32"))
    if "int" in dtype or dtype == "bool":
        raise ValueError(
            f"{name}: inputs must be floating point (images: float32 in [0, 1]); got {dtype}. "
            "Convert them first, e.g. x.astype('float32') / 255 for uint8 images.")


def copy_model(model, owner):
    """A fresh copy of `model`'s architecture (new weights), for key or target encoders.

    Functional and Sequential models (with or without `keras.Input`) and any
    layer whose `get_config` round-trips are copied; anything else gets one
    clear error naming `owner`.
    """
    try:
        if isinstance(model, keras.Model):
            return keras.models.clone_model(model)
        return model.__class__.from_config(model.get_config())
    except Exception as error:  # noqa: BLE001 (any failure gets the same advice)
        raise ValueError(
            f"{owner}: cannot copy {type(model).__name__} ({error}). The copy is built from "
            "its config: give the class a get_config() that returns its constructor "
            "arguments (and register it with keras.saving.register_keras_serializable)"
        ) from None


def paired_weights(copy, original, owner):
    """`(copy_weight, original_weight)` pairs of a `copy_model` copy and its original.

    Weights pair by their place in the model's structure (`model.weights`
    lists them in the order the layers are tracked, the same for a copy);
    each pair is checked to have the same variable name (`kernel`, `gamma`,
    ...) and shape, so a copy that does not mirror its original fails with
    one clear error instead of training with mixed-up weights.
    """
    copies, originals = list(copy.weights), list(original.weights)
    if len(copies) != len(originals):
        raise ValueError(f"{owner}: the copy of {original.name} has {len(copies)} weights, "
                         f"the original {len(originals)}")
    for copy_weight, weight in zip(copies, originals):
        if (_UNIQUE_SUFFIX.sub("", copy_weight.name) != _UNIQUE_SUFFIX.sub("", weight.name)
                or tuple(copy_weight.shape) != tuple(weight.shape)):
            raise ValueError(
                f"{owner}: weight {weight.path} {tuple(weight.shape)} of {original.name} pairs "
                f"with {copy_weight.path} {tuple(copy_weight.shape)} in its copy; the copy must "
                "mirror the original")
    return list(zip(copies, originals))


def ema_update(pairs, momentum):
    """copy <- momentum * copy + (1 - momentum) * original, for the trainable originals.

    The exponential moving average of a momentum network (MoCo's key
    encoder, BYOL's target network) over `paired_weights` pairs. Weights
    whose original is not trainable (batch-norm moving statistics) are left
    to the copy's own forward passes, as in the reference implementations.
    Replica-safe (`keras_ebm.distribute.update_state`): in a replica context
    each device copy of the copies follows that device's copy of the
    (mirrored, identical) originals, with that replica's `momentum`.

    Args:
        pairs: list of `(copy_weight, original_weight)` variables.
        momentum: float or scalar tensor in [0, 1], the same on every replica.
    """
    pairs = [(copy_weight, weight) for copy_weight, weight in pairs if weight.trainable]
    if not pairs:
        return

    def ema(momentum):
        for copy_weight, weight in pairs:
            m = tf.cast(momentum, copy_weight.dtype)
            copy_weight.assign(m * copy_weight + (1.0 - m) * weight)

    distribute.update_state(ema, tf.convert_to_tensor(momentum, "float32"), anchor=pairs[0][0])


# `steps_per_execution="auto"`: models with at most this many trainable parameters run
# several steps per compiled call (their steps are dominated by per-step dispatch) ...
SMALL_MODEL_PARAMETERS = 100_000
# ... at most this many (the divergence guard, preemption saves and the progress bar
# act once per call).
MAX_STEPS_PER_EXECUTION = 128


def auto_steps_per_execution(model, steps_per_epoch):
    """The steps per compiled call that `steps_per_execution="auto"` picks for `fit`.

    A method with `multi_step_calls` (the classical energy methods;
    self-supervised methods keep 1 step per call: their divergence rollback
    acts per step) and a small model (at most `SMALL_MODEL_PARAMETERS`
    trainable parameters), on one device, compiled, with a known number of
    steps per epoch, runs the largest divisor of the epoch's steps that is at most
    `MAX_STEPS_PER_EXECUTION` (so an execution never runs past the end of an
    epoch: Keras's multi-step loop would take the next epoch's batches);
    anything else runs 1 step per call.

    Args:
        model: a compiled `Method`.
        steps_per_epoch: int or None, the updates per epoch of the `fit` call.

    Returns:
        int >= 1.
    """
    if not getattr(model, "multi_step_calls", False):
        return 1
    if not steps_per_epoch or steps_per_epoch < 2 or model.run_eagerly:
        return 1
    if model.distribute_strategy.num_replicas_in_sync > 1:
        return 1
    weights = model.trainable_weights
    parameters = sum(int(np.prod(w.shape)) for w in weights)
    if not weights or parameters > SMALL_MODEL_PARAMETERS:
        return 1
    return max(n for n in range(1, min(steps_per_epoch, MAX_STEPS_PER_EXECUTION) + 1)
               if steps_per_epoch % n == 0)


_BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")


def acts_per_batch(callback):
    """Whether `callback` needs each training batch's hook (so one step per compiled call).

    True for a callback that overrides a train-batch hook, unless it is one of
    Keras's own (they follow `steps_per_execution`) or says
    `multi_step_calls_ok = True` (it reads `batch` as the last step of a call).
    """
    if getattr(callback, "multi_step_calls_ok", False):
        return False
    if type(callback).__module__.split(".")[0] == "keras":
        return False
    return any(getattr(type(callback), hook, None) is not getattr(keras.callbacks.Callback, hook)
               for hook in _BATCH_HOOKS)


def _callbacks_of(args, kwargs):
    callbacks = kwargs.get("callbacks", args[5] if len(args) > 5 else None)
    if callbacks is None:
        return []
    return list(getattr(callbacks, "callbacks", callbacks))


class Method(keras.Model):
    """Base of every keras_ebm method: the shared `train_step`, trackers and building.

    A subclass sets `tracker_names` and writes `contrastive_loss(inputs,
    training) -> (loss, outputs)`: `outputs` is a dict whose entries named in
    `tracker_names` are averaged by `keras.metrics.Mean` trackers (and shown
    by `fit`); the other entries are passed to `after_update`. Optional hooks:
    `prepare(data, training)` (views or samples, outside the tape; default:
    the features of the batch), `before_update(inputs)`,
    `after_update(inputs, outputs)` and `build_parts(input_shape)` (create
    the variables of the parts and of the state).

    The model is built when its input shape is known: at construction from
    `input_shape=` or from a Functional encoder or energy, otherwise from the
    first batch (`fit`, `predict` or a call). Under tf.distribute every
    variable must exist before `fit`, so pass `input_shape=` there.

    Args:
        input_shape: tuple or None, the shape of one example (no batch
            dimension), to build every variable at once. Defaults to None.
        **kwargs: `keras.Model` keyword arguments (e.g. `name`).
    """

    tracker_names = ("loss",)
    # True where the loss is by design blind to some trainable variables (score
    # matching cannot see the energy's additive constant): they get no update
    # and no "Gradients do not exist" warning.
    loss_ignores_some_variables = False
    # True where compile(steps_per_execution="auto") may run several steps per
    # compiled call for a small model (the classical energy methods); False keeps
    # 1 step per call (self-supervised methods).
    multi_step_calls = False

    def __init__(self, input_shape=None, **kwargs):
        super().__init__(**kwargs)
        self.example_shape = None if input_shape is None else tuple(input_shape)
        for name in self.tracker_names:
            setattr(self, f"{name}_tracker", keras.metrics.Mean(name=name))

    # -- the contract -------------------------------------------------------
    def prepare(self, data, training):
        """The inputs of the loss from a batch, outside the tape. Default: its features."""
        x = unpack_inputs(data)
        if isinstance(x, (tuple, list)):
            x = x[0]
        check_float_inputs(self.__class__.__name__, x)
        self.check_shape(x)
        return x

    def check_shape(self, x):
        """One clear error for inputs of another shape than the method was built for."""
        check_example_shape(self.__class__.__name__, self.example_shape, x)

    def before_update(self, inputs):
        """State update before the forward pass (e.g. the EMA of a key encoder)."""

    def contrastive_loss(self, inputs, training):
        """Returns `(loss, outputs)`: the scalar loss and a dict of named tensors."""
        raise NotImplementedError(f"{self.__class__.__name__} must define contrastive_loss")

    def after_update(self, inputs, outputs):
        """State update after the optimizer step (queues, banks, chains)."""

    def train_step(self, data):
        self.build_on(data)
        # 0. Views or contrasted samples; no gradient flows into them.
        inputs = self.prepare(data, training=True)
        self.before_update(inputs)
        # 1.-3. Forward, gradients, the optimizer's update.
        loss, outputs = self.update(inputs)
        # 4. State that follows the update.
        self.after_update(inputs, outputs)
        return self.update_trackers(loss, outputs)

    def update(self, inputs):
        """One parameter update from prepared inputs; returns `(loss, outputs)`."""
        with tf.GradientTape() as tape:
            # 1. Forward: push down the energy of data, push up the contrasted points.
            loss, outputs = self.contrastive_loss(inputs, training=True)
            # This replica's share of the global mean (Keras sums the replicas'
            # gradients), then the optimizer's loss scale (float16).
            scaled_loss = self.optimizer.scale_loss(distribute.scale_loss_for_replicas(loss))
        # 2.-3. Gradients and the optimizer's update.
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        if self.loss_ignores_some_variables:  # e.g. the energy's constant, in score matching
            pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
            gradients, variables = [g for g, _ in pairs], [v for _, v in pairs]
        self.optimizer.apply(gradients, variables)
        return loss, outputs

    # -- steps per execution ------------------------------------------------
    def compile(self, *args, steps_per_execution="auto", **kwargs):
        """`keras.Model.compile`, with `steps_per_execution="auto"` by default.

        "auto": each `fit` picks the steps run per compiled call with
        `auto_steps_per_execution` (small energy models: up to a whole epoch
        per call; others: 1). Where the data allows it (see `_as_blocks`),
        those steps come as one block of minibatches, fetched once per call
        and run in one loop; an RBM with Gibbs (`xla_blocks_on_cpu`) compiles
        that loop with XLA, ThreeFry draws, when `jit_compile` is left to
        "auto". An int is used as given (1: one step per call), through
        Keras's own multi-step loop.
        """
        auto = steps_per_execution == "auto"
        if not auto and (isinstance(steps_per_execution, bool)
                         or not isinstance(steps_per_execution, (int, np.integer))
                         or steps_per_execution < 1):
            raise ValueError('steps_per_execution must be "auto" or an int >= 1, got '
                             f"{steps_per_execution!r}")
        super().compile(*args, steps_per_execution=1 if auto else int(steps_per_execution),
                        **kwargs)
        self.auto_steps_per_execution = auto
        self._jit_compile_argument = kwargs.get("jit_compile", "auto")
        if auto and getattr(self, "_compile_config", None) is not None:
            self._compile_config.config["steps_per_execution"] = "auto"  # saved, reloaded as auto

    def compile_from_config(self, config):
        # Keras skips a custom `compile` when loading a model; this one takes
        # Keras's arguments (steps_per_execution: "auto" or an int), so do as Keras does.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def _steps_per_epoch_of(self, args, kwargs):
        """The updates per epoch `fit(*args, **kwargs)` will run, or None if unknown."""
        if kwargs.get("steps_per_epoch") is not None:
            return int(kwargs["steps_per_epoch"])
        x = args[0] if args else kwargs.get("x")
        if isinstance(x, tf.data.Dataset):
            count = int(x.cardinality())
            return count if count > 0 else None
        if hasattr(x, "shape") and len(getattr(x, "shape", ())) >= 1 and x.shape[0] is not None:
            batch_size = kwargs.get("batch_size") or (args[2] if len(args) > 2 else None) or 32
            return -(-int(x.shape[0]) // int(batch_size))
        return None

    def fit(self, *args, **kwargs):
        self._block_steps = 1
        if getattr(self, "auto_steps_per_execution", False):
            steps = auto_steps_per_execution(self, self._steps_per_epoch_of(args, kwargs))
            if steps > 1 and any(acts_per_batch(c) for c in _callbacks_of(args, kwargs)):
                steps = 1  # a callback that acts per batch sees every batch
            if steps != self.steps_per_execution:
                self.steps_per_execution = steps
                self.train_function = self.test_function = self.predict_function = None
            if steps > 1:
                args, kwargs = self._as_blocks(args, kwargs, steps)
        if getattr(self, "_train_function_blocks", 1) != self._block_steps:
            # The train function kept from the last fit takes blocks of another size.
            self.train_function = None
        try:
            return super().fit(*args, **kwargs)
        except (ValueError, TypeError):
            # NOTE: Keras keeps the train function whose tracing failed; the
            # next fit() would reuse it and fail with an unrelated TF error.
            self.train_function = None
            raise
        finally:
            self._block_steps = 1

    # -- blocks of minibatches: one dataset element per compiled call ---------
    def _as_blocks(self, args, kwargs, steps):
        """`fit`'s arguments with each element of the data a block of `steps` minibatches.

        Keras's multi-step loop fetches each minibatch from the `tf.data`
        iterator inside the compiled call (one `get_next`, an `Optional` and a
        `tf.cond` per step: most of a small model's step). A block is fetched
        once per call and its minibatches are sliced in the loop of
        `make_train_function`, in the same order, with the same updates.
        Applies to a built model without a distribution strategy fit on a
        `tf.data.Dataset` of equal-sized batches (static batch dimension) or on
        an array of features alone whose length the batch size divides; else
        the arguments are returned as given (Keras's own multi-step loop).
        """
        import inspect

        try:
            bound = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs)
        except TypeError:
            return args, kwargs
        params = dict(bound.arguments)
        params.pop("self")
        params.update(params.pop("kwargs", {}))
        if (not self.built or self._distribute_strategy is not None
                or params.get("validation_split") or params.get("class_weight") is not None
                or params.get("sample_weight") is not None):
            return args, kwargs
        x = params.get("x")
        if isinstance(x, tf.data.Dataset):
            flat = tf.nest.flatten(x.element_spec)
            if not all(isinstance(spec, tf.TensorSpec) and spec.shape.rank
                       and spec.shape[0] is not None for spec in flat):
                return args, kwargs
            if len({int(spec.shape[0]) for spec in flat}) != 1:
                return args, kwargs
            blocks = (x.keras_ebm_blocks(steps) if hasattr(x, "keras_ebm_blocks")  # one gather
                      else x.batch(steps, drop_remainder=True))
            if params.get("steps_per_epoch") is None:  # a finite dataset, once per epoch
                params["steps_per_epoch"] = int(x.cardinality())
                blocks = blocks.repeat()
        elif (isinstance(x, (np.ndarray, tf.Tensor)) and params.get("y") is None
              and x.shape[0] and params.get("steps_per_epoch") is None):
            batch_size = int(params.get("batch_size") or 32)
            if int(x.shape[0]) % batch_size:
                return args, kwargs
            examples = tf.data.Dataset.from_tensor_slices(x)
            if params.get("shuffle", True):
                examples = examples.shuffle(int(x.shape[0]), reshuffle_each_iteration=True)
            blocks = (examples.batch(batch_size, drop_remainder=True)
                      .batch(steps, drop_remainder=True).repeat().prefetch(1))
            params["steps_per_epoch"] = int(x.shape[0]) // batch_size
            params["batch_size"] = None
        else:
            return args, kwargs
        params["x"] = blocks
        self._block_steps = steps
        return (), params

    def xla_blocks_on_cpu(self):
        """True where a block of minibatches is compiled with XLA when Keras's is off (CPU).

        Default False; `ContrastiveDivergence` says True for an RBM with Gibbs.
        """
        return False

    def make_train_function(self, force=False):
        steps = getattr(self, "_block_steps", 1)
        if self.train_function is not None and not force:
            return self.train_function
        self._train_function_blocks = steps
        if steps <= 1:
            return super().make_train_function(force)

        @tf.autograph.experimental.do_not_convert
        def block_step(block):
            # The block's first minibatch outside the loop gives the logs' structure.
            logs = self.train_step(tf.nest.map_structure(lambda t: t[0], block))

            def body(i, logs):
                return i + 1, self.train_step(tf.nest.map_structure(lambda t: t[i], block))

            _, logs = tf.while_loop(lambda i, logs: i < steps, body, (tf.constant(1), logs))
            return logs

        jit_compile = bool(self.jit_compile)
        if (not jit_compile and getattr(self, "_jit_compile_argument", None) == "auto"
                and self.xla_blocks_on_cpu()):
            # Keras's jit_compile="auto" leaves XLA off on CPU; for these models one XLA
            # program per block, with ThreeFry draws, is several times faster.
            jit_compile = True
        if jit_compile:
            # XLA's default stateless generator is slow on CPU (see seeding): an XLA block
            # draws with ThreeFry (the toys' PCD: 25 -> 18 ms an update).
            traced_step = block_step

            def block_step(block):
                with seeding.threefry_under_xla():
                    return traced_step(block)

        if not self.run_eagerly:
            block_step = tf.function(block_step, reduce_retracing=True, jit_compile=jit_compile)

        def function(iterator):
            return block_step(next(iterator))

        self.train_function = function
        return function

    def test_step(self, data):
        self.build_on(data)
        inputs = self.prepare(data, training=False)
        loss, outputs = self.contrastive_loss(inputs, training=False)
        return self.update_trackers(loss, outputs)

    # -- trackers -----------------------------------------------------------
    @property
    def metrics(self):
        return [getattr(self, f"{name}_tracker") for name in self.tracker_names]

    def _compiled_tracker_function(self, kind, function):
        """`function` (of the trackers) as one compiled call, or None to run Keras's eager ops.

        Keras resets and reads the trackers at every epoch op by op: one eager op
        per variable, ~1 ms an epoch on a loaded CPU, a sixth of a small RBM's
        epoch run as one block.
        """
        if (self.run_eagerly or not tf.executing_eagerly()
                or getattr(self, "_distribute_strategy", None) is not None):
            return None
        key = (kind, tuple(id(tracker) for tracker in self.metrics))
        cache = self.__dict__.setdefault("_tracker_functions", {})
        if key not in cache:
            cache[key] = tf.function(function, autograph=False)
        return cache[key]

    def reset_metrics(self):
        def reset():
            for tracker in self.metrics:
                tracker.reset_state()
            return tf.constant(0)

        compiled = self._compiled_tracker_function("reset", reset)
        if compiled is None:
            return super().reset_metrics()
        compiled()

    def get_metrics_result(self):
        compiled = self._compiled_tracker_function(
            "result", lambda: {tracker.name: tracker.result() for tracker in self.metrics})
        if compiled is None:
            return super().get_metrics_result()
        return {name: float(value) for name, value in compiled().items()}

    def update_trackers(self, loss, outputs):
        """Updates the trackers from the loss and `outputs`; returns every tracker's result."""
        values = dict(outputs, loss=loss)
        for tracker in self.metrics:
            if tracker.name in values:
                tracker.update_state(values[tracker.name])
        return distribute.step_logs({tracker.name: tracker.result() for tracker in self.metrics})

    # -- building -----------------------------------------------------------
    def build(self, input_shape):
        shape = self._example_shape(input_shape)
        self.example_shape = shape
        # Eagerly, even from inside a traced function (Keras's symbolic build):
        # parts are built by calling them on a small batch of zeros, so no
        # compute_output_shape is needed from a user's model.
        with tf.init_scope():
            self.build_parts((None, *shape))

    def build_on(self, data):
        """Builds the method, then its optimizer, from a batch's shape if not built yet.

        Keras builds a model without a strategy only when its step is traced;
        this makes every variable (state and optimizer slots) on that first
        trace, eagerly.
        """
        if not self.built:
            x = unpack_inputs(data)
            self.build(tuple((x[0] if isinstance(x, (tuple, list)) else x).shape))
        if getattr(self, "optimizer", None) is not None and not self.optimizer.built:
            with tf.init_scope():
                self.optimizer.build(self.trainable_variables)

    def build_parts(self, input_shape):
        """Creates the variables of the parts and of the state for inputs of `input_shape`."""

    @staticmethod
    def _example_shape(input_shape):
        if isinstance(input_shape, dict):  # Keras's build_config
            input_shape = next(iter(input_shape.values()))
        if isinstance(input_shape, (tuple, list)) and input_shape and isinstance(
                input_shape[0], (tuple, list)):
            input_shape = input_shape[0]  # (images, indices): the images
        return tuple(None if d is None else int(d) for d in tuple(input_shape)[1:])

    def build_now(self, parts_shape=None):
        """Builds at construction when the example shape is known (called by subclasses)."""
        shape = self.example_shape or parts_shape
        if shape is not None:
            self.build((None, *shape))

    @staticmethod
    def zeros(shape, batch=2):
        """A small batch of zeros of example shape `shape` (None dimensions: 32)."""
        return np.zeros((batch, *[32 if d is None else int(d) for d in shape]), "float32")

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if not self.built and tf.distribute.has_strategy() and \
                tf.distribute.get_strategy().num_replicas_in_sync > 1:
            raise ValueError(
                f"{self.__class__.__name__} is not built: under tf.distribute every variable "
                "must exist before fit(). Pass input_shape=(...) (one example's shape) when "
                "you make the method, inside strategy.scope()")
        # NOTE: a private Keras hook. Keras 3 (TensorFlow backend) starts fit()
        # and evaluate() under a strategy by averaging one batch over the
        # replicas only to build the model symbolically; under
        # MultiWorkerMirroredStrategy that reduce fails on a structured batch
        # (PIRL's (images, indices)). A built method has only the optimizer
        # left to build: do that, in the strategy's scope, as Keras would.
        compiled = [getattr(self, "_compile_metrics", None), getattr(self, "_compile_loss", None)]
        if (getattr(self, "_distribute_strategy", None) is None or not self.built
                or any(c is not None and not c.built for c in compiled)):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    # -- serialisation ------------------------------------------------------
    # Constructor arguments that hold Keras objects: serialised by get_config,
    # deserialised by from_config.
    config_objects = ()

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable,
                  "input_shape": None if self.example_shape is None else list(self.example_shape)}
        for key in self.config_objects:
            config[key] = serialize(getattr(self, key))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls.config_objects:
            if key in config:
                config[key] = deserialize(config[key])
        return cls(**config)
