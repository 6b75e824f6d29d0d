r"""Recipes that train the energy-based methods of keras_ebm from absl flags.

tools/train.py defines the shared flags (method, dataset, epochs, batch_size,
learning_rate, optimizer, workdir, export_dir, seed, steps_per_epoch) and calls
`run(FLAGS, workdir, export_dir)` when --method is one of EBM_METHODS:

    python tools/train.py --flagfile=configs/pcd_rbm.flags
    python tools/train.py --flagfile=configs/pcd_rings.flags

| --method       | model                                                         |
|----------------|---------------------------------------------------------------|
| cd             | ContrastiveDivergence, chains start at the data (CD-k)         |
| pcd            | ContrastiveDivergence(persistent=True) with a ReplayBuffer     |
| nce            | NoiseContrastiveEstimation, noise fitted to the training data  |
| ratio_matching | RatioMatching (binary data)                                    |
| mpf            | MinimumProbabilityFlow (binary data)                           |
| ml             | MaximumLikelihood, exact gradient (RBM, <= 20 hidden units)    |
| dae            | DenoisingAutoencoder                                           |

--dataset is `binary_digits` (RBM with --num_hidden units, scored by exact
test log-likelihood in nats), `digits` (8x8 digits in [0, 1], MLP energy) or
`toy:<name>` with name in rings, moons, 8gaussians, checkerboard (MLP energy,
scored by exact log-likelihood by grid quadrature over [-4, 4]^2).

Writes <workdir>/model.keras, <workdir>/metrics.json and PNGs (energy surface
with samples for the toys, sample grids for digits), and exports the energy as
a SavedModel with signatures `serving_default` and `energy` (x -> energy).
"""

import json
import os
import time

from absl import flags

EBM_METHODS = ("cd", "pcd", "nce", "ratio_matching", "mpf", "ml", "dae")
BINARY_ONLY_METHODS = ("ratio_matching", "mpf", "ml")

flags.DEFINE_integer("num_hidden", 16, "EBM: hidden units of the RBM (binary_digits).")
flags.DEFINE_list("energy_hidden_units", ["128", "128"],
                  "EBM: hidden widths of the MLP energy (continuous data) and of the DAE.")
flags.DEFINE_bool("spectral_normalization", False, "EBM: spectral normalisation in the MLP energy.")
flags.DEFINE_enum("sampler", None, ["gibbs", "langevin", "metropolis"],
                  "EBM: MCMC sampler of cd/pcd (default: gibbs for the RBM, langevin otherwise).")
flags.DEFINE_integer("mcmc_steps", 1, "EBM: MCMC steps per update (k of CD-k).")
flags.DEFINE_float("step_size", 0.01, "EBM: Langevin step size.")
flags.DEFINE_float("noise_scale", None, "EBM: Langevin noise std (default sqrt(2 * step_size)).")
flags.DEFINE_bool("mala", False, "EBM: Metropolis-adjusted Langevin.")
flags.DEFINE_float("langevin_grad_clip", None, "EBM: clip each energy-gradient element in Langevin.")
flags.DEFINE_float("proposal_scale", 0.1, "EBM: std of the Gaussian Metropolis proposal.")
flags.DEFINE_bool("persistent", None, "EBM: persistent chains (default: True for pcd, False for cd).")
flags.DEFINE_integer("num_chains", 200, "EBM: persistent chains in the replay buffer.")
flags.DEFINE_integer("chains_per_step", None,
                     "EBM: chains advanced per update (default: all of them).")
flags.DEFINE_float("reinit_fraction", 0.0, "EBM: probability that a drawn chain restarts from noise.")
flags.DEFINE_float("energy_l2", 0.0, "EBM: weight of the energy-magnitude penalty E(x)^2.")
flags.DEFINE_float("grad_clip", None, "EBM: clip the global norm of the parameter gradients.")
flags.DEFINE_float("final_learning_rate_fraction", 0.01,
                   "EBM: the learning rate decays linearly to this fraction of --learning_rate.")
flags.DEFINE_float("noise_ratio", 1.0, "EBM: NCE noise samples per data sample.")
flags.DEFINE_enum("dae_noise", None, ["gaussian", "bitflip", "masking"],
                  "EBM: DAE corruption (default: bitflip for binary data, gaussian otherwise).")
