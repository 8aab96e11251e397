"""Image decoding and CLIP's training and evaluation transforms, in TensorFlow ops."""

import math
import os

import numpy as np
import tensorflow as tf

from cocoop_tf.data.image_files import MAX_IMAGE_PIXELS
from cocoop_tf.data.image_files import check_declared_size
from cocoop_tf.data.image_files import read_image_file


def load_image(path):
    """Reads an image file (JPEG, PNG, GIF, BMP) as RGB uint8, [H, W, 3].

    Grey images are repeated to three channels and alpha is dropped. Only a
    regular file of bounded size whose header declares a bounded number of
    pixels is read and decoded (see `image_files`).

    Args:
        path: path of the image file.

    Returns:
        A uint8 tensor of shape [H, W, 3].

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image.
    """
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"Image file not found: {path!r}.")
    data = read_image_file(path)
    check_declared_size(path, data)
    try:
        return decode_checked_image(tf.constant(data))
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


def decode_image(data):
    """Decodes encoded image bytes (JPEG, PNG, GIF, BMP) as RGB uint8, [H, W, 3].

    The graph-mode counterpart of `load_image`: grey images are repeated to
    three channels, alpha is dropped, CMYK JPEGs are converted to RGB (as
    Adobe-inverted CMYK, which is how Photoshop writes them) and an animated
    GIF gives its first frame. A corrupt input makes the op fail; the input
    pipeline turns that into an error or a warning naming the file.

    A PNG, GIF or BMP whose header declares more than `MAX_IMAGE_PIXELS`
    pixels fails before it is decoded (a decompression bomb would otherwise
    take all memory); `image_files.check_declared_size`, which the run's
    image check applies, also bounds JPEGs and counts every GIF frame.

    Args:
        data: scalar string tensor, the file's bytes.

    Returns:
        A uint8 tensor [H, W, 3].
    """
    # Too many pixels: decode nothing instead, which fails as a corrupt file does.
    data = tf.where(_declared_pixels(data) <= MAX_IMAGE_PIXELS, data, b"")
    return decode_checked_image(data)


def decode_checked_image(data):
    """`decode_image`'s decoder, without its pixel guard, for bytes already checked.

    For files read through `image_files.read_image_file` and passed by
    `image_files.check_declared_size` (a stricter bound); eagerly, the guard's
    dozen small ops would cost more than decoding a small image.

    Args:
        data: scalar string tensor, the file's bytes.

    Returns:
        A uint8 tensor [H, W, 3].
    """
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _size_fields():
    """[32, 6] weights that read width and height of a PNG, a GIF and a BMP from 32 header bytes."""
    weights = np.zeros([32, 6])
    for column, (offset, size, little_endian) in enumerate(
        [(16, 4, False), (20, 4, False), (6, 2, True), (8, 2, True), (18, 4, True), (22, 4, True)]
    ):
        places = 256.0 ** np.arange(size)
        weights[offset : offset + size, column] = places if little_endian else places[::-1]
    return weights


_SIZE_FIELDS = _size_fields()


def _declared_pixels(data):
    """Width x height as a PNG, GIF or BMP header declares them; 0 for other files.

    One product of the first bytes with fixed weights, no control flow: the
    guard runs for every image of every epoch. (JPEG sizes need a walk
    through the header's segments, which `image_files` does before a run.)
    """
    # The first 32 bytes, zero-padded: a short file gives 0 here and fails in the decoder.
    head = tf.io.decode_raw(tf.strings.substr(tf.strings.join([data, b"\0" * 32]), 0, 32), tf.uint8)
    head = tf.cast(head, tf.float64)  # float64: 2**32 x 2**32 does not overflow
    png_w, png_h, gif_w, gif_h, bmp_w, bmp_h = tf.unstack(tf.linalg.matvec(_SIZE_FIELDS.T, head))
    # BMP sizes are signed (a negative height stores rows top down).
    bmp_w, bmp_h = (tf.abs(tf.where(v >= 2.0**31, v - 2.0**32, v)) for v in (bmp_w, bmp_h))
    first = head[0]
    return tf.where(first == 0x89, png_w * png_h, tf.where(
        first == ord("G"), gif_w * gif_h, tf.where(first == ord("B"), bmp_w * bmp_h, 0.0)))


