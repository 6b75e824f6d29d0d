"""Each method's defaults and builder, in one place: what `tools/train.py` builds, in one call.

    model = keras_ebm.presets.build("moco", x_train, epochs=300, learning_rate=2e-3)

returns the compiled method with its encoder (or energy), head, augmenter,
optimizer and schedule. `defaults(name)` lists every setting a preset reads;
any of them can be overridden by keyword (the CLI's flags have the same
names, and its flagfiles override only what differs).

Self-supervised presets (`SSL_METHODS`) take images in [0, 1] of shape
[N, H, W, C]; the classical ones (`EBM_METHODS`) take [N, D] data: binary
(RBM energy), continuous in [0, 1] or 2-D toy points in [-4, 4]^2 (MLP energy).
"""

import math

import keras
import numpy as np

CONTRASTIVE_METHODS = ("simclr", "moco", "pirl", "contrastive_embedding")
# The lecture's second class: no negatives; an architecture (BYOL, SimSiam) or a
# regulariser of the batch's statistics (Barlow Twins, VICReg) prevents collapse.
NON_CONTRASTIVE_METHODS = ("byol", "simsiam", "barlow_twins", "vicreg")
SSL_METHODS = CONTRASTIVE_METHODS + NON_CONTRASTIVE_METHODS
SCORE_MATCHING_METHODS = ("score_matching", "denoising_score_matching",
                          "sliced_score_matching")
# Strategy 1 of the lecture: the energy's form fixes the volume of low energy.
CONSTANT_VOLUME_METHODS = ("kmeans", "gmm")
# Energies defined only up to scale: scored, sampled and pictured at a fitted temperature.
SCALE_FREE_METHODS = SCORE_MATCHING_METHODS + ("kmeans", "dae", "sparse_coding",
                                               "contractive_autoencoder")
EBM_METHODS = (("cd", "pcd", "nce", "ratio_matching", "mpf", "ml", "dae")
               + SCORE_MATCHING_METHODS + CONSTANT_VOLUME_METHODS
               + ("sparse_coding", "contractive_autoencoder"))
METHODS = SSL_METHODS + EBM_METHODS
BINARY_ONLY_METHODS = ("ratio_matching", "mpf")
TOY_BOUNDS = (-4.0, 4.0)
# The smallest jigsaw patch side: a 3x3 grid of 2x2 patches (8x8 digits as
# stored) carries almost no shape, so PIRL asks for a resize instead.
MIN_PATCH_SIZE = 4

SCORE_LEVELS = {"score_noise_levels": 1, "score_sigma_max": 2.0, "score_sigma": 0.1}
COMMON = {
    "epochs": 100, "batch_size": 256, "learning_rate": 1e-3, "optimizer": "adamw",
    "weight_decay": 1e-4, "seed": 0, "jit_compile": False,
}
SSL_COMMON = {
    "backbone": "small_cnn", "warmup_epochs": 5.0, "lr_scaling": "none",
    "projection_hidden_dims": (512,), "projection_dim": 128,
    "augment": True, "augment_strength": 1.0, "crop_scale_min": 0.2, "flip": True,
    "blur_probability": 0.5, "grayscale_probability": 0.2,
}
EBM_COMMON = {
    "num_hidden": 16, "energy_hidden_units": (128, 128), "spectral_normalization": False,
    "final_learning_rate_fraction": 0.01, "grad_clip": None,
}
PRESETS = {
    "simclr": {"temperature": 0.5, "projection_batch_norm": True},
    "moco": {"temperature": 0.2, "projection_batch_norm": False, "queue_size": 4096,
             "momentum": 0.99, "bn_splits": 8},
    "pirl": {"temperature": 0.07, "projection_batch_norm": False, "num_negatives": 4096,
             "bank_momentum": 0.5, "loss_weight": 0.5, "nce_form": "nce", "jigsaw_resize": None,
             "jigsaw_patch_size": None, "patch_dim": 128, "jigsaw_jitter": "patch",
             "negative_sampling": "per_sample"},
    "contrastive_embedding": {"projection_batch_norm": True, "energy": "cosine", "margin": 0.5},
    # The predictor q maps z to z's dimension through these hidden widths (with batch norm).
    "byol": {"projection_batch_norm": True, "predictor_hidden_dims": (512,), "tau_base": 0.99},
    # SimSiam's projection ends with batch norm (its output BN); q is a bottleneck.
    "simsiam": {"projection_batch_norm": True, "predictor_hidden_dims": (128,),
                "simsiam_stop_gradient": True},
    "barlow_twins": {"projection_batch_norm": True, "barlow_lambda": 5e-3,
                     "barlow_scale_loss": 1.0},
    "vicreg": {"projection_batch_norm": True, "sim_coeff": 25.0, "std_coeff": 25.0,
               "cov_coeff": 1.0},
    "cd": {"persistent": False},
    "pcd": {"persistent": True},
    "nce": {"noise_ratio": 1.0},
    "ratio_matching": {},
    "mpf": {},
    # Binary data: exact log Z by enumeration (an RBM sums out its smaller layer); 2-D toys:
    # log Z by quadrature on an ml_grid_size^2 grid, shifted at random each step.
    "ml": {"ml_grid_size": 64},
    "dae": {"dae_noise": None, "dae_noise_level": 0.1},
    # Strategy 4, on continuous data (the 2-D toys): the energy's gradient fitted to the data.
    # Tuned on the four toys (docs/methods/score_matching.md): at 1e-3 the ring's energy is
    # still half-formed after 40 epochs; denoising at sigma 0.05-0.1 learns the ring and the
    # checkerboard too slowly (its loss is noisier the smaller sigma is).
    # score_noise_levels > 1: a NoiseConditionalEnergy, levels from score_sigma_max down to
    # score_sigma (the toys' preset below); 1: one energy (score_sigma: DSM's corruption).
    "score_matching": {"epochs": 60, "learning_rate": 3e-3, **SCORE_LEVELS},
    "denoising_score_matching": {"epochs": 100, "learning_rate": 3e-3, **SCORE_LEVELS,
                                 "score_sigma": 0.2},
    "sliced_score_matching": {"epochs": 60, "learning_rate": 3e-3, "num_projections": 1,
                              **SCORE_LEVELS},
    # Strategy 1: prototypes and components placed by k-means++, then moved by Adam.
    "kmeans": {"epochs": 30, "learning_rate": 1e-2, "num_clusters": 64},
    "gmm": {"epochs": 60, "learning_rate": 1e-2, "num_components": 32},
    # Strategy 6 (docs/methods/sparse_coding.md): an overcomplete dictionary (128 atoms) of
    # 64 Gaussian-bump features (an 8 x 8 grid over [-4, 4]^2 on the toys), codes by 50 FISTA
    # steps; without the sparsity term (0) the rings score below the Gaussian.
    "sparse_coding": {"epochs": 10, "learning_rate": 1e-2, "num_atoms": 128, "sparsity": 0.1,
                      "ista_iterations": 50, "rbf_centers": 64, "rbf_width": 0.7},
    # Strategy 7 (docs/methods/contractive_autoencoder.md): G = a softmax code over
    # cae_units units, decoded linearly, started at k-means++ prototypes (sharpness 10).
    "contractive_autoencoder": {"epochs": 20, "learning_rate": 3e-3, "contraction": 0.1,
                                "contraction_noise": 0.0, "cae_units": 64,
                                "cae_sharpness": 10.0},
}
TOY_SCORE_LEVELS = {"score_noise_levels": 10, "score_sigma_max": 2.0, "score_sigma": 0.05,
                    "epochs": 400}
