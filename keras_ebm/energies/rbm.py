"""Restricted Boltzmann machine with binary visible and hidden units."""

import math

import keras
import tensorflow as tf

from keras_ebm.keras_compat import in_xla_context
from keras_ebm.keras_compat import keep_error_message


def _bernoulli(probabilities, uniform=None):
    """Draws {0, 1} samples with the given probabilities (same dtype).

    `uniform`, if given, holds pre-drawn U(0, 1) numbers of the same shape.
    """
    if uniform is None:
        uniform = tf.random.uniform(tf.shape(probabilities), dtype=probabilities.dtype)
    uniform = tf.cast(uniform, probabilities.dtype)
    return tf.cast(uniform < probabilities, probabilities.dtype)


@keep_error_message
class RBMInputError(ValueError):
    """A `ValueError` about the RBM's inputs, its one-line message kept as is.

    Keras would wrap an error raised in a layer's `call` into a multi-line
    "Exception encountered when calling ..." message
    (`keras_ebm.keras_compat.keep_error_message`).
    """


def _binary_states(num_bits, dtype="float32"):
    """All 2**num_bits binary vectors, shape [2**num_bits, num_bits]."""
    codes = tf.range(2**num_bits, dtype=tf.int32)[:, None]
    bits = tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(codes, tf.range(num_bits, dtype=tf.int32)[None, :]), 1
    )
    return tf.cast(bits, dtype)


