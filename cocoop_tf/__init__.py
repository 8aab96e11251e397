"""cocoop-tf: conditional prompt learning (CoCoOp, CoOp) for CLIP in Keras 3.

All models take RGB images as pixel values 0..255, shape
`[batch, size, size, 3]` at the backbone's resolution, and normalise them
inside the graph.
"""

from cocoop_tf import export
from cocoop_tf.clip import load_clip
from cocoop_tf.clip import tokenize
from cocoop_tf.clip import tokenize_classnames
from cocoop_tf.models import CoCoOp
from cocoop_tf.models import CoOp
from cocoop_tf.models import ZeroShotCLIP
from cocoop_tf.training import paper_optimizer

__version__ = "0.1.0"
