"""Non-contrastive losses: SimSiam, BYOL, Barlow Twins and VICReg.

These losses only pull the two views of an image together (lower the energy
of positive pairs); none of them pushes negatives up. They avoid the
collapsed solution (every input mapped to one point, zero energy everywhere)
in one of two ways:

- **architecture** (SimSiam, BYOL): a predictor on the online branch and a
  stop-gradient on the target branch (`negative_cosine`,
  `symmetric_negative_cosine`, `byol_loss`);
- **regularisation of the embedding statistics** over the batch (Barlow
  Twins: the cross-correlation of the views should be the identity; VICReg:
  every dimension keeps a standard deviation of at least gamma and the
  dimensions are decorrelated), `barlow_twins_loss` and `vicreg_loss`.

Barlow Twins and VICReg compute statistics of the whole batch, so under a
tf.distribute strategy they take `cross_replica=True` to compute them over
the global batch, as the reference implementations do with all-reduce and
all-gather.
"""

import keras
from keras import ops

from keras_ebm import distribute
from keras_ebm.layers.cosine_energy import normalize


def negative_cosine(predictions, targets, stop_gradient=True, reduce=True):
    """SimSiam's D(p, z): the negative cosine similarity of predictions and targets.

        D(p, z) = -mean_i <p_i / |p_i|, z_i / |z_i|>

    with a stop-gradient on z: the targets are constants, so the gradient
    only reaches the predictor branch. In energy terms, D is the mean cosine
    energy E(p_i, z_i) = -cos(p_i, z_i) of the positive pairs; it lies in
    [-1, 1] and is -1 when every prediction points along its target.

    BYOL's normalised mean squared error is the same quantity up to an affine
    map: |p/|p| - z/|z||^2 = 2 - 2 cos(p, z), so its mean is `2 + 2 D(p, z)`
    (see `byol_loss`).

    Args:
        predictions: float tensor [N, D], the predictor outputs p.
        targets: float tensor [N, D], the target projections z; row i is the
            target of row i of `predictions`.
        stop_gradient: bool, default True. False lets the gradient flow into
            the targets too (the collapse ablation of SimSiam, section 4.1).
        reduce: bool, default True. If False, the per-example vector [N] of
            -cos(p_i, z_i) instead of its mean.

    Returns:
        A float32 scalar (or [N] vector with `reduce=False`).

    Example:

    >>> p, z = np.random.randn(2, 8, 16).astype("float32")
    >>> loss = negative_cosine(p, z)          # in [-1, 1]

    Reference:
        Chen & He, Exploring Simple Siamese Representation Learning, CVPR
        2021, eq. 1 and Algorithm 1.
    """
    if stop_gradient:
        targets = ops.stop_gradient(targets)
    losses = -ops.sum(normalize(predictions) * normalize(targets), axis=-1)
    return ops.mean(losses) if reduce else losses


def symmetric_negative_cosine(p1, p2, z1, z2, stop_gradient=True, reduce=True):
    """SimSiam's symmetrised loss: L = D(p1, z2) / 2 + D(p2, z1) / 2.

    Each view's prediction regresses the other view's (stop-gradient)
    projection; see `negative_cosine` for D. The minimum is -1.

    Args:
        p1: float tensor [N, D], predictions of the first views.
        p2: float tensor [N, D], predictions of the second views.
        z1: float tensor [N, D], projections of the first views.
        z2: float tensor [N, D], projections of the second views.
        stop_gradient: bool, default True; False for the collapse ablation.
        reduce: bool, default True. If False, the per-image vector [N] of
            (-cos(p1_i, z2_i) - cos(p2_i, z1_i)) / 2.

    Returns:
        A float32 scalar (or [N] vector with `reduce=False`).

    Example:

    >>> p1, p2, z1, z2 = np.random.randn(4, 8, 16).astype("float32")
    >>> loss = symmetric_negative_cosine(p1, p2, z1, z2)

    Reference:
        Chen & He, Exploring Simple Siamese Representation Learning, CVPR
        2021, eq. 2 and Algorithm 1.
    """
    first = negative_cosine(p1, z2, stop_gradient, reduce=False)
    second = negative_cosine(p2, z1, stop_gradient, reduce=False)
    losses = 0.5 * (first + second)
    return ops.mean(losses) if reduce else losses


