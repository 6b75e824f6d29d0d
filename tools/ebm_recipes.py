r"""The EBM flags of tools/train.py (each is a `keras_ebm.experiment.RunConfig` field or a
preset setting of the same name):

    python tools/train.py --flagfile=configs/pcd_rbm.flags
    python tools/train.py --flagfile=configs/pcd_rings.flags

--dataset is `binary_digits` (RBM with --num_hidden units, scored by exact
test log-likelihood in nats), `digits` (8x8 digits in [0, 1], MLP energy) or
`toy:<name>` with name in rings, moons, 8gaussians, checkerboard (MLP energy,
scored by exact log-likelihood by grid quadrature over [-4, 4]^2).
"""

from absl import flags

PRESET = "the method's preset"
flags.DEFINE_integer("num_hidden", None, f"EBM: hidden units of the RBM (default: {PRESET}).")
flags.DEFINE_list("energy_hidden_units", None,
                  "EBM: hidden widths of the MLP energy (continuous data) and of the DAE.")
flags.DEFINE_bool("spectral_normalization", None, "EBM: spectral normalisation in the MLP energy.")
flags.DEFINE_enum("sampler", None, ["gibbs", "langevin", "metropolis"],
                  "EBM: MCMC sampler of cd/pcd (default: gibbs for the RBM, langevin otherwise).")
flags.DEFINE_integer("mcmc_steps", None, "EBM: MCMC steps per update (k of CD-k).")
flags.DEFINE_float("step_size", None, "EBM: Langevin step size.")
flags.DEFINE_float("noise_scale", None, "EBM: Langevin noise std (default sqrt(2 * step_size)).")
flags.DEFINE_bool("mala", None, "EBM: Metropolis-adjusted Langevin.")
flags.DEFINE_float("langevin_grad_clip", None,
                   "EBM: clip each energy-gradient element in Langevin.")
flags.DEFINE_float("jump_probability", None,
                   "EBM: MALA: the probability that a chain's step proposes a uniform point of "
                   "the data's box instead (an independence Metropolis move between modes; "
                   "Langevin only, the other samplers ignore it).")
flags.DEFINE_float("proposal_scale", None, "EBM: std of the Gaussian Metropolis proposal.")
flags.DEFINE_bool("persistent", None,
                  "EBM: persistent chains (default: True for pcd, False for cd).")
flags.DEFINE_integer("num_chains", None, "EBM: persistent chains in the replay buffer.")
flags.DEFINE_integer("chains_per_step", None,
                     "EBM: chains advanced per update (default: all of them).")
flags.DEFINE_float("reinit_fraction", None,
                   "EBM: probability that a drawn chain restarts from noise.")
flags.DEFINE_float("energy_l2", None, "EBM: weight of the energy-magnitude penalty E(x)^2.")
flags.DEFINE_bool("reweight_chains", None,
                  "EBM: pcd: reweight and resample the drawn persistent chains by the change of "
                  "their energy since they were last written.")
flags.DEFINE_float("grad_clip", None, "EBM: clip the global norm of the parameter gradients.")
flags.DEFINE_float("final_learning_rate_fraction", None,
                   "EBM: the learning rate decays linearly to this fraction of --learning_rate.")
flags.DEFINE_float("noise_ratio", None, "EBM: NCE noise samples per data sample.")
flags.DEFINE_enum("dae_noise", None, ["gaussian", "bitflip", "masking"],
                  "EBM: DAE corruption (default: bitflip for binary data, gaussian otherwise).")
flags.DEFINE_float("dae_noise_level", None, "EBM: DAE corruption level.")
flags.DEFINE_float("score_sigma", None,
                   "EBM: denoising_score_matching's corruption std; with "
                   "--score_noise_levels > 1, the smallest level of every score-matching method.")
flags.DEFINE_integer("score_noise_levels", None,
                     "EBM: score-matching methods: noise levels of a noise-conditional energy "
                     "(geometric, --score_sigma_max down to --score_sigma); 1: one energy.")
flags.DEFINE_float("score_sigma_max", None,
                   "EBM: score-matching methods: the largest noise level.")
flags.DEFINE_integer("num_projections", None,
                     "EBM: sliced_score_matching's random directions per example.")
flags.DEFINE_integer("num_clusters", None, "EBM: kmeans's prototypes K.")
flags.DEFINE_integer("num_components", None, "EBM: gmm's Gaussian components K.")
flags.DEFINE_integer("ml_grid_size", None,
                     "EBM: ml on 2-D toys: cells per side of the grid whose quadrature gives "
                     "log Z in the loss.")
flags.DEFINE_integer("num_atoms", None, "EBM: sparse_coding's dictionary atoms K.")
flags.DEFINE_float("sparsity", None, "EBM: sparse_coding's L1 weight lambda.")
flags.DEFINE_integer("ista_iterations", None, "EBM: sparse_coding's FISTA steps per code.")
flags.DEFINE_integer("rbf_centers", None,
                     "EBM: sparse_coding's Gaussian-bump features (a square on 2-D toys).")
flags.DEFINE_float("rbf_width", None, "EBM: sparse_coding's feature width (std).")
flags.DEFINE_float("contraction", None,
                   "EBM: contractive_autoencoder's Jacobian penalty weight.")
flags.DEFINE_float("contraction_noise", None,
                   "EBM: contractive_autoencoder: std of the points (around the data) where "
                   "the Jacobian is penalised.")
flags.DEFINE_integer("cae_units", None, "EBM: contractive_autoencoder's softmax code units.")
flags.DEFINE_float("cae_sharpness", None,
                   "EBM: contractive_autoencoder's initial softmax sharpness s.")
flags.DEFINE_bool("ais", False, "EBM: also estimate log Z of the RBM by AIS.")
flags.DEFINE_integer("grid_size", 200, "EBM: cells per side of the 2-D quadrature grid.")
flags.DEFINE_integer("toy_train_samples", 10000, "EBM: training points of a 2-D toy.")
flags.DEFINE_integer("toy_test_samples", 5000, "EBM: test points of a 2-D toy.")
flags.DEFINE_bool("epoch_program", False,
                  "EBM (cd/pcd on an RBM with Gibbs): run each epoch as one XLA program "
                  "(ContrastiveDivergence.epoch_dataset + jit_compile), several times faster "
                  "for small RBMs; the guard then checks once per epoch.")
flags.DEFINE_enum("on_divergence", "stop", ["stop", "rollback"],
                  "On a non-finite loss, energy or weight, stop (keeping the last good "
                  "checkpoint) or roll back to the last good checkpoint with a lower "
                  "learning rate.")
flags.DEFINE_integer("max_rollbacks", 3, "Most rollbacks before --on_divergence=rollback stops.")
flags.DEFINE_float("rollback_lr_factor", 0.5,
                   "Each rollback multiplies the learning rate (schedule) by this factor.")
