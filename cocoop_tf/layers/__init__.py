"""Keras layers of cocoop-tf; each drops into any Keras model."""

from cocoop_tf.layers.image_normalization import CLIPImageNormalization
