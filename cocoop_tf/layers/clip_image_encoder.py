"""CLIP's frozen image tower as one layer: 0..255 images to normalised image features."""

import keras
from keras import ops

from cocoop_tf.layers.image_normalization import CLIPImageNormalization
from cocoop_tf.layers.transformer_ops import self_attention_block


@keras.saving.register_keras_serializable(package="cocoop_tf")
class CLIPImageEncoder(keras.layers.Layer):
    """Normalised CLIP image features `[B, projection_dim]` of RGB images 0..255.

    `clip.get_vision_embeddings` as one layer, with this library's pixel
    convention: CLIP's mean/std normalisation (`CLIPImageNormalization`,
    which also checks the image size), the backbone's vision transformer,
    its pooling of the class token and its projection, then L2
    normalisation: what every classifier here compares with class features.
    Every weight belongs to the (frozen) backbone.

    Two modes give the same result:
    - `"efficient"` (default) runs the transformer blocks with plain matmuls
      (`cocoop_tf.layers.transformer_ops`), and in the last block computes
      only the class token, the one position the pooling reads.
    - `"reference"` calls the keras-hub vision encoder as it is.

    Called with `context` (MaPLe's vision prompts), `M` learned vectors
    join the sequence after the class and patch embeddings (before the
    pre-layer norm), and with `deep_context` they are replaced by
    `deep_context[j - 1]` before block `j` (1 <= j < J); the efficient mode
    only.

    Call arguments:
        images: RGB pixel values 0..255, `[B, S, S, 3]`.
        context: optional `[M, width]` vision prompts, the same for every image.
        deep_context: optional `[J - 1, M, width]`, the deeper blocks' prompts.

    Args:
        vision_encoder: the backbone's `vision_encoder` (keras-hub
            CLIPVisionEncoder).
        vision_pooler: the backbone's `vision_pooler`.
        vision_projection: the backbone's `vision_projection` Dense layer.
        mode: `"efficient"` or `"reference"`.
        **kwargs: standard `keras.layers.Layer` arguments; the dtype policy
            defaults to the vision tower's.

    Example:
    ```python
    clip = cocoop_tf.load_clip("random_tiny")
    encoder = cocoop_tf.layers.CLIPImageEncoder(
        clip.vision_encoder, clip.vision_pooler, clip.vision_projection
    )
    features = encoder(np.zeros((2, 32, 32, 3), "float32"))  # [2, 32], unit norm
    images = keras.Input((32, 32, 3))
    head = keras.Model(images, keras.layers.Dense(10)(encoder(images)))  # a linear probe
    ```
    """

    def __init__(self, vision_encoder, vision_pooler, vision_projection, mode="efficient", **kwargs):
        kwargs.setdefault("dtype", vision_encoder.dtype_policy)
        super().__init__(**kwargs)
        if mode not in ("efficient", "reference"):
            raise ValueError(f"mode must be 'efficient' or 'reference', got {mode!r}.")
        self.mode = mode
        self.vision_encoder = vision_encoder
        self.vision_pooler = vision_pooler
        self.vision_projection = vision_projection
        self.image_size = vision_encoder.image_shape[0]
        self.normalization = CLIPImageNormalization(self.image_size, dtype=self.dtype_policy, name="normalization")

    def build(self, images_shape, context_shape=None, deep_context_shape=None):
        self.normalization.build(images_shape)
        self.built = True

    def call(self, images, context=None, deep_context=None):
        if deep_context is not None and context is None:
            raise ValueError("Deep vision prompts replace the first block's prompts: give `context` too.")
        count = ops.shape(images)[0]
        images = at_least_one(images)
        if self.mode == "reference":
            if context is not None:
                raise ValueError("Vision prompts need the image encoder's efficient mode.")
            features = self.vision_encoder({"images": self.normalization(images)})
            features = self.vision_pooler(features)
        else:
            encoder = self.vision_encoder
            x = encoder.embedding(self.normalization(images))
            blocks = encoder.encoder_layers
            if context is not None:
                context = ops.cast(context, x.dtype)
                n_ctx = context.shape[0]
                x = ops.concatenate([x, prompt_rows(context, ops.shape(x)[0])], axis=1)
                if deep_context is not None:
                    deep_context = ops.cast(deep_context, x.dtype)
                    if deep_context.shape[1:] != context.shape or deep_context.shape[0] >= len(blocks):
                        raise ValueError(
                            f"Expected deep vision prompts of shape [depth - 1 < {len(blocks)}, "
                            f"{n_ctx}, {context.shape[1]}], got shape {tuple(deep_context.shape)}."
                        )
            x = encoder.pre_layer_norm(x)
            for i, block in enumerate(blocks):
                if deep_context is not None and 1 <= i <= deep_context.shape[0]:
                    x = ops.concatenate([x[:, :-n_ctx], prompt_rows(deep_context[i - 1], ops.shape(x)[0])], axis=1)
                x = self_attention_block(block, x, first_row_only=i == len(blocks) - 1)
            features = encoder.layer_norm(x)  # the class token's, which the pooler takes
        features = self.vision_projection(features)[:count]
        return features / ops.sqrt(ops.sum(ops.square(features), axis=-1, keepdims=True))

    def compute_output_shape(self, images_shape, context_shape=None, deep_context_shape=None):
        self.normalization.compute_output_shape(images_shape)  # checks the image size
        return (images_shape[0], self.vision_projection.units)

    def get_config(self):
        config = super().get_config()
        # The layers themselves, not serialised copies (as PromptTextEncoder):
        # Keras marks them as shared when other layers of a saved model hold
        # them too, so that the file holds their weights once.
        config.update(
            {
                "vision_encoder": self.vision_encoder,
                "vision_pooler": self.vision_pooler,
                "vision_projection": self.vision_projection,
                "mode": self.mode,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("vision_encoder", "vision_pooler", "vision_projection"):
            if isinstance(config[key], dict):
                config[key] = keras.layers.deserialize(config[key])
        return super().from_config(config)


def at_least_one(images):
    """`images`, with one blank image added to an empty batch.

    keras-hub's patch embedding reshapes with the batch size, which fails for
    zero images; callers encode the blank one and keep the first `B` rows.
    A batch of known size passes unchanged (no cost under XLA).
    """
    if images.shape[0] is not None and images.shape[0] > 0:
        return images
    missing = ops.maximum(1 - ops.shape(images)[0], 0)
    blank = ops.zeros((missing, *ops.shape(images)[1:]), images.dtype)
    return ops.concatenate([images, blank], axis=0)


def prompt_rows(prompt, batch):
    """`[M, D]` prompt vectors as `[batch, M, D]`, the same for every image."""
    return ops.broadcast_to(prompt[None], (batch, *prompt.shape))
