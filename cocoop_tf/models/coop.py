"""CoOp: context optimisation with one learned prompt for all images."""

from cocoop_tf.models.clip_classifier import l2_normalize
from cocoop_tf.models.prompt_learning import PromptLearningModel
from cocoop_tf.models.registry import register_method


@register_method
class CoOp(PromptLearningModel):
    """CoOp (Zhou et al., IJCV 2022): learned context vectors shared by all images.

    The prompt of class `i` is `[v_1, ..., v_M, c_i]` (or, class-specific,
    `[v_1^i, ..., v_M^i, c_i]`); `logits_i = exp(logit_scale) * cos(f(x), g(t_i))`.
    Class features do not depend on the image: `class_features` gives them.

    Takes RGB images as pixel values 0..255, `[B, S, S, 3]`; returns logits
    `[B, num_classes]`.

    Args:
        clip: a frozen `keras_hub.models.CLIPBackbone` (see `load_clip`).
        classnames: list of class names; underscores become spaces.
        n_ctx: number of context vectors (see `CoCoOp`).
        ctx_init: initial context words, or None for N(0, 0.02) vectors.
        class_specific: one context per class (CoOp's "CSC" variant); such a
            model cannot be moved to another number of classes.
        **kwargs: standard `keras.Model` arguments.

    Example:
    ```python
    clip = cocoop_tf.load_clip("random_tiny")
    model = cocoop_tf.CoOp(clip, ["cat", "dog"])
    logits = model(np.zeros((2, 32, 32, 3), "float32"))  # [2, 2]
    features = model.class_features(model.tokenize_classnames(["bird"]))  # [1, 32]
    ```
    """

    method = "coop"
    display_name = "CoOp"
    run_settings = ("n_ctx", "ctx_init", "class_specific")

    def __init__(self, clip, classnames, n_ctx=4, ctx_init="a photo of a", class_specific=False, **kwargs):
        super().__init__(
            clip, classnames, n_ctx=n_ctx, ctx_init=ctx_init, class_specific=class_specific, **kwargs
        )
        self.set_classnames(classnames)

    def class_features(self, token_ids):
        """Normalised class features `[C, projection_dim]` of class token ids `[C, L]`."""
        return l2_normalize(self.prompt_text_encoder(self.prompt_learner(), token_ids)[0])

    def get_config(self):
        config = super().get_config()
        config["class_specific"] = self.class_specific
        return config
