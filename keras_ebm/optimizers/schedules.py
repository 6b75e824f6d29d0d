"""Learning-rate schedule and scaling rules of large-batch contrastive training."""

import math

import keras
from keras import ops


def scale_learning_rate(base_learning_rate, batch_size, rule="linear"):
    """The learning rate for a batch size, by SimCLR's scaling rules.

    - `"linear"`: base * batch_size / 256 (Goyal et al.; SimCLR with LARS,
      base 0.3);
    - `"sqrt"`: base * sqrt(batch_size) (SimCLR appendix B.1, base 0.075,
      better for small batches and long training).

    Args:
        base_learning_rate: positive float.
        batch_size: positive int, the global batch size (all replicas).
        rule: `"linear"` (default) or `"sqrt"`.

    Returns:
        float.

    Example:

    >>> scale_learning_rate(0.3, 4096)
    4.8
    >>> scale_learning_rate(0.075, 4096, "sqrt")
    4.8

    Reference:
        Chen et al., SimCLR, ICML 2020, appendix B.1.
    """
    if base_learning_rate <= 0 or batch_size <= 0:
        raise ValueError(f"scale_learning_rate: base_learning_rate and batch_size must be > 0, "
                         f"got {base_learning_rate} and {batch_size}")
    if rule == "linear":
        return float(base_learning_rate) * batch_size / 256.0
    if rule == "sqrt":
        return float(base_learning_rate) * math.sqrt(batch_size)
    raise ValueError(f"scale_learning_rate: rule must be 'linear' or 'sqrt', got {rule!r}")


@keras.saving.register_keras_serializable(package="keras_ebm")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to a peak learning rate, then cosine decay.

        lr(t) = peak * t / warmup_steps                                    t < warmup_steps
        lr(t) = final + (peak - final) * (1 + cos(pi * s)) / 2,  s = (t - warmup_steps) /
                                           (total_steps - warmup_steps), clipped to [0, 1]

    with t the optimizer's step counter (0 at the first step, as in SimCLR).

    Args:
        peak_learning_rate: positive float, reached at the end of the warm-up
            (e.g. `scale_learning_rate(0.3, batch_size)`).
        total_steps: positive int, steps of the whole run (warm-up included).
        warmup_steps: int in [0, total_steps], default 0 (SimCLR: 10 epochs).
        final_learning_rate: float >= 0, default 0.0, the rate at the end.
        name: string, default "warmup_cosine".

    Example:

    >>> schedule = WarmupCosine(scale_learning_rate(0.3, 512), total_steps=10000,
    ...                         warmup_steps=500)
    >>> optimizer = keras_ebm.optimizers.LARS(schedule, weight_decay=1e-6)

    Reference:
        Goyal et al., Accurate, Large Minibatch SGD, 2017 (warm-up);
        Loshchilov & Hutter, SGDR, ICLR 2017 (cosine); Chen et al., SimCLR, 2020.
    """

    def __init__(self, peak_learning_rate, total_steps, warmup_steps=0, final_learning_rate=0.0,
                 name="warmup_cosine"):
        super().__init__()
        if peak_learning_rate <= 0 or final_learning_rate < 0:
            raise ValueError("WarmupCosine: peak_learning_rate must be > 0 and "
                             "final_learning_rate >= 0")
        if int(total_steps) < 1 or not 0 <= int(warmup_steps) <= int(total_steps):
            raise ValueError(f"WarmupCosine: need total_steps >= 1 and 0 <= warmup_steps <= "
                             f"total_steps, got {total_steps} and {warmup_steps}")
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.final_learning_rate = float(final_learning_rate)
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = self.peak_learning_rate * step / max(self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps)
                            / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        cosine = self.final_learning_rate + (self.peak_learning_rate - self.final_learning_rate) \
            * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "final_learning_rate": self.final_learning_rate,
            "name": self.name,
        }