# What differs on 2-D toy points (data_kind "toy"): the "a 2-D preset per method".
TOY_PRESETS = {
    # The quadrature grid's 4096 points cost more than a batch: batches of 512 halve the
    # steps of an epoch (docs/methods/maximum_likelihood.md).
    "ml": {"batch_size": 512, "epochs": 200, "learning_rate": 3e-3},
    # configs/pcd_rings.flags: 30 MALA steps of 0.02 on 256 of 1000 persistent chains, the
    # chains reweighted as the energy changes and never restarted (with 5% restarts and
    # plain Langevin, the rings' inner ring got 22% of the mass instead of 50%:
    # docs/methods/contrastive_divergence.md). Under XLA (jit_compile, ThreeFry draws) an
    # update takes 18-19 ms on 2026-12-01's machine, 36 ms without. 30% of the steps jump
    # to a uniform point of the box (jump_probability): without the jumps the chains
    # cannot leave a mode, and the modes' masses were left to chance (8 Gaussians: samples
    # 122x the MMD floor, one mode nearly empty; with them 3.2x, all eight filled).
    "pcd": {"sampler": "langevin", "mcmc_steps": 30, "step_size": 0.02, "num_chains": 1000,
            "chains_per_step": 256, "reinit_fraction": 0.0, "mala": True,
            "jump_probability": 0.3,
            "reweight_chains": True, "energy_l2": 0.02, "weight_decay": 0.0, "epochs": 80,
            "learning_rate": 5e-3, "jit_compile": True},
    # At 1e-3 the rings' energy is still one blob after 100 epochs (+0.10 nats over the
    # Gaussian); at 3e-3 it has both rings (+1.33). A noise mixture fitted to the rings did
    # worse (+0.68): docs/methods/noise_contrastive_estimation.md. Four noise points per data
    # point: 8 Gaussians +2.98 -> +3.89 nats and exact samples' MMD 16x -> 1.5x the floor.
    "nce": {"learning_rate": 3e-3, "noise_ratio": 4.0},
    # Two hidden layers of 128 barely denoise the rings (loss 0.01997, identity's is
    # 2 sigma^2 = 0.02; +0.08 to +0.11 nats over the Gaussian); three learn the ring's
    # radial pull (0.0152, +1.05 nats in 50 s): docs/methods/denoising_autoencoder.md.
    "dae": {"energy_hidden_units": (128, 128, 128), "epochs": 600, "learning_rate": 3e-3},
    # Strategy 4 on the toys: a noise-conditional energy, 10 levels from 2 (the modes merge)
    # to 0.05 (half the rings' width), sampled level by level (NoiseAnnealedLangevin). One
    # energy left the masses of separated modes free: samples 3-22x the MMD floor
    # (docs/methods/score_matching.md).
    **{name: TOY_SCORE_LEVELS for name in SCORE_MATCHING_METHODS},
    # Denoising at 0.05 left the rings' masses to chance: +0.16, +0.03 and +1.04 nats over the
    # Gaussian for seeds 0-2 on 2026-12-01; with the smallest level at 0.1, +1.31, +0.98 and
    # +1.26 (docs/methods/score_matching.md).
    "denoising_score_matching": {**TOY_SCORE_LEVELS, "score_sigma": 0.1},
}
SAMPLING = {  # cd and pcd
    "sampler": None, "mcmc_steps": 1, "step_size": 0.01, "noise_scale": None, "mala": False,
    "langevin_grad_clip": None, "proposal_scale": 0.1, "num_chains": 200,
    "chains_per_step": None, "reinit_fraction": 0.0, "energy_l2": 0.0, "reweight_chains": False,
    "jump_probability": 0.0,
}


