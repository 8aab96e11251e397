"""Keras models: zero-shot CLIP, CoOp, CoCoOp, KgCoOp, MaPLe, IVLP and PromptSRC, and the registry of methods.

Each method is one file that registers its model with `register_method`;
the order of registration is the order of tables and default method lists.
"""

from cocoop_tf.models.clip_classifier import CLIPClassifier
from cocoop_tf.models.registry import METHODS
from cocoop_tf.models.registry import get_method
from cocoop_tf.models.registry import method_names
from cocoop_tf.models.registry import register_method
from cocoop_tf.models.zero_shot_clip import ZeroShotCLIP  # noqa: I001 (registration order)
from cocoop_tf.models.coop import CoOp
from cocoop_tf.models.cocoop import CoCoOp
from cocoop_tf.models.kgcoop import KgCoOp
from cocoop_tf.models.maple import MaPLe
from cocoop_tf.models.ivlp import IVLP
from cocoop_tf.models.promptsrc import PromptSRC
from cocoop_tf.models.prompt_file import model_from_prompt
from cocoop_tf.models.prompt_file import read_prompt

