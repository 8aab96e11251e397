"""CoCoOp: conditional context optimisation."""

from keras import ops

from cocoop_tf.layers.clip_image_encoder import at_least_one
from cocoop_tf.layers.meta_net import MetaNet
from cocoop_tf.models.clip_classifier import l2_normalize
from cocoop_tf.models.prompt_learning import PromptLearningModel
from cocoop_tf.models.registry import register_method


@register_method
class CoCoOp(PromptLearningModel):
    """CoCoOp (Zhou et al., CVPR 2022): instance-conditional prompts for CLIP.

    For each image `x`, the Meta-Net maps its normalised CLIP feature to `pi`,
    added to every context vector: the prompt of class `i` is
    `[v_1 + pi, ..., v_M + pi, c_i]`, and
    `logits_i = exp(logit_scale) * cos(f(x), g(t_i(x)))`. Only the context
    vectors and the Meta-Net are trained (35 360 numbers for ViT-B/16).

    Takes RGB images as pixel values 0..255, `[B, S, S, 3]`; returns logits
    `[B, num_classes]`.

    Args:
        clip: a frozen `keras_hub.models.CLIPBackbone` (see `load_clip`).
        classnames: list of class names; underscores become spaces.
        n_ctx: number of context vectors; must match `ctx_init`'s word count
            when both are given (None: take it from `ctx_init`).
        ctx_init: words whose token embeddings initialise the context, or
            None for N(0, 0.02) vectors.
        reduction: the Meta-Net's hidden width is `projection_dim // reduction`.
        **kwargs: standard `keras.Model` arguments.

    Example:
    ```python
    clip = cocoop_tf.load_clip("random_tiny")
    model = cocoop_tf.CoCoOp(clip, ["cat", "dog"], reduction=4)
    model.compile(optimizer=cocoop_tf.paper_optimizer(steps_per_epoch=1, epochs=1, warmup_epochs=0))
    model.fit(np.zeros((2, 32, 32, 3), "float32"), np.array([0, 1]), verbose=0)
    new_ids = model.tokenize_classnames(["bird", "fish"])
    logits = model.classify(np.zeros((1, 32, 32, 3), "float32"), new_ids)  # [1, 2]
    ```
    """

    method = "cocoop"
    display_name = "CoCoOp"
    image_conditional = True
    run_settings = ("n_ctx", "ctx_init", "reduction")

    def __init__(self, clip, classnames, n_ctx=4, ctx_init="a photo of a", reduction=16, **kwargs):
        super().__init__(clip, classnames, n_ctx=n_ctx, ctx_init=ctx_init, **kwargs)
        self.reduction = reduction
        self.meta_net = MetaNet(
            clip.text_encoder.embedding_dim, reduction=reduction, dtype=clip.dtype_policy, name="meta_net"
        )
        self.meta_net.build((None, clip.projection_dim))
        self.set_classnames(classnames)

    def classify(self, images, token_ids):
        """Logits `[B, C]` for images and any class set's token ids.

        Args:
            images: RGB pixel values 0..255, `[B, S, S, 3]`.
            token_ids: int `[C, L]` from `tokenize_classnames`.
        """
        count = ops.shape(images)[0]
        # The text encoder takes one prompt set per image, and none fails: a blank
        # image stands in for an empty batch, and its row is dropped.
        image_features = self.encode_images(at_least_one(images))
        context = self.prompt_learner(self.meta_net(image_features))
        text_features = l2_normalize(self.prompt_text_encoder(context, token_ids))
        text_features = ops.cast(text_features, image_features.dtype)
        logits = ops.einsum("bd,bcd->bc", image_features, text_features)
        return (self.logit_scale(logits.dtype) * logits)[:count]

    def get_config(self):
        config = super().get_config()
        config["reduction"] = self.reduction
        return config