# Integer settings that must be >= 1, and (name, low, high, low_open, high_open) ranges.
POSITIVE = ("epochs", "batch_size", "queue_size", "bn_splits", "projection_dim", "probe_draws",
            "num_negatives", "patch_dim", "steps_per_epoch", "max_train_examples", "image_size",
            "jigsaw_resize", "jigsaw_patch_size", "num_hidden", "mcmc_steps", "num_chains",
            "grid_size", "toy_train_samples", "toy_test_samples", "max_rollbacks",
            "num_projections", "max_image_pixels", "collective_timeout", "num_clusters",
            "num_components", "ml_grid_size", "num_atoms", "ista_iterations", "rbf_centers",
            "cae_units", "score_noise_levels")
RANGES = [(name, 0, None, False, False) for name in (
    "noise_scale", "energy_l2", "grad_clip", "noise_ratio", "dae_noise_level",
    "proposal_scale", "reinit_fraction", "weight_decay", "warmup_epochs", "augment_strength")] + [
    ("learning_rate", 0, None, True, False), ("temperature", 0, None, True, False),
    ("step_size", 0, None, True, False),
    ("margin", 0, None, True, False), ("momentum", 0, 1, False, True),
    ("bank_momentum", 0, 1, False, True),
    ("jump_probability", 0, 1, False, True), ("loss_weight", 0, 1, False, False),
    ("crop_scale_min", 0, 1, True, False), ("blur_probability", 0, 1, False, False),
    ("grayscale_probability", 0, 1, False, False), ("rollback_lr_factor", 0, 1, True, True),
    ("tau_base", 0, 1, False, False), ("barlow_lambda", 0, None, False, False),
    ("barlow_scale_loss", 0, None, True, False), ("sim_coeff", 0, None, False, False),
    ("std_coeff", 0, None, False, False), ("cov_coeff", 0, None, False, False),
    ("collapse_min_rank", 0, None, False, False), ("score_sigma", 0, None, True, False),
    ("score_sigma_max", 0, None, True, False),
    ("sparsity", 0, None, False, False), ("rbf_width", 0, None, True, False),
    ("contraction", 0, None, False, False), ("contraction_noise", 0, None, False, False),
    ("cae_sharpness", 0, None, True, False)]


# Upper bounds of the settings that size memory (a typo of 10**9 chains fails at once,
# with its name, instead of after an out-of-memory kill). Far above any published run.
MAXIMA = {"batch_size": 65536, "queue_size": 2**20, "num_negatives": 2**20,
          "projection_dim": 65536, "patch_dim": 65536, "num_hidden": 65536,
          "num_chains": 10**6, "chains_per_step": 10**6, "mcmc_steps": 10**5,
          "image_size": 4096, "jigsaw_resize": 4096, "jigsaw_patch_size": 4096,
          "grid_size": 4000, "toy_train_samples": 10**7, "toy_test_samples": 10**7,
          "num_projections": 4096, "num_clusters": 65536, "num_components": 4096,
          "ml_grid_size": 4096, "num_atoms": 65536, "ista_iterations": 10**4,
          "rbf_centers": 65536, "cae_units": 65536,
          "steps_per_epoch": 10**8, "keep_checkpoints": 1000, "probe_draws": 1000,
          "max_train_examples": 10**9, "max_image_pixels": 2**31}
MAX_WIDTH = 65536  # each entry of projection_, predictor_hidden_dims and energy_hidden_units
# The settings that shape the training state: a checkpoint written with other values
# cannot be resumed (keras_ebm.checkpoints.CheckpointMismatch names the setting).
STATE_SETTINGS = ("method", "input_shape", "backbone", "projection_dim",
                  "projection_hidden_dims", "projection_batch_norm", "predictor_hidden_dims",
                  "queue_size", "bn_splits",
                  "num_negatives", "patch_dim", "jigsaw_resize", "jigsaw_patch_size",
                  "jigsaw_jitter",
                  "num_hidden", "energy_hidden_units", "num_clusters", "num_components",
                  "num_atoms", "rbf_centers", "cae_units", "spectral_normalization", "persistent",
                  "reweight_chains", "score_noise_levels",
                  "num_chains", "optimizer", "batch_size", "seed")
RUN_LENGTH = ("epochs", "jit_compile")  # neither shapes state (XLA changes random streams)


class SettingError(ValueError):
    """A setting out of its range or unfit for the data; the message starts with its name."""


def check_settings(settings):
    """Raises SettingError naming the first setting out of its range ("temperature=0 must be > 0").

    Example:

    >>> keras_ebm.presets.check_settings({"momentum": 1.0})
    SettingError: momentum=1.0 must be >= 0 and < 1
    """
    from keras_ebm.backbones import registry

    backbone = settings.get("backbone")
    if backbone is not None and backbone not in registry.BACKBONES:
        raise SettingError(f"backbone={backbone!r} is unknown; choose one of "
                           f"{', '.join(registry.BACKBONES)}")
    for name in ("projection_hidden_dims", "predictor_hidden_dims"):
        try:
            if any(int(d) < 1 for d in settings.get(name) or ()):
                raise ValueError
        except ValueError:
            raise SettingError(f"{name} must be positive integers") from None
    if settings.get("bn_splits") and settings.get("batch_size") and (
            settings["batch_size"] < settings["bn_splits"]):
        raise SettingError(f"batch_size={settings['batch_size']} must be >= "
                           f"bn_splits={settings['bn_splits']}")
    for name in POSITIVE:
        if settings.get(name) is not None and settings[name] < 1:
            raise SettingError(f"{name}={settings[name]} must be >= 1")
    for name, high in MAXIMA.items():
        if settings.get(name) is not None and settings[name] > high:
            raise SettingError(f"{name}={settings[name]} must be <= {high} (it sizes memory)")
    for name in ("projection_hidden_dims", "predictor_hidden_dims", "energy_hidden_units"):
        widths = [int(w) for w in settings.get(name) or () if str(w).strip().isdigit()]
        if any(w > MAX_WIDTH for w in widths):
            raise SettingError(f"{name} entries must be <= {MAX_WIDTH} (they size memory)")
    for name, low, high, low_open, high_open in RANGES:
        value = settings.get(name)
        if value is None:
            continue
        if not math.isfinite(value):
            raise SettingError(f"{name}={value} must be a finite number")
        if (value < low or (low_open and value == low)) or (high is not None and (
                value > high or (high_open and value == high))):
            bound = f"{'>' if low_open else '>='} {low}"
            bound += f" and {'<' if high_open else '<='} {high}" if high is not None else ""
            raise SettingError(f"{name}={value} must be {bound}")