flags.DEFINE_float("dae_noise_level", 0.1, "EBM: DAE corruption level.")
flags.DEFINE_bool("ais", False, "EBM: also estimate log Z of the RBM by AIS.")
flags.DEFINE_integer("grid_size", 200, "EBM: cells per side of the 2-D quadrature grid.")
flags.DEFINE_integer("toy_train_samples", 10000, "EBM: training points of a 2-D toy.")
flags.DEFINE_integer("toy_test_samples", 5000, "EBM: test points of a 2-D toy.")
flags.DEFINE_bool("epoch_program", False,
                  "EBM (cd/pcd on an RBM with Gibbs): run each epoch as one XLA program "
                  "(ContrastiveDivergence.epoch_dataset + jit_compile), several times faster "
                  "for small RBMs; the guard then checks once per epoch.")
flags.DEFINE_enum("on_divergence", "stop", ["stop", "rollback"],
                  "EBM: on a non-finite loss, energy or weight, stop (keeping the last good "
                  "checkpoint) or roll back to the last good checkpoint with a lower learning rate.")
flags.DEFINE_integer("max_rollbacks", 3, "EBM: most rollbacks before --on_divergence=rollback stops.")
flags.DEFINE_float("rollback_lr_factor", 0.5,
                   "EBM: each rollback multiplies the learning rate (schedule) by this factor.")

TOY_BOUNDS = (-4.0, 4.0)


def _silence_matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load_data(dataset, flag_values):
    """Returns (x_train, x_test, kind) with kind in binary, continuous, toy."""
    import numpy as np

    if dataset == "binary_digits":
        from keras_ebm.data.binary_digits import load_binary_digits

        (x_train, _), (x_test, _) = load_binary_digits()
        return x_train, x_test, "binary"
    if dataset == "digits":
        from keras_ebm.data.binary_digits import load_binary_digits

        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x_train, x_test = train_test_split(
            (digits.data / 16.0).astype("float32"), test_size=0.3, random_state=0, stratify=digits.target)
        return x_train, x_test, "continuous"
    if dataset.startswith("toy:"):
        from keras_ebm.data.toy_2d import TOY_2D_NAMES
        from keras_ebm.data.toy_2d import toy_2d

        name = dataset[4:]
        if name not in TOY_2D_NAMES:
            raise ValueError(f"--dataset={dataset!r}: unknown toy; choose toy:<{'|'.join(TOY_2D_NAMES)}>")
        x_train = toy_2d(name, flag_values.toy_train_samples, seed=flag_values.seed)
        x_test = toy_2d(name, flag_values.toy_test_samples, seed=flag_values.seed + 1)
        inside = lambda x: x[np.all(np.abs(x) < TOY_BOUNDS[1], axis=1)]  # noqa: E731
        return inside(x_train), inside(x_test), "toy"
    raise ValueError(f"--dataset={dataset!r} is not an EBM data set; use binary_digits, digits or toy:<name>")


def build_optimizer(flag_values, total_steps, lr_scale=1.0):
    import keras

    learning_rate = flag_values.learning_rate * lr_scale
    schedule = keras.optimizers.schedules.PolynomialDecay(
        learning_rate, max(1, total_steps), learning_rate * flag_values.final_learning_rate_fraction)
    clip = {"global_clipnorm": flag_values.grad_clip} if flag_values.grad_clip else {}
    if flag_values.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, **clip)
    # NOTE: Adam without weight decay for every EBM: a decay on the RBM's
    # biases would bias the likelihood; --energy_l2 is the regulariser here.
    return keras.optimizers.Adam(schedule, **clip)


def build_sampler(flag_values, kind):
    from keras_ebm import samplers

    name = flag_values.sampler or ("gibbs" if kind == "binary" else "langevin")
    if name == "gibbs":
        if kind != "binary":
            raise ValueError("--sampler=gibbs needs an RBM (--dataset=binary_digits)")
        return samplers.Gibbs(num_steps=flag_values.mcmc_steps)
    if name == "metropolis":
        return samplers.MetropolisHastings(
            num_steps=flag_values.mcmc_steps,
            proposal="bit_flip" if kind == "binary" else "gaussian",
            proposal_scale=flag_values.proposal_scale)
    if kind == "binary":
        raise ValueError("--sampler=langevin needs continuous data")
    low, high = TOY_BOUNDS if kind == "toy" else (0.0, 1.0)
    return samplers.Langevin(
        num_steps=flag_values.mcmc_steps, step_size=flag_values.step_size,
        noise_scale=flag_values.noise_scale, grad_clip=flag_values.langevin_grad_clip,
        clip_value_min=low, clip_value_max=high, metropolis=flag_values.mala)


