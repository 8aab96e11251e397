"""Prompt files: the learned weights of a method and its config, without the backbone.

A prompt file is a safetensors file of the model's trainable weights (by
variable path) whose metadata (format `cocoop_tf.prompt/2`) holds:

- `method`: the model's class name (a registered method);
- `config`: the model's `get_config()` without the backbone, as JSON, so
  that `from_prompt` is `from_config` with the backbone given;
- `backbone_widths`: the backbone's token and feature widths, as JSON;
- `backbone`: the fingerprint of the backbone's weights;
- `training` (optional): how the prompt was trained, as JSON.

Files of format `cocoop_tf.prompt/1` (one string per setting) are still read.
"""

import json
import warnings

import numpy as np

from cocoop_tf.files import save_safetensors
from cocoop_tf.models.registry import METHODS
from cocoop_tf.models.registry import get_method

PROMPT_FORMAT = "cocoop_tf.prompt/2"
_FORMAT_1 = "cocoop_tf.prompt/1"
# Learned weights sit near token embeddings (about 0.01-1); anything this
# large only comes from a damaged file or a diverged run.
MAX_PROMPT_VALUE = 1e6
_REQUIRED_1 = ("method", "n_ctx", "ctx_dim", "vis_dim", "class_specific", "ctx_init", "classnames")
# Keys of `keras.Model.get_config` that describe the Keras object, not the method.
_KERAS_KEYS = ("clip", "name", "trainable", "dtype")


def backbone_widths(clip):
    """The widths a prompt's shapes depend on."""
    return {"ctx_dim": int(clip.text_encoder.embedding_dim), "vis_dim": int(clip.projection_dim)}


def write_prompt(path, model, backbone, training=None):
    """Writes `model`'s trainable weights and config (see the module docstring)."""
    config = {k: v for k, v in model.get_config().items() if k not in _KERAS_KEYS}
    metadata = {
        "format": PROMPT_FORMAT,
        "method": type(model).__name__,
        "config": json.dumps(config),
        "backbone_widths": json.dumps(backbone_widths(model.clip)),
        "backbone": backbone,
    }
    if training is not None:
        metadata["training"] = json.dumps(training)
    save_safetensors(path, {v.path: np.asarray(v) for v in model.trainable_weights}, metadata=metadata)


def load_prompt(model, path, force=False):
    """Loads a prompt file into `model`, after checking that it fits (see `CLIPClassifier.load_prompt`)."""
    tensors, metadata = read_prompt(path)
    if metadata["method"] != type(model).__name__:
        raise ValueError(
            f"Prompt checkpoint {str(path)!r} does not fit this model: it holds a "
            f"{metadata['method']} prompt, this model is a {type(model).__name__}."
        )
    mine = backbone_widths(model.clip)
    for key, value in mine.items():
        if metadata["backbone_widths"].get(key) != value:
            raise ValueError(
                f"Prompt checkpoint {str(path)!r} does not fit this model: its "
                f"{key} is {metadata['backbone_widths'].get(key)} but this model's is {value}. "
                "Load it into a model built the same way, on a backbone of the "
                "same widths."
            )
    trained_on = metadata.get("backbone")
    if trained_on != model.backbone_fingerprint:
        problem = (
            f"Prompt checkpoint {str(path)!r} was trained on another backbone (weights "
            f"fingerprint {trained_on}; this backbone's is {model.backbone_fingerprint}), and its "
            "context means nothing on other weights"
            if trained_on else
            f"Prompt checkpoint {str(path)!r} does not record the backbone it was trained on"
        )
        if not force:
            raise ValueError(
                f"{problem}. Load the backbone it was trained on, or pass force=True "
                "(--force on the command line) to load it anyway."
            )
        warnings.warn(f"{problem}; loading it anyway (force).", stacklevel=3)
    variables = {v.path: v for v in model.trainable_weights}
    if set(variables) != set(tensors):
        raise ValueError(
            f"Prompt checkpoint {str(path)!r} holds {sorted(tensors)}, this model "
            f"learns {sorted(variables)}."
        )
    for name, value in tensors.items():
        if not np.isfinite(value).all() or np.abs(value).max(initial=0) > MAX_PROMPT_VALUE:
            raise ValueError(
                f"Prompt checkpoint {str(path)!r}: {name} holds NaN, infinite or absurd values "
                f"(largest magnitude {np.nanmax(np.abs(value), initial=0):g}; training leaves "
                f"them far below {MAX_PROMPT_VALUE:g}). The file is damaged or came from a run "
                "that diverged; use an earlier epoch's checkpoint or train again."
            )
    for name, value in tensors.items():
        if tuple(value.shape) != tuple(variables[name].shape):
            raise ValueError(
                f"Prompt checkpoint {str(path)!r}: {name} has shape {value.shape}, "
                f"this model needs {tuple(variables[name].shape)}."
            )
        variables[name].assign(value)