def byol_loss(p1, p2, z1, z2, stop_gradient=True, reduce=True):
    """BYOL's symmetrised normalised MSE between online predictions and target projections.

        L   = |p1/|p1| - z2/|z2||^2 = 2 - 2 cos(p1, z2)     (eq. 2)
        L~  = 2 - 2 cos(p2, z1)                             (the swapped views)
        L_BYOL = mean_i (L_i + L~_i) = 4 + 2 D(p1, z2) + 2 D(p2, z1)

    As in the paper (and lucidrains/byol-pytorch), the two directions are
    summed, not averaged: the loss lies in [0, 8]. `z1`, `z2` are the
    projections of the target (EMA) network, behind a stop-gradient.

    Args:
        p1: float tensor [N, D], online predictions of the first views.
        p2: float tensor [N, D], online predictions of the second views.
        z1: float tensor [N, D], target projections of the first views.
        z2: float tensor [N, D], target projections of the second views.
        stop_gradient: bool, default True.
        reduce: bool, default True. If False, the per-image vector [N] of
            L_i + L~_i.

    Returns:
        A float32 scalar (or [N] vector with `reduce=False`).

    Example:

    >>> p1, p2, z1, z2 = np.random.randn(4, 8, 16).astype("float32")
    >>> loss = byol_loss(p1, p2, z1, z2)      # in [0, 8]

    Reference:
        Grill et al., Bootstrap Your Own Latent: A New Approach to
        Self-Supervised Learning, NeurIPS 2020, eq. 2 and section 3.1.
    """
    first = negative_cosine(p1, z2, stop_gradient, reduce=False)
    second = negative_cosine(p2, z1, stop_gradient, reduce=False)
    losses = 4.0 + 2.0 * (first + second)
    return ops.mean(losses) if reduce else losses


def _gather_views(z_a, z_b, cross_replica):
    """Both views in float32, gathered over the replicas (one collective) if asked."""
    z_a = ops.cast(z_a, "float32")
    z_b = ops.cast(z_b, "float32")
    if not cross_replica:
        return z_a, z_b
    # The gather's gradient hands every replica the summed gradient of its own rows.
    gathered = distribute.cross_replica_concat(ops.stack([z_a, z_b], axis=1))
    return gathered[:, 0], gathered[:, 1]


def _off_diagonal_mask(dim):
    return 1.0 - ops.eye(dim, dtype="float32")


def barlow_twins_loss(z_a, z_b, lambda_=5e-3, epsilon=1e-5, cross_replica=False):
    """Barlow Twins: the cross-correlation of the two views should be the identity.

    Each view is standardised along the batch, per dimension, as the reference
    implementation's `BatchNorm1d(affine=False)` does in training mode (biased
    variance, epsilon inside the square root):

        z^_b,i = (z_b,i - mean_b z_b,i) / sqrt(var_b z_b,i + epsilon)
        C_ij   = sum_b z^A_b,i z^B_b,j / N
        L      = sum_i (1 - C_ii)^2 + lambda * sum_i sum_{j != i} C_ij^2

    The invariance term (on the diagonal) pulls the views together; the
    redundancy-reduction term decorrelates the dimensions, which rules out
    the collapsed solution.

    Args:
        z_a: float tensor [N, D], embeddings of the first views.
        z_b: float tensor [N, D], embeddings of the second views.
        lambda_: float, default 5e-3 (the paper's value; the reference code's
            default is 0.0051), weight of the off-diagonal terms.
        epsilon: float, default 1e-5 (the `BatchNorm1d` default of the
            reference code), added to the variance.
        cross_replica: bool, default False. Under a tf.distribute strategy,
            in replica context: gather the embeddings of every replica
            (`keras_ebm.distribute.cross_replica_concat`) so that the
            standardisation and C are over the global batch, as the reference
            code does with synchronised batch norm and an all-reduce of C.
            Every replica then returns the loss of the global batch; divide
            it by the number of replicas before differentiating
            (`keras_ebm.distribute.scale_loss_for_replicas`). Without a
            strategy it changes nothing.

    Returns:
        `(loss, cross_correlation)`: the float32 scalar loss and the [D, D]
        matrix C, for metrics (e.g. its mean diagonal).

    Example:

    >>> z_a, z_b = np.random.randn(2, 32, 16).astype("float32")
    >>> loss, c = barlow_twins_loss(z_a, z_b)

    Reference:
        Zbontar et al., Barlow Twins: Self-Supervised Learning via Redundancy
        Reduction, ICML 2021, eq. 1-2; github.com/facebookresearch/barlowtwins.
    """
    z_a, z_b = _gather_views(z_a, z_b, cross_replica)
    n = ops.cast(ops.shape(z_a)[0], "float32")

    def standardise(z):
        mean = ops.mean(z, axis=0, keepdims=True)
        variance = ops.mean(ops.square(z - mean), axis=0, keepdims=True)
        return (z - mean) / ops.sqrt(variance + epsilon)

    c = ops.matmul(ops.transpose(standardise(z_a)), standardise(z_b)) / n
    on_diagonal = ops.sum(ops.square(1.0 - ops.diagonal(c)))
    off_diagonal = ops.sum(ops.square(c) * _off_diagonal_mask(ops.shape(c)[0]))
    return on_diagonal + lambda_ * off_diagonal, c