def defaults(method, kind=None):
    """Every setting the preset of `method` reads, with its default value.

    Args:
        method: one of `METHODS`.
        kind: None, or the `data_kind` of the training data ("binary",
            "continuous", "toy"); "toy" applies `TOY_PRESETS`. Defaults to None.

    Example:

    >>> keras_ebm.presets.defaults("moco")["temperature"]
    0.2
    """
    if method not in PRESETS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    family = SSL_COMMON if method in SSL_METHODS else EBM_COMMON
    sampling = SAMPLING if method in ("cd", "pcd") else {}
    toy = TOY_PRESETS.get(method, {}) if kind == "toy" else {}
    return {**COMMON, **family, **sampling, **PRESETS[method], **toy}


def ignored_settings(method, names):
    """The settings among `names` that only other methods read: `method` ignores them.

    The other family's settings (a backbone for an RBM) and other methods'
    own (sparse coding's atoms for NCE) are reported; a setting that every
    method reads (learning rate, epochs, ...), or that no preset has, is not.

    Example:

    >>> keras_ebm.presets.ignored_settings("nce", ["noise_ratio", "num_atoms", "epochs"])
    ['num_atoms']
    """
    known = set().union(*(defaults(m, kind) for m in METHODS for kind in (None, "toy")))
    used = set(defaults(method)) | set(defaults(method, "toy"))
    return [name for name in names if name in known and name not in used]


def resolve(method, overrides, kind=None):
    """The preset's settings for data of `kind` with `overrides` applied.

    Unknown names raise ValueError. `jit_compile="auto"` (tools/train.py's
    default) keeps XLA where the preset turns it on (the toys' PCD).
    """
    config = defaults(method, kind)
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise ValueError(f"{method} has no setting {', '.join(unknown)}")
    preset_xla = config["jit_compile"] is True
    config.update({k: v for k, v in overrides.items() if v is not None})
    if preset_xla and config["jit_compile"] == "auto":
        config["jit_compile"] = True
    return config


def fingerprint(method, config, example_shape):
    """`(state, settings)`: what `keras_ebm.training.fit` writes into each checkpoint.

    `state` holds the settings that shape the training state (`STATE_SETTINGS`:
    method, input shape, backbone, queue and bank sizes, optimizer, ...); a
    checkpoint written with other values is refused. `settings` holds the
    others (learning rate, temperature, ...); a resume with other values is
    warned about.

    Example:

    >>> state, settings = keras_ebm.presets.fingerprint("moco", config, (8, 8, 1))
    >>> state["queue_size"], settings["temperature"]
    (4096, 0.2)
    """
    values = {"method": method, "input_shape": list(example_shape), **config}
    state = {k: values[k] for k in STATE_SETTINGS if k in values}
    settings = {k: v for k, v in config.items() if k not in state and k not in RUN_LENGTH}
    return state, settings


def data_kind(x):
    """'binary' (only 0 and 1), 'toy' (2-D points) or 'continuous' (anything else)."""
    x = np.asarray(x)
    if x.ndim == 2 and np.isin(x, (0.0, 1.0)).all():
        return "binary"
    return "toy" if x.ndim == 2 and x.shape[1] == 2 else "continuous"


def data_bounds(kind):
    """The box the samples of an EBM stay in: [-4, 4] for the toys, [0, 1] otherwise."""
    return TOY_BOUNDS if kind == "toy" else (0.0, 1.0)


# -- optimizers ---------------------------------------------------------------------
def build_optimizer(config, steps_per_epoch, lr_scale=1.0, family="ssl"):
    """The preset's optimizer and schedule for `config` (see `resolve`).

    Self-supervised methods: linear warm-up then cosine decay (`WarmupCosine`),
    AdamW, SGD with momentum 0.9 or LARS. Classical methods: a linear decay to
    `final_learning_rate_fraction`, Adam or SGD (no weight decay: a decay on the
    RBM's biases would bias the likelihood).
    """
    from keras_ebm.optimizers import LARS
    from keras_ebm.optimizers import WarmupCosine
    from keras_ebm.optimizers import scale_learning_rate

    learning_rate = config["learning_rate"] * lr_scale
    total_steps = max(1, int(config["epochs"]) * int(steps_per_epoch))
    if family == "ebm":
        schedule = keras.optimizers.schedules.PolynomialDecay(
            learning_rate, total_steps, learning_rate * config["final_learning_rate_fraction"])
        clip = {"global_clipnorm": config["grad_clip"]} if config["grad_clip"] else {}
        if config["optimizer"] == "sgd":
            return keras.optimizers.SGD(schedule, momentum=0.9, **clip)
        return keras.optimizers.Adam(schedule, **clip)
    if config["lr_scaling"] != "none":
        learning_rate = scale_learning_rate(learning_rate, config["batch_size"],
                                            rule=config["lr_scaling"])
    warmup_steps = min(int(config["warmup_epochs"] * steps_per_epoch), total_steps - 1)
    schedule = WarmupCosine(learning_rate, total_steps, warmup_steps=warmup_steps)
    if config["optimizer"] == "lars":
        return LARS(schedule, momentum=0.9, weight_decay=config["weight_decay"])
    if config["optimizer"] == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9,
                                    weight_decay=config["weight_decay"] or None)
    return keras.optimizers.AdamW(schedule, weight_decay=config["weight_decay"])


