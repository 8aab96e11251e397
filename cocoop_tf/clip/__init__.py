"""CLIP backbones, checkpoint conversion and the tokenizer."""

from cocoop_tf.clip.backbone import CLIPArchitecture
from cocoop_tf.clip.backbone import CLIPTextEncoder
from cocoop_tf.clip.backbone import word_embeddings
from cocoop_tf.clip.loader import RANDOM_CONFIGS
from cocoop_tf.clip.loader import load_clip
from cocoop_tf.clip.named_backbones import register_backbone
from cocoop_tf.clip.prompts import tokenize_classnames
from cocoop_tf.clip.tokenizer import decode
from cocoop_tf.clip.tokenizer import encode
from cocoop_tf.clip.tokenizer import tokenize
