"""CLIP's frozen image tower as one layer: 0..255 images to normalised image features."""

import keras
from keras import ops

from cocoop_tf.layers.image_normalization import CLIPImageNormalization


@keras.saving.register_keras_serializable(package="cocoop_tf")
class CLIPImageEncoder(keras.layers.Layer):
    """Normalised CLIP image features `[B, projection_dim]` of RGB images 0..255.

    CLIP's mean/std normalisation (`CLIPImageNormalization`, which also
    checks the image size), the backbone's vision transformer, its pooling
    of the class token and its projection, then L2 normalisation: what every
    classifier here compares with class features. Every weight belongs to
    the (frozen) backbone.

    Args:
        clip: a `keras_hub.models.CLIPBackbone` (see `cocoop_tf.load_clip`);
            the layer uses its `vision_encoder`, `vision_pooler` and
            `vision_projection`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    ```python
    clip = cocoop_tf.load_clip("random_tiny")
    encoder = cocoop_tf.layers.CLIPImageEncoder(clip)
    features = encoder(np.zeros((2, 32, 32, 3), "float32"))  # [2, 32], unit norm
    images = keras.Input((32, 32, 3))
    head = keras.Model(images, keras.layers.Dense(10)(encoder(images)))  # a linear probe
    ```
    """

    def __init__(self, clip, **kwargs):
        kwargs.setdefault("dtype", clip.dtype_policy)
        super().__init__(**kwargs)
        self.clip = clip
        self.image_size = clip.vision_encoder.image_shape[0]
        self.normalization = CLIPImageNormalization(self.image_size, dtype=self.dtype_policy, name="normalization")

    def build(self, input_shape):
        self.normalization.build(input_shape)
        self.built = True

    def call(self, images):
        features = self.clip.get_vision_embeddings(self.normalization(images))
        return features / ops.sqrt(ops.sum(ops.square(features), axis=-1, keepdims=True))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.clip.projection_dim)

    def get_config(self):
        config = super().get_config()
        # The backbone itself: Keras serialises it once when other layers hold it too.
        config["clip"] = self.clip
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["clip"], dict):
            config["clip"] = keras.layers.deserialize(config["clip"])
        return cls(**config)
