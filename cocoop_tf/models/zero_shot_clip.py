"""Zero-shot CLIP classification with hand-written prompt templates."""

import numpy as np
import tensorflow as tf
from keras import ops

from cocoop_tf.clip.prompts import clean_classnames
from cocoop_tf.clip.prompts import tokenize_prompts
from cocoop_tf.models.clip_classifier import CLIPClassifier
from cocoop_tf.models.clip_classifier import l2_normalize
from cocoop_tf.models.registry import register_method

# Classes encoded per text-encoder call when building the class features.
TEXT_BATCH_SIZE = 256


@register_method
class ZeroShotCLIP(CLIPClassifier):
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

    Example:
    ```python
    clip = cocoop_tf.load_clip("random_tiny")
    model = cocoop_tf.ZeroShotCLIP(clip, ["cat", "dog"], template="a photo of a {}.")
    logits = model(np.zeros((2, 32, 32, 3), "float32"))  # [2, 2]
    ids = model.tokenize_classnames(["bird"])  # [1, 77]
    features = model.class_features(ids)  # [1, 32], normalised
    ```
    """

    method = "zeroshot"
    display_name = "CLIP"
    learns = False
    run_settings = ("template",)

    def __init__(self, clip, classnames, template="a photo of a {}.", **kwargs):
        super().__init__(clip, **kwargs)
        templates = [template] if isinstance(template, str) else list(template)
        if not templates or any(
            not isinstance(t, str) or t.count("{}") != 1 for t in templates
        ):
            raise ValueError(
                f"Invalid template {template!r}: give a string (or list of "
                "strings) with exactly one '{}' where the class name goes, "
                "e.g. 'a photo of a {}.'."
            )
        self.templates = templates
        self.set_classnames(classnames)

    def set_classnames(self, classnames, force=False):
        """Replaces the class set; the next call uses the new classes.

        Args:
            classnames: list of class names.
            force: see `CLIPClassifier.set_classnames`.
        """
        super().set_classnames(classnames, force=force)
        self._text_features = None

    def tokenize_classnames(self, classnames):
        """Token ids of each class's prompt: `[C, L]`, or `[C, num_templates, L]` for several.

        This is the `token_ids` input of `classify` and of exported models.

        Args:
            classnames: list of class names.
        """
        names = clean_classnames(classnames)
        texts = [t.format(name) for name in names for t in self.templates]
        owners = [name for name in names for _ in self.templates]
        context_length = self.clip.text_encoder.max_sequence_length
        token_ids = tokenize_prompts(texts, owners, context_length)
        if len(self.templates) == 1:
            return token_ids
        return token_ids.reshape(len(names), len(self.templates), context_length)

    def class_features(self, token_ids):
        """Normalised, template-averaged text features `[C, dim]` of prompt ids.

        Args:
            token_ids: int `[C, num_templates, L]` (or `[C, L]` for one template).
        """
        token_ids = ops.convert_to_tensor(token_ids, "int32")
        if len(token_ids.shape) == 2:
            token_ids = token_ids[:, None]
        shape = ops.shape(token_ids)
        no_context = ops.zeros((1, 0, self.clip.text_encoder.hidden_dim))
        features = self.prompt_text_encoder(no_context, ops.reshape(token_ids, (-1, shape[2])))[0]
        features = ops.reshape(l2_normalize(features), (shape[0], shape[1], -1))
        return l2_normalize(ops.mean(features, axis=1))

    def text_features(self):
        """The cached text features of the current classes, `[num_classes, dim]`."""
        if self._text_features is None:
            # Nothing after the last end token affects the end-token features.
            length = int(np.max(np.argmax(self.token_ids, axis=-1))) + 1
            token_ids = self.token_ids[..., :length]
            self._text_features = ops.concatenate(
                [
                    self.class_features(token_ids[i : i + TEXT_BATCH_SIZE])
                    for i in range(0, len(token_ids), TEXT_BATCH_SIZE)
                ],
                axis=0,
            )
        return self._text_features

    def call(self, images, token_ids=None):
        if token_ids is not None:
            return super().call(images, token_ids)
        # Computed eagerly even while a graph is traced, so it becomes a constant.
        with tf.init_scope():
            text_features = self.text_features()
        return self.feature_logits(self.encode_images(images), text_features)

    def export_description(self):
        if len(self.templates) != 1:
            raise ValueError(
                f"This ZeroShotCLIP ensembles {len(self.templates)} templates; an "
                "export takes one prompt per class. Export ZeroShotCLIP(clip, "
                "classnames, template=one_template), or ensemble on the client: "
                "average the `text_features` of each template's prompts, "
                "normalise, and call `classify_features`."
            )
        return {"prompt": self.templates[0], "n_ctx": 0, "class_specific": False}

    def load_own_variables(self, store):
        # Loading weights changes the backbone: class features must be recomputed.
        super().load_own_variables(store)
        self._text_features = None
        self._forget_traced_functions()

    def get_config(self):
        config = super().get_config()
        config["template"] = self.templates
        return config
