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

    def build(self, input_shape):
        self.normalization.build(input_shape)
        self.built = True

    def call(self, images):
        if self.mode == "reference":
            features = self.vision_encoder({"images": self.normalization(images)})
            features = self.vision_pooler(features)
        else:
            encoder = self.vision_encoder
            x = encoder.pre_layer_norm(encoder.embedding(self.normalization(images)))
            blocks = encoder.encoder_layers
            for i, block in enumerate(blocks):
                x = self_attention_block(block, x, first_row_only=i == len(blocks) - 1)
            features = encoder.layer_norm(x)  # the class token's, which the pooler takes
        features = self.vision_projection(features)
        return features / ops.sqrt(ops.sum(ops.square(features), axis=-1, keepdims=True))

    def compute_output_shape(self, input_shape):
        self.normalization.compute_output_shape(input_shape)  # checks the image size
        return (input_shape[0], self.vision_projection.units)

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
