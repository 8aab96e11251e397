"""CoCoOp's Meta-Net: a per-image bias for the prompt context."""

import numbers

import keras


@keras.saving.register_keras_serializable(package="cocoop_tf")
class MetaNet(keras.layers.Layer):
    """Linear(vis_dim -> vis_dim // reduction) -> ReLU -> Linear(-> output_dim).

    Maps each (normalised) image feature to a vector `pi` that CoCoOp adds to
    every context vector of that image's prompts.

    Args:
        output_dim: int. Size of `pi`: the text encoder's token width.
        reduction: int. The hidden layer has `vis_dim // reduction` units
            (16 in the paper: 512 -> 32 -> 512 for ViT-B/16).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        image_features: `[..., vis_dim]` image features.

    Returns:
        `pi`, `[..., output_dim]`.

    Example:

    ```python
    clip = cocoop_tf.load_clip("random_tiny")
    meta_net = cocoop_tf.layers.MetaNet(
        clip.text_encoder.embedding_dim, reduction=4
    )
    features = np.random.normal(size=(2, clip.projection_dim)).astype("float32")
    meta_net(features).shape  # (2, 64): 32 -> 8 -> 64

    # In a functional model.
    inputs = keras.Input((clip.projection_dim,))
    model = keras.Model(inputs, meta_net(inputs))
    ```
    """

    def __init__(self, output_dim, reduction=16, **kwargs):
        super().__init__(**kwargs)
        if isinstance(reduction, bool) or not isinstance(reduction, numbers.Integral) or reduction < 1:
            raise ValueError(f"reduction (--reduction) must be a whole number >= 1, got {str(reduction)[:60]!r}.")
        self.output_dim = int(output_dim)
        self.reduction = int(reduction)

    def build(self, input_shape):
        hidden = int(input_shape[-1]) // self.reduction
        if hidden < 1:
            raise ValueError(
                f"reduction={self.reduction} leaves no hidden units for inputs of "
                f"width {input_shape[-1]}; use a smaller reduction."
            )
        # Weights drawn as PyTorch's nn.Linear draws them; biases start at zero.
        self.linear1 = keras.layers.Dense(
            hidden, activation="relu", name="linear1", dtype=self.dtype_policy,
            kernel_initializer=_torch_linear_init()
        )
        self.linear2 = keras.layers.Dense(
            self.output_dim, name="linear2", dtype=self.dtype_policy,
            kernel_initializer=_torch_linear_init()
        )
        self.linear1.build(input_shape)
        self.linear2.build((*input_shape[:-1], hidden))

    def call(self, image_features):
        return self.linear2(self.linear1(image_features))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"output_dim": self.output_dim, "reduction": self.reduction})
        return config


def _torch_linear_init():
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
    )
