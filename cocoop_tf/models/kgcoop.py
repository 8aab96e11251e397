"""KgCoOp: CoOp kept close to the hand-crafted prompt's knowledge."""

import math
import numbers

import numpy as np
import tensorflow as tf
from keras import ops

from cocoop_tf.clip.prompts import shown
from cocoop_tf.models.coop import CoOp
from cocoop_tf.models.registry import register_method
from cocoop_tf.models.zero_shot_clip import ZeroShotCLIP


def knowledge_distance(text_features, hand_crafted_features):
    """KgCoOp's term: 1 - the mean cosine similarity of matching rows.

    Args:
        text_features: the learned prompts' class features `[C, D]`.
        hand_crafted_features: the hand-crafted prompts' features `[C, D]`.
    """
    hand_crafted_features = ops.cast(hand_crafted_features, text_features.dtype)
    norms = ops.norm(text_features, axis=-1) * ops.norm(hand_crafted_features, axis=-1)
    cosine = ops.sum(text_features * hand_crafted_features, axis=-1) / ops.maximum(norms, 1e-7)
    return 1.0 - ops.mean(cosine)


@register_method
class KgCoOp(CoOp):
    """KgCoOp (Yao et al., CVPR 2023): CoOp with knowledge-guided context optimisation.

    The prompt and the logits are CoOp's. Training adds
    `kg_weight * (1 - mean_i cos(g(t_i), w_i))` to the cross-entropy, where
    `g(t_i)` is the learned prompt's feature of class `i` and `w_i` the frozen
    CLIP's feature of the hand-crafted prompt (`template`, e.g. "a photo of a
    {}, a type of pet."): the learned prompts stay close to what CLIP knows,
    which is what keeps accuracy on new classes. The term is added (with
    `add_loss`) when the model is called with `training=True` on its own class
    set, so `fit` trains with it; inference is CoOp's.

    Takes RGB images as pixel values 0..255, `[B, S, S, 3]`; returns logits
    `[B, num_classes]`.

    Args:
        clip: a frozen `keras_hub.models.CLIPBackbone` (see `load_clip`).
        classnames: list of class names; underscores become spaces.
        n_ctx: number of context vectors (see `CoCoOp`).
        ctx_init: initial context words, or None for N(0, 0.02) vectors.
        class_specific: one context per class (see `CoOp`).
        template: the hand-crafted prompt, a format string with one `{}`
            (the dataset's zero-shot template in the paper), or a list of them
            whose features are averaged as `ZeroShotCLIP` does; None for
            "a photo of a {}.".
        kg_weight: the weight of the knowledge-guided term (the paper's
            lambda, 8.0).
        **kwargs: standard `keras.Model` arguments.

    Example:
    ```python
    clip = cocoop_tf.load_clip("random_tiny")
    model = cocoop_tf.KgCoOp(clip, ["cat", "dog"], template="a photo of a {}, a type of pet.")
    model.compile(optimizer=cocoop_tf.paper_optimizer(steps_per_epoch=1, epochs=1, warmup_epochs=0))
    model.fit(np.zeros((2, 32, 32, 3), "float32"), np.array([0, 1]), verbose=0)
    ```
    """

    method = "kgcoop"
    display_name = "KgCoOp"
    runs_by_default = False
    # The official base-to-new recipe (vit_b16_ep100_ctxv1): 100 epochs of batch 128.
    paper_settings = {"epochs": 100, "batch_size": 128}
    run_settings = ("n_ctx", "ctx_init", "class_specific", "template", "kg_weight")

    def __init__(
        self, clip, classnames, n_ctx=4, ctx_init="a photo of a", class_specific=False,
        template="a photo of a {}.", kg_weight=8.0, **kwargs,
    ):
        template = template or "a photo of a {}."
        if not isinstance(template, (str, list, tuple)) or not all(isinstance(t, str) for t in template):
            raise ValueError(
                f"template (--template) must be a format string with one '{{}}', or a list of them; "
                f"got {shown(template)}."
            )
        if isinstance(kg_weight, bool) or not isinstance(kg_weight, numbers.Real) or not math.isfinite(kg_weight):
            raise ValueError(f"kg_weight (--kg-weight) must be a finite number, got {shown(kg_weight)}.")
        self.template = template if isinstance(template, str) else list(template)
        self.kg_weight = float(kg_weight)
        self._hand_crafted_features = None
        super().__init__(
            clip, classnames, n_ctx=n_ctx, ctx_init=ctx_init, class_specific=class_specific, **kwargs
        )

    def set_classnames(self, classnames, force=False):
        super().set_classnames(classnames, force=force)
        self._hand_crafted_features = None

    def hand_crafted_features(self):
        """The frozen CLIP's normalised features of the hand-crafted prompts, `[C, D]` (cached).

        Only training needs them, so a class set is refused for a hand-crafted
        prompt longer than the context (or a bad template) here, not when it
        is set: evaluation on such classes works as CoOp's.
        """
        if self._hand_crafted_features is None:
            # Computed eagerly even while a step is traced, so it becomes a constant.
            with tf.init_scope():
                zero_shot = ZeroShotCLIP(self.clip, self.classnames, template=self.template)
                self._hand_crafted_features = np.asarray(zero_shot.text_features())
        return self._hand_crafted_features

    def call(self, images, token_ids=None, training=None):
        if not training or token_ids is not None:
            return super().call(images, token_ids)
        text_features = self.class_features(self.token_ids)
        self.add_loss(self.kg_weight * knowledge_distance(text_features, self.hand_crafted_features()))
        return self.feature_logits(self.encode_images(images), text_features)

    def fit(self, *args, **kwargs):
        self.hand_crafted_features()  # before any replica's step is traced
        return super().fit(*args, **kwargs)

    def load_own_variables(self, store):
        # Loading weights may change the backbone: hand-crafted features are recomputed.
        super().load_own_variables(store)
        self._hand_crafted_features = None

    def get_config(self):
        config = super().get_config()
        config.update({"template": self.template, "kg_weight": self.kg_weight})
        return config
