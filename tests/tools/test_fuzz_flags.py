"""Fuzz the CLI's flags: any value is accepted or rejected with a UsageError, never a crash."""

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6))
FLAG_VALUES = st.fixed_dictionaries({}, optional={
    "method": st.sampled_from(["simclr", "moco", "pirl", "contrastive_embedding", "pcd", "ml",
                               "byol", ""]),
    "backbone": st.sampled_from(["small_cnn", "tiny_cnn", "resnet18_cifar", "vgg", ""]),
    "epochs": st.integers(-5, 5), "batch_size": st.integers(-5, 600),
    "learning_rate": NUMBERS, "weight_decay": NUMBERS, "warmup_epochs": NUMBERS,
    "temperature": NUMBERS, "momentum": NUMBERS, "queue_size": st.integers(-5, 10**5),
    "bn_splits": st.integers(-3, 64), "margin": NUMBERS, "loss_weight": NUMBERS,
    "bank_momentum": NUMBERS, "num_negatives": st.integers(-5, 10**5),
    "augment_strength": NUMBERS, "crop_scale_min": NUMBERS, "blur_probability": NUMBERS,
    "step_size": NUMBERS, "mcmc_steps": st.integers(-3, 50), "num_hidden": st.integers(-3, 64),
    "projection_hidden_dims": st.lists(st.sampled_from(["512", "0", "-1", "x", "16"]),
                                       max_size=3),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=FLAG_VALUES)
def test_validate_flags_accepts_or_names_the_flag(train_tool, values):
    module = train_tool
    flags = module.FLAGS
    flags.unparse_flags()
    flags(["train.py"])
    for name, value in values.items():
        setattr(flags, name, value)
    try:
        module.validate_flags()
    except module.UsageError as error:
        message = str(error)
        assert message.startswith("--") and "\n" not in message, message
