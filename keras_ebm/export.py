"""Export trained models as TF-Serving SavedModels, written atomically and validated."""

import hashlib
import os
import re
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

# Bumped whenever the exported graph changes (e.g. the input checks), so that a
# model exported by an older keras_ebm is written again rather than skipped.
EXPORT_FORMAT = "keras_ebm-export-2"
FINGERPRINT_FILE = os.path.join("assets.extra", "keras_ebm_fingerprint.txt")


class ExportPath(str):
    """The path of a version folder (a `str`), with `.version` and `.exported`.

    `exported` is False when the newest version already held these weights and
    nothing was written (see `export_saved_model(skip_unchanged=True)`).
    """

    def __new__(cls, path, version, exported):
        self = super().__new__(cls, path)
        self.version = int(version)
        self.exported = bool(exported)
        return self

    def __getnewargs__(self):  # pickle and copy
        return str(self), self.version, self.exported


def _versions(export_base):
    return [int(name)
            for name in (os.listdir(export_base) if os.path.isdir(export_base) else [])
            if re.fullmatch(r"\d+", name)]


def next_version(export_base):
    """The next integer version under `export_base` (1 when it holds none)."""
    return max(_versions(export_base), default=0) + 1


def check_export_dir(export_base):
    """Checks, before training, that `export_base` can be created and written; writes nothing.

    An existing folder gets a probe file written and deleted; a missing one
    needs its nearest existing parent to be a folder this process can write.

    Returns:
        `export_base`.

    Raises:
        ValueError: `"<export_base> cannot be written: <reason>"`, e.g.
            `"/x cannot be written: Permission denied"` or
            `"/x cannot be written: it is a file"`.
    """
    if os.path.exists(export_base) and not os.path.isdir(export_base):
        raise ValueError(f"{export_base} cannot be written: it is a file")
    try:
        if os.path.isdir(export_base):
            handle, probe = tempfile.mkstemp(prefix=".keras_ebm-probe-", dir=export_base)
            os.close(handle)
            os.remove(probe)
            return export_base
        parent = os.path.dirname(os.path.abspath(export_base))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise ValueError(f"{export_base} cannot be written: {parent} is a file")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"{export_base} cannot be written: Permission denied ({parent})")
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"{export_base} cannot be written: {reason}") from None
    return export_base


