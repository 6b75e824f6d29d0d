"""LARS: momentum SGD with a layer-wise trust ratio, for large-batch contrastive training."""

import re

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_ebm")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling: momentum SGD with a per-variable trust ratio.

    For each variable w with gradient g, unless w is excluded:

        trust = eta * ||w|| / (||g|| + weight_decay * ||w||)   (1 if ||w|| or ||g|| is 0)
        g'    = g + weight_decay * w
        v    <- momentum * v + learning_rate * trust * g'
        w    <- w - v          (Nesterov: w <- w - (momentum * v + learning_rate * trust * g'))

    Excluded variables (batch-norm scales and offsets and biases: every 1-D
    variable when `exclude_1d=True`, and every variable whose path matches
    one of `exclude_patterns`) get neither the trust ratio nor weight decay:
    plain momentum SGD, trust = 1 and g' = g, as in SimCLR's LARS.

    The trust ratio makes the step of each layer proportional to the size of
    its weights, which keeps training stable at the batch sizes (4096 and
    more) and learning rates (`scale_learning_rate`) of SimCLR.

    Weight decay here is the L2 term added to the gradient (and to the trust
    ratio's denominator), not the decoupled decay of Keras' own
    `weight_decay` argument.

    Args:
        learning_rate: float or `keras.optimizers.schedules.LearningRateSchedule`,
            default 0.1 (e.g. `WarmupCosine(scale_learning_rate(0.3, 4096), ...)`).
        momentum: float in [0, 1), default 0.9.
        weight_decay: float >= 0, default 0.0 (SimCLR: 1e-6).
        eta: float > 0, default 0.001, the trust coefficient.
        nesterov: bool, default False.
        exclude_1d: bool, default True. Exclude every variable of rank <= 1
            (biases, batch-norm gamma and beta) from adaptation and decay.
        exclude_patterns: sequence of regular expressions, default
            `("bias", "batch_norm")`. Variables whose `path` matches one are
            excluded too (SimCLR's rule by name).
        name: string, default "lars".
        **kwargs: other `keras.optimizers.Optimizer` arguments (`clipnorm`,
            `global_clipnorm`, `use_ema`, ...). `weight_decay` above replaces
            Keras' decoupled decay.

    Example:

    >>> optimizer = LARS(WarmupCosine(scale_learning_rate(0.3, 512), 10000, 500),
    ...                  momentum=0.9, weight_decay=1e-6)
    >>> model.compile(optimizer=optimizer)

    Reference:
        You, Gitman & Ginsburg, Large Batch Training of Convolutional Networks
        (LARS), 2017, Algorithm 1; Chen et al., SimCLR, ICML 2020, appendix B.1
        (LARS, batch-norm and bias excluded from adaptation and decay).
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, weight_decay=0.0, eta=0.001,
                 nesterov=False, exclude_1d=True, exclude_patterns=("bias", "batch_norm"),
                 name="lars", **kwargs):
        # NOTE: Keras' own `weight_decay` is decoupled (w -= lr * wd * w after
        # the step); LARS folds the decay into the gradient and trust ratio,
        # so the base class gets None and this class applies it.
        super().__init__(learning_rate=learning_rate, name=name, weight_decay=None, **kwargs)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"LARS: momentum must be in [0, 1), got {momentum}")
        if float(weight_decay) < 0.0:
            raise ValueError(f"LARS: weight_decay must be >= 0, got {weight_decay}")
        if float(eta) <= 0.0:
            raise ValueError(f"LARS: eta must be > 0, got {eta}")
        self.momentum = float(momentum)
        self.lars_weight_decay = float(weight_decay)
        self.eta = float(eta)
        self.nesterov = bool(nesterov)
        self.exclude_1d = bool(exclude_1d)
        self.exclude_patterns = tuple(exclude_patterns or ())
        self._compiled_patterns = [re.compile(pattern) for pattern in self.exclude_patterns]

    def is_excluded(self, variable):
        """True if `variable` gets no trust ratio and no weight decay."""
        if self.exclude_1d and len(variable.shape) <= 1:
            return True
        path = getattr(variable, "path", None) or variable.name
        return any(pattern.search(path) for pattern in self._compiled_patterns)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        # Decided once from the Keras variables (their paths); under
        # tf.distribute update_step sees per-device tf.Variables.
        self._excluded = [self.is_excluded(variable) for variable in variables]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        velocity = self.momentums[index]
        momentum = ops.cast(self.momentum, variable.dtype)
        if self._excluded[index]:
            scaled_learning_rate = learning_rate
        else:
            weight_norm = ops.sqrt(ops.sum(ops.square(variable)))
            gradient_norm = ops.sqrt(ops.sum(ops.square(gradient)))
            weight_decay = ops.cast(self.lars_weight_decay, variable.dtype)
            trust_ratio = ops.where(
                ops.logical_and(weight_norm > 0, gradient_norm > 0),
                self.eta * weight_norm / (gradient_norm + weight_decay * weight_norm),
                ops.ones_like(weight_norm))
            scaled_learning_rate = learning_rate * trust_ratio
            if self.lars_weight_decay > 0:
                gradient = gradient + weight_decay * variable
        next_velocity = momentum * velocity + scaled_learning_rate * gradient
        self.assign(velocity, next_velocity)
        if self.nesterov:
            self.assign_sub(variable, momentum * next_velocity + scaled_learning_rate * gradient)
        else:
            self.assign_sub(variable, next_velocity)

    def get_config(self):
        config = super().get_config()
        config.update({
            "momentum": self.momentum,
            "weight_decay": self.lars_weight_decay,
            "eta": self.eta,
            "nesterov": self.nesterov,
            "exclude_1d": self.exclude_1d,
            "exclude_patterns": list(self.exclude_patterns),
        })
        return config