# -- self-supervised methods --------------------------------------------------------
def make_jigsaw(config):
    from keras_ebm.layers import Jigsaw

    return Jigsaw(grid_size=3, patch_size=config["jigsaw_patch_size"],
                  resize_to=config["jigsaw_resize"], seed=config["seed"], name="jigsaw")


def check_data(method, config, x_train):
    """Raises SettingError (naming the setting) for settings that do not fit `x_train`."""
    num_train = len(x_train)
    if config["batch_size"] > num_train and method in SSL_METHODS:
        raise SettingError(f"batch_size={config['batch_size']} is larger than the {num_train} "
                           "training examples")
    kind = data_kind(x_train)
    if method in BINARY_ONLY_METHODS and kind != "binary":
        raise SettingError(f"method={method} needs binary data (dataset=binary_digits)")
    if method == "ml" and kind not in ("binary", "toy"):
        raise SettingError("method=ml needs binary data (exact log Z by enumeration, "
                           "dataset=binary_digits) or 2-D points (log Z by quadrature, "
                           "dataset=toy:<name>)")
    sizes = {"sparse_coding": "num_atoms", "contractive_autoencoder": "cae_units"}
    if method in sizes and config[sizes[method]] > num_train:
        raise SettingError(f"{sizes[method]}={config[sizes[method]]} is larger than the "
                           f"{num_train} training examples (k-means++ places them on distinct "
                           "examples)")
    if method == "sparse_coding" and kind == "toy" and round(
            math.sqrt(config["rbf_centers"])) ** 2 != config["rbf_centers"]:
        raise SettingError(f"rbf_centers={config['rbf_centers']} must be a square (a grid "
                           "over the toy's square)")
    if method in CONSTANT_VOLUME_METHODS:
        size = config["num_clusters" if method == "kmeans" else "num_components"]
        if size > num_train:
            name = "num_clusters" if method == "kmeans" else "num_components"
            raise SettingError(f"{name}={size} is larger than the {num_train} training "
                               "examples (k-means++ places them on distinct examples)")
    if method != "pirl":
        return
    if config["num_negatives"] > num_train:
        raise SettingError(f"num_negatives={config['num_negatives']} is larger than the memory "
                           f"bank (one entry per training image: {num_train})")
    image_shape = x_train.shape[1:]
    try:
        patch = make_jigsaw(config).patch_shape((None, *image_shape))
    except ValueError as error:
        raise SettingError(f"jigsaw_resize/jigsaw_patch_size: {error}") from None
    if min(patch[:2]) < MIN_PATCH_SIZE:
        size = config["jigsaw_resize"] or f"{image_shape[0]}x{image_shape[1]}"
        raise SettingError(f"method=pirl: images of {size} are too small for a 3x3 jigsaw grid "
                           f"({patch[0]}x{patch[1]} patches, at least {MIN_PATCH_SIZE}x"
                           f"{MIN_PATCH_SIZE} needed); pass jigsaw_resize={3 * MIN_PATCH_SIZE} "
                           "or larger")


def build_predictor(config):
    """BYOL's and SimSiam's predictor q: z -> p of z's dimension (hidden batch norm)."""
    from keras_ebm.layers import ProjectionHead

    return ProjectionHead(hidden_dims=[int(d) for d in config["predictor_hidden_dims"]],
                          output_dim=config["projection_dim"], batch_norm=True, name="predictor")


def build_non_contrastive(method, config, encoder, head, common, steps_per_epoch):
    from keras_ebm import methods

    if method == "byol":
        total_steps = max(1, int(config["epochs"]) * int(steps_per_epoch))
        return methods.BYOL(encoder, head, build_predictor(config), total_steps=total_steps,
                            tau_base=config["tau_base"], **common)
    if method == "simsiam":
        return methods.SimSiam(encoder, head, build_predictor(config),
                               stop_gradient=config["simsiam_stop_gradient"], **common)
    if method == "barlow_twins":
        return methods.BarlowTwins(encoder, head, lambda_=config["barlow_lambda"],
                                   scale_loss=config["barlow_scale_loss"], **common)
    return methods.VICReg(encoder, head, sim_coeff=config["sim_coeff"],
                          std_coeff=config["std_coeff"], cov_coeff=config["cov_coeff"], **common)


def make_augmenter(config, image_shape, seed_offset=0, name="augmenter"):
    """The preset's augmenter for images (or PIRL's patches) of `image_shape`, or None."""
    from keras_ebm.data import make_augmenter as make

    if not config["augment"]:
        return None
    seed = None if config["seed"] is None else config["seed"] + seed_offset
    return make(image_shape, strength=config["augment_strength"],
                crop_scale=(config["crop_scale_min"], 1.0), flip=config["flip"],
                grayscale_probability=config["grayscale_probability"],
                blur_probability=config["blur_probability"], seed=seed, name=name)