def _fingerprint(trackable, endpoints, input_spec, value_range):
    """sha256 over every variable's name, dtype, shape and bytes, the spec and signatures.

    Keras seed-generator states are left out: they move whenever a layer draws
    random numbers (sampling, dropout in training) but do not change what the
    served, deterministic endpoints compute.
    """
    digest = hashlib.sha256()
    digest.update(f"{EXPORT_FORMAT}\n{input_spec.shape}\n{input_spec.dtype.name}\n"
                  f"{value_range}\n".encode())
    for name in sorted(endpoints):
        _, input_name, output_name = endpoints[name]
        digest.update(f"endpoint {name}: {input_name} -> {output_name}\n".encode())
    for variable in trackable.variables:
        path = getattr(variable, "path", variable.name)
        if "seed_generator" in path:
            continue
        value = np.ascontiguousarray(np.asarray(variable.numpy()))
        digest.update(f"{path} {value.dtype} {value.shape}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _read_fingerprint(version_dir):
    try:
        with open(os.path.join(version_dir, FINGERPRINT_FILE)) as f:
            return f.read().strip()
    except OSError:
        return None


def _shape_text(shape):
    return "[" + ", ".join("batch" if d is None and i == 0 else "?" if d is None else str(d)
                           for i, d in enumerate(shape)) + "]"


def _validated(inputs, input_name, expected_shape, value_range):
    """`inputs` after in-graph checks of shape, finiteness and range, with its static shape.

    TF Serving checks neither shapes nor values, so the signature does: each
    failing check raises `InvalidArgumentError` with a one-line message. The
    checks run in order (shape, finite, range) so that the message names the
    first problem.
    """
    dims = list(expected_shape)
    rank = len(dims)
    shape = tf.shape(inputs)
    # Pad with -1 so that a too-short shape fails on a known dim rather than by broadcasting.
    padded = tf.concat([shape, tf.fill([rank], -1)], axis=0)[:rank]
    known = tf.constant([d is not None for d in dims])
    want = tf.constant([-1 if d is None else d for d in dims], tf.int32)
    shape_ok = tf.logical_and(
        tf.equal(tf.size(shape), rank),
        tf.reduce_all(tf.logical_or(tf.equal(padded, want), tf.logical_not(known))))
    if rank:  # an empty batch would reach the model (a convolution then fails inside)
        shape_ok = tf.logical_and(shape_ok, padded[0] >= 1)
    got = tf.strings.join(["[", tf.strings.reduce_join(tf.strings.as_string(shape),
                                                        separator=", "), "]"])
    check = tf.debugging.Assert(
        shape_ok, [tf.strings.join([f"{input_name} must have shape {_shape_text(dims)}, got ",
                                    got])], name="check_shape")
    values = tf.cast(inputs, tf.float32)
    if inputs.dtype.is_floating:
        with tf.control_dependencies([check]):
            check = tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(values)),
                                        [f"{input_name} must be finite"], name="check_finite")
    if value_range is not None:
        low, high = (float(v) for v in value_range)
        with tf.control_dependencies([check]):
            lowest, highest = (tf.strings.as_string(v, shortest=True)
                               for v in (tf.reduce_min(values), tf.reduce_max(values)))
            check = tf.debugging.Assert(
                tf.reduce_all(tf.logical_and(values >= low, values <= high)),
                [tf.strings.join([f"{input_name} must lie in [{low:g}, {high:g}], got values "
                                  "in [", lowest, ", ", highest, "]"])], name="check_range")
    with tf.control_dependencies([check]):
        return tf.ensure_shape(tf.identity(inputs), dims)


def _signature_fn(fn, input_spec, input_name, output_name, value_range):
    # Any shape is accepted here, so that a wrong-sized input reaches the
    # in-graph check (with its clear message) instead of failing in the wrapper.
    spec = tf.TensorSpec(None, input_spec.dtype, name=input_name)

    def serve(inputs):
        return {output_name: fn(_validated(inputs, input_name, input_spec.shape, value_range))}

    serve.__name__ = f"serve_{input_name}_to_{output_name}"
    return tf.function(serve, input_signature=[spec], autograph=False)


