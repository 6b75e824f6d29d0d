"""tf.distribute helpers: strategies by name, cross-replica gathers, replica-safe state.

Contrastive methods need three things from a distribution strategy:

1. **A strategy from a name** (`get_strategy`), for `tools/train.py --strategy`.
2. **Global negatives** (`cross_replica_concat`): each replica gathers the
   projections (SimCLR) or keys (MoCo) of every replica. The gather's gradient
   sums the upstream gradient over replicas and returns each replica its own
   slice, so with every replica's loss divided by the number of replicas
   (`scale_loss_for_replicas`) the gradients that Keras' optimizer sums over
   replicas equal the one-device gradient of the global batch.
3. **Replica-safe state updates** (`update_state`): queues, EMA encoders and
   pointers are mirrored variables, one copy per device. A plain `assign` in
   replica context either needs a variable aggregation or, mixed with the
   gather's collectives, can abort ("Collective ops is aborted by: ...
   expected type 2 ... but got type 0"). `update_state(fn, *args)` instead runs
   `fn` once per device copy, in cross-replica *update* context (a
   `merge_call` then `strategy.extended.update`, the mechanism Keras' own
   optimizer uses): inside `fn`, every read of a mirrored variable returns
   that device's copy, every write goes to that copy, and tensor arguments are
   that replica's values. No communication happens. The copies stay identical
   because every replica passes identical arguments (gathered keys) and reads
   identical mirrored weights; that is the caller's contract.

Everything here is a no-op passthrough without a strategy (or with one
replica), so methods call these helpers unconditionally.
"""

import json
import os

import tensorflow as tf

