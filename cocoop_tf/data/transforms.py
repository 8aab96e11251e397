"""Image decoding and CLIP's evaluation transform, in TensorFlow ops."""

import tensorflow as tf


def load_image(path):
    """Reads an image file (JPEG, PNG, GIF, BMP) as RGB uint8, [H, W, 3].

    Grey images are repeated to three channels and alpha is dropped.

    Args:
        path: path of the image file.

    Returns:
        A uint8 tensor of shape [H, W, 3].

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image.
    """
    path = str(path)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"Image file not found: {path!r}.")
    data = tf.io.read_file(path)
    try:
        return tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        # Keep TensorFlow's reason, without its op and device decorations.
        reason = error.message.split("}}")[-1].split("[Op:")[0].strip()
        raise ValueError(
            f"Cannot decode {path!r} as an image (corrupt, or not JPEG/PNG/"
            f"GIF/BMP): {reason}"
        ) from None


def resize_and_center_crop(image, size):
    """CLIP's test transform: bicubic resize of the short side, centre crop.

    Args:
        image: [H, W, 3] tensor of pixel values 0..255 (any dtype).
        size: output side length.

    Returns:
        A float32 tensor [size, size, 3] of pixel values 0..255.
    """
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    short = tf.minimum(height, width)
    # As torchvision's Resize(size): the short side becomes `size`, the long
    # side size * long / short rounded down.
    new_height = tf.where(height == short, size, size * height // short)
    new_width = tf.where(width == short, size, size * width // short)
    image = tf.image.resize(image, (new_height, new_width), method="bicubic", antialias=True)
    # As torchvision's CenterCrop: offsets rounded half to even.
    top = tf.cast(tf.round((new_height - size) / 2), tf.int32)
    left = tf.cast(tf.round((new_width - size) / 2), tf.int32)
    image = image[top : top + size, left : left + size]
    # Bicubic interpolation overshoots; keep the documented 0..255 range.
    return tf.clip_by_value(image, 0.0, 255.0)
