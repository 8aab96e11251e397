"""cocoop-tf: prompt learning for CLIP in Keras 3 (CoCoOp, CoOp, KgCoOp, MaPLe, IVLP, PromptSRC).

All models take RGB images as pixel values 0..255, shape
`[batch, size, size, 3]` at the backbone's resolution, and normalise them
inside the graph.
"""

from cocoop_tf.native_stderr import import_tensorflow

import_tensorflow()

from cocoop_tf import export  # noqa: E402
from cocoop_tf.clip import load_clip  # noqa: E402
from cocoop_tf.clip import tokenize  # noqa: E402
from cocoop_tf.clip import tokenize_classnames  # noqa: E402
from cocoop_tf.models import CoCoOp  # noqa: E402
from cocoop_tf.models import CoOp  # noqa: E402
from cocoop_tf.models import IVLP  # noqa: E402
from cocoop_tf.models import KgCoOp  # noqa: E402
from cocoop_tf.models import MaPLe  # noqa: E402
from cocoop_tf.models import PromptSRC  # noqa: E402
from cocoop_tf.models import ZeroShotCLIP  # noqa: E402
from cocoop_tf.training import paper_optimizer  # noqa: E402

# Last, after the core it builds on: registers the demo's backbone and dataset.
from cocoop_tf import demo  # noqa: E402, F401

__version__ = "0.1.0"
