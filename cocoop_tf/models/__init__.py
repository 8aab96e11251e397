"""Keras models: CoCoOp, CoOp and zero-shot CLIP."""

from cocoop_tf.models.cocoop import CoCoOp
from cocoop_tf.models.coop import CoOp
from cocoop_tf.models.zero_shot_clip import ZeroShotCLIP
