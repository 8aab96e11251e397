"""Loading the model to export from what training leaves behind."""

import errno
import os
import stat

import keras

from cocoop_tf.clip.loader import load_clip
from cocoop_tf.files import file_kind
from cocoop_tf.models import get_method
from cocoop_tf.models import method_names
from cocoop_tf.models import model_from_prompt
from cocoop_tf.models.clip_classifier import CLIPClassifier


def load_model(path, backbone=None, method=None, force=False):
    """Loads a trained model from a `.keras` file or a prompt checkpoint.

    Args:
        path: a `.keras` file written by `model.save` (it holds the backbone
            too), or a `.safetensors` prompt checkpoint written by
            `model.save_prompt` (the learned weights only).
        backbone: for a prompt checkpoint, the `cocoop_tf.load_clip` source
            of the backbone it was trained on.
        method: for a prompt checkpoint, the method it must hold (a name of
            `cocoop_tf.models.method_names()`, e.g. `"cocoop"`); default the
            method recorded in the checkpoint.
        force: load a prompt checkpoint trained on a backbone with other
            weights anyway (see `load_prompt`).

    Returns:
        The model, with the classes it was trained on.

    Raises:
        ValueError: for a `.keras` file of another model than a classifier
            (e.g. a functional graph built around one), naming how to export it.
    """
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ValueError(f"Model checkpoint {path!r} is a symlink loop; give the file itself.") from None
        raise FileNotFoundError(f"Model checkpoint not found: {path!r}.") from None
    if not stat.S_ISREG(mode):
        raise ValueError(
            f"Model checkpoint {path!r} is {file_kind(mode)}, not a regular file; give the .keras "
            "file that model.save wrote, or the .safetensors file that save_prompt wrote."
        )
    if path.endswith(".keras"):
        if backbone is not None or method is not None:
            raise ValueError(
                "A .keras file holds its backbone and method; --backbone and "
                "--method apply to prompt checkpoints (.safetensors) only."
            )
        try:
            model = keras.saving.load_model(path)
        except TypeError as error:  # a config naming what Keras cannot (or may not) build
            raise ValueError(f"{path!r} is not a .keras model this library can load: {error}") from None
        if not isinstance(model, CLIPClassifier):
            raise ValueError(_not_a_classifier(path, model))
        return model
    if path.endswith(".safetensors"):
        if backbone is None:
            raise ValueError(
                f"{path!r} is a prompt checkpoint: it holds only the learned prompt. "
                "Give the backbone it was trained on (--backbone, a load_clip source)."
            )
        if method is not None:
            if method not in method_names(learns=True):
                raise ValueError(
                    f"Unknown method {method!r}; expected one of {', '.join(method_names(learns=True))}."
                )
            return get_method(method).from_prompt(load_clip(backbone), path, force=force)
        return model_from_prompt(load_clip(backbone), path, force=force)
    raise ValueError(
        f"Cannot load {path!r}: expected a .keras file (model.save) or a "
        ".safetensors prompt checkpoint (model.save_prompt)."
    )


def _not_a_classifier(path, model):
    """Why `export` refuses a `.keras` model of another kind, and how to export it instead."""
    inner = [layer.name for layer in getattr(model, "layers", ()) if isinstance(layer, CLIPClassifier)]
    ours = (
        f"; or export the classifier it holds, cocoop_tf.export.export_saved_model("
        f"model.get_layer({inner[0]!r}), OUTPUT), whose signatures are these"
        if inner else ""
    )
    return (
        f"{path!r} holds a {type(model).__name__} model, not a classifier of a registered method "
        "(CoCoOp, CoOp, ...): cocoop-tf export writes only those, with serving signatures that take "
        "images and class token ids. Export a graph of your own (e.g. a keras.Model built around "
        "our layers) with Keras: keras.saving.load_model(PATH).export(OUTPUT, "
        f'format="tf_saved_model"){ours}.'
    )