def export_saved_model(export_base, trackable, endpoints, input_spec, version=None,
                       value_range=None, skip_unchanged=True):
    """Writes a TF-Serving SavedModel to `<export_base>/<version>/`.

    The model is written to a temporary folder beside the target and renamed
    into place, so a run killed midway never leaves a half-written version
    that TF Serving would try to load.

    Every signature checks its input in the graph (TF Serving does not) and
    raises `InvalidArgumentError` unless it has `input_spec`'s rank and known
    dims (`"x must have shape [batch, 64], got [1, 3]"`), is finite
    (`"x must be finite"`) and, with `value_range`, lies in it
    (`"x must lie in [0, 1], got values in [0, 255]"`). The signature_def
    therefore shows the input with unknown rank.

    A fingerprint of the variables' values, the input spec, the value range and
    the signature names is written to `assets.extra/keras_ebm_fingerprint.txt`
    (TF Serving ignores `assets.extra`). With `skip_unchanged` and no explicit
    `version`, if the newest version has the same fingerprint nothing is written,
    one line `"SavedModel unchanged since version N; not exported again (<path>)"`
    is printed and that version's path is returned.

    Args:
        export_base: folder TF Serving watches (`--model_base_path`).
        trackable: the Keras layer or model that owns every variable the
            endpoints use.
        endpoints: dict `{signature_name: (fn, input_name, output_name)}`;
            `fn` maps one tensor to one tensor. Include "serving_default".
        input_spec: `tf.TensorSpec` of the input, e.g.
            `tf.TensorSpec([None, 32, 32, 3], tf.float32)`.
        version: int, default None (one more than the newest version there).
        value_range: `(low, high)` the inputs must lie in (inclusive), or None
            (default) for no range check.
        skip_unchanged: bool, default True: return the newest version instead
            of writing a new one when nothing changed since it was exported.

    Returns:
        An `ExportPath`: the path (a `str`) of the version folder, with
        `.version` (int) and `.exported` (False when skipped as unchanged).

    Example:

    >>> export_saved_model("saved_models/moco", encoder,
    ...                    {"serving_default": (encoder, "images", "embeddings")},
    ...                    tf.TensorSpec([None, 8, 8, 1], tf.float32), value_range=(0, 1))
    'saved_models/moco/1'
    """
    if "serving_default" not in endpoints:
        raise ValueError("export_saved_model: endpoints must include 'serving_default'")
    if value_range is not None:
        low, high = value_range
        if not float(low) <= float(high):
            raise ValueError(f"export_saved_model: value_range={value_range!r} needs low <= high")
    if input_spec.shape.rank is None:
        raise ValueError("export_saved_model: input_spec must have a known rank")
    fingerprint = _fingerprint(trackable, endpoints, input_spec, value_range)
    os.makedirs(export_base, exist_ok=True)
    if version is None and skip_unchanged:
        newest = max(_versions(export_base), default=None)
        if newest is not None:
            newest_dir = os.path.join(export_base, str(newest))
            if _read_fingerprint(newest_dir) == fingerprint:
                print(f"SavedModel unchanged since version {newest}; not exported again "
                      f"({newest_dir})", flush=True)
                return ExportPath(newest_dir, newest, exported=False)
    version = next_version(export_base) if version is None else int(version)
    target = os.path.join(export_base, str(version))
    if os.path.exists(target):
        raise FileExistsError(f"{target} already exists")
    archive = keras.export.ExportArchive()
    archive.track(trackable)
    for name, (fn, input_name, output_name) in endpoints.items():
        archive.add_endpoint(
            name, _signature_fn(fn, input_spec, input_name, output_name, value_range))
    staging = tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=export_base)
    try:
        archive.write_out(staging, verbose=False)
        os.makedirs(os.path.join(staging, os.path.dirname(FINGERPRINT_FILE)), exist_ok=True)
        with open(os.path.join(staging, FINGERPRINT_FILE), "w") as f:
            f.write(fingerprint + "\n")
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportPath(target, version, exported=True)


def export_encoder(export_base, encoder, input_shape, version=None, skip_unchanged=True):
    """Exports `encoder` with `serving_default`: `images` [B, H, W, C] in [0, 1] -> `embeddings`.

    The signature rejects (`InvalidArgumentError`) images of another shape,
    non-finite values and values outside [0, 1]; see `export_saved_model`.
    """
    spec = tf.TensorSpec([None, *input_shape], tf.float32)
    fn = lambda images: tf.cast(encoder(images, training=False), tf.float32)  # noqa: E731
    return export_saved_model(export_base, encoder,
                              {"serving_default": (fn, "images", "embeddings")},
                              spec, version=version, value_range=(0, 1),
                              skip_unchanged=skip_unchanged)


def export_energy(export_base, energy, input_shape, value_range=(0.0, 1.0), version=None,
                  skip_unchanged=True):
    """Exports an energy with `serving_default` and `energy` signatures: `x` -> `energy` [B].

    The signatures reject (`InvalidArgumentError`) inputs of another shape,
    non-finite values and, unless `value_range` is None, values outside it;
    see `export_saved_model`.

    Example:

    >>> export_energy("saved_models/pcd_rings", model.energy, (2,), value_range=None)
    """
    spec = tf.TensorSpec([None, *input_shape], tf.float32)
    fn = lambda x: tf.cast(energy(x), tf.float32)  # noqa: E731
    endpoints = {"serving_default": (fn, "x", "energy"), "energy": (fn, "x", "energy")}
    return export_saved_model(export_base, energy, endpoints, spec, version=version,
                              value_range=value_range, skip_unchanged=skip_unchanged)
