"""MaPLe's prompts: language prompts in the first J text blocks, coupled to vision prompts."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cocoop_tf")
class MultiModalPromptLearner(keras.layers.Layer):
    """Holds MaPLe's language prompts and the coupling functions to the vision tower.

    The first text block takes the context `v_1..v_M` (`[M, D_text]`), as
    CoOp's prompt does; each of the blocks 1..J-1 takes its own `M` deep
    prompts in place of the previous block's outputs at those positions.
    Each language prompt is mapped to the vision tower by its own coupling
    function, a linear layer `D_text -> D_vision`: the vision prompts of the
    same blocks. The context starts as `set_context` sets it (e.g. token
    embeddings) or as N(0, 0.02) draws, deep prompts as N(0, 0.02) draws;
    coupling layers start as PyTorch's `nn.Linear` does (uniform within
    `1 / sqrt(D_text)`), the deep ones all with the same draw, as the
    official implementation clones one layer.

    Args:
        n_ctx: int. Prompt vectors per block, M.
        text_width: int. Width of the text tower's token embeddings.
        vision_width: int. Width of the vision tower's hidden states.
        depth: int. Blocks that take prompts, J (1 = the first only).
        **kwargs: standard `keras.layers.Layer` arguments.

    Returns:
        A tuple `(context [1, M, D_text], deep_context [J-1, M, D_text] or
        None, vision_context [M, D_vision], deep_vision_context
        [J-1, M, D_vision] or None)`: the arguments of `PromptTextEncoder`
        and `CLIPImageEncoder`.

    Example:
    ```python
    clip = cocoop_tf.load_clip("random_tiny")
    learner = cocoop_tf.layers.MultiModalPromptLearner(
        2, clip.text_encoder.embedding_dim, clip.vision_encoder.hidden_dim, depth=2
    )
    context, deep, vision, deep_vision = learner()
    text_encoder = cocoop_tf.layers.PromptTextEncoder(clip.text_encoder, clip.text_projection)
    image_encoder = cocoop_tf.layers.CLIPImageEncoder(
        clip.vision_encoder, clip.vision_pooler, clip.vision_projection
    )
    token_ids = cocoop_tf.tokenize_classnames(["cat", "dog"], n_ctx=2)
    text_features = text_encoder(context, token_ids, deep)  # [1, 2, 32]
    image_features = image_encoder(np.zeros((2, 32, 32, 3), "float32"), vision, deep_vision)
    ```
    """

    def __init__(self, n_ctx, text_width, vision_width, depth=9, **kwargs):
        super().__init__(**kwargs)
        if n_ctx < 1:
            raise ValueError(f"n_ctx must be at least 1, got {n_ctx}.")
        if depth < 1:
            raise ValueError(f"depth must be at least 1 (the first block's prompts), got {depth}.")
        self.n_ctx = int(n_ctx)
        self.text_width = int(text_width)
        self.vision_width = int(vision_width)
        self.depth = int(depth)
        normal = keras.initializers.RandomNormal(stddev=0.02)
        self.ctx = self.add_weight(shape=(self.n_ctx, self.text_width), initializer=normal, name="ctx")
        self.deep_ctx = None
        if self.depth > 1:
            self.deep_ctx = self.add_weight(
                shape=(self.depth - 1, self.n_ctx, self.text_width), initializer=normal, name="deep_ctx"
            )
        bound = 1.0 / math.sqrt(self.text_width)
        uniform = keras.initializers.RandomUniform(-bound, bound)
        self.coupling_kernel = self.add_weight(
            shape=(self.text_width, self.vision_width), initializer=uniform, name="coupling_kernel"
        )
        self.coupling_bias = self.add_weight(shape=(self.vision_width,), initializer=uniform, name="coupling_bias")
        self.deep_coupling_kernels = self.deep_coupling_biases = None
        if self.depth > 1:
            kernel = uniform((self.text_width, self.vision_width))
            bias = uniform((self.vision_width,))
            self.deep_coupling_kernels = self.add_weight(
                shape=(self.depth - 1, self.text_width, self.vision_width),
                initializer=lambda shape, dtype=None: ops.cast(ops.broadcast_to(kernel[None], shape), dtype),
                name="deep_coupling_kernels",
            )
            self.deep_coupling_biases = self.add_weight(
                shape=(self.depth - 1, self.vision_width),
                initializer=lambda shape, dtype=None: ops.cast(ops.broadcast_to(bias[None], shape), dtype),
                name="deep_coupling_biases",
            )

    def set_context(self, values):
        """Sets the first block's context vectors `[M, D_text]` (e.g. word embeddings)."""
        self.ctx.assign(ops.cast(values, self.ctx.dtype))

    def call(self, inputs=None):
        # `inputs` is unused: the prompts are the layer's weights (Keras calls take an argument).
        dtype = self.compute_dtype
        ctx = ops.cast(self.ctx, dtype)
        vision = ops.matmul(ctx, ops.cast(self.coupling_kernel, dtype)) + ops.cast(self.coupling_bias, dtype)
        if self.deep_ctx is None:
            return ctx[None], None, vision, None
        deep = ops.cast(self.deep_ctx, dtype)
        deep_vision = ops.einsum("jmd,jdv->jmv", deep, ops.cast(self.deep_coupling_kernels, dtype))
        deep_vision = deep_vision + ops.cast(self.deep_coupling_biases, dtype)[:, None]
        return ctx[None], deep, vision, deep_vision

    def compute_output_shape(self, inputs_shape=None):
        deep = self.depth - 1
        return (
            (1, self.n_ctx, self.text_width),
            (deep, self.n_ctx, self.text_width) if deep else None,
            (self.n_ctx, self.vision_width),
            (deep, self.n_ctx, self.vision_width) if deep else None,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {"n_ctx": self.n_ctx, "text_width": self.text_width, "vision_width": self.vision_width, "depth": self.depth}
        )
        return config
