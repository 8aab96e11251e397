"""CLIP backbones, checkpoint conversion and the tokenizer.

The names load their modules on first use (PEP 562), so that the
registry of named backbones (`named_backbones`) costs nothing to import.
"""

from cocoop_tf.lazy_exports import lazy_exports

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

__getattr__, __dir__, __all__ = lazy_exports(globals(), _EXPORTS)
