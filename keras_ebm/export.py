"""Export trained models as TF-Serving SavedModels, written atomically."""

import os
import re
import shutil
import tempfile

import keras
import tensorflow as tf


def next_version(export_base):
    """The next integer version under `export_base` (1 when it holds none)."""
    versions = [int(name)
                for name in (os.listdir(export_base) if os.path.isdir(export_base) else [])
                if re.fullmatch(r"\d+", name)]
    return max(versions, default=0) + 1


def _signature_fn(fn, input_spec, input_name, output_name):
    spec = tf.TensorSpec(input_spec.shape, input_spec.dtype, name=input_name)

    def serve(inputs):
        return {output_name: fn(inputs)}

    serve.__name__ = f"serve_{input_name}_to_{output_name}"
    return tf.function(serve, input_signature=[spec], autograph=False)


def export_saved_model(export_base, trackable, endpoints, input_spec, version=None):
    """Writes a TF-Serving SavedModel to `<export_base>/<version>/`.

    The model is written to a temporary folder beside the target and renamed
    into place, so a run killed midway never leaves a half-written version
    that TF Serving would try to load.

    Args:
        export_base: folder TF Serving watches (`--model_base_path`).
        trackable: the Keras layer or model that owns every variable the
            endpoints use.
        endpoints: dict `{signature_name: (fn, input_name, output_name)}`;
            `fn` maps one tensor to one tensor. Include "serving_default".
        input_spec: `tf.TensorSpec` of the input, e.g.
            `tf.TensorSpec([None, 32, 32, 3], tf.float32)`.
        version: int, default None (one more than the newest version there).

    Returns:
        The path of the written version folder.

    Example:

    >>> export_saved_model("saved_models/moco", encoder,
    ...                    {"serving_default": (encoder, "images", "embeddings")},
    ...                    tf.TensorSpec([None, 8, 8, 1], tf.float32))
    'saved_models/moco/1'
    """
    if "serving_default" not in endpoints:
        raise ValueError("export_saved_model: endpoints must include 'serving_default'")
    os.makedirs(export_base, exist_ok=True)
    version = next_version(export_base) if version is None else int(version)
    target = os.path.join(export_base, str(version))
    if os.path.exists(target):
        raise FileExistsError(f"{target} already exists")
    archive = keras.export.ExportArchive()
    archive.track(trackable)
    for name, (fn, input_name, output_name) in endpoints.items():
        archive.add_endpoint(name, _signature_fn(fn, input_spec, input_name, output_name))
    staging = tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=export_base)
    try:
        archive.write_out(staging, verbose=False)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def export_encoder(export_base, encoder, input_shape, version=None):
    """Exports `encoder` with `serving_default`: `images` [B, H, W, C] in [0, 1] -> `embeddings`."""
    spec = tf.TensorSpec([None, *input_shape], tf.float32)
    fn = lambda images: tf.cast(encoder(images, training=False), tf.float32)  # noqa: E731
    return export_saved_model(export_base, encoder,
                              {"serving_default": (fn, "images", "embeddings")},
                              spec, version=version)
