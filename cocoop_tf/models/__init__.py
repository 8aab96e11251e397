"""Keras models: zero-shot CLIP (and prompt learners built on the same encoders)."""

from cocoop_tf.models.zero_shot_clip import ZeroShotCLIP
