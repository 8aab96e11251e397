"""SavedModels in TF Serving's layout: `export_dir/<version>/`."""

import json
import os

import keras

from cocoop_tf.export.signatures import model_info
from cocoop_tf.export.signatures import serving_functions
from cocoop_tf.export.staging import replace_folder
from cocoop_tf.export.staging import staging_folder

INFO_FILE = os.path.join("assets.extra", "cocoop_tf.json")


def export_saved_model(model, export_dir, version=1, overwrite=False):
    """Writes `model` as a SavedModel that TF Serving serves from `export_dir`.

    The model lands in `export_dir/<version>/`, where TF Serving looks for
    versions. Its `serving_default` signature takes `images` (float32
    `[None, S, S, 3]`, RGB pixel values 0..255) and `token_ids` (int32
    `[None, None]`, the class names from `serving_token_ids` /
    `cocoop_tf.tokenize_classnames`) and returns `logits` and
    `probabilities` `[B, C]` for any class set; see `serving_functions` for
    the other signatures. The graph holds only core TensorFlow ops and the
    weights as variables: it loads with TensorFlow alone (no keras-hub,
    tensorflow-text or cocoop_tf). Bad inputs fail with a message.
    `assets.extra/cocoop_tf.json` records the input contract for clients.

    Args:
        model: a trained classifier of a registered method (`CoCoOp`, `CoOp`,
            a single-template `ZeroShotCLIP`, ...).
        export_dir: the model's base folder (TF Serving's `base_path`).
        version: positive integer version; TF Serving serves the highest.
        overwrite: replace an existing export of this version. A server sees
            the old version or the new one, whole, at every moment (see
            `cocoop_tf.export.staging`).

    Returns:
        The version folder's path.
    """
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}.")
    info = model_info(model)  # rejects a model that cannot be exported, before any file is written
    path = os.path.join(os.fspath(export_dir), str(version))
    if os.path.exists(path) and os.listdir(path) and not overwrite:
        raise FileExistsError(
            f"{path!r} already holds an export. Pick a new version (TF Serving "
            "serves the highest) or pass overwrite=True."
        )
    # TF Serving loads a version folder as soon as it appears, and serves an
    # existing one until it is replaced: write the export in a staging folder
    # beside it (a name that is not a version) and put it in place whole.
    with staging_folder(export_dir, str(version)) as staging:
        new = os.path.join(staging, "new")
        os.makedirs(new)
        write_saved_model(model, new)
        os.makedirs(os.path.join(new, os.path.dirname(INFO_FILE)))
        with open(os.path.join(new, INFO_FILE), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
        if os.path.exists(path) and os.listdir(path) and not overwrite:
            raise FileExistsError(  # another export took this version meanwhile
                f"{path!r} already holds an export. Pick a new version (TF Serving "
                "serves the highest) or pass overwrite=True."
            )
        replace_folder(new, path, staging)
    return path


def write_saved_model(model, path, dynamic_image_shape=False):
    """Writes the serving signatures of `model` as a SavedModel at `path`.

    Args:
        model: the model to export.
        path: the SavedModel folder.
        dynamic_image_shape: see `serving_functions`.

    Returns:
        The signature names.
    """
    # ExportArchive saves the variables that the functions read, as plain
    # TensorFlow variables: the SavedModel holds no Keras object, and the
    # TFLite converter can freeze them into constants.
    archive = keras.export.ExportArchive()
    functions = serving_functions(model, dynamic_image_shape)
    for name, (function, input_signature) in functions.items():
        archive.add_endpoint(name, function, input_signature=input_signature)
    archive.write_out(path, verbose=False)
    return list(functions)
