"""Score matching: fit the gradient of the energy, with no partition function and no samples.

The lecture's strategy 4: minimise the gradient and maximise the curvature of
the energy around the data points. With the model's score s(x) = -grad_x E(x),
Hyvärinen's objective

    J(E) = E_data [ 1/2 ||grad_x E(x)||^2 - tr(Hessian_x E(x)) ]

equals, up to a constant, the expected squared distance between the model's
score and the data's. Its two terms say it in the lecture's words: a small
gradient at the data (the data sit at minima) and a large positive curvature
there (the minima are narrow). The trace costs one backward pass per input
dimension; denoising score matching (Vincent 2011) and sliced score matching
(Song et al. 2019) avoid it.

Each function takes an ``energy`` (a callable mapping ``[N, ...]`` to ``[N]``,
any Keras layer or model) and returns the per-example objective ``[N]``;
average it for the loss. They differentiate through TensorFlow gradient
tapes, so they run inside a method's ``train_step`` (TensorFlow backend).
"""

import keras
import tensorflow as tf


def _flat(x):
    """[N, ...] -> [N, D], with D static when the example shape is."""
    x = tf.convert_to_tensor(x)
    size = x.shape[1:].num_elements()
    return tf.reshape(x, [-1, size if size is not None else tf.reduce_prod(tf.shape(x)[1:])])


def energy_gradient(energy, x, training=False):
    """``(E(x), grad_x E(x))``: energies ``[N]`` and input gradients shaped like ``x``.

    Examples are independent, so the gradient of the summed energy is each
    example's own gradient.

    Example:

    >>> e, g = energy_gradient(lambda x: 0.5 * tf.reduce_sum(x ** 2, -1), tf.ones((2, 3)))
    >>> g.numpy()   # grad of |x|^2 / 2 is x
    array([[1., 1., 1.],
           [1., 1., 1.]], dtype=float32)
    """
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        energies = _energy(energy, x, training)
        total = tf.reduce_sum(energies)  # inside the tape, so that it is recorded
    return energies, tape.gradient(total, x)


def _energy(energy, x, training):
    """E(x), with ``training`` for Keras layers and models only."""
    return energy(x, training=training) if isinstance(energy, keras.layers.Layer) else energy(x)


def exact_score_matching(energy, x, training=False):
    """Hyvärinen's objective per example: 1/2 ||grad E(x)||^2 - tr(Hessian E(x)).

    The Hessian's trace takes one extra backward pass per input dimension,
    so this is for low-dimensional data (the 2-D toys); use the sliced or
    denoising forms in high dimension.

    Args:
        energy: callable ``[N, ...] -> [N]``.
        x: data ``[N, ...]``.
        training: passed to a Keras energy. Defaults to False.

    Returns:
        ``[N]`` float tensor.

    Example:

    >>> quadratic = lambda x: 0.5 * tf.reduce_sum(x ** 2, -1)   # N(0, I): score -x
    >>> exact_score_matching(quadratic, tf.zeros((1, 2))).numpy()   # 0 - tr(I)
    array([-2.], dtype=float32)

    Reference:
        Hyvärinen, Estimation of non-normalized statistical models by score
        matching, JMLR 2005, eq. 4.
    """
    x = tf.convert_to_tensor(x)
    dimensions = x.shape[1:].num_elements()
    if dimensions is None:
        raise ValueError(f"exact_score_matching needs a static example shape, got {x.shape}")
    with tf.GradientTape(persistent=True) as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            total = tf.reduce_sum(_energy(energy, x, training))
        gradient = _flat(inner.gradient(total, x))
        components = [tf.reduce_sum(gradient[:, i]) for i in range(dimensions)]
    trace = tf.add_n([_flat(outer.gradient(components[i], x))[:, i]
                      for i in range(dimensions)])
    del outer
    return 0.5 * tf.reduce_sum(tf.square(gradient), axis=-1) - trace