def build_ssl(method, config, image_shape, num_train, steps_per_epoch=1):
    import keras_ebm

    jigsaw = make_jigsaw(config) if method == "pirl" else None
    encoder_shape = tuple(image_shape)
    if jigsaw is not None and jigsaw.patch_shape((None, *image_shape)) != tuple(image_shape):
        # The encoder sees images and patches of another size: fully convolutional.
        encoder_shape = (None, None, image_shape[-1])
    encoder = keras_ebm.backbones.get_backbone(config["backbone"], encoder_shape)
    head = keras_ebm.layers.ProjectionHead(
        hidden_dims=[int(d) for d in config["projection_hidden_dims"]],
        output_dim=config["projection_dim"], batch_norm=config["projection_batch_norm"],
        output_batch_norm=method == "simsiam", name="projection_head")
    augmenter = make_augmenter(config, image_shape)
    common = {"augmenter": augmenter, "input_shape": tuple(image_shape), "name": method}
    if method in NON_CONTRASTIVE_METHODS:
        return build_non_contrastive(method, config, encoder, head, common, steps_per_epoch)
    if method == "simclr":
        return keras_ebm.methods.SimCLR(encoder, head, temperature=config["temperature"],
                                        **common)
    if method == "contrastive_embedding":
        return keras_ebm.methods.ContrastiveEmbedding(
            encoder, head, energy=config["energy"], margin=config["margin"], **common)
    if method == "pirl":
        patch_head = keras_ebm.layers.PatchHead(config["patch_dim"], config["projection_dim"],
                                                name="patch_head")
        # PIRL jitters each jigsaw patch on its own, with the image's settings.
        patch_augmenter = None
        if config["jigsaw_jitter"] == "patch":
            patch_augmenter = make_augmenter(config, jigsaw.patch_shape((None, *image_shape)),
                                             seed_offset=10, name="patch_augmenter")
        return keras_ebm.methods.PIRL(
            encoder, head, patch_head, num_negatives=config["num_negatives"],
            temperature=config["temperature"], loss_weight=config["loss_weight"],
            bank_momentum=config["bank_momentum"], bank_size=num_train, jigsaw=jigsaw,
            nce_form=config["nce_form"], patch_augmenter=patch_augmenter,
            jigsaw_jitter=config["jigsaw_jitter"],
            negative_sampling=config["negative_sampling"], **common)
    return keras_ebm.methods.MoCo(
        encoder, head, queue_size=config["queue_size"], momentum=config["momentum"],
        temperature=config["temperature"], bn_splits=config["bn_splits"], **common)


# -- classical energy-based methods -------------------------------------------------
def build_sampler(config, kind):
    from keras_ebm import samplers

    name = config["sampler"] or ("gibbs" if kind == "binary" else "langevin")
    if name == "gibbs":
        if kind != "binary":
            raise SettingError("sampler=gibbs needs an RBM (binary data, dataset=binary_digits)")
        return samplers.Gibbs(num_steps=config["mcmc_steps"])
    if name == "metropolis":
        return samplers.MetropolisHastings(
            num_steps=config["mcmc_steps"], proposal="bit_flip" if kind == "binary" else "gaussian",
            proposal_scale=config["proposal_scale"])
    if kind == "binary":
        raise SettingError("sampler=langevin needs continuous data")
    low, high = data_bounds(kind)
    if config["jump_probability"] > 0 and not config["mala"]:
        raise SettingError(f"jump_probability={config['jump_probability']} needs mala (the "
                           "jumps pass its Metropolis test): pass --mala, or "
                           "--jump_probability=0")
    return samplers.Langevin(
        num_steps=config["mcmc_steps"], step_size=config["step_size"],
        noise_scale=config["noise_scale"], grad_clip=config["langevin_grad_clip"],
        clip_value_min=low, clip_value_max=high, metropolis=config["mala"],
        jump_probability=config["jump_probability"])


def build_energy(config, kind, x_train):
    from keras_ebm.energies import RBM
    from keras_ebm.energies import MLPEnergy

    if kind == "binary":
        rbm = RBM(x_train.shape[1], config["num_hidden"])
        rbm.set_visible_bias_from_data(x_train)
        return rbm
    energy = MLPEnergy([int(u) for u in config["energy_hidden_units"]],
                       spectral_normalization=config["spectral_normalization"])
    if config.get("score_noise_levels", 1) > 1:  # score matching: the MLP reads [x, log sigma]
        from keras_ebm.energies import NoiseConditionalEnergy

        if not config["score_sigma_max"] > config["score_sigma"]:
            raise SettingError(f"score_sigma_max={config['score_sigma_max']} must be above "
                               f"score_sigma={config['score_sigma']}, the smallest level")
        return NoiseConditionalEnergy.geometric(energy, config["score_sigma_max"],
                                                config["score_sigma"],
                                                config["score_noise_levels"])
    energy.build((None, x_train.shape[1]))
    return energy


def build_autoencoder(config, kind, dim):
    hidden = [int(u) for u in config["energy_hidden_units"]]
    layers = [keras.Input((dim,))]
    layers += [keras.layers.Dense(u, activation="swish") for u in hidden]
    layers += [keras.layers.Dense(dim, activation="sigmoid" if kind != "toy" else None)]
    return keras.Sequential(layers, name="autoencoder")