def vicreg_loss(z_a, z_b, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, gamma=1.0,
                epsilon=1e-4, cross_replica=False):
    """VICReg: variance-invariance-covariance regularisation of two views.

    With Z, Z' the [N, D] embeddings of the two views and, per branch, the
    centred batch Zc = Z - mean_b Z and unbiased statistics (as
    facebookresearch/vicreg's `main_vicreg.py`):

        s(Z, Z')  = mean_{b,j} (Z_bj - Z'_bj)^2                      (invariance)
        S_j       = sqrt(Zc[:, j]^T Zc[:, j] / (N - 1) + epsilon)
        v(Z)      = mean_j max(0, gamma - S_j)                       (variance)
        Cov(Z)    = Zc^T Zc / (N - 1)
        c(Z)      = sum_{i != j} Cov(Z)_ij^2 / D                     (covariance)

        variance   = (v(Z) + v(Z')) / 2
        covariance = c(Z) + c(Z')
        L = sim_coeff * s + std_coeff * variance + cov_coeff * covariance

    The invariance term lowers the energy of positive pairs; the variance
    hinge keeps every dimension's standard deviation above gamma (no
    collapse) and the covariance term decorrelates the dimensions. As in the
    reference code (whose coefficients 25/25/1 go with it) the two variance
    terms are averaged and the two covariance terms summed; the paper (eq. 6)
    writes a sum of both, which is the same loss with std_coeff doubled.

    Args:
        z_a: float tensor [N, D], embeddings of the first views.
        z_b: float tensor [N, D], embeddings of the second views.
        sim_coeff: float, default 25 (lambda in the paper).
        std_coeff: float, default 25 (mu).
        cov_coeff: float, default 1 (nu).
        gamma: float, default 1, the target standard deviation.
        epsilon: float, default 1e-4, added to the variance before the square
            root (keeps the gradient finite on a collapsed dimension).
        cross_replica: bool, default False. Under a tf.distribute strategy,
            in replica context: gather the embeddings of every replica
            (`keras_ebm.distribute.cross_replica_concat`) so that all three
            terms are over the global batch, as the reference code does with
            its all-gather. Every replica then returns the loss of the global
            batch; divide it by the number of replicas before differentiating
            (`keras_ebm.distribute.scale_loss_for_replicas`). Without a
            strategy it changes nothing.

    Returns:
        `(loss, terms)`: the float32 scalar loss and a dict of the unweighted
        float32 scalars `{"invariance": s, "variance": ..., "covariance": ...}`
        for metrics.

    Example:

    >>> z_a, z_b = np.random.randn(2, 32, 16).astype("float32")
    >>> loss, terms = vicreg_loss(z_a, z_b)
    >>> sorted(terms)
    ['covariance', 'invariance', 'variance']

    Reference:
        Bardes, Ponce & LeCun, VICReg: Variance-Invariance-Covariance
        Regularization for Self-Supervised Learning, ICLR 2022, eq. 1-6;
        github.com/facebookresearch/vicreg.
    """
    z_a, z_b = _gather_views(z_a, z_b, cross_replica)
    n = ops.cast(ops.shape(z_a)[0], "float32")
    dim = ops.shape(z_a)[1]
    invariance = ops.mean(ops.square(z_a - z_b))
    mask = _off_diagonal_mask(dim)

    def variance_and_covariance(z):
        centred = z - ops.mean(z, axis=0, keepdims=True)
        std = ops.sqrt(ops.sum(ops.square(centred), axis=0) / (n - 1.0) + epsilon)
        hinge = ops.mean(ops.relu(gamma - std))
        covariance = ops.matmul(ops.transpose(centred), centred) / (n - 1.0)
        return hinge, ops.sum(ops.square(covariance) * mask) / ops.cast(dim, "float32")

    variance_a, covariance_a = variance_and_covariance(z_a)
    variance_b, covariance_b = variance_and_covariance(z_b)
    variance = 0.5 * (variance_a + variance_b)
    covariance = covariance_a + covariance_b
    loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
    return loss, {"invariance": invariance, "variance": variance, "covariance": covariance}