@keras.saving.register_keras_serializable(package="keras_ebm")
class RBM(keras.layers.Layer):
    """Bernoulli-Bernoulli restricted Boltzmann machine; calling it gives the free energy.

    The joint energy of visible units `v` and hidden units `h` is

        E(v, h) = -v . b - h . c - v^T W h,

    and summing out the hidden units gives the free energy returned by `call`:

        F(v) = -v . b - sum_j softplus(c_j + v . W[:, j]),   p(v) = exp(-F(v)) / Z.

    The conditionals are exact and factorise:
    p(h_j = 1 | v) = sigmoid(c_j + v . W[:, j]) and
    p(v_i = 1 | h) = sigmoid(b_i + W[i, :] . h).

    Args:
        num_visible: int, number of visible units.
        num_hidden: int, number of hidden units.
        kernel_initializer: initializer of `kernel` [num_visible, num_hidden].
            Defaults to `RandomNormal(stddev=0.01)` (Hinton's practical guide).
        visible_bias_initializer: initializer of `visible_bias`. Defaults to
            `"zeros"`; use `set_visible_bias_from_data` for log(p / (1 - p)).
        hidden_bias_initializer: initializer of `hidden_bias`. Defaults to `"zeros"`.
        check_binary: bool, make `call`, `free_energy`, `log_prob` and
            `set_visible_bias_from_data` check that the visible values are 0
            or 1 (a `ValueError` eagerly, an `InvalidArgumentError` from a
            `tf.function`). Pass False to feed probabilities, e.g. grey
            levels in [0, 1] or the mean-field samples of
            `Gibbs(mean_field_visible=True)` in contrastive divergence.
            Under XLA (`jit_compile=True`, which Keras's default
            `jit_compile="auto"` picks on GPUs) the check is skipped: XLA
            ignores assert ops and cannot compile the message. Defaults to True.
        **kwargs: base layer keyword arguments.

    Inputs must have shape [batch, num_visible]; any other shape raises a
    `ValueError` naming it (e.g. images [batch, 8, 8] must be flattened).

    Example:

    >>> rbm = RBM(num_visible=64, num_hidden=16)
    >>> free_energy = rbm(tf.zeros([2, 64]))   # shape [2]
    >>> log_z = rbm.log_partition()           # exact, enumerates 2**16 hidden states

    Reference:
        Smolensky, 1986; Hinton, "Training products of experts by minimizing
        contrastive divergence", Neural Computation 2002; Hinton, "A practical
        guide to training restricted Boltzmann machines", 2010.
    """

    def __init__(
        self,
        num_visible,
        num_hidden,
        kernel_initializer=None,
        visible_bias_initializer="zeros",
        hidden_bias_initializer="zeros",
        check_binary=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.check_binary = bool(check_binary)
        self.num_visible = int(num_visible)
        self.num_hidden = int(num_hidden)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.RandomNormal(stddev=0.01)
        )
        self.visible_bias_initializer = keras.initializers.get(visible_bias_initializer)
        self.hidden_bias_initializer = keras.initializers.get(hidden_bias_initializer)
        # The shapes are known from the arguments, so the weights exist at once
        # (optimizers and `.keras` loading never meet an unbuilt RBM).
        self.build((None, self.num_visible))

    def build(self, input_shape=None):
        if self.built:
            return
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.num_visible, self.num_hidden),
            initializer=self.kernel_initializer,
        )
        self.visible_bias = self.add_weight(
            name="visible_bias", shape=(self.num_visible,),
            initializer=self.visible_bias_initializer
        )
        self.hidden_bias = self.add_weight(
            name="hidden_bias", shape=(self.num_hidden,), initializer=self.hidden_bias_initializer
        )
        self.built = True

    def call(self, visible):
        return self.free_energy(visible)

    def _visible_tensor(self, visible):
        """`visible` as a compute-dtype tensor, after checking it is [batch, num_visible]."""
        visible = tf.convert_to_tensor(visible)
        shape = visible.shape
        if shape.rank is not None and (
            shape.rank != 2 or shape[-1] not in (None, self.num_visible)
        ):
            hint = (
                "; flatten them first, e.g. x.reshape(len(x), -1)"
                if shape.rank > 2 and shape[1:].num_elements() == self.num_visible
                else ""
            )
            raise RBMInputError(
                f"RBM: expected inputs of shape (batch, {self.num_visible}), "
                f"got {tuple(shape)}{hint}"
            )
        return tf.cast(visible, self.compute_dtype)

    @staticmethod
    def _binary_message(low, high, threshold):
        return (
            f"RBM: inputs must be binary (0 or 1); got values in [{low}, {high}]. "
            f"Binarise them, e.g. (x > {threshold}), or pass RBM(..., check_binary=False) "
            "to use values in [0, 1] as probabilities"
        )

    def check_inputs(self, visible):
        """Checks that `visible` is [batch, num_visible] and, with `check_binary`, 0 or 1.

        Called by `call`, `free_energy`, `log_prob` and
        `set_visible_bias_from_data`. Eagerly it raises `ValueError`; inside
        a `tf.function` the binary check is a graph assertion that raises
        `tf.errors.InvalidArgumentError` with the same message when it runs
        (skipped under XLA, which cannot compile it). It costs two
        comparisons per value and a reduction; the minimum and maximum of
        the message are computed only on failure.

        Args:
            visible: tensor or array [batch, num_visible].

        Returns:
            `visible` as a tensor of the compute dtype, to use in place of the input.

        Raises:
            ValueError: if the shape is wrong, or (eagerly) a value is not 0 or 1.

        Example:

        >>> rbm = RBM(64, 16)
        >>> rbm.check_inputs(load_digits().data)   # grey levels 0..16
        ValueError: RBM: inputs must be binary (0 or 1); got values in [0, 16]. ...
        """
        visible = self._visible_tensor(visible)
        if not self.check_binary:
            return visible
        is_binary = tf.reduce_all(tf.logical_or(tf.equal(visible, 0), tf.equal(visible, 1)))
        if tf.executing_eagerly():
            if not bool(is_binary):
                if not bool(tf.reduce_all(tf.math.is_finite(visible))):
                    raise RBMInputError(
                        "RBM: inputs must be binary (0 or 1); got NaN or infinite values"
                    )
                low = float(tf.reduce_min(visible))
                high = float(tf.reduce_max(visible))
                raise RBMInputError(
                    self._binary_message(f"{low:g}", f"{high:g}", f"{(low + high) / 2:g}")
                )
            return visible
        if in_xla_context():
            # XLA ignores Assert ops and cannot compile the string formatting:
            # compiling the check would only break `jit_compile=True`.
            return visible

        def fail():
            low, high = tf.reduce_min(visible), tf.reduce_max(visible)
            message = tf.strings.format(
                self._binary_message("{}", "{}", "{}"), (low, high, (low + high) / 2)
            )
            with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
                return tf.identity(is_binary)

        checked = tf.cond(is_binary, lambda: tf.identity(is_binary), fail)
        with tf.control_dependencies([checked]):
            return tf.identity(visible)

    def free_energy(self, visible):
        """F(v) = -v . b - sum_j softplus(c_j + v W_j), shape [batch]; checks v (`check_inputs`)."""
        return self._free_energy(self.check_inputs(visible))

    def _free_energy(self, visible):
        """The free energy without the input checks."""
        visible = tf.cast(visible, self.compute_dtype)
        hidden_preactivation = tf.matmul(visible, self.kernel) + self.hidden_bias
        return -tf.linalg.matvec(visible, self.visible_bias) - tf.reduce_sum(
            tf.nn.softplus(hidden_preactivation), axis=-1
        )

    def joint_energy(self, visible, hidden):
        """E(v, h) = -v . b - h . c - v^T W h, shape [batch]."""
        visible = self._visible_tensor(visible)
        hidden = tf.cast(hidden, self.compute_dtype)
        return (
            -tf.linalg.matvec(visible, self.visible_bias)
            - tf.linalg.matvec(hidden, self.hidden_bias)
            - tf.reduce_sum(tf.matmul(visible, self.kernel) * hidden, axis=-1)
        )

    def hidden_probabilities(self, visible):
        """p(h = 1 | v) = sigmoid(c + v W), shape [batch, num_hidden]."""
        visible = self._visible_tensor(visible)
        return tf.sigmoid(tf.matmul(visible, self.kernel) + self.hidden_bias)

    def visible_probabilities(self, hidden):
        """p(v = 1 | h) = sigmoid(b + h W^T), shape [batch, num_visible]."""
        hidden = tf.cast(hidden, self.compute_dtype)
        return tf.sigmoid(tf.matmul(hidden, self.kernel, transpose_b=True) + self.visible_bias)

    def sample_hidden(self, visible, uniform=None):
        """Draws h ~ p(h | v); `uniform`: optional pre-drawn U(0, 1) noise [batch, num_hidden]."""
        return _bernoulli(self.hidden_probabilities(visible), uniform)

    def sample_visible(self, hidden, uniform=None):
        """Draws v ~ p(v | h); `uniform`: optional pre-drawn U(0, 1) noise [batch, num_visible]."""
        return _bernoulli(self.visible_probabilities(hidden), uniform)

    def log_partition(self):
        """Exact log Z, differentiable, by summing out the smaller layer.

        With 2**H hidden states h enumerated,
        log Z = logsumexp_h [h . c + sum_i softplus(b_i + W[i, :] . h)];
        if the visible layer is the smaller one, the roles swap. Raises
        ValueError when both layers have more than 20 units (use AIS).
        """
        if min(self.num_hidden, self.num_visible) > 20:
            raise ValueError(
                "Exact log Z enumerates 2**min(num_visible, num_hidden) states; "
                f"got {self.num_visible} visible and {self.num_hidden} hidden units "
                "(at most 20 allowed). Use keras_ebm.evaluation.ais instead."
            )
        if self.num_hidden <= self.num_visible:
            hidden = _binary_states(self.num_hidden, self.compute_dtype)
            visible_preactivation = (
                tf.matmul(hidden, self.kernel, transpose_b=True) + self.visible_bias
            )
            log_unnormalised = tf.linalg.matvec(hidden, self.hidden_bias) + tf.reduce_sum(
                tf.nn.softplus(visible_preactivation), axis=-1
            )
        else:
            visible = _binary_states(self.num_visible, self.compute_dtype)
            log_unnormalised = -self._free_energy(visible)
        return tf.reduce_logsumexp(log_unnormalised)

    def log_prob(self, visible):
        """Exact log p(v) = -F(v) - log Z, shape [batch]."""
        return -self.free_energy(visible) - self.log_partition()

    def set_visible_bias_from_data(self, visible, epsilon=1e-2):
        """Sets b_i = log(p_i / (1 - p_i)) from the mean activity p_i of the data.

        This is the initialisation recommended in Hinton's practical guide
        (section 8); the RBM then starts at the independent-pixel model.
        `visible` is checked as in `check_inputs`.
        """
        visible = self.check_inputs(visible)
        mean = tf.reduce_mean(tf.cast(visible, self.variable_dtype), axis=0)
        mean = tf.clip_by_value(mean, epsilon, 1.0 - epsilon)
        self.visible_bias.assign(tf.math.log(mean) - tf.math.log1p(-mean))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_visible": self.num_visible,
                "num_hidden": self.num_hidden,
                "check_binary": self.check_binary,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "visible_bias_initializer": keras.initializers.serialize(
                    self.visible_bias_initializer
                ),
                "hidden_bias_initializer": keras.initializers.serialize(
                    self.hidden_bias_initializer
                ),
            }
        )
        return config


# Exposed for evaluation code that wants the raw enumeration.
binary_states = _binary_states
LOG_2 = math.log(2.0)