def build_energy(flag_values, kind, x_train):
    from keras_ebm.energies import MLPEnergy
    from keras_ebm.energies import RBM

    if kind == "binary":
        rbm = RBM(x_train.shape[1], flag_values.num_hidden)
        rbm.set_visible_bias_from_data(x_train)
        return rbm
    energy = MLPEnergy([int(u) for u in flag_values.energy_hidden_units],
                       spectral_normalization=flag_values.spectral_normalization)
    energy.build((None, x_train.shape[1]))
    return energy


def build_autoencoder(flag_values, kind, dim):
    import keras

    hidden = [int(u) for u in flag_values.energy_hidden_units]
    layers = [keras.Input((dim,))]
    layers += [keras.layers.Dense(u, activation="swish") for u in hidden]
    layers += [keras.layers.Dense(dim, activation="sigmoid" if kind != "toy" else None)]
    return keras.Sequential(layers, name="autoencoder")


def build_model(flag_values, kind, x_train):
    from keras_ebm.memory.replay_buffer import ReplayBuffer
    from keras_ebm.methods.contrastive_divergence import ContrastiveDivergence
    from keras_ebm.methods.denoising_autoencoder import DenoisingAutoencoder
    from keras_ebm.methods.maximum_likelihood import MaximumLikelihood
    from keras_ebm.methods.minimum_probability_flow import MinimumProbabilityFlow
    from keras_ebm.methods.noise_contrastive_estimation import BernoulliNoise
    from keras_ebm.methods.noise_contrastive_estimation import GaussianNoise
    from keras_ebm.methods.noise_contrastive_estimation import NoiseContrastiveEstimation
    from keras_ebm.methods.ratio_matching import RatioMatching

    method = flag_values.method
    if method in BINARY_ONLY_METHODS and kind != "binary":
        raise ValueError(f"--method={method} needs binary data (--dataset=binary_digits)")
    if method == "dae":
        noise = flag_values.dae_noise or ("bitflip" if kind == "binary" else "gaussian")
        return DenoisingAutoencoder(build_autoencoder(flag_values, kind, x_train.shape[1]),
                                    noise=noise, noise_level=flag_values.dae_noise_level)
    energy = build_energy(flag_values, kind, x_train)
    if method in ("cd", "pcd"):
        persistent = flag_values.persistent
        if persistent is None:
            persistent = method == "pcd"
        buffer = None
        if persistent:
            if kind == "binary":
                buffer = ReplayBuffer(flag_values.num_chains, x_train.shape[1:], noise="bernoulli",
                                      reinit_fraction=flag_values.reinit_fraction)
            else:
                low, high = TOY_BOUNDS if kind == "toy" else (0.0, 1.0)
                buffer = ReplayBuffer(flag_values.num_chains, x_train.shape[1:], noise="uniform",
                                      minval=low, maxval=high,
                                      reinit_fraction=flag_values.reinit_fraction)
        return ContrastiveDivergence(energy, build_sampler(flag_values, kind), persistent=persistent,
                                     replay_buffer=buffer, chains_per_step=flag_values.chains_per_step,
                                     energy_l2=flag_values.energy_l2)
    if method == "nce":
        noise = BernoulliNoise.from_data(x_train) if kind == "binary" else GaussianNoise.from_data(x_train, 1.2)
        model = NoiseContrastiveEstimation(energy, noise, noise_ratio=flag_values.noise_ratio)
        # NOTE: c starts at an importance-sampling estimate of the initial log Z
        # (the paper starts anywhere); from 0 the RBM's biases absorb the gap.
        model.initialize_log_partition()
        return model
    if method == "ratio_matching":
        return RatioMatching(energy)
    if method == "mpf":
        return MinimumProbabilityFlow(energy)
    if method == "ml":
        return MaximumLikelihood(energy)
    raise ValueError(f"--method={method!r} is not an EBM method; choose one of {', '.join(EBM_METHODS)}")