@keras.saving.register_keras_serializable(package="keras_ebm")
class NegativeCosine(keras.losses.Loss):
    """SimSiam's D(p, z) as a `keras.losses.Loss`: `loss(targets, predictions)`.

    `y_true` holds the target projections z (behind a stop-gradient unless
    `stop_gradient=False`) and `y_pred` the predictions p. The per-example
    loss is -cos(p_i, z_i), so sample weights apply per example. See
    `negative_cosine`.

    Args:
        stop_gradient: bool, default True.
        **kwargs: `keras.losses.Loss` arguments (`reduction`, `name`, `dtype`).

    Example:

    >>> loss = NegativeCosine()
    >>> value = loss(z, p)           # -1 when p is parallel to z

    Reference:
        Chen & He, SimSiam, CVPR 2021.
    """

    def __init__(self, stop_gradient=True, name="negative_cosine", **kwargs):
        super().__init__(name=name, **kwargs)
        self.stop_gradient = bool(stop_gradient)

    def call(self, y_true, y_pred):
        return negative_cosine(y_pred, y_true, self.stop_gradient, reduce=False)

    def get_config(self):
        config = super().get_config()
        config.update({"stop_gradient": self.stop_gradient})
        return config


@keras.saving.register_keras_serializable(package="keras_ebm")
class SymmetricNegativeCosine(keras.losses.Loss):
    """SimSiam's symmetrised loss as a `keras.losses.Loss`: `loss((z1, z2), (p1, p2))`.

    `y_true` is the pair of projections (z1, z2) and `y_pred` the pair of
    predictions (p1, p2). The per-image loss is the mean of the two
    directions, so sample weights apply per image. See
    `symmetric_negative_cosine`.

    Args:
        stop_gradient: bool, default True.
        **kwargs: `keras.losses.Loss` arguments.

    Example:

    >>> loss = SymmetricNegativeCosine()
    >>> value = loss((z1, z2), (p1, p2))

    Reference:
        Chen & He, SimSiam, CVPR 2021, Algorithm 1.
    """

    def __init__(self, stop_gradient=True, name="symmetric_negative_cosine", **kwargs):
        super().__init__(name=name, **kwargs)
        self.stop_gradient = bool(stop_gradient)

    def call(self, y_true, y_pred):
        z1, z2 = y_true
        p1, p2 = y_pred
        return symmetric_negative_cosine(p1, p2, z1, z2, self.stop_gradient, reduce=False)

    def get_config(self):
        config = super().get_config()
        config.update({"stop_gradient": self.stop_gradient})
        return config


