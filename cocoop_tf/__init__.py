"""cocoop-tf: prompt learning for CLIP in Keras 3 (CoCoOp, CoOp, KgCoOp, MaPLe, IVLP, PromptSRC).

All models take RGB images as pixel values 0..255, shape
`[batch, size, size, 3]` at the backbone's resolution, and normalise them
inside the graph.

`import cocoop_tf` is light: the names below load their modules (and
TensorFlow) on first use, quietly, and Keras learns our classes as soon as
it is loaded (see `cocoop_tf/import_hooks.py`), so `import cocoop_tf` before
`keras.saving.load_model` is enough to load a saved model.
"""

from cocoop_tf.lazy_exports import lazy_exports

__version__ = "0.1.0"

from cocoop_tf import import_hooks  # noqa: E402
from cocoop_tf import native_stderr  # noqa: E402

import_hooks.install()

# Registers the demo's backbone and dataset names; the demo's modules load when used.
from cocoop_tf import demo  # noqa: E402, F401

# Public name -> the module that defines it.
_EXPORTS = {
    "load_clip": "cocoop_tf.clip.loader",
    "tokenize": "cocoop_tf.clip.tokenizer",
    "tokenize_classnames": "cocoop_tf.clip.prompts",
    "CoCoOp": "cocoop_tf.models",
    "CoOp": "cocoop_tf.models",
    "IVLP": "cocoop_tf.models",
    "KgCoOp": "cocoop_tf.models",
    "MaPLe": "cocoop_tf.models",
    "PromptSRC": "cocoop_tf.models",
    "ZeroShotCLIP": "cocoop_tf.models",
    "paper_optimizer": "cocoop_tf.training",
}
_SUBPACKAGES = ("clip", "data", "demo", "export", "layers", "models", "protocols", "training")

__getattr__, __dir__, __all__ = lazy_exports(globals(), _EXPORTS, _SUBPACKAGES)


# Keras (TensorFlow) imported first: it can only learn our classes now.
import_hooks.register_with_keras()
native_stderr.query_devices()