def read_prompt(path):
    """Reads a prompt file: (tensors by variable path, metadata).

    In the metadata returned, "config", "backbone_widths" and "training" (when
    the file records it) are parsed, and "classnames" is the config's.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except FileNotFoundError:
        raise FileNotFoundError(f"Prompt checkpoint not found: {str(path)!r}.") from None
    except Exception as error:
        raise ValueError(f"{str(path)!r} is not a readable prompt checkpoint: {error}") from None
    if metadata.get("format") == _FORMAT_1:
        metadata = _from_format_1(path, metadata)
    elif metadata.get("format") != PROMPT_FORMAT:
        raise ValueError(f"{str(path)!r} is not a cocoop-tf prompt checkpoint.")
    metadata = dict(metadata)
    missing = [key for key in ("method", "config", "backbone_widths") if key not in metadata]
    if missing:
        raise ValueError(
            f"Prompt checkpoint {str(path)!r} lacks {', '.join(missing)} in its metadata; "
            "it was not written by save_prompt. Train it again, or write it with save_prompt."
        )
    for key in ("config", "backbone_widths", "training"):
        if isinstance(metadata.get(key), str):
            metadata[key] = _json(path, key, metadata[key])
    if not isinstance(metadata["config"], dict) or "classnames" not in metadata["config"]:
        raise ValueError(f"Prompt checkpoint {str(path)!r}: its config names no classes.")
    metadata["classnames"] = metadata["config"]["classnames"]
    return tensors, metadata


def model_from_prompt(clip, path, classnames=None, force=False):
    """The model of any registered method from a prompt file, on `clip`.

    Args:
        clip: the backbone the prompt was trained on.
        path: a prompt file written by `save_prompt`.
        classnames: the classes to classify; default the training classes.
        force: see `CLIPClassifier.load_prompt`.
    """
    method = read_prompt(path)[1]["method"]
    try:
        cls = get_method(method)
    except ValueError:
        raise ValueError(
            f"{str(path)!r} holds a {method!r} prompt, a method this installation does not know "
            f"(methods: {', '.join(METHODS)})."
        ) from None
    return cls.from_prompt(clip, path, classnames=classnames, force=force)



def _json(path, key, text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"Prompt checkpoint {str(path)!r}: its {key!r} metadata is not valid JSON.") from None


def _from_format_1(path, metadata):
    """Format 1 held each setting of CoOp or CoCoOp as a string; turned into a config."""
    missing = [key for key in _REQUIRED_1 if key not in metadata]
    if missing:
        raise ValueError(
            f"Prompt checkpoint {str(path)!r} lacks {', '.join(missing)} in its metadata; "
            "it was not written by save_prompt. Train it again, or write it with save_prompt."
        )
    config = {
        "classnames": _json(path, "classnames", metadata["classnames"]),
        "n_ctx": int(metadata["n_ctx"]),
        "ctx_init": metadata["ctx_init"] or None,
    }
    if metadata["method"] == "CoOp":
        config["class_specific"] = metadata["class_specific"] == "True"
    if "reduction" in metadata:
        config["reduction"] = int(metadata["reduction"])
    widths = {"ctx_dim": int(metadata["ctx_dim"]), "vis_dim": int(metadata["vis_dim"])}
    upgraded = {"method": metadata["method"], "config": config, "backbone_widths": widths}
    for key in ("backbone", "training"):
        if key in metadata:
            upgraded[key] = metadata[key]
    return upgraded
