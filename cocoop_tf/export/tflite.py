"""TFLite models for the LiteRT interpreter: builtin ops only, dynamic batch and classes."""

import os

import tensorflow as tf

from cocoop_tf.export.saved_model import write_saved_model
from cocoop_tf.export.staging import staging_folder
from cocoop_tf.files import write_bytes

QUANTIZATIONS = (None, "dynamic", "float16")


def export_tflite(model, path, quantize=None, overwrite=False):
    """Converts `model` to a TFLite flatbuffer with the SavedModel's signatures.

    The signatures (`serving_default`, `image_features`, and for CoOp and
    zero-shot models `text_features` and `classify_features`) keep the
    SavedModel's input and output names; run them with the LiteRT
    interpreter's `get_signature_runner(name)`, which resizes the inputs, so
    the batch B, the number of classes C and the id length L may change
    from call to call. Only TFLite builtin ops are used (no Flex delegate).
    `images` is declared `[-1, -1, -1, -1]` so that the graph checks its real
    shape (`[B, S, S, 3]`) at run time. Bad inputs (wrong shapes, B = 0 or
    C = 0, pixels that are not finite values in 0..255, malformed token ids)
    stop the interpreter with a `RuntimeError`, mostly "gather index out of
    bounds" (TFLite has no assertion messages); they never get an answer.

    Args:
        model: a trained classifier of a registered method (`CoCoOp`, `CoOp`,
            a single-template `ZeroShotCLIP`, ...).
        path: the `.tflite` file to write.
        quantize: None for float32; `"dynamic"` for dynamic-range
            quantisation (int8 weights, about 4x smaller); `"float16"` for
            float16 weights (2x smaller, computed in float32 on CPU).
        overwrite: replace an existing file (in one rename: a reader opens
            the old file or the new one).

    Returns:
        The path written.
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}.")
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path!r} exists; pass overwrite=True to replace it.")
    folder = os.path.dirname(os.path.abspath(path))
    # The intermediate SavedModel and the new file are written beside the
    # destination, so that a killed export leaves nothing that the next one
    # does not remove, and the file replaces the old one in one rename.
    with staging_folder(folder, os.path.basename(path)) as staging:
        saved_model_dir = os.path.join(staging, "saved_model")
        signature_keys = write_saved_model(model, saved_model_dir, dynamic_image_shape=True)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model_dir, signature_keys=signature_keys
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        flatbuffer = converter.convert()
        new = os.path.join(staging, "model.tflite")
        write_bytes(new, flatbuffer)
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"{path!r} exists; pass overwrite=True to replace it.")
        os.replace(new, path)
    return path