def draw_samples(model, kind, num_samples, num_steps, x_train):
    """Fresh samples of the trained energy: long MCMC runs from noise."""
    import tensorflow as tf

    from keras_ebm import samplers

    energy = model.energy
    if kind == "binary" and hasattr(energy, "sample_hidden"):
        x0 = tf.cast(tf.random.uniform([num_samples, x_train.shape[1]]) < 0.5, tf.float32)
        return samplers.Gibbs(num_steps=num_steps, mean_field_visible=True)(energy, x0).numpy()
    if kind == "binary":
        return None
    low, high = TOY_BOUNDS if kind == "toy" else (0.0, 1.0)
    x0 = tf.random.uniform([num_samples, x_train.shape[1]], low, high)
    sampler = getattr(model, "sampler", None)
    step_size = sampler.step_size if isinstance(sampler, samplers.Langevin) else 0.01
    noise_scale = sampler.noise_scale if isinstance(sampler, samplers.Langevin) else None
    return samplers.Langevin(num_steps=num_steps, step_size=step_size, noise_scale=noise_scale,
                             clip_value_min=low, clip_value_max=high)(energy, x0).numpy()


def plot_toy(path, model, x_train, samples, grid_size, title):
    import numpy as np

    from keras_ebm.evaluation.density import energy_grid

    plt = _silence_matplotlib()
    xs, ys, energies = energy_grid(model.energy, TOY_BOUNDS, grid_size)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
    axes[0].scatter(x_train[:3000, 0], x_train[:3000, 1], s=1, c="k")
    axes[0].set_title("data")
    image = axes[1].imshow(energies, origin="lower", extent=TOY_BOUNDS * 2, cmap="viridis")
    fig.colorbar(image, ax=axes[1])
    axes[1].set_title("energy E(x): low on the data, high elsewhere")
    log_density = -energies - np.log(np.exp(-energies - (-energies).max()).sum()) - (-energies).max()
    axes[2].imshow(np.exp(log_density), origin="lower", extent=TOY_BOUNDS * 2, cmap="magma")
    if samples is not None:
        axes[2].scatter(samples[:, 0], samples[:, 1], s=1, c="c", alpha=0.5)
    axes[2].set_title("exp(-E) / Z with Langevin samples")
    for ax in axes:
        ax.set_xlim(*TOY_BOUNDS)
        ax.set_ylim(*TOY_BOUNDS)
        ax.set_aspect("equal")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_digit_grid(path, images, title):
    import numpy as np

    plt = _silence_matplotlib()
    images = np.asarray(images)[:100].reshape(-1, 8, 8)
    rows = int(np.ceil(len(images) / 10))
    canvas = np.full((rows * 9, 10 * 9), 0.25)
    for i, image in enumerate(images):
        r, c = divmod(i, 10)
        canvas[r * 9 : r * 9 + 8, c * 9 : c * 9 + 8] = image
    fig = plt.figure(figsize=(5, rows * 0.5 + 0.5))
    plt.imshow(canvas, cmap="gray_r", vmin=0, vmax=1)
    plt.axis("off")
    plt.title(title)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def evaluate(model, kind, x_train, x_test, flag_values, workdir):
    """Scores the trained energy and draws its pictures; returns a metrics dict."""
    import numpy as np

    metrics = {}
    energy = model.energy
    if kind == "binary":
        from keras_ebm.data.binary_digits import independent_pixels_log_likelihood

        metrics["independent_pixels_test_log_likelihood"] = independent_pixels_log_likelihood(x_train, x_test)
        if hasattr(energy, "log_partition"):
            from keras_ebm.evaluation.log_partition import rbm_log_likelihood
            from keras_ebm.evaluation.log_partition import rbm_log_partition

            log_z = rbm_log_partition(energy)
            metrics["log_partition"] = log_z
            metrics["train_log_likelihood"] = rbm_log_likelihood(energy, x_train, log_z)
            metrics["test_log_likelihood"] = rbm_log_likelihood(energy, x_test, log_z)
            if flag_values.ais:
                from keras_ebm.evaluation.ais import ais_log_partition

                mean = np.clip(x_train.mean(0), 1e-2, 1 - 1e-2)
                metrics["ais_log_partition"], _ = ais_log_partition(
                    energy, num_chains=100, num_betas=10000, base_visible_bias=np.log(mean / (1 - mean)))
            if hasattr(model, "log_partition") and not callable(model.log_partition):
                metrics["nce_learned_log_partition"] = float(np.asarray(model.log_partition))
    elif kind == "toy":
        from keras_ebm.evaluation.density import gaussian_log_likelihood
        from keras_ebm.evaluation.density import grid_log_likelihood

        metrics["test_log_likelihood"] = grid_log_likelihood(energy, x_test, TOY_BOUNDS, flag_values.grid_size)
        metrics["train_log_likelihood"] = grid_log_likelihood(energy, x_train, TOY_BOUNDS, flag_values.grid_size)
        metrics["gaussian_test_log_likelihood"] = gaussian_log_likelihood(x_train, x_test)
    metrics["test_energy_mean"] = float(np.mean(np.asarray(energy(x_test))))

    samples = draw_samples(model, kind, 2000 if kind == "toy" else 100,
                           1000 if kind == "binary" else 500, x_train)
    if samples is not None and kind != "binary":
        from keras_ebm.evaluation.mmd import mmd

        metrics["sample_mmd"] = mmd(samples[:1000], x_test[:1000])
    title = f"{flag_values.method} on {flag_values.dataset}"
    if "test_log_likelihood" in metrics:
        title += f": test log-likelihood {metrics['test_log_likelihood']:.2f} nats"
    if kind == "toy":
        plot_toy(os.path.join(workdir, "energy_surface.png"), model, x_train, samples, 150, title)
    else:
        if samples is not None:
            plot_digit_grid(os.path.join(workdir, "samples.png"), samples, title + "\nsamples (1000 MCMC steps from noise)")
        buffer = getattr(model, "replay_buffer", None)
        if buffer is not None:
            plot_digit_grid(os.path.join(workdir, "persistent_chains.png"), np.asarray(buffer.chains),
                            "persistent chains")
        if flag_values.method == "dae":
            from keras_ebm.methods.denoising_autoencoder import corrupt

            corrupted = np.asarray(corrupt(x_test[:50], model.noise, model.noise_level))
            reconstructed = np.asarray(model.autoencoder(corrupted))
            rows = np.concatenate([corrupted[:10], reconstructed[:10], x_test[:10]])
            plot_digit_grid(os.path.join(workdir, "denoising.png"), np.clip(rows, 0, 1),
                            "corrupted / reconstructed / clean")
    return metrics


