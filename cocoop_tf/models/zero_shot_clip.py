"""Zero-shot CLIP classification with hand-written prompt templates."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from cocoop_tf.clip.prompts import clean_classnames
from cocoop_tf.clip.prompts import tokenize_prompts
from cocoop_tf.layers.image_normalization import CLIPImageNormalization

# Prompts encoded per text-encoder call when building the class features.
TEXT_BATCH_SIZE = 256


def l2_normalize(x):
    """Scales the last axis to unit Euclidean norm."""
    return x / ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))


@keras.saving.register_keras_serializable(package="cocoop_tf")
class ZeroShotCLIP(keras.Model):
    """Zero-shot CLIP classifier: `logit_scale * cos(image, "a photo of a {c}.")`.

    Takes RGB images as pixel values 0..255, `[batch, S, S, 3]` at the
    backbone's resolution S, and returns logits `[batch, num_classes]`. The
    text feature of each class is the normalised text embedding of its prompt;
    with several templates, the mean of the normalised embeddings, normalised
    again (CLIP's prompt ensembling). Class features are computed once, on
    first use, and cached; `set_classnames` swaps the class set.

    Args:
        clip: a frozen `keras_hub.models.CLIPBackbone` (see `load_clip`).
        classnames: list of class names; underscores become spaces.
        template: a format string with one `{}` for the class name, or a
            list of them to ensemble.
        **kwargs: standard `keras.Model` arguments.
    """

    def __init__(self, clip, classnames, template="a photo of a {}.", **kwargs):
        super().__init__(**kwargs)
        templates = [template] if isinstance(template, str) else list(template)
        if not templates or any(
            not isinstance(t, str) or t.count("{}") != 1 for t in templates
        ):
            raise ValueError(
                f"Invalid template {template!r}: give a string (or list of "
                "strings) with exactly one '{}' where the class name goes, "
                "e.g. 'a photo of a {}.'."
            )
        self.clip = clip
        self.templates = templates
        image_size = clip.vision_encoder.image_shape[0]
        self.image_normalization = CLIPImageNormalization(
            image_size, dtype=clip.dtype_policy, name="image_normalization"
        )
        self.set_classnames(classnames)

    def set_classnames(self, classnames):
        """Replaces the class set; the next call uses the new classes.

        Args:
            classnames: list of class names.
        """
        self.classnames = clean_classnames(classnames)
        texts = [t.format(name) for name in self.classnames for t in self.templates]
        owners = [name for name in self.classnames for _ in self.templates]
        context_length = self.clip.text_encoder.max_sequence_length
        self._token_ids = tokenize_prompts(texts, owners, context_length)
        self._forget_text_features()

    def _forget_text_features(self):
        self._text_features = None
        # Traced functions hold the old features as constants.
        self.train_function = self.test_function = self.predict_function = None

    def text_features(self):
        """The normalised text feature of each class, [num_classes, dim]."""
        if self._text_features is None:
            # Nothing after the last end token affects the end-token features.
            length = int(np.max(np.argmax(self._token_ids, axis=-1))) + 1
            token_ids = self._token_ids[:, :length]
            features = [
                self.clip.get_text_embeddings(token_ids[i : i + TEXT_BATCH_SIZE])
                for i in range(0, len(token_ids), TEXT_BATCH_SIZE)
            ]
            features = l2_normalize(ops.concatenate(features, axis=0))
            features = ops.reshape(
                features, (len(self.classnames), len(self.templates), -1)
            )
            self._text_features = l2_normalize(ops.mean(features, axis=1))
        return self._text_features

    def call(self, images):
        images = self.image_normalization(images)
        image_features = l2_normalize(self.clip.get_vision_embeddings(images))
        # Computed eagerly even while a graph is traced, so it becomes a constant.
        with tf.init_scope():
            text_features = self.text_features()
        text_features = ops.cast(text_features, image_features.dtype)
        logit_scale = ops.exp(
            ops.cast(self.clip.clip_head.logit_scale, image_features.dtype)
        )
        return logit_scale * ops.matmul(image_features, ops.transpose(text_features))

    def load_own_variables(self, store):
        # Loading weights changes the backbone: class features must be recomputed.
        super().load_own_variables(store)
        self._forget_text_features()

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "clip": keras.layers.serialize(self.clip),
                "classnames": self.classnames,
                "template": self.templates,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["clip"] = keras.layers.deserialize(config["clip"])
        return cls(**config)
