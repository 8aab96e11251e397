"""CLIP backbones, checkpoint conversion and the tokenizer.

The names load their modules on first use (PEP 562), so that the
registry of named backbones (`named_backbones`) costs nothing to import.
"""

import importlib

# Public name -> the module that defines it.
_EXPORTS = {
    "CLIPArchitecture": "cocoop_tf.clip.backbone",
    "CLIPTextEncoder": "cocoop_tf.clip.backbone",
    "word_embeddings": "cocoop_tf.clip.backbone",
    "RANDOM_CONFIGS": "cocoop_tf.clip.loader",
    "load_clip": "cocoop_tf.clip.loader",
    "register_backbone": "cocoop_tf.clip.named_backbones",
    "tokenize_classnames": "cocoop_tf.clip.prompts",
    "decode": "cocoop_tf.clip.tokenizer",
    "encode": "cocoop_tf.clip.tokenizer",
    "tokenize": "cocoop_tf.clip.tokenizer",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})
