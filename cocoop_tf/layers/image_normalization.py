"""CLIP's input normalisation, with a clear check of the image shape."""

import keras
from keras import ops

from cocoop_tf.clip.backbone import CLIP_MEAN
from cocoop_tf.clip.backbone import CLIP_STD


@keras.saving.register_keras_serializable(package="cocoop_tf")
class CLIPImageNormalization(keras.layers.Layer):
    """Maps RGB pixel values 0..255 to CLIP's normalised inputs.

    Every model of this project takes images as float (or uint8) RGB pixel
    values in 0..255, shape `[batch, image_size, image_size, 3]`, and
    normalises them inside the graph with this layer: `(x / 255 - mean) / std`
    with OpenAI CLIP's mean and standard deviation.

    Args:
        image_size: int. The backbone's input resolution; other sizes are
            rejected with an error that says how to fix them.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        images: `[batch, image_size, image_size, 3]` RGB pixel values 0..255,
            float or integer.

    Returns:
        The normalised images, same shape, in the layer's compute dtype.

    Example:

    ```python
    normalization = cocoop_tf.layers.CLIPImageNormalization(image_size=32)
    images = np.random.uniform(0, 255, size=(2, 32, 32, 3)).astype("uint8")
    normalization(images).shape  # (2, 32, 32, 3), float32

    # In a functional model.
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, normalization(inputs))
    ```
    """

    def __init__(self, image_size, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)

    def call(self, images):
        check_image_shape(images.shape, self.image_size)
        images = ops.cast(images, self.compute_dtype)
        mean = ops.convert_to_tensor(CLIP_MEAN, self.compute_dtype)
        std = ops.convert_to_tensor(CLIP_STD, self.compute_dtype)
        return (images / 255.0 - mean) / std

    def compute_output_shape(self, input_shape):
        # Symbolic calls skip `call`: check the shape here too.
        check_image_shape(input_shape, self.image_size)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["image_size"] = self.image_size
        return config


def check_image_shape(shape, image_size):
    """Raises a ValueError naming the problem if `shape` is not [B, S, S, 3]."""
    shape = tuple(shape)
    expected = f"[batch, {image_size}, {image_size}, 3]"
    if len(shape) != 4:
        raise ValueError(
            f"Expected a batch of RGB images of shape {expected}, got shape "
            f"{shape}. Add a batch axis for a single image (`image[None]`)."
        )
    if shape[-1] is not None and shape[-1] != 3:
        raise ValueError(
            f"Expected 3 RGB channels (shape {expected}), got {shape[-1]} in "
            f"shape {shape}. Convert grey or RGBA images to RGB first."
        )
    if any(s is not None and s != image_size for s in shape[1:3]):
        raise ValueError(
            f"Expected images of {image_size}x{image_size} pixels (the "
            f"backbone's resolution), got shape {shape}. A pipeline of "
            f"cocoop_tf.data makes them with `to_tf_dataset(..., image_size={image_size})` "
            f"(its default is 224; --image-size {image_size} on the command line); resize "
            f"other images' short side to {image_size} and centre-crop them "
            f"(`cocoop_tf.data.transforms.resize_and_center_crop(image, {image_size})`)."
        )