@keras.saving.register_keras_serializable(package="keras_ebm")
class BYOLLoss(keras.losses.Loss):
    """BYOL's symmetrised loss as a `keras.losses.Loss`: `loss((z1, z2), (p1, p2))`.

    `y_true` is the pair of target projections (z1, z2) and `y_pred` the pair
    of online predictions (p1, p2). The per-image loss is the sum of the two
    directions (in [0, 8]); sample weights apply per image. See `byol_loss`.

    Args:
        stop_gradient: bool, default True.
        **kwargs: `keras.losses.Loss` arguments.

    Example:

    >>> loss = BYOLLoss()
    >>> value = loss((z1, z2), (p1, p2))

    Reference:
        Grill et al., BYOL, NeurIPS 2020, eq. 2.
    """

    def __init__(self, stop_gradient=True, name="byol_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.stop_gradient = bool(stop_gradient)

    def call(self, y_true, y_pred):
        z1, z2 = y_true
        p1, p2 = y_pred
        return byol_loss(p1, p2, z1, z2, self.stop_gradient, reduce=False)

    def get_config(self):
        config = super().get_config()
        config.update({"stop_gradient": self.stop_gradient})
        return config


class _BatchStatisticLoss(keras.losses.Loss):
    """A loss that is a statistic of the whole batch: `call` returns a scalar."""

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(f"{type(self).__name__} is a statistic of the whole batch, not a "
                             "mean of per-example losses: sample_weight is not supported")
        return super().__call__(y_true, y_pred)


@keras.saving.register_keras_serializable(package="keras_ebm")
class BarlowTwinsLoss(_BatchStatisticLoss):
    """Barlow Twins as a `keras.losses.Loss`: `loss(z_a, z_b)`.

    `y_true` holds the first views' embeddings and `y_pred` the second
    views'. The loss is a statistic of the batch (no per-example terms), so
    it is returned as a scalar and `sample_weight` is refused. See
    `barlow_twins_loss`.

    Args:
        lambda_: float, default 5e-3.
        epsilon: float, default 1e-5.
        cross_replica: bool, default False.
        **kwargs: `keras.losses.Loss` arguments.

    Example:

    >>> loss = BarlowTwinsLoss(lambda_=5e-3)
    >>> value = loss(z_a, z_b)

    Reference:
        Zbontar et al., Barlow Twins, ICML 2021.
    """

    def __init__(self, lambda_=5e-3, epsilon=1e-5, cross_replica=False,
                 name="barlow_twins_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.lambda_ = float(lambda_)
        self.epsilon = float(epsilon)
        self.cross_replica = bool(cross_replica)

    def call(self, y_true, y_pred):
        loss, _ = barlow_twins_loss(y_true, y_pred, self.lambda_, self.epsilon,
                                    self.cross_replica)
        return loss

    def get_config(self):
        config = super().get_config()
        config.update({"lambda_": self.lambda_, "epsilon": self.epsilon,
                       "cross_replica": self.cross_replica})
        return config


@keras.saving.register_keras_serializable(package="keras_ebm")
class VICRegLoss(_BatchStatisticLoss):
    """VICReg as a `keras.losses.Loss`: `loss(z_a, z_b)`.

    `y_true` holds the first views' embeddings and `y_pred` the second
    views'. The loss is a statistic of the batch, so it is returned as a
    scalar and `sample_weight` is refused. See `vicreg_loss`.

    Args:
        sim_coeff: float, default 25.
        std_coeff: float, default 25.
        cov_coeff: float, default 1.
        gamma: float, default 1.
        epsilon: float, default 1e-4.
        cross_replica: bool, default False.
        **kwargs: `keras.losses.Loss` arguments.

    Example:

    >>> loss = VICRegLoss()
    >>> value = loss(z_a, z_b)

    Reference:
        Bardes, Ponce & LeCun, VICReg, ICLR 2022.
    """

    def __init__(self, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, gamma=1.0, epsilon=1e-4,
                 cross_replica=False, name="vicreg_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.sim_coeff = float(sim_coeff)
        self.std_coeff = float(std_coeff)
        self.cov_coeff = float(cov_coeff)
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)
        self.cross_replica = bool(cross_replica)

    def call(self, y_true, y_pred):
        loss, _ = vicreg_loss(y_true, y_pred, self.sim_coeff, self.std_coeff, self.cov_coeff,
                              self.gamma, self.epsilon, self.cross_replica)
        return loss

    def get_config(self):
        config = super().get_config()
        config.update({"sim_coeff": self.sim_coeff, "std_coeff": self.std_coeff,
                       "cov_coeff": self.cov_coeff, "gamma": self.gamma,
                       "epsilon": self.epsilon, "cross_replica": self.cross_replica})
        return config
