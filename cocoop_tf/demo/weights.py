"""A compact weight file for small CLIP models, and the shipped `mini_clip`.

A small CLIP with the real 49 408-token vocabulary is mostly token embedding
(79% of the mini CLIP's parameters), yet only the rows of the tokens its
training captions use ever train; the others stay at their random start and
mean nothing. The file therefore keeps the used rows and their ids
(`<embedding path>` and `<embedding path>:ids`); the other rows load as
zeros. Every other weight is stored whole, by its Keras variable path, in
float16 by default. The architecture is recorded in the file's metadata.
"""

import dataclasses
import importlib.resources
import json

import numpy as np

from cocoop_tf.clip.backbone import CLIPArchitecture
from cocoop_tf.clip.backbone import architecture_of
from cocoop_tf.clip.backbone import build_backbone

FORMAT = "cocoop_tf.compact_clip/1"
MINI_CLIP_NAME = "mini_clip"
MINI_CLIP_FILE = "mini_clip.safetensors"
_IDS_SUFFIX = ":ids"


def _token_embedding(backbone):
    return backbone.text_encoder.embedding.token_embedding.embeddings


def _stored_variables(backbone):
    """The variables a file holds: all but keras-hub's vision position ids (fixed)."""
    return [v for v in backbone.weights if not v.path.endswith("position_ids")]


def save_compact_clip(backbone, path, used_token_ids, dtype="float16", metadata=None):
    """Writes a backbone's weights, keeping only the used token-embedding rows.

    Args:
        backbone: a keras-hub `CLIPBackbone` built by `build_backbone`.
        path: the output `.safetensors` file.
        used_token_ids: the vocabulary ids whose embedding rows are kept.
        dtype: storage dtype of the floating-point weights.
        metadata: optional dict of strings to record beside the architecture.
    """
    from safetensors.numpy import save_file

    embedding = _token_embedding(backbone)
    ids = np.unique(np.asarray(used_token_ids, np.int32))
    tensors = {}
    for variable in _stored_variables(backbone):
        value = np.asarray(variable)
        if variable.path == embedding.path:
            value = value[ids]
            tensors[variable.path + _IDS_SUFFIX] = ids
        tensors[variable.path] = np.ascontiguousarray(value.astype(dtype))
    if len(tensors) != len(_stored_variables(backbone)) + 1:
        raise ValueError("Variable paths of the backbone are not unique; cannot save by path.")
    info = {
        "format": FORMAT,
        "architecture": json.dumps(dataclasses.asdict(architecture_of(backbone))),
        **(metadata or {}),
    }
    save_file(tensors, str(path), metadata=info)


def read_compact_clip(path):
    """Reads a compact CLIP file: (tensors by variable path, metadata dict)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{str(path)!r} is not a {FORMAT} file.")
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    return tensors, metadata


def load_compact_clip(path, dtype=None):
    """Builds the backbone a compact CLIP file describes and loads its weights.

    Token-embedding rows the file does not hold are zero; the ids of the
    rows it holds are the backbone's `known_token_ids`, and the classifiers
    refuse class names (or templates) made of other tokens.

    Args:
        path: a file written by `save_compact_clip`.
        dtype: optional Keras dtype policy for the backbone.

    Returns:
        A keras-hub `CLIPBackbone` (not frozen).
    """
    tensors, metadata = read_compact_clip(path)
    architecture = CLIPArchitecture(**json.loads(metadata["architecture"]))
    backbone = build_backbone(architecture, dtype=dtype)
    embedding = _token_embedding(backbone)
    variables = _stored_variables(backbone)
    expected = {v.path for v in variables} | {embedding.path + _IDS_SUFFIX}
    if set(tensors) != expected:
        raise ValueError(
            f"{str(path)!r} does not match its recorded architecture: missing "
            f"{sorted(expected - set(tensors))[:5]}, unexpected {sorted(set(tensors) - expected)[:5]}."
        )
    for variable in variables:
        value = tensors[variable.path].astype("float32")
        if variable.path == embedding.path:
            rows = value
            value = np.zeros(tuple(variable.shape), "float32")
            value[tensors[variable.path + _IDS_SUFFIX]] = rows
        # safetensors stores scalars (the logit scale) with shape [1].
        variable.assign(value.reshape(tuple(variable.shape)))
    # The classifiers refuse class names with other tokens (their rows are zero).
    backbone.known_token_ids = frozenset(int(i) for i in tensors[embedding.path + _IDS_SUFFIX])
    return backbone


def mini_clip_path():
    """The shipped mini CLIP weight file (inside the installed package)."""
    return importlib.resources.files(__package__) / MINI_CLIP_FILE


def load_mini_clip(dtype=None):
    """The small CLIP pretrained on MNIST digits and Animal-MNIST (see MINI_CLIP.md).

    Args:
        dtype: optional Keras dtype policy for the backbone.

    Returns:
        A keras-hub `CLIPBackbone` (not frozen; `load_clip("mini_clip")`
        returns it frozen).
    """
    with importlib.resources.as_file(mini_clip_path()) as path:
        return load_compact_clip(path, dtype)