def build_sparse_coding(config, kind, x_train):
    """Sparse coding of Gaussian-bump features (a grid on the toys, k-means++ centres
    otherwise; none on binary data), the atoms started at k-means++ points' features."""
    from keras_ebm import methods
    from keras_ebm.energies import RBFFeatures
    from keras_ebm.energies import SparseCodingEnergy

    features = None
    if kind != "binary":
        features = RBFFeatures(config["rbf_centers"], config["rbf_width"], name="rbf_features")
        if kind == "toy":
            features.initialize_grid(TOY_BOUNDS)
        else:
            features.initialize_from_data(x_train, seed=config["seed"])
    energy = SparseCodingEnergy(config["num_atoms"], sparsity=config["sparsity"],
                                num_iterations=config["ista_iterations"], nonnegative=False,
                                features=features, name="sparse_coding_energy")
    energy.initialize_from_data(x_train, seed=config["seed"])
    return methods.SparseCoding(energy)


def build_prototype_autoencoder(config, x_train):
    """G(x) = sum_k softmax_k(-s ||x - c_k||^2) c_k, as Dense(K, softmax) then Dense(D).

    The logits -s ||x - c_k||^2 are linear in x up to a term common to every k
    (2 s c_k.x - s ||c_k||^2), so a plain Dense layer holds them; both layers
    start at k-means++ prototypes c_k of x_train with sharpness s, and train.
    """
    from keras_ebm.energies.mixture import kmeans_plus_plus

    x = np.asarray(x_train, "float32").reshape(len(x_train), -1)
    units, sharpness = config["cae_units"], config["cae_sharpness"]
    centers = kmeans_plus_plus(x, units, config["seed"])
    autoencoder = keras.Sequential([
        keras.Input((x.shape[1],)), keras.layers.Dense(units, activation="softmax", name="code"),
        keras.layers.Dense(x.shape[1], name="decoder")], name="autoencoder")
    autoencoder.layers[0].set_weights([2.0 * sharpness * centers.T,
                                       -sharpness * np.sum(centers ** 2, axis=1)])
    autoencoder.layers[1].set_weights([centers, np.zeros(x.shape[1], "float32")])
    return autoencoder


def build_ebm(method, config, x_train, kind):
    from keras_ebm import methods
    from keras_ebm.memory import ReplayBuffer
    from keras_ebm.methods.noise_contrastive_estimation import BernoulliNoise
    from keras_ebm.methods.noise_contrastive_estimation import GaussianNoise

    if method == "dae":
        noise = config["dae_noise"] or ("bitflip" if kind == "binary" else "gaussian")
        return methods.DenoisingAutoencoder(build_autoencoder(config, kind, x_train.shape[1]),
                                            noise=noise, noise_level=config["dae_noise_level"])
    if method == "sparse_coding":
        return build_sparse_coding(config, kind, x_train)
    if method == "contractive_autoencoder":
        return methods.ContractiveAutoencoder(
            build_prototype_autoencoder(config, x_train), contraction=config["contraction"],
            contraction_noise=config["contraction_noise"])
    if method in CONSTANT_VOLUME_METHODS:
        from keras_ebm.energies import GaussianMixtureEnergy
        from keras_ebm.energies import KMeansEnergy

        energy = (KMeansEnergy(config["num_clusters"]) if method == "kmeans"
                  else GaussianMixtureEnergy(config["num_components"]))
        energy.initialize_from_data(x_train, seed=config["seed"])
        return methods.ConstantVolume(energy)
    energy = build_energy(config, kind, x_train)
    if method == "ml" and kind == "toy":
        return methods.QuadratureMaximumLikelihood(energy, bounds=TOY_BOUNDS,
                                                   grid_size=config["ml_grid_size"],
                                                   input_shape=x_train.shape[1:])
    if method in ("cd", "pcd"):
        buffer = None
        if config["persistent"]:
            low, high = data_bounds(kind)
            buffer = ReplayBuffer(config["num_chains"], x_train.shape[1:],
                                  noise="bernoulli" if kind == "binary" else "uniform",
                                  minval=low, maxval=high,
                                  reinit_fraction=config["reinit_fraction"],
                                  track_energies=config["reweight_chains"])
        return methods.ContrastiveDivergence(
            energy, build_sampler(config, kind), persistent=config["persistent"],
            replay_buffer=buffer, chains_per_step=config["chains_per_step"],
            energy_l2=config["energy_l2"], reweight_chains=config["reweight_chains"])
    if method == "nce":
        noise = (BernoulliNoise.from_data(x_train) if kind == "binary"
                 else GaussianNoise.from_data(x_train, 1.2))
        model = methods.NoiseContrastiveEstimation(energy, noise,
                                                   noise_ratio=config["noise_ratio"])
        # NOTE: c starts at an importance-sampling estimate of the initial log Z
        # (the paper starts anywhere); from 0 the RBM's biases absorb the gap.
        model.initialize_log_partition()
        return model
    if method in SCORE_MATCHING_METHODS:
        if kind == "binary":
            raise SettingError(f"method={method} fits the gradient of the energy and needs "
                               "continuous data (dataset=toy:<name> or digits)")
        return methods.ScoreMatching(
            energy, variant={"score_matching": "exact", "denoising_score_matching": "denoising",
                             "sliced_score_matching": "sliced"}[method],
            sigma=config["score_sigma"], num_projections=config.get("num_projections", 1))
    cls = {"ratio_matching": methods.RatioMatching, "mpf": methods.MinimumProbabilityFlow,
           "ml": methods.MaximumLikelihood}[method]
    return cls(energy)