def random_crop_window(height, width, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Draws a crop window the way torchvision's `RandomResizedCrop` does.

    Up to ten attempts draw an area fraction uniformly from `scale` and an
    aspect ratio log-uniformly from `ratio`; the first window that fits the
    image is placed uniformly at random. When none fits, the window is the
    centred crop with the aspect ratio clamped to `ratio`.

    Args:
        height: image height (int32 scalar).
        width: image width (int32 scalar).
        seed: int32/int64 tensor of shape [2], for the stateless random ops.
        scale: range of the crop's area as a fraction of the image's area.
        ratio: range of the crop's aspect ratio (width / height).

    Returns:
        `(top, left, crop_height, crop_width)` as int32 scalars.
    """
    area_seed, ratio_seed, offset_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3)
    )
    height_f = tf.cast(height, tf.float32)
    width_f = tf.cast(width, tf.float32)
    attempts = 10
    target_area = height_f * width_f * tf.random.stateless_uniform(
        [attempts], area_seed, scale[0], scale[1]
    )
    aspect = tf.exp(
        tf.random.stateless_uniform(
            [attempts], ratio_seed, math.log(ratio[0]), math.log(ratio[1])
        )
    )
    # tf.round rounds half to even, like Python's round() in torchvision.
    crop_widths = tf.cast(tf.round(tf.sqrt(target_area * aspect)), tf.int32)
    crop_heights = tf.cast(tf.round(tf.sqrt(target_area / aspect)), tf.int32)
    fits = (crop_widths > 0) & (crop_widths <= width) & (crop_heights > 0) & (
        crop_heights <= height
    )
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    found = tf.reduce_any(fits)

    in_ratio = width_f / height_f
    too_tall = in_ratio < ratio[0]
    too_wide = in_ratio > ratio[1]
    fallback_width = tf.where(
        too_wide, tf.cast(tf.round(height_f * ratio[1]), tf.int32), width
    )
    fallback_height = tf.where(
        too_tall, tf.cast(tf.round(width_f / ratio[0]), tf.int32), height
    )

    crop_height = tf.where(found, crop_heights[first], fallback_height)
    crop_width = tf.where(found, crop_widths[first], fallback_width)
    # Uniform integers in [0, height - crop_height] and [0, width - crop_width].
    u = tf.random.stateless_uniform([2], offset_seed)
    random_top = tf.cast(u[0] * tf.cast(height - crop_height + 1, tf.float32), tf.int32)
    random_left = tf.cast(u[1] * tf.cast(width - crop_width + 1, tf.float32), tf.int32)
    top = tf.where(found, tf.minimum(random_top, height - crop_height), (height - crop_height) // 2)
    left = tf.where(found, tf.minimum(random_left, width - crop_width), (width - crop_width) // 2)
    return top, left, crop_height, crop_width


def check_crop_scale(crop_scale):
    """Validates a random resized crop's area range.

    Args:
        crop_scale: `(low, high)`, the crop's area as a fraction of the image's.

    Returns:
        `(low, high)` as floats.

    Raises:
        ValueError: unless `0 < low <= high <= 1`.
    """
    if (
        not isinstance(crop_scale, (list, tuple)) or len(crop_scale) != 2
        or not 0 < crop_scale[0] <= crop_scale[1] <= 1
    ):
        raise ValueError(
            f"crop_scale must be [low, high] with 0 < low <= high <= 1 (the paper's: 0.08, 1.0), "
            f"got {crop_scale!r}."
        )
    return float(crop_scale[0]), float(crop_scale[1])


def random_resized_crop(image, size, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """CLIP's training crop: a random window (as torchvision), bicubic resize.

    Args:
        image: [H, W, 3] tensor of pixel values 0..255 (any dtype).
        size: output side length.
        seed: tensor of shape [2] for the stateless random ops; the same
            seed gives the same crop.
        scale: range of the crop's area as a fraction of the image's area.
        ratio: range of the crop's aspect ratio (width / height).

    Returns:
        A float32 tensor [size, size, 3] of pixel values 0..255.
    """
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    top, left, crop_height, crop_width = random_crop_window(
        shape[0], shape[1], seed, scale, ratio
    )
    crop = image[top : top + crop_height, left : left + crop_width]
    # Antialiased like PIL's bicubic resize, which torchvision uses for images.
    crop = tf.image.resize(crop, (size, size), method="bicubic", antialias=True)
    crop.set_shape([size, size, 3])
    return tf.clip_by_value(crop, 0.0, 255.0)


def random_horizontal_flip(image, seed):
    """Mirrors the image left to right with probability 1/2.

    Args:
        image: [H, W, C] tensor.
        seed: tensor of shape [2] for the stateless random op.

    Returns:
        The image, flipped or not.
    """
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return tf.where(flip, tf.reverse(image, axis=[1]), image)
