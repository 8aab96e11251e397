"""Keras layers of cocoop-tf; each drops into any Keras model."""

from cocoop_tf.layers.clip_image_encoder import CLIPImageEncoder
from cocoop_tf.layers.image_normalization import CLIPImageNormalization
from cocoop_tf.layers.independent_prompt_learner import IndependentPromptLearner
from cocoop_tf.layers.meta_net import MetaNet
from cocoop_tf.layers.multimodal_prompt_learner import MultiModalPromptLearner
from cocoop_tf.layers.prompt_learner import PromptLearner
from cocoop_tf.layers.prompt_text_encoder import PromptTextEncoder
