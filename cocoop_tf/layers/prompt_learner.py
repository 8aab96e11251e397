"""The learnable context vectors of CoOp and CoCoOp."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cocoop_tf")
class PromptLearner(keras.layers.Layer):
    """Holds the context vectors `v_1..v_M` and makes per-image contexts.

    Called without arguments it returns the shared context `[1, M, D]` (CoOp),
    or with `num_classes` set, one context per class `[1, C, M, D]` (CoOp's
    class-specific variant). Called with a per-image bias `pi` of shape
    `[B, D]` (CoCoOp's Meta-Net output) it returns `v_m + pi` for each image,
    `[B, M, D]`: the same `pi` is added to every context vector.

    Vectors start as N(0, 0.02) draws; `set_context` sets them, e.g. to the
    token embeddings of "a photo of a".

    Args:
        n_ctx: int. Number of context vectors M.
        ctx_dim: int. Width D of the text encoder's token embeddings.
        num_classes: int or None. If given, each class has its own context.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        bias: optional `[B, D]` per-image bias (a shared context only).

    Returns:
        `[1, M, D]`, `[1, C, M, D]` (class-specific) or, with a bias,
        `[B, M, D]`.

    Example:

    ```python
    clip = cocoop_tf.load_clip("random_tiny")
    width = clip.text_encoder.embedding_dim
    prompt_learner = cocoop_tf.layers.PromptLearner(n_ctx=4, ctx_dim=width)
    prompt_learner().shape  # (1, 4, 64): CoOp's shared context

    # CoCoOp: the Meta-Net's bias per image, in a functional model.
    features = keras.Input((clip.projection_dim,))
    bias = cocoop_tf.layers.MetaNet(width, reduction=4)(features)
    model = keras.Model(features, prompt_learner(bias))  # [None, 4, 64]
    model(np.zeros((2, clip.projection_dim), "float32")).shape  # (2, 4, 64)
    ```
    """

    def __init__(self, n_ctx, ctx_dim, num_classes=None, **kwargs):
        super().__init__(**kwargs)
        if n_ctx < 1:
            raise ValueError(f"n_ctx must be at least 1, got {n_ctx}.")
        self.n_ctx = int(n_ctx)
        self.ctx_dim = int(ctx_dim)
        self.num_classes = None if num_classes is None else int(num_classes)
        shape = (self.n_ctx, self.ctx_dim)
        if self.num_classes is not None:
            shape = (self.num_classes, *shape)
        self.ctx = self.add_weight(
            shape=shape,
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="ctx",
        )

    def set_context(self, values):
        """Sets the context vectors (broadcast over classes if class-specific)."""
        self.ctx.assign(ops.broadcast_to(ops.cast(values, self.ctx.dtype), self.ctx.shape))

    def call(self, bias=None):
        ctx = ops.cast(self.ctx, self.compute_dtype)[None]
        if bias is None:
            return ctx
        if self.num_classes is not None:
            raise ValueError("A per-image bias needs a shared (not class-specific) context.")
        return ctx + ops.cast(bias, self.compute_dtype)[:, None, :]

    def compute_output_shape(self, bias_shape=None):
        ctx_shape = (1, *self.ctx.shape)
        if bias_shape is None:
            return ctx_shape
        if self.num_classes is not None:
            raise ValueError("A per-image bias needs a shared (not class-specific) context.")
        if len(bias_shape) != 2 or bias_shape[-1] not in (None, self.ctx_dim):
            raise ValueError(
                f"Expected a bias of shape [batch, {self.ctx_dim}] (one per image), "
                f"got shape {tuple(bias_shape)}."
            )
        return (bias_shape[0], *ctx_shape[1:])

    def get_config(self):
        config = super().get_config()
        config.update(
            {"n_ctx": self.n_ctx, "ctx_dim": self.ctx_dim, "num_classes": self.num_classes}
        )
        return config
