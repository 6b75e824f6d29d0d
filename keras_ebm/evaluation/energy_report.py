"""What `tools/train.py` measures and draws after training an energy: one call of the library.

    metrics = keras_ebm.evaluation.evaluate_energy(model, x_train, x_test, method="pcd",
                                                   workdir="runs/pcd_rings")

scores the energy (exact likelihood where it is tractable, the calibrated
likelihood of an energy known only up to scale), draws fresh samples
(`draw_samples`: the method's own sampler, or annealed Langevin chains),
compares them with held-out data (MMD) and writes the figures.
"""

import os

import numpy as np
import tensorflow as tf

from keras_ebm.presets import SCALE_FREE_METHODS
from keras_ebm.presets import data_bounds
from keras_ebm.presets import data_kind


def sample_box(x_train):
    """The box [low, high] that samples of an energy trained on `x_train` are drawn in.

    [-4, 4] for 2-D points inside it (the toys), [0, 1] for binary data and
    data inside [0, 1] (images), else the data's range widened by 10% on
    each side.
    """
    kind = data_kind(x_train)
    x = np.asarray(x_train, "float64")
    for low, high in (data_bounds(kind), (0.0, 1.0)):
        if x.min() >= low and x.max() <= high:
            return low, high
    margin = 0.1 * (x.max() - x.min())
    return float(x.min() - margin), float(x.max() + margin)


def _accepts(method, name):
    import inspect

    return name in inspect.signature(method).parameters


# The step of NoiseAnnealedLangevin in `draw_samples`, as a multiple of each level's sigma^2
# (Song & Ermon's 0.1). Shorter steps kept more of the masses the chains took at the higher
# levels on the toys' learned energies (2000 samples' MMD against training points over its
# expected floor, summed over the 4 toys, 2026-12-01: 0.1 -> 0.03 took exact SM 9.0 -> 7.1,
# sliced 10.3 -> 6.1, denoising 9.9 -> 8.9), but they under-mix where the modes connect: on
# an exact blurred 0.8 / 0.2 mixture the left mode got 0.78-0.81 at 0.1, 0.76-0.77 at 0.03
# (tests/ebm/test_noise_conditional.py). Not kept: docs/methods/score_matching.md.
NOISE_STEP_FACTOR = 0.1