from keras_ebm import keras_compat

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def get_strategy(name="default", devices=None, tpu=None, collective_timeout=None):
    """Returns a `tf.distribute.Strategy` from its name.

    - `"default"`: the default (no-op) strategy, one device.
    - `"mirrored"`: `tf.distribute.MirroredStrategy` over `devices` (default:
      all local GPUs, else the CPU), synchronous data parallelism on one machine.
    - `"multi_worker"`: `tf.distribute.MultiWorkerMirroredStrategy`, reading the
      cluster and this task from the `TF_CONFIG` environment variable, e.g.
      `{"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]},
      "task": {"type": "worker", "index": 0}}`. Every worker runs the same
      program; worker 0 is the chief (see `is_chief`).
    - `"tpu"`: `tf.distribute.TPUStrategy`, following the TensorFlow TPU guide
      (resolve the TPU with `TPUClusterResolver(tpu=tpu)`, connect to the
      cluster, initialise the TPU system). NOTE: this path cannot be run on the
      machines keras_ebm is developed on (no TPU); it is the documented recipe,
      untested here.

    Args:
        name: one of `"default"`, `"mirrored"`, `"multi_worker"`, `"tpu"`.
        devices: optional list of device names for `"mirrored"`.
        tpu: optional TPU name or address for `"tpu"` (`""` or None: the local
            TPU, or the one named by the `TPU_NAME` environment variable).
        collective_timeout: seconds, `"multi_worker"` only: a collective that
            waits longer for a peer (a lost worker) fails with
            `DeadlineExceededError` instead of hanging. Default None (no limit).

    Returns:
        A `tf.distribute.Strategy`. Build the model and compile it inside
        `strategy.scope()`.

    Example:

    >>> strategy = get_strategy("mirrored")
    >>> with strategy.scope():
    ...     model = SimCLR(encoder, ProjectionHead((512,), 128))
    ...     model.compile(optimizer=LARS(scale_learning_rate(0.3, 512)))
    >>> model.fit(dataset_of_global_batches)
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        config = os.environ.get("TF_CONFIG")
        if not config:
            raise ValueError("strategy 'multi_worker' needs the TF_CONFIG environment variable "
                             "(cluster and task), e.g. {\"cluster\": {\"worker\": [\"127.0.0.1:"
                             "12345\", \"127.0.0.1:12346\"]}, \"task\": {\"type\": \"worker\", "
                             "\"index\": 0}}")
        try:
            parsed = json.loads(config)
        except ValueError as error:
            raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
        if "cluster" not in parsed or "task" not in parsed:
            raise ValueError("TF_CONFIG needs both 'cluster' and 'task' entries")
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout) if collective_timeout else None
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if name == "tpu":
        # NOTE: untested here (no TPU); the recipe of the TensorFlow TPU guide.
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")


def is_chief(strategy=None):
    """True on the worker that should write checkpoints, exports and logs.

    Single-machine strategies: always True. `MultiWorkerMirroredStrategy`:
    True on the chief (task type "chief", or "worker" with index 0 when the
    cluster has no chief).
    """
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not keras_compat.multi_worker_mode(strategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief" or task_type is None:
        return True
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    return task_type == "worker" and task_id == 0 and not has_chief


def in_multi_worker_mode(strategy=None):
    """True under a `MultiWorkerMirroredStrategy` whose cluster has several workers."""
    strategy = strategy or tf.distribute.get_strategy()
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and keras_compat.multi_worker_mode(strategy))


def step_logs(logs):
    """The logs a `train_step`/`test_step` returns, in a form Keras can reduce on any strategy.

    Keras 3 (TensorFlow backend, `reduce_per_replica` in
    `keras/src/backend/tensorflow/trainer.py`) averages a step's outputs over
    the workers of a multi-worker `MultiWorkerMirroredStrategy` with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on the scalars every
    metric returns ("Invalid reduction dimension 0 for input with 0
    dimensions"). In multi-worker mode each scalar is therefore returned with
    shape `[1]`: the reduce then averages it over the replicas and `fit` logs
    a scalar again. Anywhere else the logs are returned unchanged.
    """
    if not in_multi_worker_mode():
        return logs
    return {name: tf.reshape(value, [1]) if getattr(value, "shape", None) is not None
            and value.shape.rank == 0 else value for name, value in logs.items()}


def num_replicas_in_sync():
    """Replicas training synchronously (1 without a strategy); any context."""
    context = tf.distribute.get_replica_context()
    if context is not None:
        return context.num_replicas_in_sync
    return tf.distribute.get_strategy().num_replicas_in_sync


def _replica_context_to_gather():
    """The replica context when a cross-replica op is meaningful, else None."""
    # In cross-replica context (code under `strategy.scope()` but outside
    # `strategy.run`) the tensors already hold the whole batch: nothing to gather.
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def replica_id():
    """Index of this replica in its sync group (int 0 without a strategy; may be a tensor)."""
    context = tf.distribute.get_replica_context()
    return 0 if context is None else context.replica_id_in_sync_group


def cross_replica_concat(tensors, axis=0):
    """Concatenates `tensors` of every replica along `axis`, with gradients.

    Replica r's rows come r-th, so replica r finds its own rows at offset
    `sum of the sizes of replicas < r` (`r * n` with equal per-replica batches).
    The gradient (TF's `ReplicaContext.all_gather`) sums the upstream gradients
    of all replicas and hands each replica the slice of its own rows: with
    each replica's loss divided by the number of replicas, the summed
    gradients equal those of the one-device loss on the global batch.

    Without a strategy or with one replica this returns `tensors` unchanged.

    Args:
        tensors: a tensor or a nested structure of tensors (gathered in one
            collective).
        axis: int, default 0.

    Returns:
        The same structure, each tensor gathered across replicas.
    """
    context = _replica_context_to_gather()
    if context is None:
        return tensors
    return context.all_gather(tensors, axis=axis)


def replica_offset(size):
    """`(offset, total)`: where this replica's rows start in a gathered batch, and its size.

    `size` is this replica's number of rows. Replicas may hold different
    numbers (a last, smaller global batch), so the sizes are gathered.
    Without a strategy: `(0, size)`.
    """
    context = _replica_context_to_gather()
    if context is None:
        return 0, size
    sizes = context.all_gather(tf.reshape(tf.cast(size, "int32"), [1]), axis=0)
    offset = tf.reduce_sum(sizes[:context.replica_id_in_sync_group])
    return offset, tf.reduce_sum(sizes)


def scale_loss_for_replicas(loss, local_size=None, global_size=None):
    """The share of the global-batch loss whose gradient this replica contributes.

    Keras' optimizer (TF backend) sums the gradients of the replicas
    (`_all_reduce_sum_gradients`), so a replica must differentiate its share
    of the global mean: `loss * local_size / global_size` when `loss` is the
    mean over this replica's `local_size` examples of a global batch of
    `global_size`, or `loss / num_replicas` when the sizes are not given
    (equal shares). Without a strategy it returns `loss`.
    """
    replicas = num_replicas_in_sync()
    if replicas == 1:
        return loss
    if local_size is None or global_size is None:
        return loss / tf.cast(replicas, loss.dtype)
    return loss * tf.cast(local_size, loss.dtype) / tf.cast(global_size, loss.dtype)


def _unwrap(value):
    # Keras variables wrap a tf.Variable (a DistributedVariable under a strategy).
    import keras

    if isinstance(value, keras.Variable):
        return value.value
    return value


def update_state(fn, *args, anchor=None):
    """Runs the state update `fn(*args)` safely in replica context.

    Without a strategy, or in cross-replica context, this is `fn(*args)`.
    In replica context under a strategy it does one `merge_call` and runs
    `fn` once per device copy of `anchor` (any variable created in the
    strategy's scope, e.g. one of the updated ones) inside
    `strategy.extended.update`: there every read of a mirrored variable
    returns that device's copy, every `assign` writes that copy only, and
    every tensor in `args` is the value of the replica on that device.
    Nothing crosses devices, so the update never mixes with the collectives of
    the gradients and gathers.

    Contract: the copies stay identical if `fn` computes the same thing on
    every replica, i.e. `args` are equal on all replicas (e.g. the output of
    `cross_replica_concat`) and `fn` reads only mirrored state. Random ops or
    per-replica data inside `fn` would make the copies drift apart.

    Args:
        fn: callable updating variables; its return value is discarded.
        *args: tensors (or nested structures of them) passed to `fn`.
        anchor: a variable of the strategy (Keras or tf.Variable) whose
            device copies `fn` is run for. Required under a strategy.

    Example:

    >>> def ema(key_weights, weights, momentum):
    ...     for k, w in zip(key_weights, weights):
    ...         k.assign(momentum * k + (1 - momentum) * w)
    >>> update_state(lambda: ema(key_weights, weights, 0.99), anchor=key_weights[0])
    """
    context = tf.distribute.get_replica_context()
    strategy = tf.distribute.get_strategy()
    if context is None or not tf.distribute.has_strategy():
        fn(*args)
        return
    if anchor is None:
        raise ValueError("update_state needs anchor= (a variable of the strategy) in replica "
                         "context")
    anchor = _unwrap(anchor)

    def run_per_copy(_, *replica_args):
        fn(*replica_args)
        return tf.constant(0)  # extended.update wants a tensor-like result per copy

    def merge_fn(strategy, *per_replica_args):
        strategy.extended.update(anchor, run_per_copy, args=per_replica_args, group=True)

    del strategy
    context.merge_call(merge_fn, args=args)


def _sublayers(layer):
    # Every layer inside `layer` (itself included), nested models and custom
    # layers such as ProjectionHead too.
    return keras_compat.flatten_layers(layer)


def sync_batch_norm(layer, synchronized=True):
    """Makes every `BatchNormalization` inside `layer` synchronised across replicas.

    With `synchronized=True` (Keras 3, TensorFlow backend) a batch-norm layer
    computes its batch statistics over the global batch (an all-reduce of the
    sums and counts of every replica) instead of each replica's share, as
    SimCLR does on TPUs ("global BN", section 3 of the paper) to keep the
    model from finding positives through per-device statistics. Without a
    strategy it computes the ordinary statistics. The change is in place, keeps
    the weights, and is saved with the model (`synchronized` is in the layer's
    config).

    Args:
        layer: a Keras layer or model (encoder, projection head or a whole method).
        synchronized: bool, default True; False turns synchronisation off again.

    Returns:
        The number of batch-norm layers changed.

    Example:

    >>> strategy = get_strategy("mirrored")
    >>> with strategy.scope():
    ...     encoder = keras_ebm.backbones.resnet18_cifar((32, 32, 3))
    ...     sync_batch_norm(encoder)   # returns how many layers it changed
    ...     model = SimCLR(encoder, ProjectionHead((512,), 128))
    """
    import keras

    count = 0
    for sublayer in _sublayers(layer):
        if isinstance(sublayer, keras.layers.BatchNormalization):
            sublayer.synchronized = bool(synchronized)
            count += 1
    return count


def default_jit_compile(setting="auto", strategy="default"):
    """Whether to compile with XLA: `setting` "true"/"false", or "auto".

    "auto" uses XLA on GPUs and TPUs only: on CPUs it made the ResNet-18
    SimCLR step slower (docs/performance.md), and under MirroredStrategy over
    logical CPUs it fails.
    """
    if setting != "auto":
        return setting == "true"
    if strategy != "default":
        return strategy == "tpu"
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