# -- the one entry point ------------------------------------------------------------
def default_steps_per_epoch(config, num_examples):
    """Updates per epoch: full batches of the training set."""
    return max(1, num_examples // min(int(config["batch_size"]), num_examples))


def build(method, x_train, compile=True, steps_per_epoch=None, **overrides):  # noqa: A002
    """The preset `method`, built for `x_train` and compiled with its optimizer and schedule.

    Args:
        method: one of `METHODS`.
        x_train: the training array (images [N, H, W, C] in [0, 1] for the
            self-supervised methods, [N, D] for the classical ones); sets the
            input shape, PIRL's bank size, the RBM's visible biases, the NCE
            noise and the EBM data kind. The self-supervised presets read only
            its length and shape, so a zero-copy stand-in works there:
            `np.broadcast_to(np.zeros((1, 32, 32, 3), "float32"), (50000, 32, 32, 3))`,
            and so does a dataset of `keras_ebm.data.load`, streamed or not.
        compile: bool, compile with the preset's optimizer. Defaults to True.
        steps_per_epoch: int or None, updates per epoch for the schedule;
            None: full batches of `x_train`.
        **overrides: any setting of `defaults(method)` (e.g. `epochs`,
            `learning_rate`, `temperature`, `queue_size`; `augment=False`
            builds a self-supervised method without augmenter, trained on
            `(view_a, view_b)` pairs).

    Raises:
        SettingError: a setting out of range or unfit for `x_train`.

    Returns:
        The method, a `keras.Model` (compiled if `compile`). `resolve(method,
        overrides)` gives the settings it was built with.

    Example:

    >>> model = keras_ebm.presets.build("simclr", x_train, epochs=50)
    >>> keras_ebm.training.fit(model, x_train, workdir="runs/simclr", epochs=50,
    ...                        batch_size=256)
    """
    check_settings(overrides)
    if hasattr(x_train, "standin"):  # a dataset of keras_ebm.data.load, streamed or not
        x_train = x_train.standin()
    x_train = np.asarray(x_train)
    config = resolve(method, overrides, None if method in SSL_METHODS else data_kind(x_train))
    check_data(method, config, x_train)
    if method in SSL_METHODS:
        model = build_ssl(method, config, x_train.shape[1:], len(x_train), steps_per_epoch or (
            default_steps_per_epoch(config, len(x_train))))
        family = "ssl"
    else:
        model = build_ebm(method, config, x_train, data_kind(x_train))
        model(x_train[:2])  # builds every variable before the optimizer
        family = "ebm"
    if compile:
        steps = steps_per_epoch or default_steps_per_epoch(config, len(x_train))
        model.compile(optimizer=build_optimizer(config, steps, family=family),
                      jit_compile=config["jit_compile"])
    return model


def held_batch(data, examples=512):
    """The first `examples` training images of `data` (an array or a dataset of `data.load`)."""
    if hasattr(data, "labelled"):  # in memory or streamed: the first batch, in order
        images, _ = next(iter(data.labelled("train", batch_size=examples, max_examples=examples)))
        return np.asarray(images)
    return np.asarray(data[:examples])


# Collapse threshold of the CLI and `collapse_monitor`: a rank below this
# fraction of the highest rank the same representation (encoder embeddings or
# projections) reached in the run. Set from measurements on the embedded
# digits (docs/methods/README.md, "Collapse"): healthy runs keep 31% or more
# of their peak rank (SimSiam's projections, the lowest), while SimSiam without
# stop-gradient falls to 7% (projection rank 4.8 of 73).
COLLAPSE_MIN_RANK_RATIO = 0.15


def collapse_monitor(data, examples=512, min_effective_rank=1.05,
                     min_rank_ratio=COLLAPSE_MIN_RANK_RATIO, raise_error=True, knn=True,
                     knn_examples=5000, **kwargs):
    """A `keras_ebm.evaluation.CollapseMonitor` on a fixed batch of `data`'s training images.

    Each epoch end it records the effective rank (RankMe) and the std of the
    L2-normalised encoder embeddings and projections of the first `examples`
    training images (`effective_rank`, `embedding_std`, `projection_rank`,
    `projection_std` in History and TensorBoard); a rank below
    `min_effective_rank`, or below `min_rank_ratio` times the highest rank
    that representation reached in the run, is a collapse: it restores the last good epoch's
    weights and, with `raise_error`, raises `CollapseError`
    (`keras_ebm.training.fit` runs it before the checkpoint, so the collapsed
    epoch is not saved). With `knn` and a labelled dataset of
    `keras_ebm.data.load` it also logs `knn_accuracy` (test split against
    train split, at most `knn_examples` of each) every 5 epochs; labels are
    used for monitoring only. `kwargs` go to `CollapseMonitor`.

    Example:

    >>> data = keras_ebm.data.load("digits")
    >>> model = keras_ebm.presets.build("simsiam", data, epochs=100)
    >>> keras_ebm.training.fit(model, data, workdir="runs/simsiam", epochs=100,
    ...                        batch_size=256,
    ...                        callbacks=[keras_ebm.presets.collapse_monitor(data)])
    """
    from keras_ebm.evaluation.collapse import CollapseMonitor

    if knn and hasattr(data, "labelled") and "knn_data" not in kwargs:
        kwargs["knn_data"] = tuple(data.labelled(split, batch_size=256, max_examples=knn_examples)
                                   for split in ("train", "test"))
    return CollapseMonitor(x_held=held_batch(data, examples),
                           min_effective_rank=min_effective_rank, min_rank_ratio=min_rank_ratio,
                           raise_error=raise_error, **kwargs)


def optimizer_factory(method, steps_per_epoch, kind=None, **overrides):
    """`lr_scale -> optimizer` of the preset, for `keras_ebm.training.fit`'s rollback.

    `kind` is the training data's `data_kind` (None for the self-supervised methods).
    """
    config = resolve(method, overrides, kind)
    family = "ssl" if method in SSL_METHODS else "ebm"
    return lambda lr_scale=1.0: build_optimizer(config, steps_per_epoch, lr_scale, family=family)