def denoising_score_matching(energy, x, noise, sigma, training=False):
    """Vincent's objective per example: 1/2 ||s(x + sigma n) + n / sigma||^2, weighted by sigma^2.

    With x~ = x + sigma n, the score of the Gaussian corruption is
    -(x~ - x) / sigma^2 = -n / sigma, and the model's score s = -grad E at
    x~ is fitted to it. The returned value is multiplied by ``sigma**2``
    (Song & Ermon's weighting, which makes the scale of the loss independent
    of sigma): ``1/2 ||sigma s(x~) + n||^2``. Its minimiser is the score of
    the data convolved with N(0, sigma^2 I).

    Args:
        energy: callable ``[N, ...] -> [N]``.
        x: data ``[N, ...]``.
        noise: standard normal draws shaped like ``x`` (drawn by the caller,
            outside the gradient tape).
        sigma: positive float, the corruption's standard deviation.
        training: passed to a Keras energy. Defaults to False.

    Returns:
        ``[N]`` float tensor.

    Example:

    >>> n = tf.random.normal((256, 2))
    >>> loss = tf.reduce_mean(denoising_score_matching(model.energy, x, n, sigma=0.1))

    Reference:
        Vincent, A connection between score matching and denoising
        autoencoders, Neural Computation 2011; Song & Ermon, NeurIPS 2019.
    """
    x = tf.convert_to_tensor(x)
    noise = tf.cast(noise, x.dtype)
    _, gradient = energy_gradient(energy, x + sigma * noise, training)
    residual = _flat(-sigma * gradient + noise)
    return 0.5 * tf.reduce_sum(tf.square(residual), axis=-1)


def sliced_score_matching(energy, x, projections, variance_reduction=True, training=False):
    """Song et al.'s sliced objective per example, averaged over random projections v.

        v^T grad(s)(x) v + 1/2 (v^T s(x))^2,   s = -grad E,  grad(s) = -Hessian E

    Its expectation over v with E[v v^T] = I is Hyvärinen's objective. With
    ``variance_reduction`` (SSM-VR, for Gaussian v) the second term is
    replaced by its expectation 1/2 ||s(x)||^2. Each projection costs one
    Hessian-vector product (one extra backward pass), whatever the dimension.

    Args:
        energy: callable ``[N, ...] -> [N]``.
        x: data ``[N, ...]``.
        projections: ``[M, N, ...]`` (M projections of each example) or
            ``[N, ...]`` (one), e.g. standard normal or Rademacher draws.
        variance_reduction: bool. Defaults to True.
        training: passed to a Keras energy. Defaults to False.

    Returns:
        ``[N]`` float tensor, the mean over the M projections.

    Example:

    >>> v = tf.random.normal((1, 256, 2))
    >>> loss = tf.reduce_mean(sliced_score_matching(model.energy, x, v))

    Reference:
        Song, Garg, Shi & Ermon, Sliced score matching: a scalable approach
        to density and score estimation, UAI 2019, eq. 8 (SSM) and 9 (SSM-VR).
    """
    x = tf.convert_to_tensor(x)
    projections = tf.cast(tf.convert_to_tensor(projections), x.dtype)
    if projections.shape.rank == x.shape.rank:
        projections = projections[None]
    values = []
    with tf.GradientTape(persistent=True) as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            total = tf.reduce_sum(_energy(energy, x, training))
        gradient = inner.gradient(total, x)
        along = [tf.reduce_sum(_flat(gradient) * _flat(projections[m]), axis=-1)
                 for m in range(int(projections.shape[0]))]           # v^T grad E
        sums = [tf.reduce_sum(directional) for directional in along]
    for m, directional in enumerate(along):
        hessian_v = _flat(outer.gradient(sums[m], x))  # H v
        curvature = -tf.reduce_sum(_flat(projections[m]) * hessian_v, axis=-1)  # v^T grad(s) v
        if variance_reduction:
            values.append(curvature + 0.5 * tf.reduce_sum(tf.square(_flat(gradient)), axis=-1))
        else:
            values.append(curvature + 0.5 * tf.square(directional))
    del outer
    return tf.add_n(values) / float(len(values))