ROLLBACKS_FILE = "rollbacks.json"


def read_rollbacks(checkpoint_dir):
    """How many times this run rolled back (kept beside the checkpoint, so a resume keeps its rate)."""
    try:
        with open(os.path.join(checkpoint_dir, ROLLBACKS_FILE)) as f:
            return int(json.load(f)["rollbacks"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def write_rollbacks(checkpoint_dir, rollbacks, message):
    os.makedirs(checkpoint_dir, exist_ok=True)
    staging = os.path.join(checkpoint_dir, ROLLBACKS_FILE + ".tmp")
    with open(staging, "w") as f:
        json.dump({"rollbacks": rollbacks, "last_divergence": message}, f, indent=2)
    os.replace(staging, os.path.join(checkpoint_dir, ROLLBACKS_FILE))


def training_data(model, x_train, batch_size, steps_per_epoch, flag_values, initial_epoch):
    """(dataset, steps per fit epoch): batches whose order depends only on (seed, epoch)."""
    import tensorflow as tf

    from keras_ebm.data import epoch_ordered_indices

    if flag_values.epoch_program:
        data = model.epoch_dataset(x_train, batch_size, seed=flag_values.seed,
                                   initial_epoch=initial_epoch, epochs=flag_values.epochs,
                                   steps_per_epoch=steps_per_epoch)
        return data, 1
    x = tf.constant(x_train)
    indices = epoch_ordered_indices(len(x_train), batch_size, seed=flag_values.seed,
                                    initial_epoch=initial_epoch, epochs=flag_values.epochs,
                                    steps_per_epoch=steps_per_epoch)
    return indices.map(lambda i: tf.gather(x, i)).prefetch(2), steps_per_epoch


def fit_with_rollback(model, x_train, batch_size, steps_per_epoch, flag_values, workdir, callbacks):
    """Fits; on divergence stops or, with --on_divergence=rollback, restarts from the last good
    checkpoint with the learning rate times --rollback_lr_factor, at most --max_rollbacks times.

    Returns (history, rollbacks). Raises NonFiniteError when it stops.
    """
    from keras_ebm.callbacks import NonFiniteError
    from keras_ebm.callbacks import NonFiniteGuard
    from keras_ebm.callbacks import ResumableBackup
    from keras_ebm.callbacks import checkpoint_epoch

    checkpoint_dir = os.path.join(workdir, "checkpoints")
    backup = ResumableBackup(checkpoint_dir, keep_checkpoints=flag_values.keep_checkpoints)
    # raise_error: the exception leaves fit before the epoch ends, so the
    # diverged epoch is never saved over the last good checkpoint.
    guard = NonFiniteGuard(raise_error=True)
    initial_weights = [w.copy() for w in model.get_weights()]
    total_steps = flag_values.epochs * steps_per_epoch
    rollbacks = read_rollbacks(checkpoint_dir)
    while True:
        lr_scale = flag_values.rollback_lr_factor ** rollbacks
        model.compile(optimizer=build_optimizer(flag_values, total_steps, lr_scale),
                      jit_compile=bool(flag_values.epoch_program))
        initial_epoch = min(checkpoint_epoch(checkpoint_dir), flag_values.epochs)
        data, fit_steps = training_data(model, x_train, batch_size, steps_per_epoch, flag_values,
                                        initial_epoch)
        if rollbacks:
            print(f"Learning rate x{lr_scale:g} after {rollbacks} rollback(s) "
                  f"(--rollback_lr_factor={flag_values.rollback_lr_factor})", flush=True)
        try:
            history = model.fit(data, epochs=flag_values.epochs, steps_per_epoch=fit_steps,
                                callbacks=[backup, guard, *callbacks], verbose=2, shuffle=False)
            return history, rollbacks
        except NonFiniteError as error:
            message = str(error).rstrip(".")
            if flag_values.on_divergence != "rollback":
                raise
            if rollbacks >= flag_values.max_rollbacks:
                raise NonFiniteError(f"{message}; gave up after {rollbacks} rollback(s) "
                                     f"(--max_rollbacks={flag_values.max_rollbacks})") from None
            rollbacks += 1
            write_rollbacks(checkpoint_dir, rollbacks, message)
            restart = checkpoint_epoch(checkpoint_dir)
            if not restart:
                model.set_weights(initial_weights)  # diverged in the first epoch: start over
            print(f"{message}. Rollback {rollbacks}/{flag_values.max_rollbacks}: restarting from "
                  + (f"the checkpoint of epoch {restart}" if restart else "the initial weights")
                  + f" with the learning rate x{flag_values.rollback_lr_factor ** rollbacks:g}",
                  flush=True)


def run(flag_values, workdir, export_dir, callbacks=()):
    """Trains `flag_values.method` on `flag_values.dataset`; returns the metrics dict.

    Checkpoints every epoch into <workdir>/checkpoints (a rerun resumes there).
    Raises ValueError naming the flag for a bad method/dataset combination and
    NonFiniteError when training diverges (after any rollbacks).
    """
    import keras
    import tensorflow as tf

    os.makedirs(workdir, exist_ok=True)
    keras.utils.set_random_seed(flag_values.seed)
    x_train, x_test, kind = load_data(flag_values.dataset, flag_values)
    batch_size = min(flag_values.batch_size, len(x_train))
    model = build_model(flag_values, kind, x_train)
    if flag_values.epoch_program:
        if flag_values.method not in ("cd", "pcd") or kind != "binary":
            raise ValueError("--epoch_program needs --method=cd|pcd on --dataset=binary_digits")
        try:
            model.check_epoch_program()
        except ValueError as error:
            raise ValueError(f"--epoch_program: {error}") from None
    steps_per_epoch = len(x_train) // batch_size
    if flag_values.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, flag_values.steps_per_epoch)
    model(x_train[:2])  # builds every variable before the optimizer

    start = time.time()
    history, rollbacks = fit_with_rollback(model, x_train, batch_size, steps_per_epoch,
                                           flag_values, workdir, callbacks)
    train_seconds = time.time() - start

    metrics = {"method": flag_values.method, "dataset": flag_values.dataset,
               "epochs": len(history.history.get("loss", [])), "batch_size": batch_size,
               "train_seconds": train_seconds,
               "seconds_per_epoch": train_seconds / max(1, len(history.history.get("loss", [1])))}
    metrics.update({f"final_{k}": float(v[-1]) for k, v in history.history.items() if v})
    metrics["rollbacks"] = rollbacks
    metrics.update(evaluate(model, kind, x_train, x_test, flag_values, workdir))

    model_path = os.path.join(workdir, "model.keras")
    staging = os.path.join(workdir, ".model.tmp.keras")
    model.save(staging)
    os.replace(staging, model_path)  # a kill never leaves a half-written model.keras
    metrics["model"] = model_path
    from keras_ebm.export import export_saved_model

    energy = model.energy
    energy_fn = lambda x: tf.cast(energy(x), tf.float32)  # noqa: E731
    metrics["saved_model"] = export_saved_model(
        export_dir, energy,
        {"serving_default": (energy_fn, "x", "energy"), "energy": (energy_fn, "x", "energy")},
        tf.TensorSpec([None, *x_train.shape[1:]], tf.float32))
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, default=float)
    return metrics