def draw_samples(model, num_samples, x_train, temperature=1.0, num_steps=1000, seed=0,
                 bounds=None, resample=False):
    """Fresh samples of a trained energy method, from noise; None where none are drawn.

    - An autoencoder (`model.autoencoder`: the DAE, the contractive AE)
      iterates its own chain `model.sample(start, num_steps, seed=seed)` from
      uniform noise (continuous data only); its chain has no temperature.
    - A method with an exact sampler `model.sample(n, temperature, seed)`
      (K-means, a mixture, quadrature ML's grid) uses it.
    - An RBM on binary data: `num_steps` Gibbs steps from uniform bits.
    - Any other energy on continuous data: `keras_ebm.samplers.AnnealedLangevin`
      at `temperature`, 10 levels from 100 T down to T with `num_steps` / 10
      steps each, from uniform noise in `bounds`, with the method's own
      Langevin step size (and noise, and jumps between modes) when it trains
      with Langevin, else 0.01.
      Each move passes a Metropolis test (MALA), so the last level samples
      p_T itself: unadjusted Langevin on a steep learned energy overshoots
      (PCD on the rings, without resampling: 1113x the MMD floor unadjusted,
      122x with the test, against 179x for exact samples of the same density
      on a grid).
      Without `resample`, the chains cannot move between modes once the
      barriers rise, and each mode keeps the chains its basin caught while
      the density was flat (Song & Ermon's sampler); with it, the chains are
      reweighted and resampled between levels (sequential Monte Carlo) and
      the modes get p_T's own masses.
    - A noise-conditional energy (`keras_ebm.energies.NoiseConditionalEnergy`):
      `keras_ebm.samplers.NoiseAnnealedLangevin`, `num_steps` / L MALA steps
      at each of its L levels, from the largest sigma down, at `temperature`,
      with steps of `NOISE_STEP_FACTOR` sigma_l^2.

    Args:
        model: a trained keras_ebm energy method (it has `model.energy`).
        num_samples: int.
        x_train: the training data [n, D]: its kind (binary, 2-D toy,
            continuous) and its box.
        temperature: positive float, sample exp(-E / T). Defaults to 1.0.
        num_steps: int, Markov-chain steps per sample. Defaults to 1000.
        seed: int. Defaults to 0.
        bounds: (low, high), the box the chains start in and are clamped to;
            None: `sample_box(x_train)`.
        resample: bool, resample the annealed chains between levels
            (`AnnealedLangevin(resample=True)`; for low-dimensional data).
            Ignored by the methods with a sampler of their own and on
            binary data. Defaults to False.

    Returns:
        A float array [num_samples, D], or None (binary data without an RBM).

    Example:

    >>> samples = draw_samples(model, 2000, x_train, temperature=0.7)
    """
    from keras_ebm import samplers

    kind = data_kind(x_train)
    dim = np.asarray(x_train).shape[1]
    low, high = sample_box(x_train) if bounds is None else bounds
    if hasattr(model, "autoencoder"):
        if kind == "binary":
            return None
        start = np.random.default_rng(seed).uniform(low, high, (num_samples, dim))
        seeded = {"seed": seed} if _accepts(model.sample, "seed") else {}
        if _accepts(model.sample, "bounds"):
            seeded["bounds"] = (low, high)
        return np.asarray(model.sample(start, num_steps=num_steps, **seeded))
    if hasattr(model, "sample"):
        return np.asarray(model.sample(num_samples, temperature=temperature, seed=seed))
    energy = model.energy
    x0 = tf.random.stateless_uniform([num_samples, dim], [seed, 0], low, high)
    if kind == "binary":
        if not hasattr(energy, "sample_hidden"):
            return None
        x0 = tf.cast(x0 < 0.5, tf.float32)
        return samplers.Gibbs(num_steps=num_steps, mean_field_visible=True)(
            energy, x0, seed=[seed, 1]).numpy()
    if hasattr(energy, "sigmas") and hasattr(energy, "at"):  # a NoiseConditionalEnergy
        sampler = samplers.NoiseAnnealedLangevin(
            energy.sigmas, steps_per_level=max(1, num_steps // len(energy.sigmas)),
            step_factor=NOISE_STEP_FACTOR, temperature=temperature, clip_value_min=low,
            clip_value_max=high)
        return sampler(energy, x0, seed=[seed, 1]).numpy()
    own = getattr(model, "sampler", None)
    langevin = isinstance(own, samplers.Langevin)
    sampler = samplers.AnnealedLangevin(
        temperature=temperature, num_levels=10, steps_per_level=max(1, num_steps // 10),
        step_size=own.step_size if langevin else 0.01,
        noise_scale=own.noise_scale if langevin else None, clip_value_min=low,
        clip_value_max=high, metropolis=True, resample=resample,
        jump_probability=getattr(own, "jump_probability", 0.0) if langevin else 0.0)
    return sampler(energy, x0, seed=[seed, 1]).numpy()


def _binary_metrics(energy, x_train, x_test, ais):
    from keras_ebm.data.binary_digits import independent_pixels_log_likelihood

    metrics = {"independent_pixels_test_log_likelihood": independent_pixels_log_likelihood(
        x_train, x_test)}
    if not hasattr(energy, "log_partition"):
        return metrics
    from keras_ebm.evaluation.log_partition import rbm_log_likelihood
    from keras_ebm.evaluation.log_partition import rbm_log_partition

    log_z = rbm_log_partition(energy)
    metrics["log_partition"] = log_z
    metrics["train_log_likelihood"] = rbm_log_likelihood(energy, x_train, log_z)
    metrics["test_log_likelihood"] = rbm_log_likelihood(energy, x_test, log_z)
    if ais:
        from keras_ebm.evaluation.ais import ais_log_partition

        mean = np.clip(x_train.mean(0), 1e-2, 1 - 1e-2)
        metrics["ais_log_partition"], _ = ais_log_partition(
            energy, num_chains=100, num_betas=10000, base_visible_bias=np.log(mean / (1 - mean)))
    return metrics


def _toy_metrics(energy, x_train, x_test, grid_size):
    from keras_ebm.evaluation.density import calibrated_log_likelihood
    from keras_ebm.evaluation.density import gaussian_log_likelihood
    from keras_ebm.evaluation.density import grid_log_likelihood

    bounds = data_bounds("toy")
    calibrated = calibrated_log_likelihood(energy, x_train, x_test, bounds, grid_size)
    return {"test_log_likelihood": grid_log_likelihood(energy, x_test, bounds, grid_size),
            "train_log_likelihood": grid_log_likelihood(energy, x_train, bounds, grid_size),
            "gaussian_test_log_likelihood": gaussian_log_likelihood(x_train, x_test),
            # The energy up to scale: p_T = exp(-E / T) / Z_T with T fitted on the training data.
            "temperature": calibrated["temperature"],
            "calibrated_test_log_likelihood": calibrated["log_likelihood"]}


def _sample_metrics(samples, x_test, density_samples=None):
    """MMD of the samples (and of exact samples of the density) against held-out points."""
    from keras_ebm.evaluation.mmd import median_bandwidths
    from keras_ebm.evaluation.mmd import mmd
    from keras_ebm.evaluation.mmd import mmd_floor

    metrics = {"sample_mmd": mmd(samples[:1000], x_test[:1000])}
    if len(x_test) >= 4000 and len(samples) >= 2000:
        # Biased MMD^2 (never negative) of 2000 samples against 2000 held-out points, and
        # the same between two independent held-out draws: the floor it is compared with.
        held, other = x_test[:2000], x_test[2000:4000]
        widths = median_bandwidths(held)
        metrics["sample_mmd_2000"] = mmd(samples[:2000], held, widths, unbiased=False)
        metrics["reference_mmd_2000"] = mmd(other, held, widths, unbiased=False)
        # The same floor's expectation, from all held-out pairs: one pair's is noisy.
        metrics["expected_reference_mmd_2000"] = mmd_floor(x_test[:5000], 2000, widths)
        if density_samples is not None:
            metrics["density_mmd_2000"] = mmd(density_samples, held, widths, unbiased=False)
    return metrics


def _title(method, dataset, metrics, calibrate):
    title = f"{method} on {dataset}"
    if calibrate:
        return title + (f": calibrated test log-likelihood "
                        f"{metrics['calibrated_test_log_likelihood']:.2f} nats at T = "
                        f"{metrics['temperature']:.3g}")
    if "test_log_likelihood" in metrics:
        return title + f": test log-likelihood {metrics['test_log_likelihood']:.2f} nats"
    return title


def _draw_digit_figures(model, samples, x_test, workdir, title, method):
    from keras_ebm.evaluation.plots import plot_digit_grid

    if samples is not None:
        plot_digit_grid(os.path.join(workdir, "samples.png"), samples,
                        title + "\nsamples (1000 MCMC steps from noise)")
    buffer = getattr(model, "replay_buffer", None)
    if buffer is not None:
        plot_digit_grid(os.path.join(workdir, "persistent_chains.png"),
                        np.asarray(buffer.chains), "persistent chains")
    if method == "dae":
        from keras_ebm.methods.denoising_autoencoder import corrupt

        corrupted = np.asarray(corrupt(x_test[:50], model.noise, model.noise_level))
        reconstructed = np.asarray(model.autoencoder(corrupted))
        rows = np.concatenate([corrupted[:10], reconstructed[:10], x_test[:10]])
        plot_digit_grid(os.path.join(workdir, "denoising.png"), np.clip(rows, 0, 1),
                        "corrupted / reconstructed / clean")


def evaluate_energy(model, x_train, x_test, method=None, workdir=None, grid_size=200,
                    ais=False, seed=0, dataset=None):
    """Scores a trained energy method, samples it and draws its figures; returns a metrics dict.

    By the data's kind (`keras_ebm.presets.data_kind`):

    - binary: the exact test log-likelihood of an RBM (log Z by enumeration;
      with `ais`, also AIS), and the independent-pixel baseline;
    - 2-D points in [-4, 4]^2: the exact log-likelihood by quadrature, the
      calibrated one at a fitted T (`calibrated_log_likelihood`), a fitted
      Gaussian's, 2000 samples' MMD against held-out points with its floor
      (`sample_mmd_2000`, `reference_mmd_2000`: two held-out draws;
      `expected_reference_mmd_2000`: that floor's expectation, `mmd_floor`
      over all held-out points) and the MMD of 2000 exact
      samples of the density on the grid (`density_mmd_2000`: what a perfect
      sampler would reach);
    - continuous: the mean test energy and the samples' MMD.

    Methods whose energy is known only up to scale (`SCALE_FREE_METHODS`:
    score matching, K-means, sparse coding, the autoencoders) are drawn, and
    sampled where their sampler has a temperature, at the fitted T; the
    others (and `method=None`) at T = 1. On 2-D points, the others' losses
    (PCD, NCE, ...) fit a normalised density, its modes' masses included, so
    their annealed chains are resampled between levels and follow it
    (`draw_samples(resample=True)`); in more dimensions the resampling's
    weights degenerate, and the chains are not resampled. The losses of
    score matching and sparse coding leave the masses of separated modes
    undetermined (for score matching: Wenliang & Kanagawa 2020), so their
    chains are annealed without resampling: each mode keeps what its basin
    caught. A noise-conditional energy (the score-matching presets on the
    toys) is sampled down its noise levels at T = 1, as Song & Ermon sample
    a learned score: the modes' masses are settled at the levels where the
    blurred modes still touch and its loss fits them. It is scored and
    drawn at its smallest level.
    `density_mmd_2000` measures exact samples with the energy's own mode
    masses.

    Args:
        model: a trained keras_ebm energy method.
        x_train, x_test: arrays [n, D].
        method: str, its preset name (`keras_ebm.presets.METHODS`), or None.
        workdir: str or None; where to write `energy_surface.png` and
            `surface.npz` (2-D) or `samples.png` (images). None writes nothing.
        grid_size: int, quadrature cells per side. Defaults to 200.
        ais: bool, also estimate an RBM's log Z by AIS. Defaults to False.
        seed: int, of the samples. Defaults to 0.
        dataset: str or None, the data's name in the figures' titles.

    Returns:
        dict of floats.

    Example:

    >>> model = keras_ebm.presets.build("pcd", x_train)
    >>> model.fit(x_train, batch_size=256, epochs=80)
    >>> keras_ebm.evaluation.evaluate_energy(model, x_train, x_test, method="pcd")
    """
    kind = data_kind(x_train)
    x_train, x_test = np.asarray(x_train), np.asarray(x_test)
    if kind == "toy" and sample_box(x_train) != data_bounds(kind):
        low, high = data_bounds(kind)
        raise ValueError(f"evaluate_energy: 2-D points are scored by quadrature on "
                         f"[{low:g}, {high:g}]^2, and x_train reaches {np.abs(x_train).max():.3g}; "
                         "rescale the data into that square")
    energy = model.energy
    metrics = {}
    if kind == "binary":
        metrics.update(_binary_metrics(energy, x_train, x_test, ais))
        if hasattr(model, "log_partition") and not callable(model.log_partition):
            metrics["nce_learned_log_partition"] = float(np.asarray(model.log_partition))
    elif kind == "toy":
        metrics.update(_toy_metrics(energy, x_train, x_test, grid_size))
    metrics["test_energy_mean"] = float(np.mean(np.asarray(energy(x_test))))

    # Energies known only up to scale are drawn and pictured at the fitted T.
    calibrate = method in SCALE_FREE_METHODS and "temperature" in metrics
    temperature = metrics["temperature"] if calibrate else 1.0
    levels = hasattr(energy, "sigmas") and hasattr(energy, "at")
    samples = draw_samples(model, 2000 if kind == "toy" else 100, x_train,
                           temperature=1.0 if levels else temperature, num_steps=1000, seed=seed,
                           resample=kind == "toy" and method not in SCALE_FREE_METHODS)
    grid = density_samples = None
    if kind == "toy":
        from keras_ebm.evaluation.density import energy_grid
        from keras_ebm.evaluation.density import grid_sample

        bounds = data_bounds(kind)
        grid = energy_grid(energy, bounds, 150)[2]
        density_samples = grid_sample(energy, 2000, bounds, grid_size,
                                      temperature=temperature, seed=seed)
    if samples is not None and kind != "binary":
        metrics.update(_sample_metrics(samples, x_test, density_samples))
    if workdir is None:
        return metrics
    title = _title(method, dataset or kind, metrics, calibrate)
    if kind == "toy":
        from keras_ebm.evaluation.plots import plot_energy_surface

        plot_energy_surface(os.path.join(workdir, "energy_surface.png"), energy, x_train,
                            samples, data_bounds(kind), 150, title, temperature=temperature,
                            energies=grid)
        # What tools/toy_table.py draws in its grid of every method on every toy.
        np.savez_compressed(os.path.join(workdir, "surface.npz"), energies=grid,
                            bounds=np.asarray(data_bounds(kind)), temperature=temperature,
                            samples=np.asarray(samples)[:1000])
    else:
        _draw_digit_figures(model, samples, x_test, workdir, title, method)
    return metrics
