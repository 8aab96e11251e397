"""IVLP's prompts: language and vision prompts learned apart, in the first blocks of each tower."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cocoop_tf")
class IndependentPromptLearner(keras.layers.Layer):
    """Holds IVLP's (and PromptSRC's) prompts: one set per tower, not coupled.

    The text side is MaPLe's: the first text block takes the context
    `v_1..v_M` (`[M, D_text]`), and each of blocks 1..J-1 takes its own `M`
    deep prompts in place of the previous block's outputs at those
    positions. The vision side is VPT's deep prompts: `M_v` vectors join the
    patch sequence before the vision tower's first block, and each of blocks
    1..J_v-1 takes its own `M_v` in place of the previous block's outputs.
    Unlike `MultiModalPromptLearner`, nothing maps one tower's prompts to the
    other's, and the two towers' depths and prompt counts may differ. Every
    prompt starts as N(0, 0.02) draws; `set_context` sets the first text
    block's (e.g. to token embeddings).

    Args:
        n_ctx: int. Text prompt vectors per block, M.
        text_width: int. Width of the text tower's token embeddings.
        vision_width: int. Width of the vision tower's hidden states.
        depth: int. Text blocks that take prompts, J (1 = the first only).
        n_ctx_vision: int. Vision prompt vectors per block, M_v; None for `n_ctx`.
        vision_depth: int. Vision blocks that take prompts, J_v (0 = no
            vision prompts); None for `depth`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        A tuple `(context [1, M, D_text], deep_context [J-1, M, D_text] or
        None, vision_context [M_v, D_vision] or None, deep_vision_context
        [J_v-1, M_v, D_vision] or None)`: the arguments of
        `PromptTextEncoder` and `CLIPImageEncoder`, as
        `MultiModalPromptLearner` returns them.

    Example:
    ```python
    clip = cocoop_tf.load_clip("random_tiny")
    learner = cocoop_tf.layers.IndependentPromptLearner(
        4, clip.text_encoder.embedding_dim, clip.vision_encoder.hidden_dim, depth=2, n_ctx_vision=3
    )
    context, deep, vision, deep_vision = learner()  # [1, 4, 64], [1, 4, 64], [3, 64], [1, 3, 64]
    text_encoder = cocoop_tf.layers.PromptTextEncoder(clip.text_encoder, clip.text_projection)
    image_encoder = cocoop_tf.layers.CLIPImageEncoder(
        clip.vision_encoder, clip.vision_pooler, clip.vision_projection
    )
    token_ids = cocoop_tf.tokenize_classnames(["cat", "dog"], n_ctx=4)
    text_features = text_encoder(context, token_ids, deep)  # [1, 2, 32]
    image_features = image_encoder(np.zeros((2, 32, 32, 3), "float32"), vision, deep_vision)
    ```
    """

    def __init__(self, n_ctx, text_width, vision_width, depth=9, n_ctx_vision=None, vision_depth=None, **kwargs):
        super().__init__(**kwargs)
        n_ctx_vision = n_ctx if n_ctx_vision is None else n_ctx_vision
        vision_depth = depth if vision_depth is None else vision_depth
        if n_ctx < 1 or n_ctx_vision < 1:
            raise ValueError(f"n_ctx and n_ctx_vision must be at least 1, got {n_ctx} and {n_ctx_vision}.")
        if depth < 1:
            raise ValueError(f"depth must be at least 1 (the first text block's prompts), got {depth}.")
        if vision_depth < 0:
            raise ValueError(f"vision_depth must be at least 0 (0: no vision prompts), got {vision_depth}.")
        self.n_ctx = int(n_ctx)
        self.text_width = int(text_width)
        self.vision_width = int(vision_width)
        self.depth = int(depth)
        self.n_ctx_vision = int(n_ctx_vision)
        self.vision_depth = int(vision_depth)
        normal = keras.initializers.RandomNormal(stddev=0.02)
        self.ctx = self.add_weight(shape=(self.n_ctx, self.text_width), initializer=normal, name="ctx")
        self.deep_ctx = self.vision_ctx = self.deep_vision_ctx = None
        if self.depth > 1:
            self.deep_ctx = self.add_weight(
                shape=(self.depth - 1, self.n_ctx, self.text_width), initializer=normal, name="deep_ctx"
            )
        if self.vision_depth > 0:
            self.vision_ctx = self.add_weight(
                shape=(self.n_ctx_vision, self.vision_width), initializer=normal, name="vision_ctx"
            )
        if self.vision_depth > 1:
            self.deep_vision_ctx = self.add_weight(
                shape=(self.vision_depth - 1, self.n_ctx_vision, self.vision_width),
                initializer=normal,
                name="deep_vision_ctx",
            )

    def set_context(self, values):
        """Sets the first text block's context vectors `[M, D_text]` (e.g. word embeddings)."""
        self.ctx.assign(ops.cast(values, self.ctx.dtype))

    def call(self, inputs=None):
        # `inputs` is unused: the prompts are the layer's weights (Keras calls take an argument).
        dtype = self.compute_dtype
        prompts = (self.ctx, self.deep_ctx, self.vision_ctx, self.deep_vision_ctx)
        ctx, deep, vision, deep_vision = (None if p is None else ops.cast(p, dtype) for p in prompts)
        return ctx[None], deep, vision, deep_vision

    def compute_output_shape(self, inputs_shape=None):
        deep, deep_vision = self.depth - 1, self.vision_depth - 1
        return (
            (1, self.n_ctx, self.text_width),
            (deep, self.n_ctx, self.text_width) if deep else None,
            (self.n_ctx_vision, self.vision_width) if self.vision_depth else None,
            (deep_vision, self.n_ctx_vision, self.vision_width) if deep_vision > 0 else None,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "n_ctx": self.n_ctx,
                "text_width": self.text_width,
                "vision_width": self.vision_width,
                "depth": self.depth,
                "n_ctx_vision": self.n_ctx_vision,
                "vision_depth": self.vision_depth,
            }
        )
        return config
